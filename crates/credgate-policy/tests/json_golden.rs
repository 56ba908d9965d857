//! The gateway reads a store's answer with `json::parse` and writes the masked one with
//! `json::to_vec`, where `golden.rs` uses serde_json's own functions. This proves the two pairs
//! interchangeable on the golden data: every input reads as the same value, and every pinned
//! answer reads and writes back to the same bytes, so `golden.rs` pins the gateway's path too.

use std::path::Path;

use credgate_policy::json;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Every value at every depth of `v`, each as its own document.
fn every_value<'v>(v: &'v Value, all: &mut Vec<&'v Value>) {
    all.push(v);
    match v {
        Value::Array(items) => items.iter().for_each(|i| every_value(i, all)),
        Value::Object(map) => map.values().for_each(|i| every_value(i, all)),
        _ => {}
    }
}

#[test]
fn golden_inputs_read_as_serde_json_reads_them() {
    for name in ["golden_inputs.json", "golden_more_inputs.json"] {
        let inputs = fixture(name);
        let mut all = Vec::new();
        every_value(&inputs, &mut all);
        for v in all {
            let text = serde_json::to_string(v).unwrap();
            assert_eq!(&json::parse(&text).unwrap(), v, "{name}: {text}");
            assert_eq!(json::to_vec(v, 0), text.as_bytes(), "{name}: {text}");
        }
    }
}

#[test]
fn pinned_answers_read_and_write_back_to_their_bytes() {
    let mut n = 0;
    for name in ["golden_expected.json", "golden_more_expected.json"] {
        for answer in fixture(name)["answers"].as_array().unwrap() {
            let text = answer.as_str().unwrap();
            let v = json::parse(text).unwrap();
            assert_eq!(v, serde_json::from_str::<Value>(text).unwrap(), "{text}");
            assert_eq!(json::to_vec(&v, text.len()), text.as_bytes(), "{text}");
            n += 1;
        }
    }
    assert!(n > 200, "only {n} answers");
}
