//! The native filter over Envoy's threading model (Envoy `source/extensions/filters/http/
//! dynamic_modules/filter_config.cc`): one configuration object per filter configuration,
//! created and destroyed on the main thread and shared by every worker; one filter per stream,
//! on the worker that owns the stream.
//!
//! - **Request path, per worker, without locks.** Each worker builds its own [`Worker`] — the
//!   core's [`Tracer`], [`Metrics`] and id generator — the first time it sees a configuration,
//!   and keeps it in a thread-local list. A stream reads and writes headers and filter state
//!   through [`StreamHost`]; its counters go to atomic tallies.
//! - **Export, on the main thread.** Configuration-level callouts live as long as the
//!   configuration (a stream-level callout dies with its stream), and Envoy's table of them
//!   is the main thread's, so the [`Exporter`] lives there. A finished span crosses over by a
//!   channel (a lock-free send); the configuration's scheduler wakes the main thread when a
//!   batch is full, and a small timer thread commits a tick every flush interval (the ABI has no
//!   timer for HTTP filters), where partial batches, retries and the counters go out.
//! - **Nothing lost uncounted.** A span that cannot cross (the channel holds a queue's worth)
//!   is counted `spans_dropped_queue_full`; when Envoy destroys the configuration it cancels
//!   every callout still pending (`~DynamicModuleHttpFilterConfig`), so what is still queued or
//!   unanswered then is counted `spans_dropped_shutdown` before the counters' last flush.

use crate::abi;
use crate::host::{now_unix_nanos, ConfigHost, EnvoyStat, StreamHost};
use crate::logger;
use log::{error, info, warn};
use meshtrace_core::config::{percentage, Config, ExportProtocol};
use meshtrace_core::export::{ExportResponse, Exporter, MAX_RESPONSE_BODY};
use meshtrace_core::host::{Host, MetricKind};
use meshtrace_core::ids::IdGenerator;
use meshtrace_core::metrics::{Metric, Metrics};
use meshtrace_core::node::NodeInfo;
use meshtrace_core::span::Span;
use meshtrace_core::tracer::{RequestState, Tracer};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Scheduler events (`envoy_dynamic_module_on_http_filter_config_scheduled`).
pub const EVENT_TICK: u64 = 1;
pub const EVENT_BATCH_READY: u64 = 2;

/// Panics caught at the FFI boundary since the module was loaded (all configurations).
pub static PANICS: AtomicU64 = AtomicU64::new(0);
/// Configurations alive (for the harness: every one created is destroyed).
pub static LIVE_CONFIGS: AtomicUsize = AtomicUsize::new(0);

static NEXT_CONFIG_ID: AtomicU64 = AtomicU64::new(1);

/// A span on its way from a worker to the main thread's exporter.
struct Handoff {
    span: Span,
    captured: bool,
}

/// What one configuration shares between the main thread and every worker.
pub struct Shared {
    id: u64,
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
    batch_size: usize,
    /// The configuration scheduler (`http_filter_config_scheduler_new`), as an address.
    scheduler: usize,
    retired: AtomicBool,
    main: Mutex<MainOnly>,
    ticker: Arc<Ticker>,
    tick_thread: Mutex<Option<JoinHandle<()>>>,
}

/// The main thread's part: the exporter and what feeds it.
struct MainState {
    host: ConfigHost,
    metrics: Metrics,
    exporter: Exporter,
    spans: Receiver<Handoff>,
    panic_stat: Option<EnvoyStat>,
    panics_reported: u64,
}

/// `MainState` holds `Rc`s (the exporter's encoded resources) and Envoy's configuration pointer,
/// so it is not `Send` by itself. It is only ever touched under `Shared::main`'s mutex — by the
/// main thread's hooks, and once by the configuration's destruction — and none of its `Rc`s is
/// ever handed out of it, so no two threads touch one of their counts at once.
struct MainOnly(MainState);
// SAFETY: see above — every access is serialized by the mutex that owns the value.
unsafe impl Send for MainOnly {}

/// The module's configuration object: what `on_http_filter_config_new` returns to Envoy.
pub struct ModuleConfig {
    pub shared: Arc<Shared>,
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

/// `on_http_filter_config_new`, on the main thread. `None` rejects the configuration (Envoy
/// refuses the listener), after one error naming the key.
pub(crate) fn config_new(config_envoy: abi::ConfigEnvoyPtr, bytes: &[u8]) -> Option<ModuleConfig> {
    logger::refresh_level();
    let host = ConfigHost::new(config_envoy);
    let node = NodeInfo::read(&host);
    let config = match Config::parse_for(bytes, node.is_gateway()) {
        Ok(config) => config,
        Err(e) => {
            error!("{e}");
            return None;
        }
    };
    let exporting = config.exporter.protocol != ExportProtocol::None;
    let tracer = Tracer::new(config.clone(), node.clone(), &env_var);
    let exporter = Exporter::new(
        &tracer.config.exporter,
        &tracer.config.limits,
        tracer.resource.clone(),
    );
    // Envoy freezes stat creation once this hook returns: every stat is defined now.
    let metrics = Metrics::define(&host);
    let panic_stat = host.define_stat(MetricKind::Counter, "meshtrace_native_panics");
    let tallies = (0..host.stats.borrow().len())
        .map(|_| AtomicU64::new(0))
        .collect();
    info!(
        "meshtrace configured: service {}, sampling {}%, export {}",
        tracer.service_name,
        percentage(tracer.config.random_sampling_percentage),
        if exporting {
            tracer.config.exporter.cluster.as_str()
        } else {
            "off"
        }
    );
    let period = exporter.tick_period();
    let (tx, rx) = mpsc::channel();
    // SAFETY: the configuration's pointer, on the main thread during its creation.
    let scheduler = unsafe {
        abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(config_envoy)
    };
    let ticker = Arc::new(Ticker::default());
    let shared = Arc::new(Shared {
        id: NEXT_CONFIG_ID.fetch_add(1, Ordering::Relaxed),
        max_waiting: config.exporter.max_queue_size.max(1),
        batch_size: config.exporter.max_batch_size.max(1),
        config,
        node,
        tallies,
        metrics_template: Mutex::new(metrics.clone()),
        spans: tx,
        waiting: AtomicUsize::new(0),
        scheduler: scheduler as usize,
        retired: AtomicBool::new(false),
        main: Mutex::new(MainOnly(MainState {
            host,
            metrics,
            exporter,
            spans: rx,
            panic_stat,
            panics_reported: PANICS.load(Ordering::Relaxed),
        })),
        ticker: ticker.clone(),
        tick_thread: Mutex::new(None),
    });
    if !scheduler.is_null() {
        match ticker.start(scheduler as usize, period) {
            Ok(handle) => *lock(&shared.tick_thread) = Some(handle),
            Err(e) => warn!("meshtrace: no tick thread ({e}): partial batches wait for full ones"),
        }
    } else {
        warn!("meshtrace: Envoy gave no configuration scheduler: spans are not exported");
    }
    LIVE_CONFIGS.fetch_add(1, Ordering::Relaxed);
    Some(ModuleConfig { shared })
}

impl Shared {
    fn wake(&self, event: u64) {
        if self.scheduler != 0 {
            // SAFETY: the scheduler lives until the configuration's destruction, which happens
            // after every stream of it (each holds the configuration) and joins the tick thread.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
                    self.scheduler as abi::SchedulerPtr,
                    event,
                );
            }
        }
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
        if self.spans.send(Handoff { span, captured }).is_err() {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            metrics.inc(host, Metric::SpansRecorded);
            metrics.inc(host, Metric::SpansDroppedShutdown);
            return;
        }
        if waiting % self.batch_size == 0 {
            self.wake(EVENT_BATCH_READY);
        }
    }

    /// The main thread: spans waiting in the channel go to the exporter (which sends full
    /// batches at once).
    fn take_handoffs(&self, main: &mut MainState) {
        while let Ok(h) = main.spans.try_recv() {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            if h.captured {
                main.exporter
                    .enqueue_captured(h.span, &main.host, &main.metrics);
            } else {
                main.exporter.enqueue(h.span, &main.host, &main.metrics);
            }
        }
    }

    /// The request path's tallies, the main thread's own counts and the panics caught go to
    /// Envoy's stats.
    fn flush_counters(&self, main: &mut MainState) {
        for (id, tally) in self.tallies.iter().enumerate() {
            let n = tally.swap(0, Ordering::Relaxed);
            if n > 0 {
                main.host.increment_metric(
                    u32::try_from(id).unwrap_or(u32::MAX),
                    i64::try_from(n).unwrap_or(i64::MAX),
                );
            }
        }
        main.metrics.flush(&main.host);
        let panics = PANICS.load(Ordering::Relaxed);
        if let Some(stat) = main.panic_stat {
            main.host
                .add_to_stat(stat, panics.saturating_sub(main.panics_reported));
        }
        main.panics_reported = panics;
    }

    /// `on_http_filter_config_scheduled`, on the main thread.
    pub fn on_scheduled(&self, event: u64) {
        let mut guard = lock(&self.main);
        let main = &mut guard.0;
        self.take_handoffs(main);
        if event == EVENT_TICK {
            logger::refresh_level();
            let now = now_unix_nanos();
            main.exporter.on_tick(&main.host, &main.metrics, now);
            self.flush_counters(main);
            let depth = main.exporter.queue_len() + self.waiting.load(Ordering::Relaxed);
            main.metrics
                .set(&main.host, Metric::QueueDepth, depth as u64);
        }
    }

    /// `on_http_filter_config_http_callout_done`, on the main thread: the collector's answer.
    pub fn on_callout_done(
        &self,
        callout_id: u64,
        result: u32,
        headers: &[abi::EnvoyHeader],
        body_chunks: &[abi::EnvoyBuffer],
    ) {
        let mut guard = lock(&self.main);
        let main = &mut guard.0;
        let Some(token) = main.host.take_token(callout_id) else {
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
        let delivered = result == abi::callout_result::SUCCESS;
        let status = delivered
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
        let now = now_unix_nanos();
        main.exporter.on_response(
            token,
            &ExportResponse {
                status,
                grpc_status,
                retry_after: retry_after.as_deref(),
                body: &body,
            },
            &main.host,
            &main.metrics,
            now,
        );
    }

    /// `on_http_filter_config_destroy`: Envoy cancels every pending callout right after, so
    /// what is still queued or unanswered is counted lost, and the counters flushed a last time.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.ticker.stop();
        if let Some(handle) = lock(&self.tick_thread).take() {
            let _ = handle.join();
        }
        {
            let mut guard = lock(&self.main);
            let main = &mut guard.0;
            self.take_handoffs(main);
            let queued = main.exporter.queue_len();
            let in_flight = main.exporter.in_flight();
            main.exporter.abandon(&main.host, &main.metrics);
            self.flush_counters(main);
            main.metrics.set(&main.host, Metric::QueueDepth, 0);
            if queued + in_flight > 0 {
                warn!(
                    "meshtrace: configuration destroyed with {queued} span(s) queued and \
                     {in_flight} export request(s) unanswered: counted as spans_dropped_shutdown"
                );
            }
        }
        if self.scheduler != 0 {
            // SAFETY: created in `config_new`; the tick thread is joined, and no stream of this
            // configuration is left to commit.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
                    self.scheduler as abi::SchedulerPtr,
                );
            }
        }
        LIVE_CONFIGS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The tick: a thread that commits [`EVENT_TICK`] to the configuration scheduler every period,
/// until stopped. It commits while holding the stop flag's lock, so once [`Ticker::stop`]
/// returns it commits no more.
#[derive(Default)]
struct Ticker {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Ticker {
    fn start(
        self: &Arc<Self>,
        scheduler: usize,
        period: Duration,
    ) -> std::io::Result<JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("meshtrace-tick".to_string())
            .spawn(move || {
                let mut stopped = lock(&me.stopped);
                loop {
                    stopped = match me.wake.wait_timeout(stopped, period) {
                        Ok((g, _)) => g,
                        Err(poisoned) => poisoned.into_inner().0,
                    };
                    if *stopped {
                        return;
                    }
                    // SAFETY: the scheduler is deleted only after `stop` and a join.
                    unsafe {
                        abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
                            scheduler as abi::SchedulerPtr,
                            EVENT_TICK,
                        );
                    }
                }
            })
    }

    fn stop(&self) {
        *lock(&self.stopped) = true;
        self.wake.notify_all();
    }
}

/// One worker's state for one configuration.
pub struct Worker {
    shared: Arc<Shared>,
    tracer: Tracer,
    metrics: Metrics,
    ids: RefCell<IdGenerator>,
}

thread_local! {
    static WORKERS: RefCell<Vec<Rc<Worker>>> = const { RefCell::new(Vec::new()) };
}

/// This worker's state for the configuration, built the first time (configurations retired
/// since are forgotten then).
fn worker_for(shared: &Arc<Shared>) -> Option<Rc<Worker>> {
    WORKERS.with(|workers| {
        let mut workers = workers.try_borrow_mut().ok()?;
        if let Some(w) = workers.iter().find(|w| w.shared.id == shared.id) {
            return Some(w.clone());
        }
        workers.retain(|w| !w.shared.retired.load(Ordering::Relaxed));
        let worker = Rc::new(Worker {
            shared: shared.clone(),
            tracer: Tracer::new(shared.config.clone(), shared.node.clone(), &env_var),
            metrics: lock(&shared.metrics_template).clone(),
            ids: RefCell::new(IdGenerator::from_seed(os_seed())),
        });
        workers.push(worker.clone());
        Some(worker)
    })
}

/// One stream's filter.
pub struct Stream {
    worker: Rc<Worker>,
    state: RequestState,
}

impl Stream {
    pub fn new(config: &ModuleConfig) -> Option<Stream> {
        Some(Stream {
            worker: worker_for(&config.shared)?,
            state: RequestState::default(),
        })
    }

    fn host(&self, filter: abi::FilterEnvoyPtr) -> StreamHost<'_> {
        StreamHost {
            filter,
            shared: &self.worker.shared,
        }
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
                w.shared.hand_over(span, captured, &host, &w.metrics);
            }
        }
        // The request path's deferred counts to the atomic tallies (no Envoy call).
        w.metrics.flush(&host);
    }
}
