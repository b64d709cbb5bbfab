//! A probe module for Envoy's Wasm host (issue 24): configured with lines of text, it logs what
//! Envoy answers at the end of a stream (`P a/b`: a property path; `E expr`: a CEL expression
//! compiled with `expr_create`) in `proxy_on_log` and `proxy_on_done`, the order of the stream
//! callbacks, and with `T n` times `n` rounds of each kind of host call from inside the VM
//! (Envoy's clock). Raw ABI, no SDK; unwraps and statics are fine in an instrument.
#![allow(static_mut_refs, clippy::missing_safety_doc)]

use std::ptr::null_mut;

extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_property(p: *const u8, ps: usize, d: *mut *mut u8, s: *mut usize) -> u32;
    fn proxy_set_property(p: *const u8, ps: usize, v: *const u8, vs: usize) -> u32;
    fn proxy_get_buffer_bytes(
        t: u32,
        start: usize,
        max: usize,
        d: *mut *mut u8,
        s: *mut usize,
    ) -> u32;
    fn proxy_call_foreign_function(
        n: *const u8,
        ns: usize,
        a: *const u8,
        as_: usize,
        d: *mut *mut u8,
        s: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        m: u32,
        k: *const u8,
        ks: usize,
        d: *mut *mut u8,
        s: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(m: u32, d: *mut *mut u8, s: *mut usize) -> u32;
    fn proxy_replace_header_map_value(
        m: u32,
        k: *const u8,
        ks: usize,
        v: *const u8,
        vs: usize,
    ) -> u32;
    fn proxy_get_current_time_nanoseconds(t: *mut u64) -> u32;
}

const REQUEST_HEADERS: u32 = 0;
const RESPONSE_HEADERS: u32 = 2;
static mut TOKENS: Vec<u32> = Vec::new();
static mut PATHS: Vec<String> = Vec::new();
static mut ROUNDS: u32 = 0;
/// `Q`: nothing logged per stream (the instruction counts of probe.py `instructions`).
static mut QUIET: bool = false;
/// `C op n` / `L op n`: host calls made n times in request headers / in `proxy_on_log`.
static mut OPS_REQUEST: Vec<(String, u32)> = Vec::new();
static mut OPS_LOG: Vec<(String, u32)> = Vec::new();

fn log(s: &str) {
    if unsafe { !QUIET } {
        unsafe { proxy_log(2, s.as_ptr(), s.len()) };
    }
}

const TRACE_ID_HEX: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// One host call of the kind `op` names, its answer dropped.
fn crossing(op: &str, i: u32) {
    match op {
        "set_property" => set_property(&format!("probe.k{i}")),
        "header_map_pairs" => drop(header_map_pairs()),
        "header_present" => drop(header(REQUEST_HEADERS, ":path")),
        "header_absent" => drop(header(REQUEST_HEADERS, "x-absent")),
        "replace_header" => replace_traceparent(),
        "clock" => drop(now()),
        "status_header" => drop(status_header()),
        "property" => drop(property("response\0code")),
        "expression" => {
            let token = unsafe { TOKENS.first().copied().unwrap_or(u32::MAX) };
            drop(foreign("expr_evaluate", &token.to_le_bytes()));
        }
        _ => {}
    }
}

fn set_property(name: &str) {
    unsafe {
        proxy_set_property(
            name.as_ptr(),
            name.len(),
            TRACE_ID_HEX.as_ptr(),
            TRACE_ID_HEX.len(),
        )
    };
}

fn header_map_pairs() -> (u32, Vec<u8>) {
    let (mut d, mut s) = (null_mut(), 0);
    let st = unsafe { proxy_get_header_map_pairs(REQUEST_HEADERS, &mut d, &mut s) };
    (st, take(d, s))
}

fn header(map: u32, name: &str) -> (u32, Vec<u8>) {
    let (mut d, mut s) = (null_mut(), 0);
    let st = unsafe { proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut d, &mut s) };
    (st, take(d, s))
}

fn replace_traceparent() {
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    unsafe {
        proxy_replace_header_map_value(
            REQUEST_HEADERS,
            "traceparent".as_ptr(),
            11,
            tp.as_ptr(),
            tp.len(),
        )
    };
}

fn run_ops(ops: &[(String, u32)]) {
    for (op, n) in ops {
        for i in 0..*n {
            crossing(op, i);
        }
    }
}

fn now() -> u64 {
    let mut t = 0;
    unsafe { proxy_get_current_time_nanoseconds(&mut t) };
    t
}

fn take(d: *mut u8, s: usize) -> Vec<u8> {
    if d.is_null() {
        Vec::new()
    } else {
        unsafe { Vec::from_raw_parts(d, s, s) }
    }
}

fn show(b: &[u8]) -> String {
    let text: String = b
        .iter()
        .map(|&c| {
            if (32..127).contains(&c) {
                c as char
            } else {
                '.'
            }
        })
        .collect();
    let hex: String = b.iter().map(|c| format!("{c:02x}")).collect();
    format!("len={} text={text:?} hex={hex}", b.len())
}

fn foreign(name: &str, arg: &[u8]) -> (u32, Vec<u8>) {
    let (mut d, mut s) = (null_mut(), 0);
    let st = unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            arg.as_ptr(),
            arg.len(),
            &mut d,
            &mut s,
        )
    };
    (st, take(d, s))
}

fn property(path: &str) -> (u32, Vec<u8>) {
    let (mut d, mut s) = (null_mut(), 0);
    let st = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut d, &mut s) };
    (st, take(d, s))
}

fn status_header() -> (u32, Vec<u8>) {
    header(RESPONSE_HEADERS, ":status")
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut v: Vec<u8> = Vec::with_capacity(size);
    let p = v.as_mut_ptr();
    std::mem::forget(v);
    p
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_: u32, _: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_: u32, size: usize) -> u32 {
    let (mut d, mut s) = (null_mut(), 0);
    unsafe { proxy_get_buffer_bytes(7, 0, size, &mut d, &mut s) };
    let config = String::from_utf8(take(d, s)).unwrap_or_default();
    for line in config.lines() {
        if line == "Q" {
            unsafe { QUIET = true };
        } else if let Some(rest) = line.strip_prefix("C ").or_else(|| line.strip_prefix("L ")) {
            let mut words = rest.split(' ');
            let op = words.next().unwrap_or_default().to_string();
            let n = words.next().and_then(|n| n.parse().ok()).unwrap_or(1);
            let list = if line.starts_with('C') {
                unsafe { &mut OPS_REQUEST }
            } else {
                unsafe { &mut OPS_LOG }
            };
            list.push((op, n));
        } else if let Some(n) = line.strip_prefix("T ") {
            unsafe { ROUNDS = n.parse().unwrap_or(0) };
        } else if let Some(p) = line.strip_prefix("P ") {
            unsafe { PATHS.push(p.replace('/', "\0")) };
        } else if let Some(e) = line.strip_prefix("E ") {
            let (st, out) = foreign("expr_create", e.as_bytes());
            log(&format!(
                "PROBE expr_create status={st} {} expr={e}",
                show(&out)
            ));
            if let Ok(token) = <[u8; 4]>::try_from(out.as_slice()) {
                unsafe { TOKENS.push(u32::from_le_bytes(token)) };
            }
        }
    }
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(id: u32, parent: u32) {
    if parent != 0 {
        log(&format!("PROBE callback context_create {id}"));
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(id: u32, _: usize, _: u32) -> u32 {
    log(&format!("PROBE callback request_headers {id}"));
    run_ops(unsafe { &OPS_REQUEST });
    let n = unsafe { ROUNDS };
    if n > 0 {
        // Named before the clock starts: the loop times the host calls, not the formatting.
        let names: Vec<String> = (0..n).map(|i| format!("probe.k{i}")).collect();
        let t0 = now();
        for name in &names {
            set_property(name);
        }
        let t1 = now();
        for _ in 0..n {
            drop(header_map_pairs());
        }
        let t2 = now();
        for _ in 0..n {
            replace_traceparent();
        }
        let t3 = now();
        for _ in 0..n {
            let _ = now();
        }
        let t4 = now();
        let per = |a: u64, b: u64| (b - a) / u64::from(n);
        log(&format!(
            "PROBE timing request n={n} set_property_ns={} header_map_pairs_ns={} replace_header_ns={} clock_ns={}",
            per(t0, t1), per(t1, t2), per(t2, t3), per(t3, t4)
        ));
    }
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(id: u32, _: usize, _: u32) -> u32 {
    log(&format!("PROBE callback response_headers {id}"));
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_log(id: u32) {
    log(&format!("PROBE callback log {id}"));
    if unsafe { QUIET } {
        run_ops(unsafe { &OPS_LOG });
        return;
    }
    if unsafe { ROUNDS } > 0 {
        time_end_of_stream();
    } else {
        report("log");
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_done(id: u32) -> u32 {
    log(&format!("PROBE callback done {id}"));
    if unsafe { ROUNDS } == 0 && unsafe { !QUIET } {
        report("done");
    }
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(id: u32) {
    log(&format!("PROBE callback delete {id}"));
}

/// Every configured property and expression, as Envoy answers them now.
fn report(phase: &str) {
    let (st, out) = status_header();
    log(&format!(
        "PROBE {phase} header :status status={st} {}",
        show(&out)
    ));
    let (st, pairs) = header_map_pairs();
    let count = pairs
        .get(..4)
        .map_or(0, |c| u32::from_le_bytes(c.try_into().unwrap()));
    log(&format!(
        "PROBE {phase} request header pairs status={st} count={count}"
    ));
    for p in unsafe { PATHS.iter() } {
        let (st, out) = property(p);
        log(&format!(
            "PROBE {phase} property {} status={st} {}",
            p.replace('\0', "."),
            show(&out)
        ));
    }
    for (i, t) in unsafe { TOKENS.iter() }.enumerate() {
        let (st, out) = foreign("expr_evaluate", &t.to_le_bytes());
        log(&format!(
            "PROBE {phase} expression {i} status={st} {}",
            show(&out)
        ));
    }
}

/// The configured properties read one by one, against the first expression, `ROUNDS` times.
fn time_end_of_stream() {
    let n = unsafe { ROUNDS };
    let t0 = now();
    for _ in 0..n {
        for p in unsafe { PATHS.iter() } {
            drop(property(p));
        }
    }
    let t1 = now();
    let token = unsafe { TOKENS.first().copied().unwrap_or(u32::MAX) };
    for _ in 0..n {
        drop(foreign("expr_evaluate", &token.to_le_bytes()));
    }
    let t2 = now();
    for _ in 0..n {
        drop(status_header());
    }
    let t3 = now();
    let per = |a: u64, b: u64| (b - a) / u64::from(n);
    log(&format!(
        "PROBE timing end n={n} properties={} separate_reads_ns={} expression_ns={} status_read_ns={}",
        unsafe { PATHS.len() }, per(t0, t1), per(t1, t2), per(t2, t3)
    ));
}
