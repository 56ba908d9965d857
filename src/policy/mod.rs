//! Declarative policies from `policies/`, validated at start and compiled for lookups.
//!
//! What exists so far is the purpose catalog: every data request must declare a purpose
//! (`X-Purpose`) that the catalog knows. Role, tier and masking rules join it here.

use std::{collections::HashMap, path::Path};

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct PolicyError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Purpose {
    pub code: String,
    pub legal_basis: String,
}

/// The loaded, validated policy set. Immutable; a reload builds a new one.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    purposes: HashMap<String, Purpose>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurposesFile {
    purposes: std::collections::BTreeMap<Spanned<String>, PurposeEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurposeEntry {
    legal_basis: String,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl PolicySet {
    pub fn load(dir: &Path) -> Result<Self, PolicyError> {
        let path = dir.join("purposes.toml");
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| PolicyError {
            file: file.clone(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        let parsed: PurposesFile = toml::from_str(&text).map_err(|e| PolicyError {
            file: file.clone(),
            line: e.span().map(|s| line_of(&text, s.start)),
            message: e.message().to_string(),
        })?;
        let mut purposes = HashMap::new();
        for (code, entry) in parsed.purposes {
            let line = Some(line_of(&text, code.span().start));
            let code = code.into_inner();
            if !crate::config::is_name(&code) {
                return Err(PolicyError {
                    file,
                    line,
                    message: format!(
                        "purpose code `{code}`: use 1-64 characters of a-z, 0-9, '-' or '_'"
                    ),
                });
            }
            if entry.legal_basis.trim().is_empty() {
                return Err(PolicyError {
                    file,
                    line,
                    message: format!(
                        "purpose `{code}` has an empty legal_basis; every purpose needs its lawful basis"
                    ),
                });
            }
            purposes.insert(
                code.clone(),
                Purpose {
                    code,
                    legal_basis: entry.legal_basis,
                },
            );
        }
        if purposes.is_empty() {
            return Err(PolicyError {
                file,
                line: None,
                message: "no purposes declared; every data request needs one".into(),
            });
        }
        Ok(Self { purposes })
    }

    pub fn purpose(&self, code: &str) -> Option<&Purpose> {
        self.purposes.get(code)
    }

    pub fn purpose_codes(&self) -> Vec<&str> {
        let mut v: Vec<_> = self.purposes.keys().map(String::as_str).collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<PolicySet, PolicyError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("purposes.toml"), text).unwrap();
        PolicySet::load(dir.path())
    }

    #[test]
    fn shipped_policies_load() {
        let p = PolicySet::load(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("policies")
                .as_path(),
        )
        .unwrap();
        assert!(p.purpose("lending").is_some());
    }

    #[test]
    fn errors_name_file_and_line() {
        let e =
            load("[purposes.lending]\nlegal_basis = \"x\"\n[purposes.Bad]\nlegal_basis = \"y\"\n")
                .unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().contains("purposes.toml:3"), "{e}");
        let e = load("[purposes.lending]\nlegal_basis = \"x\"\nlegal_basis = \"y\"\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        let e = load("[purposes.lending]\nlegal_bases = \"x\"\n").unwrap_err();
        assert!(e.message.contains("legal_bases"), "{e}");
    }
}
