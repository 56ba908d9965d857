//! The masked answer and the `Outcome` of every plan the shipped policies allow on `entity` and
//! `entity_list`, over sample data and hostile shapes, pinned byte for byte. Masking is the
//! security core: a change made for speed must not change one byte of an answer or one field
//! of an outcome, and this test is what proves it.
//!
//! The inputs (`fixtures/golden_inputs.json`) were generated once from the sample store's data
//! (`generate(42, 200)`) and are replayed with a fixed `today`, so the expectations do not move
//! with the calendar or the generator. `CREDGATE_GOLDEN_WRITE=1` rewrites the expectations
//! (`fixtures/golden_expected.json`): only when a change of answers is intended and reviewed.

use std::{collections::HashMap, path::Path};

use credgate_policy::{ApplyCtx, Expired, Outcome, Plan, PolicySet, RowScope};
use serde_json::{Value, json};

const DATASETS: [&str; 2] = ["entity", "entity_list"];

/// The other datasets the policies ship, pinned from their own inputs
/// (`golden_more_inputs.json`, generated the same way) into `golden_more_expected.json`.
const MORE_DATASETS: [&str; 3] = ["person", "red_list", "black_list"];

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Every field, by name: a field added to `Outcome` fails to compile here until it is pinned.
fn outcome_json(o: &Outcome) -> Value {
    let Outcome {
        masked,
        unclassified,
        withheld_records,
        dropped_rows,
        out_of_scope,
        by_class,
        unclassified_paths,
        subjects,
        annotated,
        released_t4,
        expired,
        unknown_values,
    } = o;
    let expired: Vec<Value> = expired
        .iter()
        .map(|e| {
            let Expired {
                dataset,
                subject,
                record_ref,
                store,
            } = e;
            json!({"dataset": &**dataset, "subject": subject, "record_ref": record_ref, "store": store})
        })
        .collect();
    let by_class: serde_json::Map<String, Value> = by_class
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "masked": masked, "unclassified": unclassified, "withheld_records": withheld_records,
        "dropped_rows": dropped_rows, "out_of_scope": out_of_scope, "by_class": by_class,
        "unclassified_paths": unclassified_paths, "subjects": subjects, "annotated": annotated,
        "released_t4": released_t4, "expired": expired, "unknown_values": unknown_values,
    })
}

/// Shapes a store should not send, built around real ids: unknown fields, nested arrays,
/// wrong types, unicode and path-like keys, ids that are not ids, the gateway's own key.
fn hostile(dataset: &str, inputs: &Value) -> Vec<Value> {
    let sample = &inputs["entity"][0];
    let uscc = sample["uscc"].as_str().unwrap();
    let rid = sample["legal_representative"]["id_number"]
        .as_str()
        .unwrap();
    let region = inputs["region"].clone();
    let rep = json!({"name": "欧阳娜娜", "id_number": rid, "phone": "13812345678", "extra": 1});
    let entries = json!([
        {"list": "black", "listed_at": "2026-01-01", "valid_until": "2029-01-01", "removed_at": null},
        {"list": "grey", "listed_at": "2025-01-01", "valid_until": 20290101},
        {"list": 7, "listed_at": "not a date", "removed_at": "2020-13-45"},
        {"list": "red", "listed_at": "2024-06-01", "valid_until": "2027-06-01", "extra": [1]},
        "a string entry", [1, 2], null
    ]);
    let deep = (0..40).fold(json!("leaf"), |v, i| json!({ format!("k{i}"): [v] }));
    let row = |id: Value| {
        json!({"uscc": id, "name": "甲公司", "region": region, "registered_capital": 1.5e7,
               "legal_representative": rep, "rating": "AA", "red_list": true,
               "black_list": "yes", "list_entries": entries, "secret": "x", "名称": "u",
               "legal_representative.phone": "x", "[*]": 1, "": 2, "🙂": {"a": 1},
               "_objections": ["forged"]})
    };
    let ids = [
        json!(uscc),
        json!(uscc.to_lowercase()),
        json!(format!("{}X", &uscc[..17])),
        json!("z".repeat(300)),
        json!(format!("sha256:{}", "0".repeat(64))),
        json!(12345),
        json!(null),
        json!(uscc),
    ];
    match dataset {
        "entity_list" | "red_list" | "black_list" => {
            let rows: Vec<Value> = ids.iter().cloned().map(row).collect();
            vec![
                json!({"items": rows, "page": "1", "page_size": 100, "total": {"n": 1}, "extra": [1]}),
                json!({"items": [[row(json!(uscc))], 5, "str", null, {}, {"junk": 1}, row(json!(uscc))]}),
                json!({"items": {"a": row(json!(uscc))}, "page": 1}),
                json!({"items": [], "page": 1, "total": 0}),
                json!({"items": [{"uscc": uscc, "legal_representative": "张三", "rating": {"grade": "A"},
                                  "list_entries": "none", "region": 110000, "deep": deep}]}),
                json!([row(json!(uscc))]),
                json!("a string"),
                json!(null),
                json!({}),
            ]
        }
        _ => {
            let penalties = json!([
                {"decision_number": "罚1", "decided_at": "2026-10-01", "severity": "serious", "amount": 5},
                {"decision_number": 77, "decided_at": "2001-01-01", "ended_at": "2001-01-01", "severity": "general"},
                {"decided_at": 20260101, "severity": "unknown"},
                {"decision_number": "罚2", "decided_at": "2026-11-01", "revoked_at": "bad", "extra": 1},
                {"decision_number": "罚3", "decided_at": "2025-12-01", "severity": "general", "repaired_at": "2026-06-01"},
                [1], "p", null
            ]);
            let mut whole = row(json!(uscc));
            whole["penalties"] = penalties;
            whole["rating"] =
                json!({"grade": "A", "agency": "甲", "rated_at": "2025-05-06", "x": 1});
            whole["major_customers"] = json!([{"name": "乙", "share": 0.25}, {"name": ["nested"]}]);
            whole["annual_revenue"] = json!("12.5亿");
            whole["deep"] = deep;
            let mut others: Vec<Value> = ids[1..7].iter().cloned().map(row).collect();
            others.extend([
                whole,
                json!({"penalties": "none", "list_entries": {"list": "black"}, "licenses": [[{"number": "1"}]]}),
                json!({"uscc": uscc, "rating": "AA", "legal_representative": [rep]}),
                json!({"junk": 1}),
                json!([1, 2]),
                json!(42),
                json!({}),
            ]);
            others
        }
    }
}

/// The plan run as the gateway runs it: withholding restricted subjects first, then the
/// annotated walk (`annotated`), or the plain `apply` the benchmark times.
fn run(plan: &Plan, doc: &Value, ctx: &ApplyCtx<'_>, annotated: bool) -> (String, Outcome) {
    let mut doc = doc.clone();
    let outcome = if annotated {
        let mut withheld = Outcome::default();
        let restricted = |id: &str| id.ends_with('3') || id.ends_with('X');
        plan.withhold_subjects(&mut doc, &restricted, &mut withheld);
        let mut note = |id: &str| {
            (!id.len().is_multiple_of(3) || id.ends_with('7'))
                .then(|| json!([{"about": id, "open": true}]))
        };
        let mut out = plan.apply_annotated(&mut doc, ctx, Some(&mut note));
        out.withheld_records += withheld.withheld_records;
        out.out_of_scope |= withheld.out_of_scope;
        out
    } else {
        plan.apply(&mut doc, ctx)
    };
    (serde_json::to_string(&doc).unwrap(), outcome)
}

/// Stores `v` once in `all`, answering its index.
fn intern(all: &mut Vec<Value>, index: &mut HashMap<String, usize>, v: Value) -> usize {
    let next = all.len();
    let at = *index.entry(v.to_string()).or_insert(next);
    if at == next {
        all.push(v);
    }
    at
}

/// Every case as `[name, answer, outcome]` (indices into `answers` and `outcomes`, where
/// identical ones are stored once), in a fixed order.
fn current(inputs: &str, datasets: &[&str]) -> Value {
    let set =
        PolicySet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")).unwrap();
    let inputs: Value = serde_json::from_slice(&std::fs::read(fixture(inputs)).unwrap()).unwrap();
    let today = time::Date::parse(
        inputs["today"].as_str().unwrap(),
        &time::macros::format_description!("[year]-[month]-[day]"),
    )
    .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"golden");
    let (mut answers, mut outcomes, mut cases) = (Vec::new(), Vec::new(), Vec::new());
    let (mut answer_at, mut outcome_at) = (HashMap::new(), HashMap::new());
    for &dataset in datasets {
        let mut docs: Vec<Value> = inputs[dataset].as_array().unwrap().clone();
        docs.extend(hostile(dataset, &inputs));
        for role in set.role_names() {
            for purpose in &set.role(role).unwrap().purposes {
                let Ok(plan) = set.decide(role, purpose, dataset) else {
                    continue;
                };
                let regions = match plan.row_scope {
                    RowScope::Region => vec![None, inputs["region"].as_str()],
                    _ => vec![None],
                };
                for region in regions {
                    let ctx = ApplyCtx {
                        region,
                        today,
                        pseudonym_key: &key,
                    };
                    for (i, doc) in docs.iter().enumerate() {
                        for annotated in [false, true] {
                            let (text, outcome) = run(&plan, doc, &ctx, annotated);
                            let name = format!(
                                "{dataset} {role} {purpose} region={} input={i} annotated={annotated}",
                                region.unwrap_or("-")
                            );
                            let a = intern(&mut answers, &mut answer_at, Value::String(text));
                            let o = intern(&mut outcomes, &mut outcome_at, outcome_json(&outcome));
                            cases.push(json!([name, a, o]));
                        }
                    }
                }
            }
        }
    }
    json!({"cases": cases, "outcomes": outcomes, "answers": answers})
}

/// One element a line: the fixture stays readable and a change shows as the lines it moved.
fn layout(v: &Value) -> String {
    let part = |k: &str| {
        let lines: Vec<String> = v[k]
            .as_array()
            .unwrap()
            .iter()
            .map(Value::to_string)
            .collect();
        format!("\"{k}\": [\n{}\n]", lines.join(",\n"))
    };
    format!(
        "{{\n{},\n{},\n{}\n}}\n",
        part("cases"),
        part("outcomes"),
        part("answers")
    )
}

#[test]
fn every_plan_answers_exactly_as_pinned() {
    check(
        "golden_inputs.json",
        &DATASETS,
        "golden_expected.json",
        1000,
    );
}

#[test]
fn every_plan_of_the_other_datasets_answers_exactly_as_pinned() {
    check(
        "golden_more_inputs.json",
        &MORE_DATASETS,
        "golden_more_expected.json",
        500,
    );
}

/// Runs every plan of `datasets` on `inputs` and compares with the pinned `expected`.
fn check(inputs: &str, datasets: &[&str], expected: &str, at_least: usize) {
    let now = current(inputs, datasets);
    let path = fixture(expected);
    // Writing never passes: a run that wrote the expectations compared nothing.
    if std::env::var_os("CREDGATE_GOLDEN_WRITE").is_some() {
        std::fs::write(&path, layout(&now)).unwrap();
        panic!(
            "expectations rewritten to {path:?}: review the diff, then run without CREDGATE_GOLDEN_WRITE"
        );
    }
    let pinned: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let (cases, was) = (
        now["cases"].as_array().unwrap(),
        pinned["cases"].as_array().unwrap(),
    );
    assert_eq!(cases.len(), was.len(), "the set of cases changed");
    let get =
        |doc: &Value, part: &str, at: &Value| doc[part][at.as_u64().unwrap() as usize].clone();
    for (c, p) in cases.iter().zip(was) {
        assert_eq!(c[0], p[0], "the cases' order changed");
        let (now_answer, was_answer) =
            (get(&now, "answers", &c[1]), get(&pinned, "answers", &p[1]));
        assert_eq!(
            get(&now, "outcomes", &c[2]),
            get(&pinned, "outcomes", &p[2]),
            "outcome of {}",
            c[0]
        );
        assert_eq!(now_answer, was_answer, "answer of {}", c[0]);
    }
    assert!(cases.len() > at_least, "too few cases: {}", cases.len());
}

/// For an instruction count without building the gateway (callgrind, release):
/// `CREDGATE_BENCH_ONE=list:financial_institution:lending cargo test --release -p
/// credgate-policy --test golden -- --ignored one_case` runs what `benches/policy.rs` times
/// (parse, apply, serialise) on the same page `CREDGATE_BENCH_ITERS` times (default 200).
#[test]
#[ignore]
fn one_case() {
    let Ok(one) = std::env::var("CREDGATE_BENCH_ONE") else {
        return;
    };
    let set =
        PolicySet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")).unwrap();
    let inputs: Value =
        serde_json::from_slice(&std::fs::read(fixture("golden_inputs.json")).unwrap()).unwrap();
    let mut parts = one.splitn(3, ':');
    let (which, role, purpose) = (parts.next().unwrap(), parts.next(), parts.next());
    let (doc, dataset) = match which {
        "list" => (&inputs["entity_list"][0], "entity_list"),
        _ => (&inputs["entity"][7], "entity"),
    };
    let bytes = serde_json::to_vec(doc).unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"bench");
    let ctx = ApplyCtx {
        region: None,
        today: time::OffsetDateTime::now_utc().date(),
        pseudonym_key: &key,
    };
    let iters: u32 = std::env::var("CREDGATE_BENCH_ITERS").map_or(200, |n| n.parse().unwrap());
    // As the gateway reads and writes answers; `CREDGATE_BENCH_SERDE=1`: serde_json's own
    // functions instead, to compare.
    let serde = std::env::var_os("CREDGATE_BENCH_SERDE").is_some();
    for _ in 0..iters {
        let text = std::str::from_utf8(std::hint::black_box(&bytes)).unwrap();
        let mut v: Value = if serde {
            serde_json::from_str(text).unwrap()
        } else {
            credgate_policy::json::parse(text).unwrap()
        };
        if let (Some(role), Some(purpose)) = (role.filter(|r| *r != "baseline"), purpose) {
            set.decide(role, purpose, dataset)
                .unwrap()
                .apply(&mut v, &ctx);
        }
        let out = if serde {
            serde_json::to_vec(&v).unwrap()
        } else {
            credgate_policy::json::to_vec(&v, bytes.len())
        };
        std::hint::black_box(out);
    }
}
