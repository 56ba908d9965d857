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
    /// Sensitive personal information (PIPL art. 28): a person's credit records. Needs the
    /// person's separate consent where the purpose rests on consent (art. 29), never public.
    Sensitive,
    /// What the credit-reporting regulation forbids collecting at all (征信业管理条例 art. 14):
    /// a class of it may be declared, to name it, but never catalogued.
    Prohibited,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurposesFile {
    pub purposes: BTreeMap<Spanned<String>, PurposeEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurposeEntry {
    /// A code of PIPL art. 13 (`consent`, `legal_duty`, ...).
    pub legal_basis: Spanned<String>,
    #[serde(default)]
    pub description: String,
    /// Days a read for this purpose stays out of the subject's access log.
    #[serde(default)]
    pub withhold_from_subject_days: u32,
    /// Only roles reserved for the same caller may declare it (`self_query`: the subject).
    #[serde(default)]
    pub reserved_for: Option<Reserved>,
    /// Queries a year a subject makes free of charge under this purpose; past it the gateway
    /// answers 429. Only for a purpose reserved for the subject.
    #[serde(default)]
    pub free_per_year: Option<u32>,
    /// Where that number comes from, shown with the 429 (a law and article).
    #[serde(default)]
    pub free_per_year_source: Option<String>,
}

/// Who a reserved role or purpose is for: never a registered client. The gateway decides the
/// anonymous public and a data subject reading their own record as these roles; a client given
/// one would read as the public without being anonymous, or as a subject without being one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reserved {
    /// A data subject reading their own record (`GET /subject/record`).
    Subject,
    /// A request without a token on the public path.
    Anonymous,
}

impl Reserved {
    pub fn as_str(self) -> &'static str {
        match self {
            Reserved::Subject => "subject",
            Reserved::Anonymous => "anonymous",
        }
    }

    /// The caller, in words.
    pub fn who(self) -> &'static str {
        match self {
            Reserved::Subject => "data subject reading their own record",
            Reserved::Anonymous => "anonymous public",
        }
    }
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
    /// A personal identifier (ID number, phone): the public tier never carries it, masked or
    /// not.
    #[serde(default)]
    pub personal_identifier: bool,
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
    /// Flags of a record derived from its list entries (`red_list`, `black_list`).
    #[serde(default)]
    pub flags: Vec<FlagEntry>,
    /// What people call this dataset, per language (the pages' section headings).
    #[serde(default)]
    pub label: Option<Spanned<Label>>,
    /// What people call a field (or a structure of fields, `penalties[*]`), per language: the
    /// pages show these instead of JSON paths. A label may only name what `fields` names (or a
    /// structure holding such fields): the catalog stays the one allow-list.
    #[serde(default)]
    pub labels: BTreeMap<Spanned<String>, Label>,
}

/// A name for people in each language the pages speak; both are required, so that no page
/// mixes languages (a field without a label shows its path in both).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Label {
    pub en: String,
    #[serde(rename = "zh-CN")]
    pub zh_cn: String,
}

/// A boolean flag of a record (or row) that the gateway recomputes from the record's current
/// list entries, so a stale flag from the store is never served.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagEntry {
    /// The flag's key in the record: `black_list`.
    pub flag: String,
    /// The entries within the record, ending in `[*]`: `list_entries[*]`.
    pub entries: Spanned<String>,
    /// The entry field naming its list, and the value that means this flag's list.
    pub list_field: String,
    pub list: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatedEntry {
    /// Path of the records, ending in `[*]`: `penalties[*]`, `items[*]`.
    pub records: Spanned<String>,
    /// Field of a record with its date (`YYYY-MM-DD`).
    pub date: String,
    /// Field of a record with the day the act or event ended, from which the retention limit
    /// runs (征信业管理条例 art. 16); defaults to `date`.
    #[serde(default)]
    pub end: Option<String>,
    /// Field of a record with a stable reference, named when the store is asked to delete it.
    #[serde(default)]
    pub id: Option<String>,
    /// The values that make a record NOT subject to this rule (a good record, a red-list entry
    /// under the black-list rule). Any other value, a misspelt or unknown one, or a missing
    /// field, is subject to it: the rule fails closed (`adverse_when` was an allow-list, so
    /// `"BAD"` or `"Black"` escaped retention and display).
    #[serde(default)]
    pub good_when: Option<GoodWhen>,
    /// Fields with a date after which the record leaves display (`publication_ends`,
    /// `valid_until`).
    #[serde(default)]
    pub until: Vec<String>,
    /// Fields whose date withdraws the record from display at once (`revoked_at`,
    /// `removed_at`).
    #[serde(default)]
    pub withdrawn: Vec<String>,
    /// Whether display periods apply (penalties, list entries); a person's records are not
    /// displayed publicly, only retained (`false`).
    #[serde(default = "yes")]
    pub display: bool,
    /// Field with the day the record was repaired: it leaves display then, but not before the
    /// minimum display period of its severity has run.
    #[serde(default)]
    pub repaired: Option<String>,
    /// Field of a record with its severity (minor, ordinary, serious).
    #[serde(default)]
    pub severity: Option<String>,
    /// Severity of records that carry none (a black-list entry is serious).
    #[serde(default)]
    pub severity_default: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoodWhen {
    pub field: String,
    pub values: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisclosureFile {
    pub retention: RetentionEntry,
    pub display: DisplayEntry,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionEntry {
    /// How long after the act ended an adverse record is released to anyone at all.
    pub after_end: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplayEntry {
    /// The only purposes that see adverse records past their display (regulators reading for
    /// supervision or enforcement). Every other purpose, one added later included, sees them
    /// only while displayed: the list names the exceptions so that forgetting one hides data.
    pub full_history_purposes: Vec<Spanned<String>>,
    /// Longest display period by severity; `"none"`: never displayed.
    pub max: BTreeMap<String, Spanned<String>>,
    /// Shortest display period by severity: a repair ends display no earlier.
    #[serde(default)]
    pub min: BTreeMap<String, Spanned<String>>,
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
    /// Never a client's role: no client may be registered with it, get a token as it, or be
    /// served as it.
    #[serde(default)]
    pub reserved_for: Option<Reserved>,
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

fn yes() -> bool {
    true
}
