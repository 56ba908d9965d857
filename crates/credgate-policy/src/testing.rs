//! `credgate policy test`: cases kept beside the policies (`policies/tests/*.toml`), each a
//! principal, a purpose, a dataset and an input answer, with the expected decision and masked
//! output. A security officer changes a rule, runs this, and sees what the change does.

use std::path::Path;

use ring::hmac;
use serde::Deserialize;
use serde_json::Value;

use super::{ConsentState, PolicyError, PolicySet};

/// Policy tests pseudonymise with this fixed key so expected outputs are stable.
pub const TEST_PSEUDONYM_KEY: &[u8] = b"credgate-policy-test";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default, rename = "case")]
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    role: String,
    purpose: String,
    dataset: String,
    #[serde(default)]
    region: Option<String>,
    /// Whether a live consent is presented.
    #[serde(default)]
    consent: bool,
    /// The day the answer is judged on (disclosure windows); default 2026-06-01.
    #[serde(default)]
    today: Option<String>,
    /// `allow`, `not_found` (out of row scope) or `deny:<rule>`.
    expect: String,
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    output: Option<String>,
}

#[derive(Debug, Default)]
pub struct TestRun {
    pub passed: usize,
    pub failures: Vec<String>,
}

pub fn run(dir: &Path) -> Result<TestRun, PolicyError> {
    let set = PolicySet::load(dir)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, TEST_PSEUDONYM_KEY);
    let mut report = TestRun::default();
    let mut files: Vec<_> = std::fs::read_dir(dir.join("tests"))
        .map_err(|e| PolicyError {
            file: dir.join("tests").display().to_string(),
            line: None,
            message: format!("cannot read the policy tests: {e}"),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut roles_seen = std::collections::HashSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| PolicyError {
            file: file.display().to_string(),
            line: None,
            message: e.to_string(),
        })?;
        let parsed: CaseFile = toml::from_str(&text).map_err(|e| PolicyError {
            file: file.display().to_string(),
            line: e.span().map(|s| text[..s.start].matches('\n').count() + 1),
            message: e.message().to_string(),
        })?;
        let fname = file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        for case in parsed.cases {
            roles_seen.insert(case.role.clone());
            match run_case(&set, &key, &case) {
                Ok(()) => report.passed += 1,
                Err(why) => report
                    .failures
                    .push(format!("{fname}: {}: {why}", case.name)),
            }
        }
    }
    for role in set.role_names() {
        if !roles_seen.contains(role) {
            report
                .failures
                .push(format!("role `{role}` has no test case"));
        }
    }
    Ok(report)
}

fn run_case(set: &PolicySet, key: &hmac::Key, case: &Case) -> Result<(), String> {
    let today = match &case.today {
        None => time::macros::date!(2026 - 06 - 01),
        Some(t) => time::Date::parse(
            t,
            &time::macros::format_description!("[year]-[month]-[day]"),
        )
        .map_err(|_| format!("today `{t}` is not YYYY-MM-DD"))?,
    };
    let consent = if case.consent {
        ConsentState::Valid
    } else {
        ConsentState::Absent
    };
    let decision = set
        .decide(&case.role, &case.purpose, &case.dataset)
        .and_then(|plan| {
            plan.check_scope(case.region.as_deref())?;
            plan.check_consent(consent)?;
            Ok(plan)
        });
    let plan = match (decision, case.expect.as_str()) {
        (Err(d), e) if e.strip_prefix("deny:") == Some(d.rule) => return Ok(()),
        (Err(d), e) => return Err(format!("expected {e}, got deny:{} ({})", d.rule, d.detail)),
        (Ok(_), e) if e.starts_with("deny:") => return Err(format!("expected {e}, got allow")),
        (Ok(plan), _) => plan,
    };
    let input = case
        .input
        .as_deref()
        .ok_or("an allowed case needs `input`")?;
    let mut doc: Value =
        serde_json::from_str(input).map_err(|e| format!("input is not JSON: {e}"))?;
    let outcome = plan.apply(
        &mut doc,
        &super::ApplyCtx {
            region: case.region.as_deref(),
            today,
            pseudonym_key: key,
        },
    );
    match case.expect.as_str() {
        "not_found" if outcome.out_of_scope => return Ok(()),
        "not_found" => return Err("expected not_found (out of scope), got allow".into()),
        "allow" if outcome.out_of_scope => {
            return Err("expected allow, got not_found (out of scope)".into());
        }
        "allow" => {}
        other => {
            return Err(format!(
                "unknown expect `{other}`: use allow, not_found or deny:<rule>"
            ));
        }
    }
    let expected = case
        .output
        .as_deref()
        .ok_or("an allowed case needs `output`")?;
    let expected: Value =
        serde_json::from_str(expected).map_err(|e| format!("output is not JSON: {e}"))?;
    if doc != expected {
        return Err(format!(
            "masked output differs\n    expected: {expected}\n    actual:   {doc}"
        ));
    }
    Ok(())
}
