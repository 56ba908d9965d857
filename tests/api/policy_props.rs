//! The property the policy engine exists for: whatever the record and whoever asks, no clear
//! value of a class above the principal's clearance, and no value the catalog does not name,
//! appears anywhere in what is released.

use credgate::policy::{ApplyCtx, ConsentState, PolicySet};
use proptest::prelude::*;
use ring::hmac;
use serde_json::{Map, Value};

fn shipped() -> PolicySet {
    PolicySet::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies"
    )))
    .unwrap()
}

/// Fields of dated records keep real dates so that windows are exercised, not bypassed.
const DATE_FIELDS: &[&str] = &["decided_at", "publication_ends", "listed_at"];

struct Gen {
    state: u64,
    /// (class, the clear value) of every generated leaf.
    leaves: Vec<(String, String)>,
    secrets: Vec<String>,
}

impl Gen {
    fn next(&mut self) -> u64 {
        self.state = self
            .state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.state >> 11
    }
    fn token(&mut self) -> String {
        const A: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ0123456789";
        let s: String = (0..14)
            .map(|_| A[(self.next() % A.len() as u64) as usize] as char)
            .collect();
        format!("v{s}")
    }
    fn leaf(&mut self, key: &str, class: &str) -> Value {
        let v = if DATE_FIELDS.contains(&key) {
            let days = (self.next() % 4000) as i64;
            let d = time::OffsetDateTime::now_utc().date() - time::Duration::days(days);
            Value::String(format!(
                "{:04}-{:02}-{:02}",
                d.year(),
                d.month() as u8,
                d.day()
            ))
        } else if key == "region" {
            Value::String("350000".into())
        } else if self.next().is_multiple_of(3) {
            Value::from(1_000_000_007 + self.next() % 900_000_000_000)
        } else if key == "name" && self.next().is_multiple_of(2) {
            Value::String(format!("欧阳{}", self.token()))
        } else {
            Value::String(self.token())
        };
        let text = match &v {
            Value::String(s) => format!("\"{s}\""),
            other => other.to_string(),
        };
        if !DATE_FIELDS.contains(&key) && key != "region" {
            self.leaves.push((class.to_string(), text));
        }
        v
    }
    /// An extra field the catalog does not name, at this level.
    fn stray(&mut self, m: &mut Map<String, Value>) {
        let secret = self.token();
        self.secrets.push(secret.clone());
        m.insert(
            format!("x_{}", self.token().to_lowercase()),
            Value::String(secret),
        );
    }
}

/// Builds a document with a value at every catalog path (two elements per `[*]`).
fn insert(doc: &mut Value, segs: &[&str], class: &str, g: &mut Gen) {
    let (seg, rest) = segs.split_first().unwrap();
    let (key, any) = match seg.strip_suffix("[*]") {
        Some(k) => (k, true),
        None => (*seg, false),
    };
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
        g.stray(doc.as_object_mut().unwrap());
    }
    let m = doc.as_object_mut().unwrap();
    if !any {
        if rest.is_empty() {
            let v = g.leaf(key, class);
            m.insert(key.to_string(), v);
        } else {
            insert(m.entry(key).or_insert(Value::Null), rest, class, g);
        }
        return;
    }
    let arr = m
        .entry(key)
        .or_insert_with(|| Value::Array(vec![Value::Null, Value::Null]));
    for item in arr.as_array_mut().unwrap() {
        if rest.is_empty() {
            *item = g.leaf(key, class);
        } else {
            insert(item, rest, class, g);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn nothing_above_clearance_and_nothing_unclassified_is_ever_released(seed in any::<u64>(), consent in any::<bool>()) {
        let set = shipped();
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"prop");
        for role_name in set.role_names() {
            let role = set.role(role_name).unwrap().clone();
            for dataset in &role.datasets {
                let ds = set.dataset(dataset).unwrap();
                let mut g = Gen { state: seed ^ (dataset.len() as u64) << 7, leaves: vec![], secrets: vec![] };
                let mut doc = Value::Null;
                for (path, class) in &ds.fields {
                    let segs: Vec<&str> = path.split('.').collect();
                    insert(&mut doc, &segs, class, &mut g);
                }
                for purpose in &role.purposes {
                    let Ok(plan) = set.decide(role_name, purpose, dataset) else { continue };
                    if plan.check_scope(Some("350000")).is_err() { continue; }
                    let c = if consent { ConsentState::Valid } else { ConsentState::Absent };
                    if plan.check_consent(c).is_err() { continue; }
                    let mut out = doc.clone();
                    plan.apply(&mut out, &ApplyCtx {
                        region: Some("350000"),
                        today: time::OffsetDateTime::now_utc().date(),
                        pseudonym_key: &key,
                    });
                    let text = out.to_string();
                    for (class, clear) in &g.leaves {
                        if set.class(class).unwrap().tier > role.clearance {
                            prop_assert!(!text.contains(clear.as_str()),
                                "{role_name}/{dataset}: {class} value {clear} released in {text}");
                        }
                    }
                    for s in &g.secrets {
                        prop_assert!(!text.contains(s.as_str()), "unclassified value {s} released");
                    }
                }
            }
        }
    }
}

/// Plants a stray at `depth` segments along a catalog path: an extra key holding nested
/// structure where the walk reaches an object, or structure in place of the leaf itself.
fn plant(doc: &mut Value, segs: &[&str], depth: usize, g: &mut Gen) {
    if depth == 0 || segs.is_empty() {
        let secret = g.token();
        g.secrets.push(secret.clone());
        let nested = match g.next() % 4 {
            0 => serde_json::json!({"holder": {"id_number": secret}}),
            1 => serde_json::json!([{"id_number": secret}]),
            2 => serde_json::json!([secret]),
            _ => serde_json::json!({"a": [{"b": {"c": secret}}]}),
        };
        match doc {
            Value::Object(m) if !segs.is_empty() || g.next().is_multiple_of(2) => {
                m.insert(format!("x_{}", g.token().to_lowercase()), nested);
            }
            other => *other = nested,
        }
        return;
    }
    let (seg, rest) = segs.split_first().unwrap();
    let (key, any) = match seg.strip_suffix("[*]") {
        Some(k) => (k, true),
        None => (*seg, false),
    };
    let Some(child) = doc.as_object_mut().and_then(|m| m.get_mut(key)) else {
        return;
    };
    if !any {
        return plant(child, rest, depth - 1, g);
    }
    if let Some(items) = child.as_array_mut() {
        for item in items {
            plant(item, rest, depth - 1, g);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Issue 13, item 8: whatever a store nests at any depth under any catalog path (inside a
    /// field classified as a whole too), no role's output carries it, and it is counted.
    #[test]
    fn nothing_unnamed_leaves_at_any_depth(seed in any::<u64>(), picks in proptest::collection::vec(any::<u16>(), 1..6)) {
        let set = shipped();
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"prop");
        for role_name in set.role_names() {
            let role = set.role(role_name).unwrap().clone();
            for dataset in &role.datasets {
                let ds = set.dataset(dataset).unwrap();
                let mut g = Gen { state: seed ^ (dataset.len() as u64) << 7, leaves: vec![], secrets: vec![] };
                let mut doc = Value::Null;
                for (path, class) in &ds.fields {
                    let segs: Vec<&str> = path.split('.').collect();
                    insert(&mut doc, &segs, class, &mut g);
                }
                g.secrets.clear();
                for p in &picks {
                    let (path, _) = &ds.fields[*p as usize % ds.fields.len()];
                    let segs: Vec<&str> = path.split('.').collect();
                    let depth = (*p as usize / ds.fields.len()) % (segs.len() + 1);
                    plant(&mut doc, &segs, depth, &mut g);
                }
                for purpose in &role.purposes {
                    let Ok(plan) = set.decide(role_name, purpose, dataset) else { continue };
                    if plan.check_scope(Some("350000")).is_err() { continue; }
                    let mut out = doc.clone();
                    let outcome = plan.apply(&mut out, &ApplyCtx {
                        region: Some("350000"),
                        today: time::OffsetDateTime::now_utc().date(),
                        pseudonym_key: &key,
                    });
                    let text = out.to_string();
                    for s in &g.secrets {
                        prop_assert!(!text.contains(s.as_str()),
                            "{role_name}/{dataset}: stray {s} released in {text}");
                    }
                    // Counted as removed, unless the record holding it was withheld whole.
                    prop_assert!(g.secrets.is_empty() || outcome.masked > 0
                        || outcome.withheld_records > 0 || outcome.dropped_rows > 0 || outcome.out_of_scope, "{role_name}/{dataset}: {:?} {text} {:?}", g.secrets, outcome);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Issue 13, item 9 (review finding): whatever rows the masking empties and removes, an
    /// objection mark sits on the row whose subject it is, and on no other, for every reader
    /// of a list.
    #[test]
    fn a_mark_sits_on_its_own_row_whatever_rows_are_removed(rows in proptest::collection::vec((any::<bool>(), any::<bool>()), 1..24)) {
        let set = shipped();
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"prop");
        let mut items = Vec::new();
        let mut kept = Vec::new();
        for (i, (junk, marked)) in rows.iter().enumerate() {
            if *junk {
                items.push(serde_json::json!({"junk": i}));
            } else {
                let uscc = credgate::domain::Uscc::complete(&format!("91110000{i:08}")).unwrap();
                items.push(serde_json::json!({"uscc": uscc.as_str(), "name": format!("公司{i}"), "region": "350000"}));
                kept.push((uscc.as_str().to_string(), *marked));
            }
        }
        let doc = serde_json::json!({ "items": items });
        let mut readers = 0;
        for role_name in set.role_names() {
            let role = set.role(role_name).unwrap().clone();
            if !role.datasets.iter().any(|d| d == "entity_list") { continue; }
            for purpose in &role.purposes {
                let Ok(plan) = set.decide(role_name, purpose, "entity_list") else { continue };
                if plan.check_scope(Some("350000")).is_err() { continue; }
                let mut out = doc.clone();
                let marks: std::collections::HashMap<&str, bool> =
                    kept.iter().map(|(u, m)| (u.as_str(), *m)).collect();
                let mut note = |id: &str| marks.get(id).copied().filter(|m| *m).map(|_| Value::String(id.to_string()));
                let outcome = plan.apply_annotated(&mut out, &ApplyCtx {
                    region: Some("350000"),
                    today: time::OffsetDateTime::now_utc().date(),
                    pseudonym_key: &key,
                }, Some(&mut note));
                let released = out["items"].as_array().cloned().unwrap_or_default();
                // Subject rows share one shape: they all survive, or none does.
                if released.is_empty() { continue; }
                readers += 1;
                prop_assert_eq!(released.len(), kept.len(), "{}: {}", role_name, out);
                for (row, (uscc, marked)) in released.iter().zip(&kept) {
                    let want = marked.then(|| Value::String(uscc.clone()));
                    prop_assert_eq!(row.get("_objections").cloned(), want, "{}: {}", role_name, out);
                }
                prop_assert_eq!(outcome.annotated, kept.iter().filter(|(_, m)| *m).count());
            }
        }
        prop_assert!(kept.is_empty() || readers > 0, "no role released a row");
    }
}
