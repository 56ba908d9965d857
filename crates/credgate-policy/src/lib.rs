//! Declarative policies from `policies/`: purposes, data classes, the catalog of datasets,
//! disclosure windows and roles. Loaded and validated as a whole (an error names the file, the
//! line and the fix), then compiled once into a plan per (role, purpose, dataset), so that the
//! request path does lookups, not interpretation. A reload builds a new set and swaps it whole.

mod engine;
pub mod files;
pub mod json;
pub mod mask;
pub mod path;
pub mod testing;

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::Arc,
};

use serde::de::DeserializeOwned;

pub use engine::{
    Annotator, ApplyCtx, Expired, Outcome, Period, Plan, SUBJECT_DIGEST_PREFIX, is_recorded_digest,
    recorded_subject, subject_to_search,
};
use files::{CatalogFile, ClassesFile, DisclosureFile, PurposesFile, RolesFile};
pub use files::{Category, Label, Reserved, RowScope, Tier};
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
    /// The lawful basis, from the fixed list of PIPL art. 13.
    pub legal_basis: LegalBasis,
    pub description: String,
    /// Reads for this purpose stay out of the subject's access log this many days (an
    /// enforcement case may withhold notice); the records exist and staff see them.
    pub withhold_from_subject_days: u32,
    /// Only roles reserved for the same caller declare it.
    pub reserved_for: Option<Reserved>,
    /// The yearly free number of queries and its legal source, for a subject's purpose.
    pub free_per_year: Option<(u32, String)>,
}

/// The lawful bases of PIPL art. 13 para. 1, as codes a policy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LegalBasis {
    /// Art. 13(1)1: the individual's consent.
    Consent,
    /// Art. 13(1)2: a contract the individual is party to, or lawful HR management.
    Contract,
    /// Art. 13(1)3: a statutory duty or obligation.
    LegalDuty,
    /// Art. 13(1)4: a public health emergency, or protecting life, health and property.
    Emergency,
    /// Art. 13(1)5: news reporting and public-opinion supervision in the public interest.
    PublicInterest,
    /// Art. 13(1)6: information the individual published or that was lawfully published.
    Published,
    /// Art. 13(1)7: other cases laws and administrative regulations provide for.
    OtherLaw,
}

impl LegalBasis {
    pub const ALL: &'static str =
        "consent, contract, legal_duty, emergency, public_interest, published, other_law";

    pub fn code(self) -> &'static str {
        match self {
            LegalBasis::Consent => "consent",
            LegalBasis::Contract => "contract",
            LegalBasis::LegalDuty => "legal_duty",
            LegalBasis::Emergency => "emergency",
            LegalBasis::PublicInterest => "public_interest",
            LegalBasis::Published => "published",
            LegalBasis::OtherLaw => "other_law",
        }
    }

    /// The article that grants the basis.
    pub fn article(self) -> &'static str {
        match self {
            LegalBasis::Consent => "PIPL art. 13(1)1",
            LegalBasis::Contract => "PIPL art. 13(1)2",
            LegalBasis::LegalDuty => "PIPL art. 13(1)3",
            LegalBasis::Emergency => "PIPL art. 13(1)4",
            LegalBasis::PublicInterest => "PIPL art. 13(1)5",
            LegalBasis::Published => "PIPL art. 13(1)6",
            LegalBasis::OtherLaw => "PIPL art. 13(1)7",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        serde::Deserialize::deserialize(
            serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s),
        )
        .ok()
    }
}

#[derive(Debug, Clone)]
pub struct Class {
    pub name: Arc<str>,
    pub tier: Tier,
    pub category: Category,
    pub default_mask: Option<MaskSpec>,
    /// Values of this class identify a subject of this type.
    pub identifies: Option<SubjectType>,
    /// Never in the public tier, masked or not.
    pub personal_identifier: bool,
}

#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub clearance: Tier,
    pub purposes: Vec<String>,
    pub datasets: Vec<String>,
    pub row_scope: RowScope,
    pub consent_for_natural: bool,
    /// Set: never a client's role (the public, a data subject).
    pub reserved_for: Option<Reserved>,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub subject_type: Option<SubjectType>,
    /// (JSON path, class) as written in the catalog.
    pub fields: Vec<(String, String)>,
    /// The dataset's name for people, when the catalog gives one.
    pub label: Option<Label>,
    /// Catalog path (`penalties[*].decided_at`, or a structure: `penalties[*]`) -> its name for
    /// people, when the catalog gives one.
    pub labels: std::collections::BTreeMap<String, Label>,
}

impl Dataset {
    /// The label of a catalog path (`[*]` for indices), if the catalog gives one.
    pub fn label_of(&self, path: &str) -> Option<&Label> {
        self.labels.get(path)
    }
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
    /// role -> purpose -> dataset -> plan, looked up by `&str` without allocating.
    plans: HashMap<String, HashMap<String, HashMap<String, Arc<Plan>>>>,
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

/// Longest a read may stay out of the subject's access log: a delay of notice (PIPL art. 18),
/// never its denial.
const MAX_WITHHOLD_DAYS: u32 = 3650;

fn load_purposes(
    src: &Source,
    file: PurposesFile,
) -> Result<HashMap<String, Purpose>, PolicyError> {
    let mut out = HashMap::new();
    for (code, entry) in file.purposes {
        check_name(src, &code, "purpose code")?;
        let legal_basis = LegalBasis::parse(entry.legal_basis.get_ref()).ok_or_else(|| {
            src.err(
                code.span(),
                format!(
                    "purpose `{}`: legal_basis `{}` is not a code of PIPL art. 13; use one of: {}",
                    code.get_ref(),
                    entry.legal_basis.get_ref(),
                    LegalBasis::ALL
                ),
            )
        })?;
        if entry.withhold_from_subject_days > MAX_WITHHOLD_DAYS {
            return Err(src.err(
                code.span(),
                format!(
                    "purpose `{}`: withhold_from_subject_days is at most {MAX_WITHHOLD_DAYS}; notice may be delayed, not denied",
                    code.get_ref()
                ),
            ));
        }
        let free_per_year = free_per_year(src, &code, &entry)?;
        let code = code.into_inner();
        out.insert(
            code.clone(),
            Purpose {
                code,
                legal_basis,
                description: entry.description,
                withhold_from_subject_days: entry.withhold_from_subject_days,
                reserved_for: entry.reserved_for,
                free_per_year,
            },
        );
    }
    if out.is_empty() {
        return Err(src.err(0..0, "no purposes declared; every data request needs one"));
    }
    Ok(out)
}

/// A yearly free number belongs to the subject's own queries, and always names its source.
fn free_per_year(
    src: &Source,
    code: &toml::Spanned<String>,
    entry: &files::PurposeEntry,
) -> Result<Option<(u32, String)>, PolicyError> {
    match (entry.free_per_year, &entry.free_per_year_source) {
        (None, None) if entry.reserved_for == Some(Reserved::Subject) => Err(src.err(
            code.span(),
            format!("purpose `{}`: a subject's own queries need free_per_year and its source (征信业管理条例 art. 17: twice a year)", code.get_ref()),
        )),
        (None, None) => Ok(None),
        (Some(n), Some(source)) if !source.trim().is_empty() => {
            if entry.reserved_for != Some(Reserved::Subject) {
                return Err(src.err(
                    code.span(),
                    format!("purpose `{}`: free_per_year is for a purpose reserved for the subject (`reserved_for = \"subject\"`)", code.get_ref()),
                ));
            }
            Ok(Some((n, source.clone())))
        }
        _ => Err(src.err(
            code.span(),
            format!("purpose `{}`: free_per_year needs free_per_year_source naming the law and article, and the other way round", code.get_ref()),
        )),
    }
}

fn load_classes(src: &Source, file: ClassesFile) -> Result<HashMap<String, Class>, PolicyError> {
    let mut out = HashMap::new();
    for (name, entry) in file.classes {
        check_name(src, &name, "class")?;
        let default_mask = match entry.mask {
            None => None,
            Some(m) => {
                m.get_ref()
                    .validate()
                    .map_err(|e| src.err(m.span(), format!("class `{}`: {e}", name.get_ref())))?;
                if m.get_ref().is_clear() {
                    return Err(src.err(
                        m.span(),
                        format!("class `{}`: its default mask applies below its tier and must not be `keep`; use another mask or none (remove)", name.get_ref()),
                    ));
                }
                Some(m.into_inner())
            }
        };
        if entry.category == Category::Sensitive && entry.tier == Tier::T1 {
            return Err(src.err(
                name.span(),
                format!("class `{}`: sensitive personal information is never public (PIPL art. 28); give it a tier above T1", name.get_ref()),
            ));
        }
        let name = name.into_inner();
        out.insert(
            name.clone(),
            Class {
                name: name.as_str().into(),
                tier: entry.tier,
                category: entry.category,
                default_mask,
                identifies: entry.identifies,
                personal_identifier: entry.personal_identifier,
            },
        );
    }
    Ok(out)
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
        set.purposes = load_purposes(&src, src.parse()?)?;
        let src = Source::read(dir, "classes.toml", &mut digest)?;
        set.classes = load_classes(&src, src.parse()?)?;

        let disclosure_src = Source::read(dir, "disclosure.toml", &mut digest)?;
        let disclosure: DisclosureFile = disclosure_src.parse()?;
        let roles_src = Source::read(dir, "roles.toml", &mut digest)?;
        let roles: RolesFile = roles_src.parse()?;
        let catalog_src = Source::read(dir, "catalog.toml", &mut digest)?;
        let catalog: CatalogFile = catalog_src.parse()?;

        let compiled_catalog =
            engine::compile_catalog(&catalog_src, catalog, &set.classes, &mut set.datasets)?;
        let windows = engine::compile_disclosure(&disclosure_src, &disclosure, &set.purposes)?;

        for (name, entry) in roles.roles {
            let (role, overrides) = set.check_role(&roles_src, name, entry)?;
            for p in &role.purposes {
                let purpose = &set.purposes[p];
                for d in &role.datasets {
                    let plan = engine::compile_plan(
                        &role,
                        purpose,
                        &compiled_catalog[d],
                        &set.classes,
                        &overrides,
                        &windows,
                    );
                    set.plans
                        .entry(role.name.clone())
                        .or_default()
                        .entry(p.clone())
                        .or_default()
                        .insert(d.clone(), Arc::new(plan));
                }
            }
            set.roles.insert(role.name.clone(), role);
        }
        set.digest = hex::encode(digest.finish().as_ref());
        Ok(set)
    }

    /// One role as written: its purposes and datasets known, its masks valid and never
    /// releasing a class above its clearance.
    fn check_role(
        &self,
        src: &Source,
        name: toml::Spanned<String>,
        entry: files::RoleEntry,
    ) -> Result<(Role, BTreeMap<String, MaskSpec>), PolicyError> {
        check_name(src, &name, "role")?;
        let Some(clearance) = entry.clearance else {
            return Err(src.err(
                name.span(),
                format!(
                    "role `{}` has no clearance; add `clearance = \"T1\"` (to \"T4\")",
                    name.get_ref()
                ),
            ));
        };
        for p in &entry.purposes {
            let Some(purpose) = self.purposes.get(p.get_ref()) else {
                return Err(src.err(
                    p.span(),
                    format!("role `{}`: unknown purpose `{}`; declare it in purposes.toml or fix the name", name.get_ref(), p.get_ref()),
                ));
            };
            if let Some(r) = purpose.reserved_for
                && entry.reserved_for != Some(r)
            {
                return Err(src.err(
                    p.span(),
                    format!("role `{}`: purpose `{}` is reserved for the {}; only a role with `reserved_for = \"{}\"` may declare it", name.get_ref(), p.get_ref(), r.who(), r.as_str()),
                ));
            }
        }
        self.check_role_datasets(src, &name, &entry.datasets)?;
        let overrides = self.check_role_masks(src, &name, clearance, &entry.masks)?;
        let role = Role {
            name: name.into_inner(),
            clearance,
            purposes: entry.purposes.into_iter().map(|p| p.into_inner()).collect(),
            datasets: entry.datasets.into_iter().map(|d| d.into_inner()).collect(),
            row_scope: entry.row_scope,
            consent_for_natural: entry.consent_for_natural,
            reserved_for: entry.reserved_for,
        };
        Ok((role, overrides))
    }

    fn check_role_datasets(
        &self,
        src: &Source,
        name: &toml::Spanned<String>,
        datasets: &[toml::Spanned<String>],
    ) -> Result<(), PolicyError> {
        let mut seen = std::collections::HashSet::new();
        for d in datasets {
            if !self.datasets.contains_key(d.get_ref()) {
                return Err(src.err(
                    d.span(),
                    format!("role `{}`: unknown dataset `{}`; declare it in catalog.toml or fix the name", name.get_ref(), d.get_ref()),
                ));
            }
            if !seen.insert(d.get_ref().clone()) {
                return Err(src.err(
                    d.span(),
                    format!(
                        "role `{}`: dataset `{}` listed twice",
                        name.get_ref(),
                        d.get_ref()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_role_masks(
        &self,
        src: &Source,
        name: &toml::Spanned<String>,
        clearance: Tier,
        masks: &BTreeMap<toml::Spanned<String>, toml::Spanned<MaskSpec>>,
    ) -> Result<BTreeMap<String, MaskSpec>, PolicyError> {
        let mut overrides = BTreeMap::new();
        for (class, m) in masks {
            let Some(c) = self.classes.get(class.get_ref()) else {
                return Err(src.err(
                    class.span(),
                    format!("role `{}`: unknown class `{}` in masks; declare it in classes.toml or fix the name", name.get_ref(), class.get_ref()),
                ));
            };
            m.get_ref().validate().map_err(|e| src.err(m.span(), e))?;
            if c.tier > clearance && m.get_ref().is_clear() {
                return Err(src.err(
                    m.span(),
                    format!(
                        "role `{}`: class `{}` is {}, above the role's clearance {}; `keep` would release it clear. Mask it or raise the clearance",
                        name.get_ref(), class.get_ref(), c.tier.as_str(), clearance.as_str()
                    ),
                ));
            }
            overrides.insert(class.get_ref().clone(), m.get_ref().clone());
        }
        Ok(overrides)
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
            .and_then(|by_purpose| by_purpose.get(purpose))
            .and_then(|by_dataset| by_dataset.get(dataset))
            .cloned()
            .ok_or_else(|| Denial {
                rule: "dataset-not-allowed",
                detail: format!("role `{role}` may not read dataset `{dataset}`"),
            })
    }

    /// Whether a registered client may hold `role`: one the policy defines and does not
    /// reserve for the public or a data subject. Checked when a client is registered, when it
    /// asks for a token and at the data door, so a role written into the database by hand
    /// serves nothing.
    pub fn client_role(&self, role: &str) -> Result<&Role, Denial> {
        let r = self.roles.get(role).ok_or_else(|| Denial {
            rule: "unknown-role",
            detail: format!("role `{role}` is not defined by the policy"),
        })?;
        match r.reserved_for {
            None => Ok(r),
            Some(who) => Err(Denial {
                rule: "reserved-role",
                detail: format!(
                    "role `{role}` is reserved for the {} and is never a client's",
                    who.who()
                ),
            }),
        }
    }

    /// For whom the policy reserves `role`, if it does.
    pub fn reserved(&self, role: &str) -> Option<Reserved> {
        self.roles.get(role).and_then(|r| r.reserved_for)
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
    /// Live and in scope, but not a separate consent (单独同意): enough unless the plan reads
    /// sensitive personal information on consent (PIPL art. 29).
    NotSeparate,
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
            ConsentState::NotSeparate if !self.needs_separate_consent => Ok(()),
            ConsentState::NotSeparate => Err(Denial {
                rule: "separate-consent-required",
                detail: format!(
                    "role `{}` reading dataset `{}` reads sensitive personal information: the consent in X-Consent must be a separate consent (PIPL art. 29)",
                    self.role, self.dataset
                ),
            }),
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
