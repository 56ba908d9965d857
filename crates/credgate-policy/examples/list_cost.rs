//! One 100-row list answer as the gateway releases it (parse, apply the plan, serialise, drop),
//! `LIST_COST_ITERS` times (default 200), for callgrind: `LIST_COST_SERDE=1` parses and writes
//! with serde_json's own functions instead of `credgate_policy::json`. Run it with 0 and N
//! iterations and divide the difference by N to leave out loading.

use std::{hint::black_box, path::Path};

use credgate_policy::{ApplyCtx, PolicySet, json};
use serde_json::Value;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let set = PolicySet::load(&root.join("../../policies")).unwrap();
    let inputs: Value = serde_json::from_slice(
        &std::fs::read(root.join("tests/fixtures/golden_inputs.json")).unwrap(),
    )
    .unwrap();
    let body = serde_json::to_vec(&inputs["entity_list"][0]).unwrap();
    let plan = set
        .decide("financial_institution", "lending", "entity_list")
        .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"bench");
    let ctx = ApplyCtx {
        region: None,
        today: time::macros::date!(2026 - 12 - 01),
        pseudonym_key: &key,
    };
    let serde = std::env::var_os("LIST_COST_SERDE").is_some();
    let iters: u32 = std::env::var("LIST_COST_ITERS").map_or(200, |n| n.parse().unwrap());
    for _ in 0..iters {
        let text = std::str::from_utf8(black_box(&body)).unwrap();
        let mut doc = if serde {
            serde_json::from_str::<Value>(text).unwrap()
        } else {
            json::parse(text).unwrap()
        };
        black_box(plan.apply(&mut doc, &ctx));
        let out = if serde {
            serde_json::to_vec(&doc).unwrap()
        } else {
            json::to_vec(&doc, body.len())
        };
        black_box(out);
        drop(black_box(doc));
    }
}
