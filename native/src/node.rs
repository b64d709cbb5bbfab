//! The proxy's identity — Istio's node metadata — which the dynamic-module ABI does not expose
//! (`xds.node` is not among the attributes `get_attribute_string` answers). It is read once per
//! process from where Istio puts it:
//!
//! 1. Envoy's bootstrap file (`-c PATH` / `--config-path PATH` on Envoy's command line, read
//!    from `/proc/self/cmdline`): pilot-agent writes the node — id, metadata, locality — there
//!    (istio `pkg/bootstrap/config.go` `GetNodeMetaData`, rendered into `envoy-rev.json`), so
//!    this is byte for byte what the Wasm plugin reads as `xds.node.*`.
//! 2. Otherwise istio-proxy's environment, the inputs of that same function: `ISTIO_META_<KEY>`
//!    becomes metadata `<KEY>` (`IstioMetaPrefix`), `POD_NAME` → `NAME`, `POD_NAMESPACE` →
//!    `NAMESPACE` (`extractAttributesMetadata`), labels from `ISTIO_METAJSON_LABELS` or the pod's
//!    downward-API file `/etc/istio/pod/labels` (`readPodLabels`, `constants.PodInfoLabelsPath`,
//!    `key="value"` lines). The node id is then `sidecar~INSTANCE_IP~POD.NS~NS.svc.cluster.local`
//!    (pilot `model.Proxy` `ServiceNode`): a gateway started from a non-JSON bootstrap is not
//!    recognised as one (documented in docs/native.md).

use serde_json::{Map, Value};
use std::sync::OnceLock;

/// Istio's pod-info file of the pod's labels (istio `pkg/config/constants/constants.go`).
const POD_LABELS_FILE: &str = "/etc/istio/pod/labels";
/// A bootstrap larger than this is not read (Istio's is a few tens of KB).
const MAX_BOOTSTRAP_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Default, Clone)]
pub struct Node {
    pub id: String,
    pub metadata: Map<String, Value>,
    pub zone: String,
}

impl Node {
    /// The node of this process, read once.
    pub fn get() -> &'static Node {
        static NODE: OnceLock<Node> = OnceLock::new();
        NODE.get_or_init(|| {
            bootstrap_path()
                .and_then(|p| read_bootstrap_node(&p))
                .unwrap_or_else(|| from_env(&|k| std::env::var(k).ok(), read_pod_labels))
        })
    }

    /// `metadata.<key>` as text (`LABELS` is a map: use [`Node::label`]).
    pub fn metadata(&self, key: &str) -> Option<String> {
        match self.metadata.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    pub fn label(&self, name: &str) -> Option<String> {
        match self.metadata.get("LABELS")?.get(name)? {
            Value::String(s) => Some(s.clone()),
            _ => None,
        }
    }
}

/// The bootstrap path on Envoy's command line (`-c`, `--config-path`, `--config-path=`).
fn bootstrap_path() -> Option<String> {
    let cmdline = std::fs::read("/proc/self/cmdline").ok()?;
    bootstrap_arg(&cmdline)
}

pub(crate) fn bootstrap_arg(cmdline: &[u8]) -> Option<String> {
    let mut args = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned());
    while let Some(arg) = args.next() {
        if arg == "-c" || arg == "--config-path" {
            return args.next().filter(|p| !p.is_empty());
        }
        if let Some(path) = arg.strip_prefix("--config-path=") {
            return Some(path.to_string()).filter(|p| !p.is_empty());
        }
    }
    None
}

fn read_bootstrap_node(path: &str) -> Option<Node> {
    let file = std::fs::File::open(path).ok()?;
    if file.metadata().ok()?.len() > MAX_BOOTSTRAP_BYTES {
        return None;
    }
    let bootstrap: Value = serde_json::from_reader(std::io::BufReader::new(file)).ok()?;
    node_of_bootstrap(&bootstrap)
}

pub(crate) fn node_of_bootstrap(bootstrap: &Value) -> Option<Node> {
    let node = bootstrap.get("node")?;
    Some(Node {
        id: node.get("id")?.as_str()?.to_string(),
        metadata: node
            .get("metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        zone: node
            .get("locality")
            .and_then(|l| l.get("zone"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    })
}

/// The node pilot-agent would have written, from its environment.
pub(crate) fn from_env(
    env: &dyn Fn(&str) -> Option<String>,
    pod_labels: fn() -> Option<String>,
) -> Node {
    let mut metadata = Map::new();
    for (key, value) in std::env::vars() {
        if let Some(meta) = key.strip_prefix("ISTIO_META_") {
            metadata.insert(meta.to_string(), Value::String(value));
        }
    }
    let mut put = |key: &str, var: &str| {
        if let Some(v) = env(var).filter(|v| !v.is_empty()) {
            metadata.insert(key.to_string(), Value::String(v));
        }
    };
    put("NAME", "POD_NAME");
    put("NAMESPACE", "POD_NAMESPACE");
    let labels = env("ISTIO_METAJSON_LABELS")
        .and_then(|j| serde_json::from_str::<Map<String, Value>>(&j).ok())
        .or_else(|| pod_labels().map(|text| parse_downward_api(&text)));
    if let Some(labels) = labels.filter(|l| !l.is_empty()) {
        metadata.insert("LABELS".to_string(), Value::Object(labels));
    }
    let ns = env("POD_NAMESPACE").unwrap_or_default();
    let id = match (env("INSTANCE_IP"), env("POD_NAME")) {
        (Some(ip), Some(pod)) if !ns.is_empty() => {
            format!("sidecar~{ip}~{pod}.{ns}~{ns}.svc.cluster.local")
        }
        _ => String::new(),
    };
    Node {
        id,
        metadata,
        zone: String::new(),
    }
}

fn read_pod_labels() -> Option<String> {
    std::fs::read_to_string(POD_LABELS_FILE).ok()
}

/// Kubernetes' downward-API file format, `key="value"` per line, the value Go-quoted (istio
/// `ParseDownwardAPI`); a line that does not parse is skipped.
pub(crate) fn parse_downward_api(text: &str) -> Map<String, Value> {
    text.lines()
        .filter_map(|line| {
            let (key, quoted) = line.split_once('=')?;
            let value: String = serde_json::from_str(quoted.trim()).ok()?;
            Some((key.to_string(), Value::String(value)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    #[test]
    fn the_bootstrap_path_is_found_on_envoys_command_line() {
        let cases: [(&[u8], Option<&str>, &str); 5] = [
            (b"envoy\0-c\0/etc/istio/proxy/envoy-rev.json\0--drain-time-s\x0045\0", Some("/etc/istio/proxy/envoy-rev.json"), "istio-proxy: -c PATH"),
            (b"envoy\0--config-path\0/b.json\0",                                 Some("/b.json"),                         "long form"),
            (b"envoy\0--config-path=/b.json\0",                                   Some("/b.json"),                         "long form with ="),
            (b"envoy\0--config-yaml\0{}\0",                                       None,                                    "inline config: no file"),
            (b"envoy\0-c\0",                                                      None,                                    "flag without a value"),
        ];
        for (cmdline, want, reason) in cases {
            assert_eq!(bootstrap_arg(cmdline).as_deref(), want, "{reason}");
        }
    }

    #[test]
    fn the_node_is_read_from_the_bootstrap_as_pilot_agent_writes_it() {
        let bootstrap: Value = serde_json::from_str(
            r#"{"node": {"id": "router~10.0.0.1~gw.istio-system~istio-system.svc.cluster.local",
                "metadata": {"NAMESPACE": "istio-system", "LABELS": {"app": "gw"}, "X": 3},
                "locality": {"zone": "eu-1a"}}}"#,
        )
        .unwrap();
        let node = node_of_bootstrap(&bootstrap).unwrap();
        assert!(node.id.starts_with("router~"));
        assert_eq!(node.metadata("NAMESPACE").as_deref(), Some("istio-system"));
        assert_eq!(node.metadata("X").as_deref(), Some("3"), "numbers as text");
        assert_eq!(node.metadata("LABELS"), None, "a map is not a text");
        assert_eq!(node.label("app").as_deref(), Some("gw"));
        assert_eq!(node.zone, "eu-1a");
        assert!(
            node_of_bootstrap(&serde_json::json!({"admin": {}})).is_none(),
            "no node"
        );
    }

    #[test]
    fn without_a_bootstrap_the_node_comes_from_pilot_agents_environment() {
        let env = |k: &str| match k {
            "POD_NAME" => Some("cart-v1-abc".to_string()),
            "POD_NAMESPACE" => Some("shop".to_string()),
            "INSTANCE_IP" => Some("10.1.2.3".to_string()),
            _ => None,
        };
        let node = from_env(&env, || {
            Some("app=\"cart\"\nversion=\"v1\"\nbroken line\nq=\"a\\\"b\"\n".to_string())
        });
        assert_eq!(
            node.id,
            "sidecar~10.1.2.3~cart-v1-abc.shop~shop.svc.cluster.local"
        );
        assert_eq!(node.metadata("NAME").as_deref(), Some("cart-v1-abc"));
        assert_eq!(node.metadata("NAMESPACE").as_deref(), Some("shop"));
        assert_eq!(node.label("app").as_deref(), Some("cart"));
        assert_eq!(
            node.label("q").as_deref(),
            Some("a\"b"),
            "Go-quoted values unquoted"
        );
        let bare = from_env(&|_| None, || None);
        assert_eq!(bare.id, "", "no identity: no made-up id");
    }
}
