//! Capture: recording a request that was *not* sampled because it failed (`captureErrors`) or was
//! slow (`captureSlowerThan`). Every proxy sends a fresh span id on even for unsampled requests,
//! so the spans captured along a failing path link up, parent to child, into one partial trace.
//!
//! The decision is made when the stream ends, from what the response says; each fact is a host
//! call, so [`CapturePolicy::is_capturable`] asks for them one at a time and stops at the first that
//! settles it: on a 2xx answer of a plain HTTP request only `:status` is read.

use super::TokenBucket;
use crate::config::{CaptureErrors, SamplingConfig};
use crate::grpc;

/// Why an unsampled request was recorded: the span's `meshtrace.capture` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CaptureReason {
    Error,
    Latency,
}

impl CaptureReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CaptureReason::Error => "error",
            CaptureReason::Latency => "latency",
        }
    }
}

/// What the response says, each fact but the status behind a host call made on demand.
pub(crate) struct ResponseReads<'a> {
    /// `:status`; `None` when no response was sent (reset, timeout before headers).
    pub status: Option<u16>,
    /// `response.grpc_status`; `None` for a request that is not gRPC (no host call then).
    pub grpc_status: &'a dyn Fn() -> Option<u32>,
    /// `response.flags`, Envoy's response-flag bits (0: none).
    pub response_flags: &'a dyn Fn() -> u64,
    /// Whether the span is a CLIENT span.
    pub is_client: &'a dyn Fn() -> bool,
}

/// Error and latency capture, compiled once per configuration.
#[derive(Debug)]
pub(crate) struct CapturePolicy {
    errors: Option<CaptureErrors>,
    /// `maxCapturedPerSecond`, per worker, apart from the sampling cap.
    cap: TokenBucket,
}

impl CapturePolicy {
    pub(crate) fn new(sampling: &SamplingConfig) -> CapturePolicy {
        CapturePolicy {
            errors: sampling.capture_errors.clone(),
            cap: TokenBucket::new(sampling.max_captured_per_second),
        }
    }

    pub(crate) fn captures_errors(&self) -> bool {
        self.errors.is_some()
    }

    /// Whether the response is an error worth capturing: no response at all; a configured status
    /// (`statuses`, default `5xx`); a gRPC server fault ([`grpc::is_server_fault`]) under an
    /// HTTP 2xx; an Envoy local reply (4xx/5xx with response flags, e.g. `NR`, `RL`, `UAEX`,
    /// `UF`); a configured `clientStatuses` status on a CLIENT span.
    ///
    /// The span's status is another question, answered by the tracer's one error rule
    /// (`tracer/outcome.rs` `is_error`, OTel semantic conventions) once the span is recorded.
    /// This one is asked of every unsampled request, so it reads the response alone, one fact at
    /// a time, and the span's kind last: a gRPC status counts only as a server fault under a
    /// 2xx (the kind's rule for CLIENT spans would cost a property read on every gRPC request),
    /// a gRPC call without a status is not captured, Envoy's own 4xx replies are.
    pub(crate) fn is_capturable(&self, response: &ResponseReads<'_>) -> bool {
        let Some(errors) = &self.errors else {
            return false;
        };
        let Some(status) = response.status.filter(|s| *s != 0) else {
            return true;
        };
        if errors.statuses.iter().any(|c| c.matches(status)) {
            return true;
        }
        if status < 400 {
            // gRPC carries its status in trailers under HTTP 200; Envoy's local replies to gRPC
            // requests too (`Grpc::Utility::sendLocalReply`).
            return (200..300).contains(&status)
                && (response.grpc_status)().is_some_and(grpc::is_server_fault);
        }
        (response.response_flags)() != 0
            || (errors.client_statuses.iter().any(|c| c.matches(status)) && (response.is_client)())
    }

    /// Takes a token of `maxCapturedPerSecond`; `false`: over the cap, not captured.
    pub(crate) fn admit(&self, now_nanos: u64) -> bool {
        self.cap.take(now_nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::cell::Cell;

    fn policy(json: &str) -> CapturePolicy {
        CapturePolicy::new(&Config::parse(json.as_bytes()).unwrap().sampling)
    }

    /// (is_capturable, host calls made after `:status`).
    fn judge(
        p: &CapturePolicy,
        status: Option<u16>,
        grpc: Option<u32>,
        flags: u64,
        client: bool,
    ) -> (bool, u32) {
        let calls = Cell::new(0);
        let count = || calls.set(calls.get() + 1);
        let error = p.is_capturable(&ResponseReads {
            status,
            grpc_status: &|| {
                count();
                grpc
            },
            response_flags: &|| {
                count();
                flags
            },
            is_client: &|| {
                count();
                client
            },
        });
        (error, calls.get())
    }

    #[test]
    #[rustfmt::skip]
    fn what_is_an_error_and_what_it_costs_to_know() {
        let default = policy("{}");
        let custom = policy(r#"{"sampling": {"captureErrors": {"statuses": ["5xx", "429"], "clientStatuses": ["4xx"]}}}"#);
        let off = policy(r#"{"sampling": {"captureErrors": false}}"#);
        let cases = [
            (&default, Some(200), None,     0,    false, false, 1, "a plain 200: one more read (gRPC status: none for non-gRPC, no host call in practice)"),
            (&default, Some(302), None,     0,    false, false, 0, "a 3xx: nothing more read"),
            (&default, Some(503), None,     0,    false, true,  0, "5xx by status alone"),
            (&default, None,      None,     0,    false, true,  0, "no response at all (reset)"),
            (&default, Some(0),   None,     0,    false, true,  0, "status 0 is no response"),
            (&default, Some(200), Some(14), 0,    false, true,  1, "gRPC UNAVAILABLE under HTTP 200"),
            (&default, Some(200), Some(5),  0,    false, false, 1, "gRPC NOT_FOUND is the caller's business"),
            (&default, Some(200), Some(0),  0,    false, false, 1, "gRPC OK"),
            (&default, Some(404), None,     0,    true,  false, 1, "an application 404: flags read, no client statuses configured"),
            (&default, Some(404), None,     0x40, false, true,  1, "a local reply with a response flag (NR)"),
            (&default, Some(429), None,     0,    false, false, 1, "429 is not an error by default"),
            (&custom,  Some(429), None,     0,    false, true,  0, "429 configured"),
            (&custom,  Some(404), None,     0,    true,  true,  2, "4xx on a CLIENT span, configured: flags then kind"),
            (&custom,  Some(404), None,     0,    false, false, 2, "4xx on a SERVER span stays the client's fault"),
            (&off,     Some(503), None,     0,    false, false, 0, "captureErrors false"),
            (&off,     None,      None,     0,    false, false, 0, "captureErrors false: not even resets"),
        ];
        for (p, status, grpc, flags, client, want, reads, reason) in cases {
            assert_eq!(judge(p, status, grpc, flags, client), (want, reads), "{reason}");
        }
    }

    /// An unsampled request keeps a record when errors are captured or a latency threshold
    /// applies to it (`Tracer::keep_unsampled`); the threshold comes with the decision.
    #[test]
    fn errors_are_captured_by_default_latency_where_a_threshold_applies() {
        use crate::headers::HeaderMap;
        use crate::ids::TraceId;
        use crate::sampling::{ParentInfo, RequestInfo, Sampler};
        assert!(
            policy("{}").captures_errors(),
            "errors are captured by default"
        );
        let rule_only = r#"{"sampling": {"captureErrors": false, "rules": [{"sample": "never", "captureSlowerThan": "1s"}]}}"#;
        assert!(!policy(rule_only).captures_errors());
        let h = HeaderMap::new();
        let request = RequestInfo {
            method: "GET",
            path: "/",
            host: "",
            headers: &h,
        };
        let sampler = Sampler::new(&Config::parse(rule_only.as_bytes()).unwrap());
        let decision = sampler.decide(TraceId([1; 16]), &ParentInfo::default(), &request, 0);
        assert_eq!(
            decision.capture_slower_than,
            Some(1_000_000_000),
            "a rule's threshold enables latency capture"
        );
        assert!(!policy(r#"{"sampling": {"captureErrors": false}}"#).captures_errors());
    }

    #[test]
    fn the_cap_bounds_captures_per_second() {
        let p = policy(r#"{"sampling": {"maxCapturedPerSecond": 3}}"#);
        let admitted = (0..10).filter(|_| p.admit(1_000)).count();
        assert_eq!(admitted, 3, "a burst gets one second's worth");
        assert!(p.admit(1_000 + 400_000_000), "tokens come back with time");
        let none = policy(r#"{"sampling": {"maxCapturedPerSecond": 0}}"#);
        assert!(!none.admit(1_000), "0 captures nothing");
    }
}
