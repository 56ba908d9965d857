//! Declarative policies from `policies/`: purposes, data classes, the catalog of datasets,
//! disclosure windows and roles. Loaded and validated as a whole (an error names the file, the
//! line and the fix), then compiled once into a plan per (role, purpose, dataset), so that the
//! request path does lookups, not interpretation. A reload builds a new set and swaps it whole.

mod engine;
pub mod files;
pub mod mask;
pub mod path;
pub mod testing;

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::Arc,
};

use serde::de::DeserializeOwned;

pub use engine::{Annotator, ApplyCtx, Outcome, Period, Plan};
use files::{CatalogFile, ClassesFile, DisclosureFile, PurposesFile, RolesFile};
pub use files::{Category, RowScope, Tier};
use mask::MaskSpec;

/// The domain types, under the name the policy code has always used for them.
use credgate_types as domain;
use domain::SubjectType;

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

#[derive(Debug, Clone)]
pub struct Class {
    pub name: Arc<str>,
    pub tier: Tier,
    pub category: Category,
    pub default_mask: Option<MaskSpec>,
    /// Values of this class identify a subject of this type.
    pub identifies: Option<SubjectType>,
}

#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub clearance: Tier,
    pub purposes: Vec<String>,
    pub datasets: Vec<String>,
    pub row_scope: RowScope,
    pub consent_for_natural: bool,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub subject_type: Option<SubjectType>,
    /// (JSON path, class) as written in the catalog.
    pub fields: Vec<(String, String)>,
}

/// Why a request was denied: the rule, never the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub rule: &'static str,
    pub detail: String,
}

/// The loaded, validated and compiled policy set. Immutable.
#[derive(Debug, Default)]
pub struct PolicySet {
    purposes: HashMap<String, Purpose>,
    classes: HashMap<String, Class>,
    roles: HashMap<String, Role>,
    datasets: HashMap<String, Dataset>,
    /// role -> dataset -> plan, looked up by `&str` without allocating.
    plans: HashMap<String, HashMap<String, Arc<Plan>>>,
    /// SHA-256 over the files' names and texts: replicas compare it to know they enforce the
    /// same set.
    digest: String,
}

/// One file's text, for turning spans into line numbers.
struct Source {
    file: String,
    text: String,
}

impl Source {
    /// Reads one file and adds its name and text to the set's digest.
    fn read(
        dir: &Path,
        name: &str,
        digest: &mut ring::digest::Context,
    ) -> Result<Self, PolicyError> {
        let path = dir.join(name);
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| PolicyError {
            file: file.clone(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        for part in [
            name.as_bytes(),
            &(text.len() as u64).to_be_bytes(),
            text.as_bytes(),
        ] {
            digest.update(part);
        }
        Ok(Self { file, text })
    }

    fn parse<T: DeserializeOwned>(&self) -> Result<T, PolicyError> {
        toml::from_str(&self.text).map_err(|e| PolicyError {
            file: self.file.clone(),
            line: e.span().map(|s| self.line(s.start)),
            message: e.message().trim().to_string(),
        })
    }

    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn err(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> PolicyError {
        PolicyError {
            file: self.file.clone(),
            line: Some(self.line(span.start)),
            message: message.into(),
        }
    }
}

fn check_name(src: &Source, name: &toml::Spanned<String>, what: &str) -> Result<(), PolicyError> {
    if crate::domain::names::is_name(name.get_ref()) {
        Ok(())
    } else {
        Err(src.err(
            name.span(),
            format!(
                "{what} `{}`: use 1-64 characters of a-z, 0-9, '-' or '_'",
                name.get_ref()
            ),
        ))
    }
}

impl PolicySet {
    /// SHA-256 (hex) over the files the set was loaded from.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Loads every file of `dir`. The set is refused whole on the first error.
    pub fn load(dir: &Path) -> Result<Self, PolicyError> {
        let mut set = PolicySet::default();
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);

        let src = Source::read(dir, "purposes.toml", &mut digest)?;
        let purposes: PurposesFile = src.parse()?;
        for (code, entry) in purposes.purposes {
            check_name(&src, &code, "purpose code")?;
            if entry.legal_basis.trim().is_empty() {
                return Err(src.err(
                    code.span(),
                    format!("purpose `{}` has an empty legal_basis; every purpose needs its lawful basis", code.get_ref()),
                ));
            }
            let code = code.into_inner();
            set.purposes.insert(
                code.clone(),
                Purpose {
                    code,
                    legal_basis: entry.legal_basis,
                },
            );
        }
        if set.purposes.is_empty() {
            return Err(src.err(0..0, "no purposes declared; every data request needs one"));
        }

        let src = Source::read(dir, "classes.toml", &mut digest)?;
        let classes: ClassesFile = src.parse()?;
        for (name, entry) in classes.classes {
            check_name(&src, &name, "class")?;
            let default_mask = match entry.mask {
                None => None,
                Some(m) => {
                    m.get_ref().validate().map_err(|e| {
                        src.err(m.span(), format!("class `{}`: {e}", name.get_ref()))
                    })?;
                    if m.get_ref().is_clear() {
                        return Err(src.err(
                            m.span(),
                            format!("class `{}`: its default mask applies below its tier and must not be `keep`; use another mask or none (remove)", name.get_ref()),
                        ));
                    }
                    Some(m.into_inner())
                }
            };
            let name = name.into_inner();
            set.classes.insert(
                name.clone(),
                Class {
                    name: name.as_str().into(),
                    tier: entry.tier,
                    category: entry.category,
                    default_mask,
                    identifies: entry.identifies,
                },
            );
        }

        let disclosure_src = Source::read(dir, "disclosure.toml", &mut digest)?;
        let disclosure: DisclosureFile = disclosure_src.parse()?;
        let roles_src = Source::read(dir, "roles.toml", &mut digest)?;
        let roles: RolesFile = roles_src.parse()?;
        let catalog_src = Source::read(dir, "catalog.toml", &mut digest)?;
        let catalog: CatalogFile = catalog_src.parse()?;

        let compiled_catalog =
            engine::compile_catalog(&catalog_src, catalog, &set.classes, &mut set.datasets)?;
        let windows = engine::compile_disclosure(&disclosure_src, &disclosure)?;

        for (name, entry) in roles.roles {
            check_name(&roles_src, &name, "role")?;
            let Some(clearance) = entry.clearance else {
                return Err(roles_src.err(
                    name.span(),
                    format!(
                        "role `{}` has no clearance; add `clearance = \"T1\"` (to \"T4\")",
                        name.get_ref()
                    ),
                ));
            };
            for p in &entry.purposes {
                if !set.purposes.contains_key(p.get_ref()) {
                    return Err(roles_src.err(
                        p.span(),
                        format!("role `{}`: unknown purpose `{}`; declare it in purposes.toml or fix the name", name.get_ref(), p.get_ref()),
                    ));
                }
            }
            let mut seen = std::collections::HashSet::new();
            for d in &entry.datasets {
                if !set.datasets.contains_key(d.get_ref()) {
                    return Err(roles_src.err(
                        d.span(),
                        format!("role `{}`: unknown dataset `{}`; declare it in catalog.toml or fix the name", name.get_ref(), d.get_ref()),
                    ));
                }
                if !seen.insert(d.get_ref().clone()) {
                    return Err(roles_src.err(
                        d.span(),
                        format!(
                            "role `{}`: dataset `{}` listed twice",
                            name.get_ref(),
                            d.get_ref()
                        ),
                    ));
                }
            }
            let mut overrides: BTreeMap<String, MaskSpec> = BTreeMap::new();
            for (class, m) in &entry.masks {
                let Some(c) = set.classes.get(class.get_ref()) else {
                    return Err(roles_src.err(
                        class.span(),
                        format!("role `{}`: unknown class `{}` in masks; declare it in classes.toml or fix the name", name.get_ref(), class.get_ref()),
                    ));
                };
                m.get_ref()
                    .validate()
                    .map_err(|e| roles_src.err(m.span(), e))?;
                if c.tier > clearance && m.get_ref().is_clear() {
                    return Err(roles_src.err(
                        m.span(),
                        format!(
                            "role `{}`: class `{}` is {}, above the role's clearance {}; `keep` would release it clear. Mask it or raise the clearance",
                            name.get_ref(), class.get_ref(), c.tier.as_str(), clearance.as_str()
                        ),
                    ));
                }
                overrides.insert(class.get_ref().clone(), m.get_ref().clone());
            }
            let role_name = name.into_inner();
            let exempt = disclosure
                .max_age
                .exempt_roles
                .iter()
                .any(|r| r.get_ref() == &role_name);
            let role = Role {
                name: role_name.clone(),
                clearance,
                purposes: entry.purposes.into_iter().map(|p| p.into_inner()).collect(),
                datasets: entry.datasets.into_iter().map(|d| d.into_inner()).collect(),
                row_scope: entry.row_scope,
                consent_for_natural: entry.consent_for_natural,
            };
            for d in &role.datasets {
                let plan = engine::compile_plan(
                    &role,
                    &compiled_catalog[d],
                    &set.classes,
                    &overrides,
                    &windows,
                    exempt,
                );
                set.plans
                    .entry(role_name.clone())
                    .or_default()
                    .insert(d.clone(), Arc::new(plan));
            }
            set.roles.insert(role_name, role);
        }
        for r in &disclosure.max_age.exempt_roles {
            if !set.roles.contains_key(r.get_ref()) {
                return Err(disclosure_src.err(
                    r.span(),
                    format!("unknown role `{}` in exempt_roles", r.get_ref()),
                ));
            }
        }
        set.digest = hex::encode(digest.finish().as_ref());
        Ok(set)
    }

    /// The plan for this request, or the rule that denies it.
    pub fn decide(&self, role: &str, purpose: &str, dataset: &str) -> Result<Arc<Plan>, Denial> {
        let r = self.roles.get(role).ok_or_else(|| Denial {
            rule: "unknown-role",
            detail: format!("role `{role}` is not defined by the policy"),
        })?;
        if !r.purposes.iter().any(|p| p == purpose) {
            return Err(Denial {
                rule: "purpose-not-allowed",
                detail: format!("role `{role}` may not declare purpose `{purpose}`"),
            });
        }
        self.plans
            .get(role)
            .and_then(|by_dataset| by_dataset.get(dataset))
            .cloned()
            .ok_or_else(|| Denial {
                rule: "dataset-not-allowed",
                detail: format!("role `{role}` may not read dataset `{dataset}`"),
            })
    }

    pub fn purpose(&self, code: &str) -> Option<&Purpose> {
        self.purposes.get(code)
    }

    pub fn purpose_codes(&self) -> Vec<&str> {
        let mut v: Vec<_> = self.purposes.keys().map(String::as_str).collect();
        v.sort();
        v
    }

    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    pub fn role_names(&self) -> Vec<&str> {
        let mut v: Vec<_> = self.roles.keys().map(String::as_str).collect();
        v.sort();
        v
    }

    pub fn dataset(&self, name: &str) -> Option<&Dataset> {
        self.datasets.get(name)
    }

    pub fn class(&self, name: &str) -> Option<&Class> {
        self.classes.get(name)
    }
}

#[cfg(test)]
mod tests;

/// Whether the request carries a live consent of the data subject for this org and purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentState {
    Absent,
    Valid,
    /// Named, but revoked, expired, another subject's, another org's or another purpose's.
    Invalid,
}

impl Plan {
    /// Row scope: a region-scoped role needs a region, and a dataset that names one.
    pub fn check_scope(&self, region: Option<&str>) -> Result<(), Denial> {
        if self.row_scope == RowScope::Region && (region.is_none() || self.region_unknown) {
            return Err(Denial {
                rule: "row-scope",
                detail: format!(
                    "role `{}` is scoped to a region, and this client or dataset `{}` has none",
                    self.role, self.dataset
                ),
            });
        }
        Ok(())
    }

    pub fn check_consent(&self, consent: ConsentState) -> Result<(), Denial> {
        if !self.needs_consent {
            return Ok(());
        }
        match consent {
            ConsentState::Valid => Ok(()),
            ConsentState::Absent => Err(Denial {
                rule: "consent-required",
                detail: format!(
                    "role `{}` reading dataset `{}` needs the person's consent: send X-Consent",
                    self.role, self.dataset
                ),
            }),
            ConsentState::Invalid => Err(Denial {
                rule: "consent-invalid",
                detail:
                    "the consent named in X-Consent is not live for this person, org and purpose"
                        .into(),
            }),
        }
    }
}
