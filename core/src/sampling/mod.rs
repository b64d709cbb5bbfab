//! Sampling: whether a request's trace is recorded, decided so that every hop agrees.
//!
//! Order of precedence (first that applies decides):
//! 1. a trusted force header or B3 debug flag → sampled (`Forced`);
//! 2. the first matching rule with `"parent": "override"` → always, never or its percentage,
//!    whatever the incoming flag says (`Rule`; mid-chain sampling, see [`Sampler::decide`]);
//! 3. a trusted incoming decision (W3C sampled flag, B3 `1`/`0`) → followed (`Parent`);
//! 4. the first matching [`SamplingRule`](crate::config::SamplingRule) → always, never or its percentage (`Rule`);
//! 5. Kubernetes probes and metric scrapes → not sampled (`Probe`), when `skipProbes`;
//! 6. `randomSamplingPercentage` (`Percentage`).
//!
//! The decision also says which latency threshold applies to the request if it is not sampled
//! (`captureSlowerThan`, the matching rule's or the global one): see [`capture`].
//!
//! Percentages use OpenTelemetry consistent probability sampling (OTel specification, "TraceState:
//! Probability Sampling"): the decision compares the trace's 56-bit randomness R (explicit
//! `ot=rv:` or the rightmost 56 bits of the trace id) with a rejection threshold T, sampling iff
//! R ≥ T. It is a pure function of the trace, so proxies at one percentage agree, and a higher
//! percentage samples a superset of a lower one. Locally sampled traces carry `ot=th:` so
//! collectors and backends can compute adjusted counts. Finally a token bucket
//! (`maxTracesPerSecond`) caps what the percentage and rules let through.

pub(crate) mod capture;
mod ot;
mod rules;

pub(crate) use self::ot::{threshold_for_percentage, OtValue};

use self::rules::{is_probe, Rule};
use crate::clock::nanos;
use crate::config::Config;
use crate::headers::HeaderMap;
use crate::ids::TraceId;
use std::cell::Cell;

/// Why a decision was made; reported as metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Parent,
    Percentage,
    Rule,
    Probe,
    Cap,
    Forced,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub sampled: bool,
    pub reason: Reason,
    /// The `ot` tracestate value to send on (`None`: no `ot` entry).
    pub ot: Option<String>,
    /// An override rule sampled a trace the trusted parent did not: recording starts here,
    /// mid-trace (the span says so).
    pub starts_mid_trace: bool,
    /// The `captureSlowerThan` that applies to this request, in nanoseconds.
    pub capture_slower_than: Option<u64>,
}

/// What the incoming request said about sampling.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParentInfo<'a> {
    /// The incoming decision (W3C sampled flag, B3 sampling state); `None` = none was made.
    pub sampled: Option<bool>,
    /// B3 debug flag (`X-B3-Flags: 1`, `b3: …-d`).
    pub debug: bool,
    /// The incoming `ot` tracestate value.
    pub ot: Option<&'a str>,
    /// Fresh randomness for an untrusted incoming trace (see [`Sampler::decide`]).
    pub local_randomness: Option<u64>,
}

/// The request attributes rules match on.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub headers: &'a HeaderMap,
}

#[derive(Debug)]
pub struct Sampler {
    trust_incoming: bool,
    force_header: Option<String>,
    skip_probes: bool,
    /// Rejection threshold of `randomSamplingPercentage`; `None` never samples.
    threshold: Option<u64>,
    rules: Vec<Rule>,
    /// Some rule must be matched even when a parent decides: it overrides the parent or sets
    /// its own `captureSlowerThan`. Otherwise rules are matched only when they decide.
    match_rules_first: bool,
    capture_slower_than: Option<u64>,
    cap: Option<TokenBucket>,
}

impl Sampler {
    pub fn new(config: &Config) -> Sampler {
        let s = &config.sampling;
        let rules: Vec<Rule> = s.rules.iter().map(Rule::new).collect();
        Sampler {
            trust_incoming: s.trust_incoming,
            force_header: s.force_header.clone(),
            skip_probes: s.skip_probes,
            threshold: threshold_for_percentage(config.random_sampling_percentage),
            match_rules_first: rules
                .iter()
                .any(|r| r.overrides_parent || r.capture_slower_than.is_some()),
            rules,
            capture_slower_than: s.capture_slower_than.map(nanos),
            cap: s.max_traces_per_second.map(TokenBucket::new),
        }
    }

    /// Whether [`Sampler::decide`] needs the time (for the rate cap).
    pub(crate) fn has_rate_cap(&self) -> bool {
        self.cap.is_some()
    }

    /// Decides for a request of trace `trace_id`. `now_nanos` feeds the rate cap (and is
    /// ignored without one).
    ///
    /// When incoming context is not trusted, the client's `ot` entry (which could carry a chosen
    /// `rv`) is discarded; if `parent.local_randomness` is given it becomes the trace's explicit
    /// `rv` (a client also chooses its trace id), so hops downstream still agree.
    pub fn decide(
        &self,
        trace_id: TraceId,
        parent: &ParentInfo<'_>,
        request: &RequestInfo<'_>,
        now_nanos: u64,
    ) -> Decision {
        let mut ot = if self.trust_incoming {
            OtValue::parse(parent.ot.unwrap_or(""))
        } else {
            let mut fresh = OtValue::default();
            if let Some(r) = parent.local_randomness {
                fresh.set_randomness(r);
            }
            fresh
        };
        let randomness = ot.randomness().unwrap_or_else(|| trace_id.randomness56());
        let first_match = || self.rules.iter().find(|r| r.matches(request));
        let early_rule = if self.match_rules_first {
            first_match()
        } else {
            None
        };
        let slower_than = early_rule
            .and_then(|r| r.capture_slower_than)
            .or(self.capture_slower_than);
        let with_capture = |mut d: Decision| {
            d.capture_slower_than = slower_than;
            d
        };

        if self.trust_incoming {
            if parent.debug || self.forced(request.headers) {
                // Not a probabilistic decision: no threshold (adjusted count unknown).
                ot.clear_threshold();
                return with_capture(decision(true, Reason::Forced, ot));
            }
            if let Some(rule) = early_rule.filter(|r| r.overrides_parent) {
                let mut d =
                    self.by_threshold(rule.threshold, Reason::Rule, randomness, ot, now_nanos);
                // OTel probability sampling: `th` now describes this subtree. A lower percentage
                // (higher T) keeps a consistent subset of what the parent sampled; a higher one
                // also records traces the parent did not, from this hop down (their spans above
                // are missing), and sends the sampled flag on so the hops below follow.
                d.starts_mid_trace = d.sampled && parent.sampled == Some(false);
                return with_capture(d);
            }
            if let Some(sampled) = parent.sampled {
                // OTel probability sampling, "Parent-based": keep the parent's threshold when it
                // is consistent with the randomness (R ≥ T), erase it otherwise or when unsampled.
                if !sampled || ot.threshold().is_some_and(|t| randomness < t) {
                    ot.clear_threshold();
                }
                return with_capture(decision(sampled, Reason::Parent, ot));
            }
        }

        let rule = if self.match_rules_first {
            early_rule
        } else {
            first_match()
        };
        let (threshold, reason) = match rule {
            Some(rule) => (rule.threshold, Reason::Rule),
            None if self.skip_probes && is_probe(request) => (None, Reason::Probe),
            None => (self.threshold, Reason::Percentage),
        };
        with_capture(self.by_threshold(threshold, reason, randomness, ot, now_nanos))
    }

    /// Sampled iff the randomness reaches the threshold (and the rate cap has a token); the `ot`
    /// entry sent on carries the threshold of a sampled trace and none otherwise.
    fn by_threshold(
        &self,
        threshold: Option<u64>,
        reason: Reason,
        randomness: u64,
        mut ot: OtValue,
        now_nanos: u64,
    ) -> Decision {
        let sampled = threshold.is_some_and(|t| randomness >= t);
        if !sampled {
            ot.clear_threshold();
            return decision(false, reason, ot);
        }
        if let Some(cap) = &self.cap {
            if !cap.take(now_nanos) {
                ot.clear_threshold();
                return decision(false, Reason::Cap, ot);
            }
        }
        if let Some(t) = threshold {
            ot.set_threshold(t);
        }
        decision(true, reason, ot)
    }

    fn forced(&self, headers: &HeaderMap) -> bool {
        self.force_header
            .as_deref()
            .is_some_and(|name| headers.contains(name))
    }
}

fn decision(sampled: bool, reason: Reason, ot: OtValue) -> Decision {
    Decision {
        sampled,
        reason,
        ot: ot.to_value(),
        starts_mid_trace: false,
        capture_slower_than: None,
    }
}

/// A token bucket per worker VM: `rate` per second, bursts up to one second's worth.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: Cell<f64>,
    last_nanos: Cell<Option<u64>>,
}

impl TokenBucket {
    pub(crate) fn new(rate: f64) -> TokenBucket {
        let capacity = rate.max(1.0);
        TokenBucket {
            rate,
            capacity,
            tokens: Cell::new(capacity),
            last_nanos: Cell::new(None),
        }
    }

    pub(crate) fn take(&self, now_nanos: u64) -> bool {
        if self.rate <= 0.0 {
            return false;
        }
        let mut tokens = self.tokens.get();
        if let Some(last) = self.last_nanos.get() {
            let elapsed = now_nanos.saturating_sub(last) as f64 / 1e9;
            tokens = (tokens + elapsed * self.rate).min(self.capacity);
        }
        // A clock step backwards must not mint tokens later.
        self.last_nanos.set(Some(
            self.last_nanos
                .get()
                .map_or(now_nanos, |l| l.max(now_nanos)),
        ));
        let granted = tokens >= 1.0;
        if granted {
            tokens -= 1.0;
        }
        self.tokens.set(tokens);
        granted
    }
}

#[cfg(test)]
mod tests;
