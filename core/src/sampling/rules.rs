//! Sampling rules (`sampling.rules`) compiled for the request path, and the probe filter
//! (`sampling.skipProbes`): what a request is matched against before the percentage applies.

use super::{threshold_for_percentage, RequestInfo};
use crate::config::{ParentMode, PathMatch, RuleAction, RuleKeyword, RuleMatch, SamplingRule};
use crate::http::{path_only, split_authority};

/// Paths of Kubernetes probes and metric scrapes (istio#1403): never worth a trace.
const PROBE_PATHS: [&str; 7] = [
    "/healthz",
    "/healthz/ready",
    "/ready",
    "/readyz",
    "/livez",
    "/metrics",
    "/stats/prometheus",
];
/// Istio rewrites application probes to the sidecar agent under this prefix.
const PROBE_PREFIX: &str = "/app-health/";
const PROBE_USER_AGENTS: [&str; 2] = ["kube-probe/", "Prometheus/"];

#[derive(Debug)]
pub(super) struct Rule {
    matcher: RuleMatch,
    /// `None` = never; `Some(0)` = always.
    pub(super) threshold: Option<u64>,
    /// Decides whatever a trusted incoming decision says (`"parent": "override"`).
    pub(super) overrides_parent: bool,
    /// The rule's `captureSlowerThan`, in nanoseconds.
    pub(super) capture_slower_than: Option<u64>,
}

impl Rule {
    pub(super) fn new(rule: &SamplingRule) -> Rule {
        let threshold = match rule.sample {
            RuleAction::Keyword(RuleKeyword::Always) => Some(0),
            RuleAction::Keyword(RuleKeyword::Never) => None,
            RuleAction::Percentage(p) => threshold_for_percentage(p),
        };
        Rule {
            matcher: rule.matcher.clone(),
            threshold,
            overrides_parent: rule.parent == ParentMode::Override,
            capture_slower_than: rule.capture_slower_than.map(super::nanos),
        }
    }

    /// Whether this rule applies to the request.
    pub(super) fn matches(&self, request: &RequestInfo<'_>) -> bool {
        rule_matches(&self.matcher, request)
    }
}

/// Every given condition of `rule` must hold; an empty match matches every request.
pub(crate) fn rule_matches(rule: &RuleMatch, request: &RequestInfo<'_>) -> bool {
    let path = path_only(request.path);
    rule.method.as_deref().is_none_or(|m| m == request.method)
        && rule.path.as_ref().is_none_or(|p| match p {
            PathMatch::Exact(e) => path == e,
            PathMatch::Prefix(prefix) => path.starts_with(prefix.as_str()),
        })
        && rule.host.as_deref().is_none_or(|h| {
            // `reviews:9080` matches that port only; `reviews`, `::1` or `[::1]` any port.
            let (want_host, want_port) = split_authority(h);
            let (host, port) = split_authority(request.host);
            host.eq_ignore_ascii_case(want_host) && want_port.is_none_or(|p| port == Some(p))
        })
        && rule.headers.iter().all(|want| {
            request
                .headers
                .get_all(&want.name)
                .any(|v| want.value.as_deref().is_none_or(|w| w == v))
        })
}

pub(super) fn is_probe(request: &RequestInfo<'_>) -> bool {
    let path = path_only(request.path);
    PROBE_PATHS.contains(&path)
        || path.starts_with(PROBE_PREFIX)
        || request
            .headers
            .get_all("user-agent")
            .any(|v| PROBE_USER_AGENTS.iter().any(|ua| v.starts_with(ua)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::HeaderMap;

    #[test]
    #[rustfmt::skip]
    fn a_host_rule_matches_the_authority_with_or_without_port() {
        let cases = [
            ("reviews",       "reviews:9080",        true,  "a rule without port matches any port"),
            ("reviews",       "reviews",             true,  "no port on either side"),
            ("Reviews",       "reviews:9080",        true,  "hosts compare case-insensitively (RFC 3986 §3.2.2)"),
            ("reviews:9080",  "reviews:9080",        true,  "a rule with port matches that port"),
            ("reviews:9080",  "reviews:9081",        false, "a rule with port matches no other port"),
            ("reviews:9080",  "reviews",             false, "a rule with port needs the port"),
            ("::1",           "[::1]:8080",          true,  "IPv6 literal: brackets and port are not part of the host"),
            ("[::1]",         "[::1]:8080",          true,  "IPv6 rule written with brackets"),
            ("[::1]:8080",    "[::1]:8080",          true,  "IPv6 with port, exactly"),
            ("[::1]:8080",    "[::1]:9090",          false, "IPv6 with port: other port"),
            ("details",       "reviews:9080",        false, "another host"),
        ];
        let headers = HeaderMap::default();
        for (rule_host, authority, want, reason) in cases {
            let rule = RuleMatch { host: Some(rule_host.to_string()), ..RuleMatch::default() };
            let request = RequestInfo { method: "GET", path: "/", host: authority, headers: &headers };
            assert_eq!(rule_matches(&rule, &request), want, "{reason}");
        }
    }
}
