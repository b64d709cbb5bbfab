//! The `gateway` block: merged over the rest at a gateway only, checked everywhere.

use super::*;

const MESH_WIDE: &str = r#"{
    "randomSamplingPercentage": 10,
    "sampling": {"trustIncoming": true, "skipProbes": true},
    "propagation": {"trustIncomingRequestId": true},
    "gateway": {
        "sampling": {"trustIncoming": false},
        "propagation": {"trustIncomingRequestId": false, "traceResponse": true}
    }
}"#;

#[test]
#[rustfmt::skip]
fn the_gateway_block_applies_at_gateways_only_key_by_key() {
    let sidecar = Config::parse_for(MESH_WIDE.as_bytes(), false).unwrap();
    let gateway = Config::parse_for(MESH_WIDE.as_bytes(), true).unwrap();
    let cases = [
        (sidecar.sampling.trust_incoming,               true,  "a sidecar trusts its callers as configured"),
        (gateway.sampling.trust_incoming,               false, "a gateway takes the block's setting"),
        (gateway.sampling.skip_probes,                  true,  "objects merge key by key: the rest of `sampling` stays"),
        (sidecar.propagation.trust_incoming_request_id, true,  "sidecar: request ids trusted"),
        (gateway.propagation.trust_incoming_request_id, false, "gateway: request ids regenerated"),
        (sidecar.propagation.trace_response,            false, "the trace metric stays off at sidecars"),
        (gateway.propagation.trace_response,            true,  "and on at gateways"),
    ];
    for (got, want, why) in cases {
        assert_eq!(got, want, "{why}");
    }
    assert_eq!(gateway.random_sampling_percentage, 10.0, "keys the block does not name are kept");
    assert_eq!(Config::parse(MESH_WIDE.as_bytes()).unwrap(), sidecar, "parse is the non-gateway view");
}

#[test]
#[rustfmt::skip]
fn a_bad_gateway_block_is_refused_on_every_proxy_naming_the_key() {
    let cases = [
        (r#"{"gateway": true}"#,                                          "gateway",                       "not an object"),
        (r#"{"gateway": {"sampling": {"trustIncomming": false}}}"#,       "gateway.sampling.trustIncomming", "a typo inside the block"),
        (r#"{"gateway": {"randomSamplingPercentage": 101}}"#,             "gateway.randomSamplingPercentage", "an out-of-range value"),
        (r#"{"gateway": {"gateway": {}}}"#,                               "gateway.gateway",               "blocks do not nest"),
    ];
    for (json, key, why) in cases {
        for at_gateway in [false, true] {
            let e = Config::parse_for(json.as_bytes(), at_gateway).expect_err(why);
            assert_eq!(e.key, key, "{why} (gateway: {at_gateway})");
        }
    }
}
