//! The native filter over Envoy's threading model (Envoy `source/extensions/filters/http/
//! dynamic_modules/filter_config.cc`): one configuration object per filter configuration,
//! created and destroyed on the main thread and shared by every worker; one filter per stream,
//! on the worker that owns the stream.
//!
//! - **One [`Hub`] per configuration content.** Filter configurations with the same
//!   `pluginConfig` (the inbound and outbound listeners of a sidecar; the old and new copy
//!   across a listener update) share one hub, as Wasm filters with one configuration share one
//!   VM per worker: one exporter, one queue, one set of caps. A configuration update that keeps
//!   the content hands the queue to the new configuration: nothing is lost.
//! - **Request path, per worker, without locks.** Each worker builds its own [`Worker`] — the
//!   core's [`Tracer`], [`Metrics`] and id generator — the first time it sees a hub, and keeps it
//!   in a thread-local list. A stream reads and writes headers and filter state through
//!   [`StreamHost`]; its counters go to the hub's atomic tallies.
//! - **Export, on the main thread.** Configuration-level callouts live as long as the
//!   configuration (a stream-level callout dies with its stream), and Envoy's table of them
//!   is the main thread's, so the [`Exporter`] lives there. A finished span crosses over by a
//!   channel (a lock-free send); the configuration scheduler wakes the main thread when a batch
//!   is full, and a small timer thread commits a tick every flush interval (the ABI has no timer
//!   for HTTP filters), where partial batches, retries and the counters go out.
//! - **Nothing lost uncounted.** A span that cannot cross (the channel holds a queue's worth)
//!   is counted `spans_dropped_queue_full`. When Envoy destroys a configuration it cancels its
//!   pending callouts (`~DynamicModuleHttpFilterConfig`): their batches go back to the hub's
//!   retry queue while another configuration shares the hub; when the last one goes, what is
//!   still queued or unanswered is counted `spans_dropped_shutdown` before the counters' last
//!   flush.

use crate::abi;
use crate::host::{now_unix_nanos, ConfigHost, EnvoyStat, StreamAnswer, StreamHost};
use crate::logger;
use log::{error, info, warn};
use meshtrace_core::config::Config;
use meshtrace_core::export::{EncodedSpan, ExportResponse, Exporter, MAX_RESPONSE_BODY};
use meshtrace_core::host::{Host, MetricKind};
use meshtrace_core::ids::IdGenerator;
use meshtrace_core::metrics::{Metric, Metrics};
use meshtrace_core::node::NodeInfo;
use meshtrace_core::span::Span;
use meshtrace_core::tracer::{RequestState, Tracer};
use std::cell::RefCell;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// Scheduler events (`envoy_dynamic_module_on_http_filter_config_scheduled`).
pub const EVENT_TICK: u64 = 1;
pub const EVENT_BATCH_READY: u64 = 2;

/// A worker wakes the main thread once this many spans wait in the channel (or a batch's worth,
/// if smaller). Spans used to cross as the core's `Span` (a few KiB of strings each), and
/// waking only once a batch (512) waited kept megabytes of them alive at saturation
/// (`--concurrency 2`, 100% sampled, 20,000 requests: +10.9 MiB over no tracing waking every
/// 512, +4.9 every 8). They now cross encoded ([`Handoff`], a few hundred bytes), so 64 waiting
/// hold ~25 KiB; each wake-up is one event on the main thread's dispatcher and a commit under
/// the ticker's lock, so a default batch ([`NATIVE_MAX_BATCH_SIZE`]) costs one, not eight.
const WAKE_EVERY: usize = 64;

/// `exporter.maxBatchSize` when the `pluginConfig` does not set it (the Wasm plugin's default is
/// 512). Envoy's own OpenTelemetry tracer, the reference for this adapter's cost, keeps at most
/// `tracing.opentelemetry.min_flush_spans` (5) spans per worker before it sends them
/// (`source/extensions/tracers/opentelemetry/tracer.cc`, `Tracer::sendSpan`). The native adapter
/// has one exporter for every worker, and what it holds follows its batches: at 100% and
/// `--concurrency 2`, +4.8 MiB over no tracing with batches of 512, +2.0 to +2.3 with 64, +1.6
/// to +2.1 with 32 (BENCHMARKS.md). Each batch costs the main thread a wake-up, a callout and
/// its answer on the CPU the workers use: side by side, 100% sampled, +33.4 µs per request with
/// 512, +35.9 with 64, +40.0 with 32. 64 is the largest batch within 2 MiB of Envoy's tracer.
pub const NATIVE_MAX_BATCH_SIZE: usize = 64;

/// Panics caught at the FFI boundary since the module was loaded (all configurations).
pub static PANICS: AtomicU64 = AtomicU64::new(0);
/// Configurations alive (the harness checks every one created is destroyed).
pub static LIVE_CONFIGS: AtomicUsize = AtomicUsize::new(0);

/// Hubs alive, by content (a handful: one per distinct `pluginConfig`).
static HUBS: Mutex<Vec<Weak<Hub>>> = Mutex::new(Vec::new());
static NEXT_HUB_KEY: AtomicU64 = AtomicU64::new(1);

/// A span on its way from a worker to the main thread's exporter, encoded on the worker: the
/// channel holds a few hundred bytes per span, not the core's `Span` (a few KiB of strings),
/// and those strings are freed on the worker that allocated them.
struct Handoff {
    span: EncodedSpan,
    captured: bool,
}

/// What the configurations of one content share between the main thread and every worker.
pub struct Hub {
    key: u64,
    bytes: Vec<u8>,
    config: Config,
    node: NodeInfo,
    /// Counts from the request path, by the core's metric id: the main thread hands them to
    /// Envoy on every tick.
    pub tallies: Vec<AtomicU64>,
    /// The metric ids every worker's [`Metrics`] starts from (cloned once per worker).
    metrics_template: Mutex<Metrics>,
    spans: Sender<Handoff>,
    /// Spans in the channel, bounded by the exporter's queue size.
    waiting: AtomicUsize,
    max_waiting: usize,
    /// Spans waiting that wake the main thread (see [`WAKE_EVERY`]).
    wake_every: usize,
    retired: AtomicBool,
    main: Mutex<MainOnly>,
    ticker: Arc<Ticker>,
    tick_thread: Mutex<Option<JoinHandle<()>>>,
}

/// One Envoy filter configuration of a hub: its pointer, stats, callouts and scheduler.
struct Owner {
    host: ConfigHost,
    scheduler: usize,
    panic_stat: Option<EnvoyStat>,
}

/// The main thread's part: the exporter and what feeds it.
struct MainState {
    /// The configurations sharing the hub, oldest first; the first one sends and counts.
    owners: Vec<Owner>,
    metrics: Metrics,
    exporter: Exporter,
    spans: Receiver<Handoff>,
    panics_reported: u64,
    /// Tokens of callouts Envoy cancelled with a configuration that left: answered "no
    /// response" at the next tick, on the main thread, so their batches are retried.
    cancelled: Vec<u32>,
    /// Exporters of retired hubs this hub sends out (below).
    orphans: Vec<Orphan>,
}

/// A retired hub's exporter, adopted by a live hub: a configuration push that changes the
/// content destroys the old configuration once its last stream ends, and Envoy cancels that
/// configuration's callouts right after. The old spans keep their own resource (already
/// encoded), so any live configuration can send them: the adopter's next tick answers the
/// cancelled batches "no response" (retry), takes the spans still in the channel, and drains
/// the whole queue through its own callouts, waiting for the answers at most the export
/// timeout — the native counterpart of the Wasm plugin's `proxy_on_done` drain.
struct Orphan {
    exporter: Exporter,
    metrics: Metrics,
    spans: Receiver<Handoff>,
    cancelled: Vec<u32>,
    draining: bool,
}

/// `MainState` holds `Rc`s (the exporter's encoded resources) and Envoy's configuration
/// pointers, so it is not `Send` by itself. It is only ever touched under `Hub::main`'s mutex —
/// by the main thread's hooks, and by a configuration's destruction — and none of its `Rc`s is
/// ever handed out of it, so no two threads touch one of their counts at once.
struct MainOnly(MainState);
// SAFETY: see above — every access is serialized by the mutex that owns the value.
unsafe impl Send for MainOnly {}

/// The module's configuration object: what `on_http_filter_config_new` returns to Envoy.
pub struct ModuleConfig {
    pub hub: Arc<Hub>,
    config_envoy: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// One seed per worker from the OS; ids then come from a fast PRNG.
fn os_seed() -> u64 {
    let mut buf = [0u8; 8];
    match getrandom::fill(&mut buf) {
        Ok(()) => u64::from_le_bytes(buf),
        Err(_) => now_unix_nanos() ^ 0x9e37_79b9_7f4a_7c15 ^ thread_salt(),
    }
}

fn thread_salt() -> u64 {
    let local = 0u8;
    std::ptr::addr_of!(local) as usize as u64
}

fn live_hub(bytes: &[u8], gateway: bool) -> Option<Arc<Hub>> {
    let mut hubs = lock(&HUBS);
    hubs.retain(|h| h.strong_count() > 0);
    hubs.iter().filter_map(Weak::upgrade).find(|h| {
        h.bytes == bytes && h.node.is_gateway() == gateway && !h.retired.load(Ordering::Relaxed)
    })
}

fn hub_is_live(key: u64) -> bool {
    lock(&HUBS)
        .iter()
        .filter_map(Weak::upgrade)
        .any(|h| h.key == key && !h.retired.load(Ordering::Relaxed))
}

/// A configuration's own part: its stats (Envoy freezes stat creation once
/// `on_http_filter_config_new` returns, so every configuration defines them now) and its
/// scheduler.
fn new_owner(config_envoy: abi::ConfigEnvoyPtr) -> (Owner, Metrics) {
    let host = ConfigHost::new(config_envoy);
    let metrics = Metrics::define(&host);
    let panic_stat = host.define_stat(MetricKind::Counter, "meshtrace_native_panics");
    // SAFETY: the configuration's pointer, on the main thread during its creation.
    let scheduler = unsafe {
        abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(config_envoy)
    };
    let owner = Owner {
        host,
        scheduler: scheduler as usize,
        panic_stat,
    };
    (owner, metrics)
}

/// `on_http_filter_config_new`, on the main thread. `None` rejects the configuration (Envoy
/// refuses the listener), after one error naming the key.
pub(crate) fn config_new(config_envoy: abi::ConfigEnvoyPtr, bytes: &[u8]) -> Option<ModuleConfig> {
    logger::refresh_level();
    let node = NodeInfo::read(&ConfigHost::new(config_envoy));
    let mut config = match Config::parse_for(bytes, node.is_gateway()) {
        Ok(config) => config,
        Err(e) => {
            error!("{e}");
            return None;
        }
    };
    if !sets_max_batch_size(bytes, node.is_gateway()) {
        config.exporter.max_batch_size = config.exporter.max_queue_size.min(NATIVE_MAX_BATCH_SIZE);
    }
    let (owner, metrics) = new_owner(config_envoy);
    if let Some(hub) = live_hub(bytes, node.is_gateway()) {
        hub.join(owner);
        LIVE_CONFIGS.fetch_add(1, Ordering::Relaxed);
        return Some(ModuleConfig {
            hub,
            config_envoy: config_envoy as usize,
        });
    }
    let tracer = Tracer::new(config.clone(), node.clone(), &env_var);
    let exporter = tracer.new_exporter();
    info!("{}", tracer.configured_summary());
    let period = exporter.tick_period();
    let tallies = (0..owner.host.stats.borrow().len())
        .map(|_| AtomicU64::new(0))
        .collect();
    let scheduler = owner.scheduler;
    let (tx, rx) = mpsc::channel();
    let ticker = Arc::new(Ticker::new(scheduler));
    let hub = Arc::new(Hub {
        key: NEXT_HUB_KEY.fetch_add(1, Ordering::Relaxed),
        bytes: bytes.to_vec(),
        max_waiting: config.exporter.max_queue_size.max(1),
        wake_every: config.exporter.max_batch_size.clamp(1, WAKE_EVERY),
        config,
        node,
        tallies,
        metrics_template: Mutex::new(metrics.clone()),
        spans: tx,
        waiting: AtomicUsize::new(0),
        retired: AtomicBool::new(false),
        main: Mutex::new(MainOnly(MainState {
            owners: vec![owner],
            metrics,
            exporter,
            spans: rx,
            panics_reported: PANICS.load(Ordering::Relaxed),
            cancelled: Vec::new(),
            orphans: Vec::new(),
        })),
        ticker: ticker.clone(),
        tick_thread: Mutex::new(None),
    });
    if scheduler == 0 {
        warn!("meshtrace: Envoy gave no configuration scheduler: spans are not exported");
    } else {
        match ticker.start(period) {
            Ok(handle) => *lock(&hub.tick_thread) = Some(handle),
            Err(e) => warn!("meshtrace: no tick thread ({e}): partial batches wait for full ones"),
        }
    }
    lock(&HUBS).push(Arc::downgrade(&hub));
    LIVE_CONFIGS.fetch_add(1, Ordering::Relaxed);
    Some(ModuleConfig {
        hub,
        config_envoy: config_envoy as usize,
    })
}

/// Whether a (valid) `pluginConfig` sets `exporter.maxBatchSize` for this proxy: at the top
/// level or, at a gateway, in its `gateway` block. Otherwise the native adapter's own default
/// applies ([`NATIVE_MAX_BATCH_SIZE`]); every key and what a configuration accepts stay the
/// Wasm plugin's (the configuration was validated by the core first).
fn sets_max_batch_size(bytes: &[u8], gateway: bool) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return false;
    };
    let set = |v: Option<&serde_json::Value>| v.is_some_and(|v| !v.is_null());
    set(value.pointer("/exporter/maxBatchSize"))
        || (gateway && set(value.pointer("/gateway/exporter/maxBatchSize")))
}

impl ModuleConfig {
    /// `on_http_filter_config_destroy`.
    pub fn destroy(self) {
        self.hub.leave(self.config_envoy);
        LIVE_CONFIGS.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hub {
    fn join(&self, owner: Owner) {
        lock(&self.main).0.owners.push(owner);
    }

    fn wake(&self) {
        self.ticker.commit(EVENT_BATCH_READY);
    }

    /// A finished span leaves the worker: counted and dropped when a queue's worth is already
    /// waiting; the main thread is woken when a batch's worth is.
    fn hand_over(&self, span: Span, captured: bool, host: &dyn Host, metrics: &Metrics) {
        if self.retired.load(Ordering::Relaxed) {
            metrics.inc(host, Metric::SpansRecorded);
            metrics.inc(host, Metric::SpansDroppedShutdown);
            return;
        }
        let waiting = self.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        if waiting > self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            metrics.inc(host, Metric::SpansRecorded);
            metrics.inc(host, Metric::SpansDroppedQueueFull);
            return;
        }
        let span = EncodedSpan::new(span);
        if self.spans.send(Handoff { span, captured }).is_err() {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            metrics.inc(host, Metric::SpansRecorded);
            metrics.inc(host, Metric::SpansDroppedShutdown);
            return;
        }
        if waiting % self.wake_every == 0 {
            self.wake();
        }
    }

    /// The main thread: spans waiting in the channel go to the exporter (which sends full
    /// batches at once).
    fn take_handoffs(&self, main: &mut MainState) {
        let Some(owner) = main.owners.first() else {
            return;
        };
        while let Ok(h) = main.spans.try_recv() {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            main.exporter
                .enqueue_encoded(h.span, h.captured, &owner.host, &main.metrics);
        }
    }

    /// The request path's tallies, the main thread's own counts and the panics caught go to
    /// Envoy's stats, through `host` (stats of one name are one stat, whichever configuration
    /// defined them).
    fn flush_counters(&self, main: &mut MainState, owner: &Owner) {
        for (id, tally) in self.tallies.iter().enumerate() {
            let n = tally.swap(0, Ordering::Relaxed);
            if n > 0 {
                owner.host.increment_metric(
                    u32::try_from(id).unwrap_or(u32::MAX),
                    i64::try_from(n).unwrap_or(i64::MAX),
                );
            }
        }
        main.metrics.flush(&owner.host);
        let panics = PANICS.load(Ordering::Relaxed);
        if let Some(stat) = owner.panic_stat {
            owner
                .host
                .add_to_stat(stat, panics.saturating_sub(main.panics_reported));
        }
        main.panics_reported = panics;
    }

    /// `on_http_filter_config_scheduled`, on the main thread.
    pub fn on_scheduled(&self, event: u64) {
        let mut guard = lock(&self.main);
        let main = &mut guard.0;
        self.take_handoffs(main);
        if event != EVENT_TICK {
            return;
        }
        logger::refresh_level();
        let owners = std::mem::take(&mut main.owners);
        if let Some(owner) = owners.first() {
            let now = now_unix_nanos();
            for token in std::mem::take(&mut main.cancelled) {
                main.exporter
                    .on_response(token, &NO_RESPONSE, &owner.host, &main.metrics, now);
            }
            main.exporter.on_tick(&owner.host, &main.metrics, now);
            tend_orphans(&mut main.orphans, owner, now);
            self.flush_counters(main, owner);
            // The exporter's queue, bounded as the Wasm plugin's is. Not the channel: spans
            // handed over since `take_handoffs` (above) join the queue at the next wake-up,
            // which drops the oldest if it is full; counting them let the gauge read above
            // `maxQueueSize` (51 of 50 in CI).
            let depth = main.exporter.queue_len();
            main.metrics
                .set(&owner.host, Metric::QueueDepth, depth as u64);
        }
        main.owners = owners;
    }

    /// Takes a retired hub's exporter (see [`Orphan`]); the work happens at the next tick.
    fn adopt(&self, orphan: Box<Orphan>) -> Result<(), Box<Orphan>> {
        if self.retired.load(Ordering::Relaxed) {
            return Err(orphan);
        }
        lock(&self.main).0.orphans.push(*orphan);
        Ok(())
    }

    /// `on_http_filter_config_http_callout_done`, on the main thread: the collector's answer
    /// to a callout of the configuration `config_envoy`.
    pub fn on_callout_done(
        &self,
        config_envoy: usize,
        callout_id: u64,
        result: u32,
        headers: &[abi::EnvoyHeader],
        body_chunks: &[abi::EnvoyBuffer],
    ) {
        let mut guard = lock(&self.main);
        let main = &mut guard.0;
        let Some(token) = main
            .owners
            .iter()
            .find(|o| o.host.config as usize == config_envoy)
            .and_then(|o| o.host.take_token(callout_id))
        else {
            return;
        };
        let header = |name: &str| {
            headers.iter().find_map(|h| {
                // SAFETY: Envoy's buffers, valid until the end of this hook.
                let key = unsafe { abi::envoy_bytes(h.key_ptr, h.key_len) }?;
                if !key.eq_ignore_ascii_case(name.as_bytes()) {
                    return None;
                }
                // SAFETY: as above.
                unsafe { abi::envoy_str(h.value_ptr, h.value_len) }
            })
        };
        let status = (result == abi::callout_result::SUCCESS)
            .then(|| header(":status"))
            .flatten()
            .and_then(|s| s.parse::<u16>().ok());
        let retry_after = header("retry-after");
        // A one-shot callout's answer carries no trailers: a gRPC status is only seen when the
        // collector answers trailers-only (docs/native.md).
        let grpc_status = header("grpc-status").and_then(|s| s.parse::<u32>().ok());
        let mut body = Vec::new();
        if status == Some(200) {
            for chunk in body_chunks {
                // SAFETY: Envoy's buffers, valid until the end of this hook.
                let Some(bytes) = (unsafe { abi::envoy_bytes(chunk.ptr, chunk.len) }) else {
                    continue;
                };
                let room = MAX_RESPONSE_BODY.saturating_sub(body.len());
                body.extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
            }
        }
        let response = ExportResponse {
            status,
            grpc_status,
            retry_after: retry_after.as_deref(),
            body: &body,
        };
        self.answer(main, token, &response);
    }

    /// An event of a gRPC export stream of the configuration `config_envoy`: headers, body or
    /// trailers gathered; at its end (`done`: complete, or `None` for a reset) the answer goes
    /// to the exporter.
    pub fn on_stream_event(&self, config_envoy: usize, stream_id: u64, event: StreamEvent<'_>) {
        let mut guard = lock(&self.main);
        let main = &mut guard.0;
        let Some(owner) = main
            .owners
            .iter()
            .find(|o| o.host.config as usize == config_envoy)
        else {
            return;
        };
        let answer = match event {
            StreamEvent::Headers(h) => {
                owner.host.with_stream(stream_id, |a| a.add_headers(h));
                return;
            }
            StreamEvent::Data(d) => {
                owner
                    .host
                    .with_stream(stream_id, |a| a.add_body(d, MAX_RESPONSE_BODY));
                return;
            }
            StreamEvent::Complete => owner.host.take_stream(stream_id),
            StreamEvent::Reset => owner
                .host
                .take_stream(stream_id)
                .map(|_| StreamAnswer::default()),
        };
        let Some(token) = owner.host.take_token(stream_id) else {
            return;
        };
        let answer = answer.unwrap_or_default();
        let response = ExportResponse {
            status: answer.status,
            grpc_status: answer.grpc_status,
            retry_after: answer.retry_after.as_deref(),
            body: &answer.body,
        };
        self.answer(main, token, &response);
    }

    /// An answer to one of this hub's callouts — its own exporter's or an orphan's (tokens
    /// are unique per configuration host; an exporter ignores a token it did not send).
    fn answer(&self, main: &mut MainState, token: u32, response: &ExportResponse<'_>) {
        let owners = std::mem::take(&mut main.owners);
        if let Some(owner) = owners.first() {
            let now = now_unix_nanos();
            main.exporter
                .on_response(token, response, &owner.host, &main.metrics, now);
            for orphan in &mut main.orphans {
                orphan
                    .exporter
                    .on_response(token, response, &owner.host, &orphan.metrics, now);
            }
        }
        main.owners = owners;
    }

    /// A configuration of this hub is destroyed — on whatever thread Envoy drops it last, so
    /// nothing here sends: Envoy cancels its pending callouts right after, and their batches
    /// are answered "no response" at the next tick on the main thread, through another
    /// configuration of the hub. The last configuration retires the hub: its exporter goes to
    /// another live hub to be drained ([`Orphan`]), or, when there is none (Envoy is shutting
    /// down), what is still queued or unanswered is counted lost.
    fn leave(&self, config_envoy: usize) {
        let mut guard = lock(&self.main);
        let main = &mut guard.0;
        let Some(at) = main
            .owners
            .iter()
            .position(|o| o.host.config as usize == config_envoy)
        else {
            return;
        };
        let leaving = main.owners.remove(at);
        let cancelled: Vec<u32> = leaving
            .host
            .callouts
            .borrow_mut()
            .drain(..)
            .map(|(_, t)| t)
            .collect();
        if let Some(next) = main.owners.first() {
            main.cancelled.extend(cancelled);
            if leaving.scheduler == self.ticker.scheduler() {
                self.ticker.switch_to(next.scheduler);
            }
            delete_scheduler(leaving.scheduler);
            return;
        }
        let cancelled: Vec<u32> = cancelled
            .into_iter()
            .chain(main.cancelled.drain(..))
            .collect();
        // The last configuration: the hub retires.
        self.retired.store(true, Ordering::Relaxed);
        drop(guard);
        self.ticker.stop();
        if let Some(handle) = lock(&self.tick_thread).take() {
            let _ = handle.join();
        }
        delete_scheduler(leaving.scheduler);
        let mut guard = lock(&self.main);
        let main = &mut guard.0;
        // The counts made so far go out through this configuration's stats, before the
        // exporter's `Metrics` is copied for the orphan (a copy would carry them twice).
        self.flush_counters(main, &leaving);
        let (tx, rx) = mpsc::channel();
        drop(tx);
        let orphan = Box::new(Orphan {
            exporter: std::mem::replace(
                &mut main.exporter,
                Exporter::new(&self.config.exporter, &self.config.limits, Vec::new()),
            ),
            metrics: main.metrics.clone(),
            spans: std::mem::replace(&mut main.spans, rx),
            cancelled,
            draining: false,
        });
        let mut orphans: Vec<Box<Orphan>> = std::mem::take(&mut main.orphans)
            .into_iter()
            .map(Box::new)
            .collect();
        orphans.push(orphan);
        for orphan in orphans {
            // The newest live hub: after a push, the configuration that replaced this one.
            let adopter = lock(&HUBS)
                .iter()
                .filter_map(Weak::upgrade)
                .filter(|h| h.key != self.key && !h.retired.load(Ordering::Relaxed))
                .last();
            let orphan = match adopter {
                Some(hub) => match hub.adopt(orphan) {
                    Ok(()) => continue,
                    Err(orphan) => orphan,
                },
                None => orphan,
            };
            abandon(orphan, &leaving);
        }
        main.metrics.set(&leaving.host, Metric::QueueDepth, 0);
    }
}

const NO_RESPONSE: ExportResponse<'static> = ExportResponse {
    status: None,
    grpc_status: None,
    retry_after: None,
    body: &[],
};

/// No live configuration can send an orphan's spans: they are counted lost.
fn abandon(mut orphan: Box<Orphan>, owner: &Owner) {
    let mut waiting = 0u64;
    while orphan.spans.try_recv().is_ok() {
        waiting += 1;
    }
    let queued = orphan.exporter.queue_len() as u64 + waiting;
    let in_flight = orphan.exporter.in_flight();
    orphan.exporter.abandon(&owner.host, &orphan.metrics);
    for _ in 0..waiting {
        orphan.metrics.inc(&owner.host, Metric::SpansRecorded);
        orphan
            .metrics
            .inc(&owner.host, Metric::SpansDroppedShutdown);
    }
    orphan.metrics.flush(&owner.host);
    if queued > 0 || in_flight > 0 {
        warn!(
            "meshtrace: configuration destroyed with {queued} span(s) queued and {in_flight} \
             export request(s) unanswered, and no other configuration to send them: counted as \
             spans_dropped_shutdown"
        );
    }
}

/// The adopter's tick, on the main thread: an orphan's cancelled batches are retried, its
/// last spans taken, its queue drained; once every answer is in (or the export timeout has
/// passed, the rest counted lost) it is gone.
fn tend_orphans(orphans: &mut Vec<Orphan>, owner: &Owner, now: u64) {
    orphans.retain_mut(|o| {
        if !o.draining {
            for token in std::mem::take(&mut o.cancelled) {
                o.exporter
                    .on_response(token, &NO_RESPONSE, &owner.host, &o.metrics, now);
            }
            while let Ok(h) = o.spans.try_recv() {
                o.exporter
                    .enqueue_encoded(h.span, h.captured, &owner.host, &o.metrics);
            }
            o.exporter.drain(&owner.host, &o.metrics, now);
            o.draining = true;
        }
        let done = o.exporter.drained();
        if !done && o.exporter.drain_overdue(now) {
            o.exporter.abandon(&owner.host, &o.metrics);
        }
        o.metrics.flush(&owner.host);
        !(done || o.exporter.drained())
    });
}

fn delete_scheduler(scheduler: usize) {
    if scheduler != 0 {
        // SAFETY: created by `scheduler_new` for this configuration, deleted once, after the
        // tick thread stopped using it.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
                scheduler as abi::SchedulerPtr,
            );
        }
    }
}

/// The hub's scheduler and its tick: a thread that commits [`EVENT_TICK`] every period, until
/// stopped. Every commit — the tick's and a worker's batch wake-up — happens under the lock
/// that guards the scheduler's address, so once [`Ticker::stop`] or [`Ticker::switch_to`]
/// returns, the old scheduler receives no more commits and may be deleted.
struct Ticker {
    state: Mutex<TickerState>,
    wake: Condvar,
}

struct TickerState {
    stopped: bool,
    scheduler: usize,
}

impl Ticker {
    fn new(scheduler: usize) -> Ticker {
        Ticker {
            state: Mutex::new(TickerState {
                stopped: false,
                scheduler,
            }),
            wake: Condvar::new(),
        }
    }

    fn start(self: &Arc<Self>, period: Duration) -> std::io::Result<JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("meshtrace-tick".to_string())
            .spawn(move || {
                let mut state = lock(&me.state);
                loop {
                    // Stopped before this thread first waited: no wait (a destroy would block
                    // the main thread for a whole period in `join`).
                    if state.stopped {
                        return;
                    }
                    state = match me.wake.wait_timeout(state, period) {
                        Ok((g, _)) => g,
                        Err(poisoned) => poisoned.into_inner().0,
                    };
                    if state.stopped {
                        return;
                    }
                    commit(state.scheduler, EVENT_TICK);
                }
            })
    }

    fn commit(&self, event: u64) {
        let state = lock(&self.state);
        if !state.stopped {
            commit(state.scheduler, event);
        }
    }

    fn scheduler(&self) -> usize {
        lock(&self.state).scheduler
    }

    fn switch_to(&self, scheduler: usize) {
        lock(&self.state).scheduler = scheduler;
    }

    fn stop(&self) {
        lock(&self.state).stopped = true;
        self.wake.notify_all();
    }
}

fn commit(scheduler: usize, event: u64) {
    if scheduler != 0 {
        // SAFETY: the ticker's current scheduler; deleted only after the ticker moved off it.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
                scheduler as abi::SchedulerPtr,
                event,
            );
        }
    }
}

/// What a gRPC export stream delivers (`on_http_filter_config_http_stream_*`); trailers are
/// headers here (both may carry `grpc-status`).
pub enum StreamEvent<'a> {
    Headers(&'a [abi::EnvoyHeader]),
    Data(&'a [abi::EnvoyBuffer]),
    Complete,
    Reset,
}

/// One worker's state for one hub.
pub struct Worker {
    key: u64,
    tracer: Tracer,
    metrics: Metrics,
    ids: RefCell<IdGenerator>,
}

thread_local! {
    static WORKERS: RefCell<Vec<Rc<Worker>>> = const { RefCell::new(Vec::new()) };
}

/// This worker's state for the hub, built the first time (state of hubs retired since is
/// forgotten then).
fn worker_for(hub: &Hub) -> Option<Rc<Worker>> {
    WORKERS.with(|workers| {
        let mut workers = workers.try_borrow_mut().ok()?;
        if let Some(w) = workers.iter().find(|w| w.key == hub.key) {
            return Some(w.clone());
        }
        workers.retain(|w| hub_is_live(w.key));
        let worker = Rc::new(Worker {
            key: hub.key,
            tracer: Tracer::new(hub.config.clone(), hub.node.clone(), &env_var),
            metrics: lock(&hub.metrics_template).clone(),
            ids: RefCell::new(IdGenerator::from_seed(os_seed())),
        });
        workers.push(worker.clone());
        Some(worker)
    })
}

/// One stream's filter.
pub struct Stream {
    /// The hub of the configuration that created the stream, borrowed, not counted: Envoy's
    /// filter holds its configuration (`filter.h`, `DynamicModuleHttpFilter::config_`, a
    /// shared pointer) until after `on_http_filter_destroy`, so the configuration — and its
    /// `Arc<Hub>` — outlives every stream it made. A count per stream would be two atomic
    /// operations on a cache line every worker shares.
    hub: NonNull<Hub>,
    worker: Rc<Worker>,
    state: RequestState,
}

impl Stream {
    pub fn new(config: &ModuleConfig) -> Option<Stream> {
        Some(Stream {
            worker: worker_for(&config.hub)?,
            hub: NonNull::from(&*config.hub),
            state: RequestState::default(),
        })
    }

    fn hub(&self) -> &Hub {
        // SAFETY: the configuration outlives the stream (see `hub`), and its hub with it.
        unsafe { self.hub.as_ref() }
    }

    fn host(&self, filter: abi::FilterEnvoyPtr) -> StreamHost<'_> {
        StreamHost::new(filter, self.hub())
    }

    pub fn on_request_headers(&mut self, filter: abi::FilterEnvoyPtr) {
        let host = self.host(filter);
        let w = &self.worker;
        let Ok(mut ids) = w.ids.try_borrow_mut() else {
            return;
        };
        let state = w.tracer.on_request_headers(&host, &mut ids, &w.metrics);
        drop(ids);
        self.state = state;
    }

    /// `propagation.traceResponse` / `responseRequestId`; nothing by default. Local replies
    /// come through here too.
    pub fn on_response_headers(&mut self, filter: abi::FilterEnvoyPtr) {
        self.state.on_response_headers(&self.host(filter));
    }

    /// `on_http_filter_stream_complete`: before the access log, after the response.
    pub fn on_stream_complete(&mut self, filter: abi::FilterEnvoyPtr) {
        let pending = self.state.pending.take();
        let host = self.host(filter);
        let w = &self.worker;
        let finished = pending.and_then(|pending| w.tracer.end(&host, pending, &w.metrics));
        if let Some(finished) = finished {
            let captured = finished.captured;
            for span in finished {
                self.hub().hand_over(span, captured, &host, &w.metrics);
            }
        }
        // The request path's deferred counts to the atomic tallies (no Envoy call).
        w.metrics.flush(&host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a configuration that leaves `exporter.maxBatchSize` unset gets the native default.
    #[test]
    fn the_native_batch_default_applies_only_where_the_config_sets_none() {
        #[rustfmt::skip]
        let cases: [(&str, bool, bool, &str); 8] = [
            ("", false, false, "the default configuration"),
            ("{}", false, false, "an empty object"),
            (r#"{"exporter": {"maxQueueSize": 4096}}"#, false, false, "other exporter keys"),
            (r#"{"exporter": {"maxBatchSize": 512}}"#, false, true, "set at the top"),
            (r#"{"exporter": {"maxBatchSize": null}}"#, false, false, "null reads as absent, as in the core"),
            (r#"{"gateway": {"exporter": {"maxBatchSize": 64}}}"#, true, true, "a gateway's own block"),
            (r#"{"gateway": {"exporter": {"maxBatchSize": 64}}}"#, false, false, "the gateway block at a sidecar"),
            ("not json", false, false, "unreadable (the core rejects it first)"),
        ];
        for (json, gateway, set, reason) in cases {
            assert_eq!(
                sets_max_batch_size(json.as_bytes(), gateway),
                set,
                "{reason}"
            );
        }
    }
}
