//! Names: the service name on every span, computed once per VM the way Istio computes it for
//! `tracingServiceName` (ProxyConfig), with Istio's fallbacks.

mod span_name;

pub(crate) use self::span_name::{grpc_method, span_name, NameParts};

use crate::config::ServiceNameMode;
use crate::node::{NodeInfo, LABEL_APP, LABEL_CANONICAL_NAME, LABEL_K8S_NAME};

const FALLBACK: &str = "istio-proxy";

pub(crate) fn service_name(
    mode: ServiceNameMode,
    explicit: Option<&str>,
    node: &NodeInfo,
) -> String {
    if let Some(name) = explicit {
        return name.to_string();
    }
    let with_namespace = |name: &str| {
        if node.namespace.is_empty() {
            name.to_string()
        } else {
            format!("{name}.{}", node.namespace)
        }
    };
    match mode {
        ServiceNameMode::AppLabelAndNamespace => {
            let base = [LABEL_APP, LABEL_K8S_NAME, LABEL_CANONICAL_NAME]
                .iter()
                .find_map(|l| node.label(l))
                .or(Some(node.workload_name.as_str()).filter(|w| !w.is_empty()))
                .unwrap_or(FALLBACK);
            with_namespace(base)
        }
        ServiceNameMode::CanonicalNameOnly => canonical_name(node).to_string(),
        ServiceNameMode::CanonicalNameAndNamespace => with_namespace(canonical_name(node)),
    }
}

fn canonical_name(node: &NodeInfo) -> &str {
    [LABEL_CANONICAL_NAME, LABEL_K8S_NAME, LABEL_APP]
        .iter()
        .find_map(|l| node.label(l))
        .or(Some(node.workload_name.as_str()).filter(|w| !w.is_empty()))
        .unwrap_or(FALLBACK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServiceNameMode::*;

    fn node(labels: &[(&'static str, &str)], workload: &str, ns: &str) -> NodeInfo {
        NodeInfo {
            namespace: ns.to_string(),
            workload_name: workload.to_string(),
            labels: labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            ..NodeInfo::default()
        }
    }

    #[test]
    #[rustfmt::skip]
    fn every_mode_and_fallback_step() {
        let all = [(LABEL_APP, "app-l"), (LABEL_K8S_NAME, "k8s-l"), (LABEL_CANONICAL_NAME, "canon-l")];
        let cases: &[(ServiceNameMode, NodeInfo, &str, &str)] = &[
            (AppLabelAndNamespace,      node(&all, "wl", "ns"),      "app-l.ns",       "app label first"),
            (AppLabelAndNamespace,      node(&all[1..], "wl", "ns"), "k8s-l.ns",       "then app.kubernetes.io/name"),
            (AppLabelAndNamespace,      node(&all[2..], "wl", "ns"), "canon-l.ns",     "then canonical name"),
            (AppLabelAndNamespace,      node(&[], "wl", "ns"),       "wl.ns",          "then workload name"),
            (AppLabelAndNamespace,      node(&[], "", "ns"),         "istio-proxy.ns", "then istio-proxy.namespace"),
            (AppLabelAndNamespace,      node(&[], "", ""),           "istio-proxy",    "then istio-proxy"),
            (CanonicalNameOnly,         node(&all, "wl", "ns"),      "canon-l",        "canonical name first"),
            (CanonicalNameOnly,         node(&all[..2], "wl", "ns"), "k8s-l",          "then app.kubernetes.io/name"),
            (CanonicalNameOnly,         node(&all[..1], "wl", "ns"), "app-l",          "then app"),
            (CanonicalNameOnly,         node(&[], "wl", "ns"),       "wl",             "then workload name"),
            (CanonicalNameOnly,         node(&[], "", "ns"),         "istio-proxy",    "then istio-proxy"),
            (CanonicalNameAndNamespace, node(&all, "wl", "ns"),      "canon-l.ns",     "canonical name with namespace"),
            (CanonicalNameAndNamespace, node(&[], "wl", "ns"),       "wl.ns",          "workload with namespace"),
            (CanonicalNameAndNamespace, node(&[], "", ""),           "istio-proxy",    "nothing known"),
        ];
        for (mode, n, want, reason) in cases {
            assert_eq!(service_name(*mode, None, n), *want, "{mode:?}: {reason}");
        }
    }

    #[test]
    fn explicit_name_overrides_every_mode() {
        let n = node(&[(LABEL_APP, "a")], "wl", "ns");
        for mode in [
            AppLabelAndNamespace,
            CanonicalNameOnly,
            CanonicalNameAndNamespace,
        ] {
            assert_eq!(
                service_name(mode, Some("shop"), &n),
                "shop",
                "{mode:?}: serviceName wins"
            );
        }
    }
}
