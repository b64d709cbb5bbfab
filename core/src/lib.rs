//! meshtrace's pure core: everything the plugin decides, with no host calls. Two adapters feed
//! it through the [`host::Host`] trait and hand every decision here: the proxy-wasm adapter (the
//! `meshtrace` crate, `src/`, below) and the native one (an Envoy dynamic module, `native/`: the
//! same steps from its own hooks, a tracer per worker, spans encoded on the worker —
//! `export/encoded.rs` — and exported from Envoy's main thread; see docs/native.md).
//!
//! # The request lifecycle
//!
//! One VM per Envoy worker thread; one root context per VM, one HTTP context per request.
//!
//! 1. **Configure** (`src/filter.rs` `Root::on_configure`): [`config::Config::parse`] reads the
//!    `pluginConfig` (an error names the key and rejects the configuration);
//!    [`node::NodeInfo::read`] reads Istio's node metadata once; [`tracer::Tracer::new`] computes
//!    everything static — service name ([`naming::service_name`]), resource ([`resource`]),
//!    sampler ([`sampling::Sampler::new`]), custom tags — and [`export::Exporter::new`] the
//!    exporter, its settings derived once (`export/settings.rs`); [`metrics::Metrics::define`]
//!    defines the counters.
//! 2. **Request headers** (`Request::on_http_request_headers` →
//!    [`tracer::Tracer::on_request_headers`]), in four steps, each a `Tracer` method of that
//!    name: *extract* ([`propagation::extract`]: W3C, B3, baggage), *decide*
//!    ([`sampling::Sampler::decide`] and this hop's new span id), *request id* (forward or
//!    generate `x-request-id`, [`propagation::request_id`]), *inject*
//!    ([`propagation::inject`]). Then the context is *published* (`publish`) as filter state
//!    (`meshtrace.trace_id`, …; `propagation.publishContext`) for every request, sampled or not.
//!    The request keeps a [`tracer::RequestState`]: a [`tracer::Pending`] — an
//!    [`tracer::ActiveSpan`] when recorded; when unsampled and capture is on, a small
//!    [`tracer::Unsampled`] record (the header map the host handed over, kept for a capture's
//!    attributes) — and the response headers to add
//!    (`server-timing`'s W3C `trace` metric, appended; `x-request-id`) when configured.
//!    Then **response headers** (`Request::on_http_response_headers`, local replies included):
//!    [`tracer::RequestState::on_response_headers`] writes those headers; nothing by default. A
//!    gRPC request's status and message are kept from the response's trailers (or a
//!    trailers-only response's headers) by the Wasm adapter (`GrpcResponse` in
//!    `src/proxy_host.rs`), which cannot read them at the stream's end.
//! 3. **End of stream** — the stream ended (Wasm: `proxy_on_done`, `Request::on_done`, after the
//!    access log; `proxy_on_log` is not exported, one callback fewer per request, and Envoy shows
//!    no header map there — the status comes from `response.code`, [`host::Host::response_status`];
//!    native: `on_stream_complete`) → [`tracer::Tracer::end`]: an unsampled
//!    request is captured when it failed or was slow ([`sampling::capture`], read one fact at a
//!    time, under its own cap; `is_capturable`); for a recorded or captured one
//!    [`tracer::Tracer::read_outcome`] asks the host's stream facts (status, gRPC status, flags,
//!    cluster, addresses; the span's kind — most in one [`host::Host::stream_facts`] call; all of
//!    them, the status included, when the host answers them at once:
//!    [`host::Host::answers_facts_at_once`], the Wasm adapter through Envoy's CEL, prepared per
//!    configuration from [`tracer::Tracer::end_of_stream_facts`]),
//!    [`tracer::Tracer::finish`] builds the [`span::Span`] — attributes one function per
//!    convention, in order of importance (`tracer/attributes.rs`; a `SpanRole` says whether it
//!    stands for Envoy's downstream or upstream span), name from [`naming::span_name`], status
//!    from the error rule, `is_error` in `tracer/outcome.rs` (gRPC codes in [`grpc`]) — and at a
//!    gateway its CLIENT child, whose id step 2 sent upstream; at a waypoint the source's CLIENT
//!    span above it, each under its service's resource (`tracer/waypoint.rs`). Then
//!    [`export::Exporter::enqueue`] (captured spans: `enqueue_captured`, a share of their own)
//!    encodes each ([`otlp::BatchEncoder::encode_span`]) into the bounded queue
//!    (`export/queue.rs`); a span that completes a batch sends it at once through the sender
//!    (`export/sender.rs`; the call is the root context's, so its answer comes to the root).
//! 4. **Tick** (`Root::on_tick`, every `exporter.flushInterval`, at most 200 ms):
//!    [`export::Exporter::on_tick`] sends partial batches (once per flush interval) and retries
//!    through the collector's Envoy cluster; the answer comes back in
//!    `Root::on_http_call_response` → [`export::Exporter::on_response`] (the sender reads it —
//!    [`export::ExportResponse`] — and retries, backs off, drops and counts);
//!    [`metrics::Metrics::flush`] hands the request path's deferred counters to the host.
//!
//! # Modules
//!
//! The crate's public surface is what the adapter, the benches, the property tests and the fuzz
//! targets use; everything else is `pub(crate)`. Links reach crate-private items too: read them
//! with `cargo doc -p meshtrace-core --document-private-items --open`.
//!
//! | module | concern |
//! |---|---|
//! | [`config`] | the `pluginConfig` contract: types, defaults, the key-path reader and its errors (its own crate, `core/config/`, built for size) |
//! | [`node`] | Istio node metadata (asked as [`host::NodeFact`]s once per configuration), listener direction |
//! | [`istio`] | Istio's cluster names (`inbound|…`, `outbound|…`, passthrough; ambient `inbound-vip|…`, `main_internal`, `encap`), endpoint `istio.workload`, SPIFFE principals, `peer.service`, Envoy's response flags |
//! | [`propagation`] | W3C `traceparent`/`tracestate`, B3, baggage, `x-request-id`: pure parsers and writers |
//! | [`context`], [`ids`] | the span context that travels, trace/span ids and their generator |
//! | [`sampling`] | the decision: parent, rules (and overrides), probes, consistent probability, rate cap; [`sampling::capture`] error and latency capture |
//! | [`naming`] | the service name (Istio's `tracingServiceName`) and span names |
//! | [`http`] | one parser of `:authority` and `:path` for rules and attributes |
//! | [`grpc`] | which requests are gRPC (Envoy's test) and what their status codes mean, for the span's status, `error.type`, Envoy's `error` tag and error capture |
//! | [`tracer`] | the request path above; [`tracer::Outcome`] and the error rule (`is_error`) in `tracer/outcome.rs`; capture in `tracer/capture.rs`; the span's content (Istio's and Envoy's tags, semconv) in `tracer/attributes.rs`; ambient waypoints (source/destination pair, peers, the CLIENT mark) in `tracer/waypoint.rs`, their tests beside it (`tracer/waypoint/tests.rs`, as `tracer/capture/tests.rs`) |
//! | [`span`] | the finished span and its attribute limits |
//! | [`resource`] | the OTel resource, once per configuration |
//! | [`otlp`], [`export`] | OTLP encoding (one `ResourceSpans` per resource); export as OpenTelemetry's SDK divides it: the `Exporter` (the batch span processor: schedule, retirement) over a queue (`export/queue.rs`: sampled and captured lanes and their bytes, batching), a sender (`export/sender.rs`: in flight, retries, back-off, answers), settings derived once (`export/settings.rs`), the cache of peer resources (`export/resources.rs`) and spans encoded where they finish for the native adapter's exporter (`export/encoded.rs`) |
//! | `clock` | the core's time: `u64` nanoseconds since the epoch, and durations in it |
//! | [`metrics`] | the plugin's Envoy stats, deferred to the tick |
//! | [`host`], [`headers`] | the `Host` trait each adapter implements — headers, filter state, calls, metrics and named facts ([`host::NodeFact`], [`host::StreamFact`], asked together as a [`host::FactSet`] so an adapter can answer them in one crossing) — its `MockHost`; header maps |

// The map above links the crate-private steps of the lifecycle on purpose.
#![allow(rustdoc::private_intra_doc_links)]

/// The configuration contract lives in its own crate (`core/config/`), built for size: see its
/// `Cargo.toml`.
pub use meshtrace_config as config;
pub(crate) mod clock;
pub mod context;
pub mod export;
pub(crate) mod grpc;
pub mod headers;
pub mod host;
pub(crate) mod http;
pub mod ids;
pub(crate) mod istio;
pub mod metrics;
pub(crate) mod naming;
pub mod node;
pub mod otlp;
pub mod propagation;
pub(crate) mod resource;
pub mod sampling;
pub mod span;
pub mod tracer;

/// The plugin version, logged once per VM.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
