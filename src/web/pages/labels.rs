//! What people call datasets and fields: the catalog's labels (`policies/catalog.toml`,
//! `[datasets.X.label]` and `[datasets.X.labels]`) in the reader's language, so that a page
//! shows `Registered capital` or `注册资本` instead of `registered_capital`. A field the catalog
//! gives no label is shown by its path: never guessed, never dropped.
//!
//! Two kinds of path reach here: a catalog path (`penalties[*].decided_at`, the objection
//! form's field picker and an objection's `field`) and a released record's own path with its
//! indices (`penalties.0.decided_at`, drawn as `Administrative penalty 1 · Decided on`).

use serde_json::Value;

use crate::policy::{Dataset, Label, PolicySet};

use super::Lang;

fn text(lang: Lang, l: &Label) -> &str {
    match lang {
        Lang::En => &l.en,
        Lang::ZhCn => &l.zh_cn,
    }
}

/// A dataset's name for people, or its catalog name.
pub fn dataset(lang: Lang, ds: Option<&Dataset>, name: &str) -> String {
    ds.and_then(|d| d.label.as_ref())
        .map_or_else(|| name.to_owned(), |l| text(lang, l).to_owned())
}

/// A catalog path's name for people: the field's label, after the label of each list it sits
/// in (`Administrative penalty · Decided on`); the path itself when the field has none.
pub fn field(lang: Lang, ds: Option<&Dataset>, path: &str) -> String {
    let Some(d) = ds else {
        return path.to_owned();
    };
    let Some(own) = d.label_of(path) else {
        return path.to_owned();
    };
    let mut parts: Vec<&str> = path
        .match_indices("[*]")
        .map(|(i, _)| &path[..i + 3])
        .filter(|p| *p != path)
        .filter_map(|p| d.label_of(p).map(|l| text(lang, l)))
        .collect();
    parts.push(text(lang, own));
    parts.join(" · ")
}

/// A released document's scalar fields, in document order, each with its path, at most `max`
/// (the caller says the rest was cut when there are more than `max`).
pub fn flatten(doc: &Value, max: usize) -> Vec<(Vec<Step>, Value)> {
    fn walk(at: &mut Vec<Step>, v: &Value, max: usize, out: &mut Vec<(Vec<Step>, Value)>) {
        if out.len() > max {
            return;
        }
        match v {
            Value::Object(m) => m.iter().for_each(|(k, v)| {
                at.push(Step::Key(k.clone()));
                walk(at, v, max, out);
                at.pop();
            }),
            Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| {
                at.push(Step::Index(i));
                walk(at, v, max, out);
                at.pop();
            }),
            other => out.push((at.clone(), other.clone())),
        }
    }
    let mut out = Vec::new();
    walk(&mut Vec::new(), doc, max, &mut out);
    out
}

/// A scalar as the reader reads it: yes or no in their language for a boolean, `—` for
/// nothing, numbers as written, text as it is (a date in it is drawn by the `when` filter).
pub fn cell(lang: Lang, v: &Value) -> String {
    match v {
        Value::Bool(true) => lang.t("value.yes").to_owned(),
        Value::Bool(false) => lang.t("value.no").to_owned(),
        Value::Null => "—".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A released document as rows of (label, value) for a table: each field by its catalog label
/// (the path where it has none), its value as [`cell`] draws it.
pub fn table(lang: Lang, ds: Option<&Dataset>, doc: &Value, max: usize) -> Vec<Value> {
    flatten(doc, max)
        .into_iter()
        .take(max)
        .map(|(steps, v)| serde_json::json!({"label": record_field(lang, ds, &steps), "value": cell(lang, &v)}))
        .collect()
}

/// A case's view (objection, request) with the names people use for its dataset and field
/// (`dataset_label`, `field_label`), from the catalog.
pub fn case(policies: &PolicySet, lang: Lang, mut v: Value) -> Value {
    let Some(name) = v["dataset"].as_str().map(str::to_owned) else {
        return v;
    };
    let d = policies.dataset(&name);
    if let Some(f) = v["field"].as_str().map(|f| field(lang, d, f)) {
        v["field_label"] = f.into();
    }
    v["dataset_label"] = dataset(lang, d, &name).into();
    v
}

/// One step of a released record's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// The catalog path of a record's path: every index becomes `[*]`.
pub fn catalog_path(steps: &[Step]) -> String {
    let mut out = String::new();
    for s in steps {
        match s {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(_) => out.push_str("[*]"),
        }
    }
    out
}

/// The path as the record has it (`penalties.0.decided_at`): shown when there is no label.
pub fn plain_path(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|s| match s {
            Step::Key(k) => k.clone(),
            Step::Index(i) => i.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A record field's name for people: each list it sits in by its label and number (counted
/// from 1), then the field's own label: `Administrative penalty 2 · Decided on`. Without the
/// field's label, its plain path; without a list's label, the number in brackets.
pub fn record_field(lang: Lang, ds: Option<&Dataset>, steps: &[Step]) -> String {
    let full = catalog_path(steps);
    let Some(own) = ds.and_then(|d| d.label_of(&full)) else {
        return plain_path(steps);
    };
    let mut parts = Vec::new();
    let mut numbers = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let Step::Index(n) = s else { continue };
        let list = catalog_path(&steps[..=i]);
        match ds.and_then(|d| d.label_of(&list)) {
            Some(l) => parts.push(format!("{} {}", text(lang, l), n + 1)),
            None => numbers.push((n + 1).to_string()),
        }
    }
    let mut own = text(lang, own).to_owned();
    if !numbers.is_empty() {
        own = format!("{own} ({})", numbers.join(", "));
    }
    parts.push(own);
    parts.join(" · ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn label(en: &str, zh: &str) -> Label {
        Label {
            en: en.into(),
            zh_cn: zh.into(),
        }
    }

    fn entity() -> Dataset {
        let mut labels = BTreeMap::new();
        labels.insert(
            "registered_capital".into(),
            label("Registered capital", "注册资本"),
        );
        labels.insert(
            "penalties[*]".into(),
            label("Administrative penalty", "行政处罚"),
        );
        labels.insert(
            "penalties[*].decided_at".into(),
            label("Decided on", "处罚日期"),
        );
        labels.insert("licenses[*].number".into(), label("Licence number", "编号"));
        Dataset {
            name: "entity".into(),
            subject_type: None,
            fields: vec![],
            label: Some(label("Company record", "企业信用记录")),
            labels,
        }
    }

    fn steps(s: &[&str]) -> Vec<Step> {
        s.iter()
            .map(|p| match p.parse() {
                Ok(n) => Step::Index(n),
                Err(_) => Step::Key((*p).into()),
            })
            .collect()
    }

    #[test]
    fn fields_are_named_in_the_readers_language() {
        let d = entity();
        assert_eq!(
            field(Lang::En, Some(&d), "registered_capital"),
            "Registered capital"
        );
        assert_eq!(
            field(Lang::ZhCn, Some(&d), "registered_capital"),
            "注册资本"
        );
        assert_eq!(
            field(Lang::En, Some(&d), "penalties[*].decided_at"),
            "Administrative penalty · Decided on"
        );
        assert_eq!(
            field(Lang::ZhCn, Some(&d), "penalties[*].decided_at"),
            "行政处罚 · 处罚日期"
        );
        assert_eq!(dataset(Lang::ZhCn, Some(&d), "entity"), "企业信用记录");
    }

    #[test]
    fn a_field_without_a_label_is_shown_by_its_path() {
        let d = entity();
        assert_eq!(field(Lang::En, Some(&d), "address"), "address");
        assert_eq!(field(Lang::En, None, "address"), "address");
        assert_eq!(dataset(Lang::En, None, "person"), "person");
        let s = steps(&["penalties", "0", "amount"]);
        assert_eq!(record_field(Lang::En, Some(&d), &s), "penalties.0.amount");
    }

    #[test]
    fn record_fields_carry_the_number_of_their_entry() {
        let d = entity();
        let s = steps(&["penalties", "1", "decided_at"]);
        assert_eq!(catalog_path(&s), "penalties[*].decided_at");
        assert_eq!(
            record_field(Lang::En, Some(&d), &s),
            "Administrative penalty 2 · Decided on"
        );
        assert_eq!(
            record_field(Lang::ZhCn, Some(&d), &s),
            "行政处罚 2 · 处罚日期"
        );
        let s = steps(&["licenses", "0", "number"]);
        assert_eq!(
            record_field(Lang::En, Some(&d), &s),
            "Licence number (1)",
            "a list without its own label: the number in brackets"
        );
    }
}
