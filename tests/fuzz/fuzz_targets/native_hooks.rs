#![no_main]
//! The native adapter's entry points under a fake Envoy (native/tests/fake/) that answers
//! whatever the input says: a configuration (raw bytes), request headers, a response status, a
//! fault for every callback, callout answers and ticks. Built with `panic = "abort"` by
//! cargo-fuzz, so any panic inside the module — even one its boundary would catch — is a crash.
use libfuzzer_sys::fuzz_target;

#[path = "../../../native/tests/fake/mod.rs"]
mod fake;

use fake::*;

const FAULTS: usize = ALL_FAULTS.len();

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.split(|&b| b == 0);
    let config_bytes = parts.next().unwrap_or_default();
    with(|f| f.fault = None);
    // The configuration as given; when it is rejected, a valid one so the request path runs.
    let config = new_config(&String::from_utf8_lossy(config_bytes)).or_else(|| {
        new_config(&config_json(
            r#", "randomSamplingPercentage": 100, "exporter": {"maxBatchSize": 2}"#,
        ))
    });
    let Some(config) = config else {
        return;
    };
    set_attributes();
    let fields: Vec<String> = parts
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let mut headers: Vec<(&str, &str)> = basic_headers();
    for pair in fields.chunks(2) {
        if let [name, value] = pair {
            headers.push((name.as_str(), value.as_str()));
        }
    }
    with(|f| f.fault = Some(ALL_FAULTS[usize::from(control) % FAULTS]));
    let status = ["200", "503", "0", "abc"][usize::from(control >> 4) % 4];
    request(&config, &headers, status);
    request(&config, &headers, status);
    config.wake();
    config.answer_callouts(status.as_bytes(), u32::from(control >> 6));
    config.tick();
    with(|f| f.fault = None);
    config.destroy();
});
