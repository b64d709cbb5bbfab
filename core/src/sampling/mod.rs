//! Sampling: whether a request's trace is recorded, decided so that every hop agrees.
//!
//! Order of precedence (first that applies decides):
//! 1. a trusted force header or B3 debug flag → sampled (`Forced`);
//! 2. a trusted incoming decision (W3C sampled flag, B3 `1`/`0`) → followed (`Parent`);
//! 3. the first matching [`SamplingRule`](crate::config::SamplingRule) → always, never or its percentage (`Rule`);
//! 4. Kubernetes probes and metric scrapes → not sampled (`Probe`), when `skipProbes`;
//! 5. `randomSamplingPercentage` (`Percentage`).
//!
//! Percentages use OpenTelemetry consistent probability sampling (OTel specification, "TraceState:
//! Probability Sampling"): the decision compares the trace's 56-bit randomness R (explicit
//! `ot=rv:` or the rightmost 56 bits of the trace id) with a rejection threshold T, sampling iff
//! R ≥ T. It is a pure function of the trace, so proxies at one percentage agree, and a higher
//! percentage samples a superset of a lower one. Locally sampled traces carry `ot=th:` so
//! collectors and backends can compute adjusted counts. Finally a token bucket
//! (`maxTracesPerSecond`) caps what the percentage and rules let through.

mod ot;
mod rules;

pub use self::ot::{format_threshold, parse_threshold, threshold_for_percentage, OtValue};

use self::rules::{is_probe, Rule};
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
    cap: Option<TokenBucket>,
}

impl Sampler {
    pub fn new(config: &Config) -> Sampler {
        let s = &config.sampling;
        Sampler {
            trust_incoming: s.trust_incoming,
            force_header: s.force_header.clone(),
            skip_probes: s.skip_probes,
            threshold: threshold_for_percentage(config.random_sampling_percentage),
            rules: s.rules.iter().map(Rule::new).collect(),
            cap: s.max_traces_per_second.map(TokenBucket::new),
        }
    }

    /// Whether [`Sampler::decide`] needs the time (for the rate cap).
    pub fn has_rate_cap(&self) -> bool {
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

        if self.trust_incoming {
            if parent.debug || self.forced(request.headers) {
                // Not a probabilistic decision: no threshold (adjusted count unknown).
                ot.clear_threshold();
                return decision(true, Reason::Forced, ot);
            }
            if let Some(sampled) = parent.sampled {
                // OTel probability sampling, "Parent-based": keep the parent's threshold when it
                // is consistent with the randomness (R ≥ T), erase it otherwise or when unsampled.
                if !sampled || ot.threshold().is_some_and(|t| randomness < t) {
                    ot.clear_threshold();
                }
                return decision(sampled, Reason::Parent, ot);
            }
        }

        let (threshold, reason) = match self.rules.iter().find(|r| r.matches(request)) {
            Some(rule) => (rule.threshold, Reason::Rule),
            None if self.skip_probes && is_probe(request) => (None, Reason::Probe),
            None => (self.threshold, Reason::Percentage),
        };
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
    }
}

/// A token bucket per worker VM: `rate` traces per second, bursts up to one second's worth.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: Cell<f64>,
    last_nanos: Cell<Option<u64>>,
}

impl TokenBucket {
    fn new(rate: f64) -> TokenBucket {
        let capacity = rate.max(1.0);
        TokenBucket {
            rate,
            capacity,
            tokens: Cell::new(capacity),
            last_nanos: Cell::new(None),
        }
    }

    fn take(&self, now_nanos: u64) -> bool {
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
