//! gRPC as a proxy sees it: which requests are gRPC, and what their status codes mean
//! (`grpc/doc/statuscodes.md`) — one place for the span's status, its `error.type`, Envoy's
//! `error` tag and error capture.

/// The status of a successful call.
pub(crate) const OK: u32 = 0;

const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The canonical name of a status code (`UNAVAILABLE`), `None` beyond the known codes.
pub(crate) fn code_name(code: u32) -> Option<&'static str> {
    CODE_NAMES.get(usize::try_from(code).ok()?).copied()
}

/// Is a request gRPC? Envoy's test (`source/common/grpc/common.cc`,
/// `Grpc::Common::isGrpcRequestHeaders`): `content-type` `application/grpc`, or a `+codec` /
/// `;parameter` form of it — not `application/grpc-web`, which Envoy's gRPC-Web filter
/// translates.
pub(crate) fn is_grpc_content_type(content_type: &str) -> bool {
    content_type
        .strip_prefix("application/grpc")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
}

/// The codes that mean the server failed, errors whichever side records the span (OTel semantic
/// conventions, "Semantic conventions for gRPC", status: UNKNOWN, DEADLINE_EXCEEDED,
/// UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS are errors on SERVER spans; the others are
/// the caller's doing).
pub(crate) fn is_server_fault(code: u32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// Envoy's rule for the `error` tag on a gRPC response (`source/common/tracing/
/// http_tracer_impl.cc` `addGrpcResponseTags`): the server faults and RESOURCE_EXHAUSTED.
pub(crate) fn is_envoy_error(code: u32) -> bool {
    is_server_fault(code) || code == 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[rustfmt::skip]
    fn grpc_requests_are_recognised_as_envoy_does() {
        let cases = [
            ("application/grpc",                true,  "the plain type"),
            ("application/grpc+proto",          true,  "a +codec form"),
            ("application/grpc;charset=utf-8",  true,  "a ;parameter form"),
            ("application/grpc-web",            false, "gRPC-Web is translated by its own filter"),
            ("application/grpc-web+proto",      false, "gRPC-Web with a codec"),
            ("application/grpcx",               false, "another type that shares the prefix"),
            ("application/json",                false, "not gRPC"),
        ];
        for (content_type, want, why) in cases {
            assert_eq!(is_grpc_content_type(content_type), want, "{content_type}: {why}");
        }
    }

    #[test]
    #[rustfmt::skip]
    fn status_codes_mean_what_the_conventions_say() {
        // (code, server fault, Envoy's error tag, name)
        let cases = [
            (0,  false, false, Some("OK")),
            (2,  true,  true,  Some("UNKNOWN")),
            (5,  false, false, Some("NOT_FOUND")),
            (8,  false, true,  Some("RESOURCE_EXHAUSTED")),
            (14, true,  true,  Some("UNAVAILABLE")),
            (16, false, false, Some("UNAUTHENTICATED")),
            (17, false, false, None),
        ];
        for (code, fault, envoy, name) in cases {
            let got = (is_server_fault(code), is_envoy_error(code), code_name(code));
            assert_eq!(got, (fault, envoy, name), "code {code}");
        }
    }
}
