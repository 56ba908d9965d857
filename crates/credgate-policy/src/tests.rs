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
fn an_unknown_role_in_the_disclosure_file_is_refused() {
    let e = broken(
        "disclosure.toml",
        "\"regional_regulator\"]",
        "\"regional_regulatr\"]",
    );
    assert!(e.message.contains("regional_regulatr"), "{e}");
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
    let e = broken("disclosure.toml", "minor = \"3m\"", "minor = \"3 months\"");
    assert!(e.message.contains("\"3m\""), "{e}");
}
