//! The configuration reference (docs/configuration.md) against the reader, both ways: every key
//! path the reader accepts has a row in one of the reference's key tables, and every row names a
//! key path the reader accepts. A key added without its row, or a row left behind by a renamed
//! key, fails here.
//!
//! The accepted keys are asked of the reader itself rather than listed again: given an object
//! with one unknown key, it refuses it naming every key it knows at that path (read.rs,
//! `Object::new`). Starting at the top and descending into each key whose value is such an
//! object enumerates every key path through the configuration's objects. The shapes of list
//! items and map values (`sampling.rules`, `exporter.headers`, `customTags`) are described with
//! their key, not as rows.

use super::*;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

const REFERENCE: &str = include_str!("../../../docs/configuration.md");
/// A key no configuration has.
const PROBE: &str = "\u{1}probe";
/// `gateway` holds the top-level keys again (Config::parse_for); its row says so.
const NOT_DESCENDED: &[&str] = &["gateway"];

/// `{"a": {"b": {PROBE: 0}}}` for the path `a.b`.
fn probe_at(path: &[String]) -> Value {
    path.iter().rev().fold(json!({ PROBE: 0 }), |inner, key| {
        Value::Object(Map::from_iter([(key.clone(), inner)]))
    })
}

/// The keys the reader knows in the object at `path`; `None` when the value there is not an
/// object with fixed keys (a scalar, a list, a map of names).
fn known_keys(path: &[String]) -> Option<Vec<String>> {
    let config = serde_json::to_vec(&probe_at(path)).unwrap();
    let err = Config::parse(&config).err()?;
    let probed = path
        .iter()
        .map(String::as_str)
        .chain([PROBE])
        .collect::<Vec<_>>();
    if err.key != probed.join(".") {
        return None;
    }
    let known = err.message.strip_prefix("unknown key, expected one of ")?;
    Some(
        known
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// Every key path the reader accepts, and which of them are leaves (no keys below).
fn accepted() -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut all, mut leaves) = (BTreeSet::new(), BTreeSet::new());
    let mut pending = vec![Vec::<String>::new()];
    while let Some(path) = pending.pop() {
        let Some(keys) = known_keys(&path) else {
            leaves.insert(path.join("."));
            continue;
        };
        for key in keys {
            let child = [path.clone(), vec![key]].concat();
            let name = child.join(".");
            all.insert(name.clone());
            if NOT_DESCENDED.contains(&name.as_str()) {
                leaves.insert(name);
            } else {
                pending.push(child);
            }
        }
    }
    leaves.remove("");
    (all, leaves)
}

/// The first column of every table whose header is `| key | …`.
fn documented() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut in_key_table = false;
    for line in REFERENCE.lines() {
        if line.starts_with("| key |") {
            in_key_table = true;
        } else if !line.starts_with('|') {
            in_key_table = false;
        } else if in_key_table && !line.starts_with("|---") {
            let cell = line.split('|').nth(1).unwrap_or_default().trim();
            keys.insert(cell.trim_matches('`').to_string());
        }
    }
    keys
}

#[test]
fn every_accepted_key_is_documented_and_every_documented_key_is_accepted() {
    let (all, leaves) = accepted();
    let documented = documented();
    assert!(
        all.contains("exporter.protocol") && all.contains("sampling.captureErrors.statuses"),
        "the reader's keys could not be enumerated (did the unknown-key message change?): {all:?}"
    );
    let undocumented: Vec<_> = leaves.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "accepted by core/config but without a row in docs/configuration.md: {undocumented:?}"
    );
    let unknown: Vec<_> = documented.difference(&all).collect();
    assert!(
        unknown.is_empty(),
        "documented in docs/configuration.md but refused by core/config: {unknown:?}"
    );
}

#[test]
fn the_probe_finds_keys_only_in_objects_with_fixed_keys() {
    let path = |p: &str| p.split('.').map(str::to_string).collect::<Vec<_>>();
    #[rustfmt::skip]
    let cases = [
        ("exporter",               true,  "an object of fixed keys"),
        ("sampling.captureErrors", true,  "true, false or an object of fixed keys"),
        ("exporter.protocol",      false, "a string"),
        ("sampling.rules",         false, "a list: its items are described with the key"),
        ("customTags",             false, "a map of tag names"),
        ("resourceAttributes",     false, "a map of attribute names"),
    ];
    for (key, object, why) in cases {
        assert_eq!(known_keys(&path(key)).is_some(), object, "{key}: {why}");
    }
}
