//! Cost of decide + mask, as a ratio to a plain serde_json parse and serialise of the same
//! bytes (what any JSON-handling proxy pays anyway). Run: `cargo bench --bench policy`.
//!
//! For an instruction count (callgrind), `CREDGATE_BENCH_ONE=list:financial_institution:lending`
//! (or `entity:...`; the role `baseline` for the plain parse and serialise) runs that one case
//! `CREDGATE_BENCH_ITERS` times (default 200) and prints nothing: timings on a shared machine
//! are noisy, instructions are not. Run it twice (0 and N iterations) and divide the
//! difference by N to leave out loading the policies and generating the data.

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

/// What one case runs: decide, parse, apply the plan, serialise; or, for `None`, the baseline
/// parse and serialise alone.
struct Case<'a> {
    set: &'a PolicySet,
    ctx: ApplyCtx<'a>,
}

impl Case<'_> {
    fn run(&self, bytes: &[u8], dataset: &str, role: Option<(&str, &str)>) {
        // As the gateway reads and writes answers (`proxy::release_in`, `web::data::served`).
        let text = std::str::from_utf8(black_box(bytes)).unwrap();
        let mut v: Value = credgate::policy::json::parse(text).unwrap();
        if let Some((role, purpose)) = role {
            let plan = self.set.decide(black_box(role), purpose, dataset).unwrap();
            plan.apply(&mut v, &self.ctx);
        }
        black_box(credgate::policy::json::to_vec(&v, bytes.len()));
    }
}

const ROLES: [(&str, &str); 3] = [
    ("financial_institution", "lending"),
    ("public", "public_disclosure"),
    ("regulator", "supervision"),
];

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
    let case = Case {
        set: &set,
        ctx: ApplyCtx {
            region: None,
            today,
            pseudonym_key: &key,
        },
    };
    let cases = [
        ("entity record", "entity", &entity, "entity", 20_000),
        ("100-row list page", "list", &list, "entity_list", 1_000),
    ];
    if let Ok(one) = std::env::var("CREDGATE_BENCH_ONE") {
        let mut parts = one.splitn(3, ':');
        let (which, role, purpose) = (parts.next(), parts.next(), parts.next());
        let (_, _, bytes, dataset, _) = cases
            .iter()
            .find(|c| Some(c.1) == which)
            .expect("CREDGATE_BENCH_ONE=entity|list:role:purpose");
        let role = role.filter(|r| *r != "baseline").zip(purpose);
        let iters: u32 = std::env::var("CREDGATE_BENCH_ITERS").map_or(200, |n| n.parse().unwrap());
        for _ in 0..iters {
            case.run(bytes, dataset, role);
        }
        return;
    }
    println!(
        "{:<44} {:>12} {:>12} {:>8}",
        "case", "baseline ns", "policy ns", "ratio"
    );
    for (label, _, bytes, dataset, iters) in cases {
        let baseline = median_ns(iters, || case.run(bytes, dataset, None));
        for role in ROLES {
            let policy = median_ns(iters, || case.run(bytes, dataset, Some(role)));
            println!(
                "{:<44} {:>12.0} {:>12.0} {:>7.2}x",
                format!("{label} ({} bytes), {}", bytes.len(), role.0),
                baseline,
                policy,
                policy / baseline
            );
        }
    }
}
