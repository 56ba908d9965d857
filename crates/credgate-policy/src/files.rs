//! The policy files as written. Every name that refers to another (a class in the catalog, a
//! purpose in a role) is kept with its span, so an error can name the file and the line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::mask::MaskSpec;
use crate::domain::SubjectType;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum Tier {
    T1,
    T2,
    T3,
    T4,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::T1 => "T1",
            Tier::T2 => "T2",
            Tier::T3 => "T3",
            Tier::T4 => "T4",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Personal,
    TradeSecret,
    PublicRecord,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurposesFile {
    pub purposes: BTreeMap<Spanned<String>, PurposeEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurposeEntry {
    pub legal_basis: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassesFile {
    pub classes: BTreeMap<Spanned<String>, ClassEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassEntry {
    pub tier: Tier,
    pub category: Category,
    #[serde(default)]
    pub description: String,
    /// Applied to principals whose clearance is below the tier, unless their role says
    /// otherwise. Absent: the field is removed.
    #[serde(default)]
    pub mask: Option<Spanned<MaskSpec>>,
    /// The class holds an identifier of this subject type (USCC, resident ID number): every
    /// value of it in a released record makes that subject one the read touched.
    #[serde(default)]
    pub identifies: Option<SubjectType>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    pub datasets: BTreeMap<Spanned<String>, DatasetEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetEntry {
    #[serde(default)]
    pub description: String,
    /// Whose data a record is: natural persons' datasets need consent for some roles.
    #[serde(default)]
    pub subject_type: Option<SubjectType>,
    /// For list answers: the path of the rows, e.g. `items[*]`.
    #[serde(default)]
    pub rows: Option<Spanned<String>>,
    /// Path, within a row (or the record), of the data subject's id: recorded in the audit log
    /// so that every subject can see who read them, in lists too.
    #[serde(default)]
    pub subject: Option<Spanned<String>>,
    /// Path, within a row (or the record), of the region code used for row scope.
    #[serde(default)]
    pub region: Option<Spanned<String>>,
    /// JSON path -> data class. What is not named here is removed.
    pub fields: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Arrays of dated adverse records subject to disclosure windows.
    #[serde(default)]
    pub dated: Vec<DatedEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatedEntry {
    /// Path of the records, ending in `[*]`: `penalties[*]`, `items[*]`.
    pub records: Spanned<String>,
    /// Field of a record with its date (`YYYY-MM-DD`).
    pub date: String,
    /// Field of a record with the date its effect ended; defaults to `date`.
    #[serde(default)]
    pub end: Option<String>,
    /// Field of a record with its severity (minor, ordinary, serious).
    #[serde(default)]
    pub severity: Option<String>,
    /// Severity of records that carry none (a black-list entry is serious).
    #[serde(default)]
    pub severity_default: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisclosureFile {
    /// Publication periods per clearance tier and severity: `[periods.T1] minor = "3m"`.
    #[serde(default)]
    pub periods: BTreeMap<Tier, BTreeMap<String, Spanned<String>>>,
    pub max_age: MaxAgeEntry,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxAgeEntry {
    /// How long after its end date an adverse record is still released at all.
    pub after_end: Spanned<String>,
    /// Roles that see adverse records of any age (regulators).
    #[serde(default)]
    pub exempt_roles: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesFile {
    pub roles: BTreeMap<Spanned<String>, RoleEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleEntry {
    #[serde(default)]
    pub description: String,
    pub clearance: Option<Tier>,
    #[serde(default)]
    pub purposes: Vec<Spanned<String>>,
    #[serde(default)]
    pub datasets: Vec<Spanned<String>>,
    #[serde(default)]
    pub row_scope: RowScope,
    /// Natural persons' data at T3 or above needs the person's live consent (`X-Consent`).
    #[serde(default)]
    pub consent_for_natural: bool,
    /// Per-class mask choices, overriding the class's default.
    #[serde(default)]
    pub masks: BTreeMap<Spanned<String>, Spanned<MaskSpec>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowScope {
    #[default]
    None,
    /// Only rows whose region equals the client's region.
    Region,
}
