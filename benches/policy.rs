//! Cost of decide + mask, as a ratio to a plain serde_json parse and serialise of the same
//! bytes (what any JSON-handling proxy pays anyway). Run: `cargo bench --bench policy`.

use std::{hint::black_box, path::Path, time::Instant};

use credgate::{
    policy::{ApplyCtx, PolicySet},
    sample_store::{data::generate, summary_row},
};
use serde_json::{Value, json};

fn median_ns(iters: u32, mut f: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    runs.sort_by(|a, b| a.total_cmp(b));
    runs[3]
}

fn main() {
    let set = PolicySet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).unwrap();
    let data = generate(42, 200);
    let entity = serde_json::to_vec(&data.entities[7]).unwrap();
    let rows: Vec<Value> = data.entities.iter().take(100).map(summary_row).collect();
    let list =
        serde_json::to_vec(&json!({"items": rows, "page": 1, "page_size": 100, "total": 200}))
            .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"bench");
    let today = time::OffsetDateTime::now_utc().date();

    println!(
        "{:<44} {:>12} {:>12} {:>8}",
        "case", "baseline ns", "policy ns", "ratio"
    );
    for (label, bytes, dataset, iters) in [
        ("entity record", &entity, "entity", 20_000),
        ("100-row list page", &list, "entity_list", 1_000),
    ] {
        let baseline = median_ns(iters, || {
            let v: Value = serde_json::from_slice(black_box(bytes)).unwrap();
            black_box(serde_json::to_vec(&v).unwrap());
        });
        for (role, purpose) in [
            ("financial_institution", "lending"),
            ("public", "public_disclosure"),
            ("regulator", "supervision"),
        ] {
            let policy = median_ns(iters, || {
                let plan = set.decide(black_box(role), purpose, dataset).unwrap();
                let mut v: Value = serde_json::from_slice(black_box(bytes)).unwrap();
                plan.apply(
                    &mut v,
                    &ApplyCtx {
                        region: None,
                        today,
                        pseudonym_key: &key,
                    },
                );
                black_box(serde_json::to_vec(&v).unwrap());
            });
            println!(
                "{:<44} {:>12.0} {:>12.0} {:>7.2}x",
                format!("{label} ({} bytes), {role}", bytes.len()),
                baseline,
                policy,
                policy / baseline
            );
        }
    }
}
