//! Loading: the shipped set is valid, and each kind of mistake is refused with the file, the
//! line and what to do.

use std::path::{Path, PathBuf};

use super::*;

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

/// Copies the shipped set, replaces `from` with `to` in `file`, loads, and returns the error.
fn broken(file: &str, from: &str, to: &str) -> PolicyError {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(shipped()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let path = dir.path().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} has no `{from}`");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    let e = PolicySet::load(dir.path()).unwrap_err();
    assert!(e.file.ends_with(file), "{e}");
    e
}

fn line_of(file: &str, needle: &str) -> usize {
    let text = std::fs::read_to_string(shipped().join(file)).unwrap();
    text[..text.find(needle).unwrap()].matches('\n').count() + 1
}

#[test]
fn the_shipped_set_loads_and_decides() {
    let set = PolicySet::load(&shipped()).unwrap();
    for role in [
        "regulator",
        "regional_regulator",
        "government_agency",
        "financial_institution",
        "credit_agency",
        "public",
        "security_officer",
        "objection_handler",
    ] {
        assert!(set.role(role).is_some(), "{role}");
    }
    assert!(
        set.decide("financial_institution", "lending", "entity")
            .is_ok()
    );
    assert_eq!(
        set.decide("financial_institution", "supervision", "entity")
            .unwrap_err()
            .rule,
        "purpose-not-allowed"
    );
    assert_eq!(
        set.decide("security_officer", "security_audit", "entity")
            .unwrap_err()
            .rule,
        "dataset-not-allowed"
    );
    assert!(
        set.decide("financial_institution", "lending", "person")
            .unwrap()
            .needs_consent
    );
    assert!(
        !set.decide("government_agency", "bidding", "person")
            .unwrap()
            .needs_consent,
        "T2 sees no T3 data"
    );
    assert!(
        !set.decide("regulator", "supervision", "person")
            .unwrap()
            .needs_consent
    );
}

#[test]
fn an_unknown_class_names_file_and_line() {
    let e = broken(
        "catalog.toml",
        "annual_revenue = \"revenue\"",
        "annual_revenue = \"revenu\"",
    );
    assert_eq!(
        e.line,
        Some(line_of("catalog.toml", "annual_revenue = \"revenue\""))
    );
    assert!(e.message.contains("unknown class `revenu`"), "{e}");
}

#[test]
fn an_unknown_purpose_dataset_or_mask_function_is_refused() {
    let e = broken(
        "roles.toml",
        "\"lending\", \"guarantee\"",
        "\"lendng\", \"guarantee\"",
    );
    assert!(
        e.message.contains("unknown purpose `lendng`") && e.line.is_some(),
        "{e}"
    );
    let e = broken(
        "roles.toml",
        "datasets = [\"entity\", \"entity_list\", \"person\"",
        "datasets = [\"entty\", \"entity_list\", \"person\"",
    );
    assert!(e.message.contains("unknown dataset `entty`"), "{e}");
    let e = broken(
        "roles.toml",
        "{ fn = \"pseudonym\" }",
        "{ fn = \"scramble\" }",
    );
    assert!(e.message.contains("scramble") && e.line.is_some(), "{e}");
    let e = broken(
        "roles.toml",
        "id_number = { fn = \"pseudonym\" }",
        "id_numbr = { fn = \"pseudonym\" }",
    );
    assert!(e.message.contains("unknown class `id_numbr`"), "{e}");
}

#[test]
fn an_unknown_purpose_in_the_disclosure_file_is_refused() {
    let e = broken("disclosure.toml", "\"enforcement\"", "\"enforcment\"");
    assert!(
        e.message.contains("unknown purpose `enforcment`") && e.line.is_some(),
        "{e}"
    );
}

#[test]
fn duplicates_are_refused() {
    let e = broken(
        "classes.toml",
        "[classes.revenue]",
        "[classes.customer_list]",
    );
    assert!(e.message.to_lowercase().contains("duplicate"), "{e}");
    let e = broken(
        "catalog.toml",
        "name = \"entity_name\"\nsector",
        "name = \"entity_name\"\nname = \"uscc\"\nsector",
    );
    assert!(e.message.to_lowercase().contains("duplicate"), "{e}");
}

#[test]
fn paths_that_cannot_match_are_refused() {
    let e = broken(
        "catalog.toml",
        "\"rating.grade\" = \"rating_grade\"",
        "\"rating[0].grade\" = \"rating_grade\"",
    );
    assert!(e.message.contains("[*]"), "{e}");
    let e = broken(
        "catalog.toml",
        "address = \"address\"",
        "address = \"address\"\n\"address.street\" = \"address\"",
    );
    assert!(e.message.contains("can never apply"), "{e}");
    let e = broken(
        "catalog.toml",
        "rows = \"items[*]\"\nsubject = \"uscc\"\nregion = \"region\"\n\n[datasets.entity_list.fields]",
        "rows = \"items\"\nsubject = \"uscc\"\nregion = \"region\"\n\n[datasets.entity_list.fields]",
    );
    assert!(e.message.contains("rows must end in `[*]`"), "{e}");
}

#[test]
fn a_role_without_clearance_or_releasing_above_it_is_refused() {
    let e = broken(
        "roles.toml",
        "clearance = \"T3\"\npurposes = [\"lending\"",
        "purposes = [\"lending\"",
    );
    assert!(e.message.contains("no clearance"), "{e}");
    assert_eq!(
        e.line,
        Some(line_of("roles.toml", "[roles.financial_institution]"))
    );
    let e = broken(
        "roles.toml",
        "id_number = { fn = \"pseudonym\" }",
        "revenue = { fn = \"keep\" }",
    );
    assert!(e.message.contains("above the role's clearance"), "{e}");
    let e = broken(
        "classes.toml",
        "mask = { fn = \"partial\", keep_first = 6",
        "mask = { fn = \"keep\", keep_first = 6",
    );
    assert!(e.line.is_some(), "{e}");
}

#[test]
fn a_bad_period_is_refused_with_an_example() {
    let e = broken(
        "disclosure.toml",
        "general = \"1y\"",
        "general = \"1 year\"",
    );
    assert!(e.message.contains("\"3m\""), "{e}");
}

/// 征信业管理条例 art. 14: a prohibited class cannot be catalogued, and neither can a field named
/// like prohibited data under an innocent class.
#[test]
fn prohibited_data_cannot_be_catalogued() {
    let e = broken(
        "catalog.toml",
        "address = \"address\"",
        "address = \"address\"\nfaith = \"religion\"",
    );
    assert!(e.message.contains("征信业管理条例 art. 14"), "{e}");
    assert_eq!(
        e.line,
        Some(line_of("catalog.toml", "address = \"address\"") + 1)
    );
    for name in ["blood_type", "medical_history", "fingerprint", "Genes"] {
        let e = broken(
            "catalog.toml",
            "address = \"address\"",
            &format!("address = \"address\"\n\"legal_representative.{name}\" = \"entity_basic\""),
        );
        assert!(e.message.contains("forbids collecting"), "{name}: {e}");
    }
}

#[test]
fn sensitive_data_is_never_public_and_needs_separate_consent_unless_a_legal_duty() {
    let e = broken(
        "classes.toml",
        "tier = \"T3\"\ncategory = \"sensitive\"",
        "tier = \"T1\"\ncategory = \"sensitive\"",
    );
    assert!(e.message.contains("never public"), "{e}");
    let set = PolicySet::load(&shipped()).unwrap();
    let plan = set
        .decide("financial_institution", "risk_control", "person")
        .unwrap();
    assert!(plan.needs_consent && plan.needs_separate_consent);
    let plan = set.decide("regulator", "enforcement", "person").unwrap();
    assert!(!plan.needs_consent && !plan.needs_separate_consent);
    let plan = set
        .decide("government_agency", "bidding", "person")
        .unwrap();
    assert!(!plan.needs_separate_consent, "T2 sees no sensitive data");
}

#[test]
fn every_purpose_names_a_pipl_basis_code() {
    let e = broken(
        "purposes.toml",
        "legal_basis = \"contract\"",
        "legal_basis = \"because\"",
    );
    assert!(
        e.message.contains("not a code of PIPL art. 13") && e.message.contains("legal_duty"),
        "{e}"
    );
    assert_eq!(
        e.line,
        Some(line_of("purposes.toml", "[purposes.risk_control]"))
    );
    let set = PolicySet::load(&shipped()).unwrap();
    let lending = set.purpose("lending").unwrap();
    assert_eq!(lending.legal_basis, LegalBasis::Consent);
    assert_eq!(lending.legal_basis.article(), "PIPL art. 13(1)1");
    assert_eq!(
        set.purpose("enforcement")
            .unwrap()
            .withhold_from_subject_days,
        90
    );
    let e = broken(
        "purposes.toml",
        "withhold_from_subject_days = 90",
        "withhold_from_subject_days = 4000000000",
    );
    assert!(e.message.contains("at most"), "{e}");
}

fn apply_on(
    set: &PolicySet,
    role: &str,
    purpose: &str,
    ds: &str,
    doc: &mut serde_json::Value,
    today: time::Date,
) -> Outcome {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k");
    let ctx = ApplyCtx {
        region: None,
        today,
        pseudonym_key: &key,
    };
    set.decide(role, purpose, ds).unwrap().apply(doc, &ctx)
}

/// A record past retention is withheld from every role and named for deletion; a good record
/// of the same age is not touched.
#[test]
fn expired_records_are_withheld_from_every_role_and_named_for_deletion() {
    let set = PolicySet::load(&shipped()).unwrap();
    let today = time::macros::date!(2026 - 06 - 01);
    let person = serde_json::json!({"id_number": "11010519491231002X", "records": [
        {"id": "R1", "kind": "bad", "date": "2021-09-01", "ended_at": "2021-05-01"},
        {"id": "R2", "kind": "good", "date": "2010-01-01", "ended_at": "2010-01-01"},
    ]});
    for (role, purpose) in [
        ("regulator", "supervision"),
        ("credit_agency", "credit_service"),
    ] {
        let mut doc = person.clone();
        let out = apply_on(&set, role, purpose, "person", &mut doc, today);
        assert_eq!(doc["records"].as_array().unwrap().len(), 1, "{role}: {doc}");
        assert_eq!(doc["records"][0]["id"], "R2");
        assert_eq!(out.withheld_records, 1);
        assert_eq!(
            out.expired,
            vec![Expired {
                dataset: "person".into(),
                subject: Some("11010519491231002X".into()),
                record_ref: "R1".into(),
                store: None,
            }]
        );
    }
    // A day earlier the record is still within its five years.
    let mut doc = person.clone();
    let out = apply_on(
        &set,
        "regulator",
        "supervision",
        "person",
        &mut doc,
        time::macros::date!(2026 - 05 - 01),
    );
    assert!(out.expired.is_empty() && doc["records"].as_array().unwrap().len() == 2);
}

/// A hostile store: flags as strings, entries that are not objects, dates that are not dates.
/// Nothing is taken on trust: bad dates withdraw, odd entries are not current.
#[test]
fn malformed_marks_fail_closed() {
    let set = PolicySet::load(&shipped()).unwrap();
    let today = time::macros::date!(2026 - 06 - 01);
    let mut doc = serde_json::json!({"uscc": "91350100M000100Y43", "black_list": "yes",
    "list_entries": ["black", {"list": "black", "valid_until": "someday", "listed_at": "2026-01-01"}],
    "penalties": [
        {"decision_number": "P1", "severity": "serious", "decided_at": "2026-01-01", "ended_at": "2025-01-01", "revoked_at": "soon"},
        {"decision_number": "P2", "severity": "serious", "decided_at": "2026-01-01", "ended_at": "2025-01-01", "publication_ends": 20270101},
        {"decision_number": "P3", "severity": "serious", "decided_at": "not a date"},
    ]});
    apply_on(
        &set,
        "public",
        "public_disclosure",
        "entity",
        &mut doc,
        today,
    );
    assert_eq!(doc["black_list"], false, "{doc}");
    assert_eq!(doc["penalties"], serde_json::json!([]), "{doc}");
}

/// Expired rows of a list, and expired entries nested in a list's rows, each name their own
/// subject (hostile review: rows of different companies listed on one day collapsed into one
/// deletion request without a subject).
#[test]
fn expired_list_rows_name_their_own_subjects() {
    let set = PolicySet::load(&shipped()).unwrap();
    let today = time::macros::date!(2026 - 06 - 01);
    let old = "2015-01-01";
    let mut doc = serde_json::json!({"items": [
        {"uscc": "91350100M000100Y43", "name": "A", "listed_at": old, "valid_until": "2016-01-01"},
        {"uscc": "91110000100000000A", "name": "B", "listed_at": old, "valid_until": "2016-01-01"},
    ]});
    let out = apply_on(
        &set,
        "regulator",
        "supervision",
        "black_list",
        &mut doc,
        today,
    );
    let subjects: Vec<_> = out.expired.iter().map(|e| e.subject.clone()).collect();
    assert_eq!(out.expired.len(), 2, "{doc}");
    assert!(subjects.iter().all(Option::is_some), "{subjects:?}");
    assert_ne!(subjects[0], subjects[1]);
    let mut doc = serde_json::json!({"items": [
        {"uscc": "91350100M000100Y43", "name": "A", "list_entries": [
            {"list": "black", "listed_at": old, "valid_until": "2016-01-01"}]},
        {"uscc": "91110000100000000A", "name": "B", "list_entries": [
            {"list": "black", "listed_at": old, "valid_until": "2016-01-01"}]},
    ]});
    let out = apply_on(
        &set,
        "regulator",
        "supervision",
        "entity_list",
        &mut doc,
        today,
    );
    let subjects: Vec<_> = out.expired.iter().map(|e| e.subject.clone()).collect();
    assert_eq!(out.expired.len(), 2, "{doc}");
    assert!(subjects.iter().all(Option::is_some), "{subjects:?}");
    assert_ne!(subjects[0], subjects[1]);
}

/// A list entry naming a list no rule declares (a misspelt `blak`) is adverse under every rule
/// and counted, once, as an unknown value; declared values are not counted.
#[test]
fn unknown_list_values_are_counted_once() {
    let set = PolicySet::load(&shipped()).unwrap();
    let today = time::macros::date!(2026 - 06 - 01);
    let mut doc = serde_json::json!({"items": [
        {"uscc": "91350100M000100Y43", "name": "A", "list_entries": [
            {"list": "blak", "listed_at": "2026-01-01"},
            {"list": "black", "listed_at": "2026-01-01"},
            {"list": "red", "listed_at": "2026-01-01"},
            {"listed_at": "2026-01-01"}]},
    ]});
    let out = apply_on(
        &set,
        "regulator",
        "supervision",
        "entity_list",
        &mut doc,
        today,
    );
    assert_eq!(out.unknown_values, 2, "{doc}");
}

/// Labels are for people, never a way in: a label for a path the dataset's `fields` do not
/// name is refused (the catalog stays the one allow-list), and so is a label without both
/// languages, an empty one, or one with a key of its own.
#[test]
fn labels_name_only_catalogued_fields_in_both_languages() {
    let set = PolicySet::load(&shipped()).unwrap();
    let entity = set.dataset("entity").unwrap();
    assert_eq!(
        entity.label_of("registered_capital").unwrap().zh_cn,
        "注册资本"
    );
    assert_eq!(
        entity.label_of("penalties[*]").unwrap().en,
        "Administrative penalty",
        "a structure holding catalogued fields"
    );
    assert_eq!(entity.label.as_ref().unwrap().en, "Company record");
    assert!(entity.label_of("nowhere").is_none());
    let anchor = "registered_capital = { en = \"Registered capital\", zh-CN = \"注册资本\" }";
    for (to, says) in [
        (
            "secret_salary = { en = \"Salary\", zh-CN = \"工资\" }",
            "a label cannot add a field",
        ),
        (
            "\"penalties[*].hidden\" = { en = \"Hidden\", zh-CN = \"隐藏\" }",
            "a label cannot add a field",
        ),
        (
            "registered_capital = { en = \"Registered capital\" }",
            "zh-CN",
        ),
        (
            "registered_capital = { en = \" \", zh-CN = \"注册资本\" }",
            "1 to 120",
        ),
        (
            "registered_capital = { en = \"a\", zh-CN = \"b\", fr = \"c\" }",
            "fr",
        ),
    ] {
        let e = broken("catalog.toml", anchor, to);
        assert!(e.message.contains(says), "{to}: {e}");
        assert_eq!(e.line, Some(line_of("catalog.toml", anchor)), "{e}");
    }
}
