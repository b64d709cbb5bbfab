//! A builder-style in-memory host for tests: headers, facts, clock and recorded calls.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use super::{Fact, Host, HostError, MetricKind, NodeFact, Outgoing, StreamFact};
use crate::headers::HeaderMap;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;

/// A recorded outgoing call, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCall {
    pub cluster: String,
    /// The `:path` header.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

#[derive(Debug, Default)]
pub struct MockHost {
    pub now: Cell<u64>,
    pub request_headers: RefCell<Vec<(String, String)>>,
    pub response_headers: RefCell<Vec<(String, String)>>,
    pub response_trailers: RefCell<Vec<(String, String)>>,
    /// Node facts, keyed by [`node_key`].
    pub node: BTreeMap<String, String>,
    pub facts: BTreeMap<StreamFact, Fact>,
    pub calls: RefCell<Vec<RecordedCall>>,
    /// When set, `dispatch` fails (e.g. unknown cluster).
    pub fail_dispatch: Cell<bool>,
    pub metric_names: RefCell<Vec<(MetricKind, String)>>,
    pub metric_values: RefCell<BTreeMap<u32, i64>>,
    /// Every stream fact asked, in order (in the Wasm plugin each is a VM crossing).
    pub fact_reads: RefCell<Vec<StreamFact>>,
    /// Every property set, in order: (name, value).
    pub properties_set: RefCell<Vec<(String, Vec<u8>)>>,
    /// A host that cannot append a header value: `add_response_header` reads and replaces.
    pub replace_only: Cell<bool>,
}

impl MockHost {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_time(self, nanos: u64) -> Self {
        self.now.set(nanos);
        self
    }

    pub fn with_header(self, name: &str, value: &str) -> Self {
        self.request_headers
            .borrow_mut()
            .push((name.to_string(), value.to_string()));
        self
    }

    pub fn with_response_header(self, name: &str, value: &str) -> Self {
        self.response_headers
            .borrow_mut()
            .push((name.to_string(), value.to_string()));
        self
    }

    /// Every value of a response header, in order (one per field line).
    pub fn response_header_values(&self, name: &str) -> Vec<String> {
        self.response_headers
            .borrow()
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn with_response_trailer(self, name: &str, value: &str) -> Self {
        self.response_trailers
            .borrow_mut()
            .push((name.to_string(), value.to_string()));
        self
    }

    pub fn with_node(mut self, fact: NodeFact<'_>, value: &str) -> Self {
        self.node.insert(node_key(fact), value.to_string());
        self
    }

    pub fn with_fact(mut self, fact: StreamFact, value: Fact) -> Self {
        self.facts.insert(fact, value);
        self
    }

    pub fn with_text(self, fact: StreamFact, value: &str) -> Self {
        self.with_fact(fact, Fact::Text(value.to_string()))
    }

    pub fn with_int(self, fact: StreamFact, value: i64) -> Self {
        self.with_fact(fact, Fact::Int(value))
    }

    /// First value of a request header as the upstream would see it.
    pub fn header(&self, name: &str) -> Option<String> {
        self.request_headers
            .borrow()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// The last value set for property `name`, as text.
    pub fn property_set(&self, name: &str) -> Option<String> {
        self.properties_set
            .borrow()
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    }

    /// Value of a metric by its name.
    pub fn metric(&self, name: &str) -> i64 {
        let names = self.metric_names.borrow();
        let id = names
            .iter()
            .position(|(_, n)| n == name)
            .unwrap_or_else(|| panic!("metric {name} was never defined"));
        *self.metric_values.borrow().get(&(id as u32)).unwrap_or(&0)
    }
}

impl Host for MockHost {
    fn now_unix_nanos(&self) -> u64 {
        self.now.get()
    }

    fn request_headers(&self) -> HeaderMap {
        self.request_headers
            .borrow()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let mut h = self.request_headers.borrow_mut();
        h.retain(|(k, _)| k != name);
        if let Some(v) = value {
            h.push((name.to_string(), v.to_string()));
        }
    }

    fn response_header(&self, name: &str) -> Option<String> {
        self.response_headers
            .borrow()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    fn set_response_header(&self, name: &str, value: &str) {
        let mut h = self.response_headers.borrow_mut();
        h.retain(|(k, _)| k != name);
        h.push((name.to_string(), value.to_string()));
    }

    fn add_response_header(&self, name: &str, value: &str) {
        if self.replace_only.get() {
            super::append_by_replacing(self, name, value);
        } else {
            self.response_headers
                .borrow_mut()
                .push((name.to_string(), value.to_string()));
        }
    }

    fn set_property(&self, name: &str, value: &[u8]) {
        self.properties_set
            .borrow_mut()
            .push((name.to_string(), value.to_vec()));
    }

    fn response_trailer(&self, name: &str) -> Option<String> {
        self.response_trailers
            .borrow()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    fn node_fact(&self, fact: NodeFact<'_>) -> Option<String> {
        self.node.get(&node_key(fact)).cloned()
    }

    fn stream_fact(&self, fact: StreamFact) -> Option<Fact> {
        self.fact_reads.borrow_mut().push(fact);
        self.facts.get(&fact).cloned()
    }

    fn dispatch(&self, call: Outgoing<'_>) -> Result<u32, HostError> {
        if self.fail_dispatch.get() {
            return Err(HostError::BAD_ARGUMENT);
        }
        let recorded = match call {
            Outgoing::Http {
                cluster,
                headers,
                body,
                timeout,
            } => RecordedCall {
                cluster: cluster.to_string(),
                target: headers
                    .iter()
                    .find(|(k, _)| *k == ":path")
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default(),
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                body: body.to_vec(),
                timeout,
            },
        };
        let mut calls = self.calls.borrow_mut();
        calls.push(recorded);
        Ok(calls.len() as u32)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let mut names = self.metric_names.borrow_mut();
        if let Some(i) = names.iter().position(|(_, n)| n == name) {
            return Ok(i as u32);
        }
        names.push((kind, name.to_string()));
        Ok((names.len() - 1) as u32)
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        *self.metric_values.borrow_mut().entry(id).or_insert(0) += delta;
    }

    fn record_metric(&self, id: u32, value: u64) {
        self.metric_values.borrow_mut().insert(id, value as i64);
    }
}

/// The key a node fact is kept under.
pub fn node_key(fact: NodeFact<'_>) -> String {
    match fact {
        NodeFact::Id => "id".to_string(),
        NodeFact::Metadata(key) => format!("metadata.{key}"),
        NodeFact::Label(name) => format!("label.{name}"),
        NodeFact::LocalityZone => "zone".to_string(),
    }
}

thread_local! {
    static LOG_LINES: RefCell<Vec<(log::Level, String)>> = const { RefCell::new(Vec::new()) };
}

/// Records log lines per test thread, so tests running in parallel see only their own.
struct ThreadLogger;

impl log::Log for ThreadLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        LOG_LINES.with(|l| {
            l.borrow_mut()
                .push((record.level(), record.args().to_string()))
        });
    }

    fn flush(&self) {}
}

static LOGGER: ThreadLogger = ThreadLogger;

/// The lines this thread logged since the last call; the first call installs the logger (call
/// it once before the code under test).
pub fn take_logs() -> Vec<(log::Level, String)> {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
    LOG_LINES.with(|l| std::mem::take(&mut *l.borrow_mut()))
}
