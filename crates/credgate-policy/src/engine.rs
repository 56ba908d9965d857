//! Compiled plans and their application: disclosure windows, row scope and field masking, in
//! that order, on the parsed JSON answer.

use std::{
    collections::{BTreeMap, HashMap, HashSet, hash_map::Entry},
    hash::BuildHasher,
    sync::Arc,
};

use ring::hmac;
use serde_json::{Map, Value};
use time::Date;

use super::{
    Class, Dataset, PolicyError, Role, Source,
    files::{
        CatalogFile, Category, DatasetEntry, DatedEntry, DisclosureFile, FlagEntry, Label,
        RowScope, Tier,
    },
    mask::{self, MaskSpec},
    path::{self, Seg, Trie},
};

/// A dataset as compiled from the catalog: classes by path, before any role is applied.
pub(super) struct CompiledDataset {
    name: Arc<str>,
    fields: Trie<Arc<str>>,
    rows: Option<Vec<Seg>>,
    region: Option<Vec<Seg>>,
    subject: Option<Vec<Seg>>,
    dated: Vec<DatedRule>,
    flags: Vec<FlagRule>,
    subject_type: Option<crate::domain::SubjectType>,
}

#[derive(Debug, Clone)]
struct DatedRule {
    /// The array holding the records (the `records` path without its final `[*]`).
    array: Vec<Seg>,
    date: String,
    end: Option<String>,
    id: Option<String>,
    /// (field, values exempt from the rule): every other value is subject to it.
    good_when: Option<(String, Vec<String>)>,
    until: Vec<String>,
    withdrawn: Vec<String>,
    repaired: Option<String>,
    display: bool,
    severity: Option<String>,
    severity_default: Option<String>,
}

impl DatedRule {
    fn is_adverse(&self, record: &Value) -> bool {
        match &self.good_when {
            None => true,
            // Only a declared good value exempts; anything else (unknown, misspelt, not a
            // string, absent) is adverse.
            Some((field, good)) => !record
                .get(field)
                .and_then(Value::as_str)
                .is_some_and(|v| good.iter().any(|g| g == v)),
        }
    }

    fn severity<'r>(&'r self, record: &'r Value) -> Option<&'r str> {
        self.severity
            .as_ref()
            .and_then(|f| record.get(f))
            .and_then(Value::as_str)
            .or(self.severity_default.as_deref())
    }
}

/// A flag recomputed from the record's current list entries.
#[derive(Debug, Clone)]
struct FlagRule {
    flag: String,
    /// The entries array within the record (the path without its final `[*]`).
    entries: Vec<Seg>,
    list_field: String,
    list: String,
}

/// A record the retention limit withholds: the store is asked to delete it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub dataset: Arc<str>,
    /// The data subject whose record it is: a single record's, a list row's, or the row's
    /// around a nested record (none only when the catalog names no subject).
    pub subject: Option<String>,
    /// The record's reference (`decision_number`, `id`), or its date when it has none.
    pub record_ref: String,
    /// The store the answer came from: set by the gateway, which knows it (the engine does not).
    pub store: Option<String>,
}

/// A calendar period such as `3m`, `1y`, `90d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    months: i32,
    days: i64,
}

impl Period {
    pub fn parse(s: &str) -> Option<Self> {
        let (n, unit) = s.split_at(s.len().checked_sub(1)?);
        let n: i32 = n.parse().ok().filter(|n| *n > 0)?;
        Some(match unit {
            "y" => Period {
                months: n * 12,
                days: 0,
            },
            "m" => Period { months: n, days: 0 },
            "d" => Period {
                months: 0,
                days: n as i64,
            },
            _ => return None,
        })
    }

    /// `date` plus this period; a day past the end of the target month clamps to its last day.
    pub fn after(&self, date: Date) -> Date {
        let total = date.year() * 12 + (date.month() as i32 - 1) + self.months;
        let (y, m) = (total.div_euclid(12), (total.rem_euclid(12) + 1) as u8);
        let month = time::Month::try_from(m).expect("1..=12");
        let day = date.day().min(month.length(y));
        let d = Date::from_calendar_date(y, month, day).unwrap_or(date);
        d.checked_add(time::Duration::days(self.days))
            .unwrap_or(Date::MAX)
    }
}

/// The disclosure rules as compiled: the retention limit for every role, and the display
/// periods for every purpose but the full-history ones.
pub(super) struct Windows {
    retention: Period,
    /// Purposes exempt from display rules; every other purpose is held to them.
    full_history: HashSet<String>,
    display: Display,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Longest {
    /// `"none"`: never displayed (minor penalties).
    Never,
    For(Period),
    /// `"unbounded"`: only `until` and withdrawals end display (red-list entries).
    Unbounded,
}

#[derive(Debug, Clone)]
struct Display {
    /// Longest display by severity.
    max: BTreeMap<String, Longest>,
    /// Shortest display by severity, before which a repair does not end display.
    min: BTreeMap<String, Period>,
}

/// What a plan does with one classified path.
#[derive(Debug, Clone)]
struct Action {
    class: Arc<str>,
    /// Values identify a subject of this type (recorded as touched, before masking).
    identifies: Option<crate::domain::SubjectType>,
    /// `None`: released as it is.
    mask: Option<MaskSpec>,
    /// The class is T4: a value released as it is counts in `Outcome::released_t4`.
    t4: bool,
}

/// The compiled decision for one role on one dataset: lookups only on the request path.
#[derive(Debug)]
pub struct Plan {
    pub role: String,
    pub dataset: Arc<str>,
    pub clearance: Tier,
    pub row_scope: RowScope,
    pub purpose: String,
    /// Reading this dataset about a natural person needs the person's consent.
    pub needs_consent: bool,
    /// The plan releases sensitive personal information under a purpose that is not a legal
    /// duty: the consent must be a separate consent (PIPL art. 29).
    pub needs_separate_consent: bool,
    /// Row scope applies but the dataset names no region: nothing can be shown.
    pub region_unknown: bool,
    fields: Trie<Action>,
    rows: Option<Vec<Seg>>,
    region: Option<Vec<Seg>>,
    subject: Option<Vec<Seg>>,
    subject_type: Option<crate::domain::SubjectType>,
    dated: Vec<DatedRule>,
    flags: Vec<FlagRule>,
    /// Every role: adverse records past it are withheld and their deletion asked for.
    retention: Period,
    /// Set for the purposes that see adverse records only while displayed.
    display: Option<Display>,
}

pub struct ApplyCtx<'a> {
    /// The principal's region, for row scope.
    pub region: Option<&'a str>,
    pub today: Date,
    pub pseudonym_key: &'a hmac::Key,
}

/// What applying a plan did, for headers, metrics and the audit record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Fields masked or removed by the plan, unclassified ones included.
    pub masked: usize,
    /// Fields the catalog does not name, removed.
    pub unclassified: usize,
    /// Dated records withheld by disclosure windows.
    pub withheld_records: usize,
    /// List rows dropped by row scope.
    pub dropped_rows: usize,
    /// A single record outside the principal's region: answer 404.
    pub out_of_scope: bool,
    pub by_class: BTreeMap<Arc<str>, usize>,
    /// Paths (with `[*]` for indices) of unclassified fields, for the warning log.
    pub unclassified_paths: Vec<String>,
    /// Ids of the data subjects whose records are released, and of every subject whose
    /// identifier a released record carries (for the audit record and their access log).
    pub subjects: Vec<String>,
    /// Records annotated with objections by the annotator given to `apply_annotated`.
    pub annotated: usize,
    /// T4 values released clear (for the out-of-hours alert): what the answer carried, not
    /// what the catalog could have.
    pub released_t4: usize,
    /// Records past the retention limit (withheld, and counted in `withheld_records`): the
    /// store is asked to delete them. At most `MAX_SUBJECTS`.
    pub expired: Vec<Expired>,
    /// Dated records whose `good_when` field holds a value no rule of their array declares
    /// (a misspelt or new list name): judged adverse by every rule (fail closed), and counted
    /// here so that operators see a store sending values the catalog does not know.
    pub unknown_values: usize,
}

/// At most this many subject ids are recorded per answer.
const MAX_SUBJECTS: usize = 1000;

/// Answers the annotation of a record, given its subject id as the store sent it.
pub type Annotator<'a> = dyn FnMut(&str) -> Option<Value> + 'a;

/// The longest value that does not parse as an id and is still recorded as sent.
///
/// A store's value is recorded as a subject (the audit record, then the subject index) even
/// when it is not a valid id of the route's type, so that the record still says which record
/// left. But the store chooses its length: PostgreSQL refuses a B-tree entry over 2,704 bytes,
/// and `audit_subjects`' key is `(subject_id, seq)`, so one answer carrying a 3,000-character
/// value made every indexing step of its chain fail, for good (rev3 F5). A valid id is 18
/// characters (`SubjectId`), far below this, so every valid id is still recorded and searched
/// exactly; only a value no search can name (it is not an id) is reduced.
const MAX_RAW_SUBJECT_BYTES: usize = 128;

/// The prefix of a recorded digest (`recorded_subject`). Reserved: no value is recorded as
/// sent with it, so a recorded `sha256:` subject is always a digest the recorder made.
pub const SUBJECT_DIGEST_PREFIX: &str = "sha256:";

/// The id in its canonical form when it parses as the declared type, else `recorded_subject`.
fn canonical(kind: Option<crate::domain::SubjectType>, s: &str) -> String {
    match kind.map(|k| crate::domain::SubjectId::parse(k, s)) {
        Some(Ok(id)) => id.as_str().to_string(),
        _ => recorded_subject(s).into_owned(),
    }
}

/// How a store's value that is not a valid id is recorded as a subject: as sent when it is at
/// most `MAX_RAW_SUBJECT_BYTES` long and does not start with `SUBJECT_DIGEST_PREFIX`, else
/// `sha256:` and the hex digest of what was sent. The digest, not a cut: it stays bounded (71
/// bytes) whatever the store sends, two long values that share a beginning stay apart, and
/// whoever holds the value can still find its records. A value in the prefix's namespace is
/// digested too, whatever its length: recorded as sent, a store's `sha256:<64 hex>` would read
/// as (and be found with) the digest of another, long value. A valid id (18 characters, no
/// `:`) is returned unchanged, so the officers' search (`subject_to_search`) can reduce any
/// input with this function without knowing its type.
pub fn recorded_subject(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= MAX_RAW_SUBJECT_BYTES && !s.starts_with(SUBJECT_DIGEST_PREFIX) {
        return s.into();
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    format!("{SUBJECT_DIGEST_PREFIX}{}", hex::encode(digest.as_ref())).into()
}

/// Whether `s` is a digest as `recorded_subject` writes it: the prefix and 64 lowercase hex.
pub fn is_recorded_digest(s: &str) -> bool {
    s.strip_prefix(SUBJECT_DIGEST_PREFIX).is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// The subject a search for `s` looks up: a recorded digest as given (an officer pastes it
/// from a record), anything else reduced as the recorder reduces it (`recorded_subject`), so
/// a value of 129 bytes or more, or one starting with `sha256:`, finds the records that name
/// it. One input names one recorded subject: a store's value that is itself a recorded digest
/// was recorded as its own digest, and is found by that (as its records show it), never by
/// typing it, which finds the long value's records.
pub fn subject_to_search(s: &str) -> std::borrow::Cow<'_, str> {
    if is_recorded_digest(s) {
        s.into()
    } else {
        recorded_subject(s)
    }
}

/// What one walk over an answer carries besides the value.
struct Walker<'w, 'a, 'f, 'g> {
    ctx: &'w ApplyCtx<'a>,
    out: &'w mut Outcome,
    /// The subjects already in `out.subjects`, by the hash of the id (its index there): noting
    /// one is a lookup, not a scan, and hashes and copies the id once (a set of the ids held a
    /// second copy of each, and `contains` then `insert` hashed each twice). foldhash with a
    /// per-process seed, as the trie; ids that share a hash (the store chooses them) are told
    /// apart by a scan of the list, which `MAX_SUBJECTS` bounds.
    seen: HashMap<u64, usize, foldhash::fast::RandomState>,
    ids: foldhash::fast::RandomState,
    /// The (type, value) the current record's subject was read as: the same value at a field
    /// that identifies that type (a list row's `uscc`) is not parsed and noted again, since
    /// doing so would note nothing new.
    noted: (Option<crate::domain::SubjectType>, String),
    records: Option<Records<'w, 'f, 'g>>,
}

/// Where the dataset's records sit in the plan's trie, and what to do with each.
struct Records<'w, 'f, 'g> {
    /// The node of one record: the row node (`rows`, ending in `[*]`), or the root.
    node: &'w Trie<Action>,
    subject: &'w [Seg],
    kind: Option<crate::domain::SubjectType>,
    /// The whole answer is the record: it is annotated even when masking emptied it.
    single: bool,
    annotate: Option<&'f mut Annotator<'g>>,
}

impl Walker<'_, '_, '_, '_> {
    /// Notes a subject the answer touches, once.
    fn touch(&mut self, id: &str) {
        let subjects = &mut self.out.subjects;
        if subjects.len() >= MAX_SUBJECTS {
            return;
        }
        match self.seen.entry(self.ids.hash_one(id)) {
            Entry::Occupied(at) => {
                if subjects[*at.get()] == id || subjects.iter().any(|s| s == id) {
                    return;
                }
            }
            Entry::Vacant(at) => {
                at.insert(subjects.len());
            }
        }
        subjects.push(id.to_string());
    }

    /// Whether `s`, at a field identifying `kind`, is the value the current record's subject
    /// was read as (and so noted already, or known not to parse).
    fn is_noted(&self, kind: crate::domain::SubjectType, s: &str) -> bool {
        self.noted.0 == Some(kind) && self.noted.1 == s
    }
}

fn parse_path(
    src: &Source,
    p: &toml::Spanned<String>,
    what: &str,
) -> Result<Vec<Seg>, PolicyError> {
    path::parse(p.get_ref()).map_err(|e| src.err(p.span(), format!("{what}: {e}")))
}

/// A path within a row (or the record) that must name a classified field: `region`, `subject`.
fn row_field(
    src: &Source,
    ds: &str,
    what: &str,
    path: Option<&toml::Spanned<String>>,
    rows: Option<&[Seg]>,
    fields: &Trie<Arc<str>>,
) -> Result<Option<Vec<Seg>>, PolicyError> {
    let Some(p) = path else { return Ok(None) };
    let segs = parse_path(src, p, &format!("dataset `{ds}`, {what}"))?;
    let full: Vec<Seg> = rows.unwrap_or(&[]).iter().chain(&segs).cloned().collect();
    if fields.get(&full).and_then(|n| n.value.as_ref()).is_none() {
        return Err(src.err(
            p.span(),
            format!(
                "dataset `{ds}`: {what} `{}` is not a classified field of a row",
                p.get_ref()
            ),
        ));
    }
    Ok(Some(segs))
}

/// Field names the credit-reporting regulation forbids collecting (征信业管理条例 art. 14:
/// religion, genes, fingerprints, blood type, diseases and medical history): refused in the
/// catalog whatever class they are given, so a misnamed class cannot smuggle them in.
const PROHIBITED_NAMES: &[&str] = &[
    "religion",
    "religious_belief",
    "gene",
    "genes",
    "genetic",
    "dna",
    "fingerprint",
    "fingerprints",
    "blood_type",
    "disease",
    "diseases",
    "medical_history",
    "health",
];

pub(super) fn compile_catalog(
    src: &Source,
    catalog: CatalogFile,
    classes: &HashMap<String, Class>,
    datasets: &mut HashMap<String, Dataset>,
) -> Result<HashMap<String, CompiledDataset>, PolicyError> {
    let mut out = HashMap::new();
    for (name, entry) in catalog.datasets {
        super::check_name(src, &name, "dataset")?;
        let ds = name.into_inner();
        let compiled = compile_dataset(src, &ds, &entry, classes)?;
        let labels = compile_labels(src, &ds, &entry, &compiled.fields)?;
        let listed = entry
            .fields
            .iter()
            .map(|(p, c)| (p.get_ref().clone(), c.get_ref().clone()))
            .collect();
        datasets.insert(
            ds.clone(),
            Dataset {
                name: ds.clone(),
                subject_type: entry.subject_type,
                fields: listed,
                label: entry.label.as_ref().map(|l| l.get_ref().clone()),
                labels,
            },
        );
        out.insert(ds, compiled);
    }
    Ok(out)
}

fn compile_dataset(
    src: &Source,
    ds: &str,
    entry: &DatasetEntry,
    classes: &HashMap<String, Class>,
) -> Result<CompiledDataset, PolicyError> {
    let fields = compile_fields(src, ds, entry, classes)?;
    let rows = compile_rows(src, ds, entry.rows.as_ref(), &fields)?;
    let region = row_field(
        src,
        ds,
        "region",
        entry.region.as_ref(),
        rows.as_deref(),
        &fields,
    )?;
    let subject = row_field(
        src,
        ds,
        "subject",
        entry.subject.as_ref(),
        rows.as_deref(),
        &fields,
    )?;
    let dated = entry
        .dated
        .iter()
        .map(|d| compile_dated(src, ds, d, &fields))
        .collect::<Result<_, _>>()?;
    let flags = entry
        .flags
        .iter()
        .map(|f| compile_flag(src, ds, f, rows.as_deref(), &fields))
        .collect::<Result<_, _>>()?;
    Ok(CompiledDataset {
        name: ds.into(),
        fields,
        rows,
        region,
        subject,
        dated,
        flags,
        subject_type: entry.subject_type,
    })
}

/// The labels of fields, each checked: a label names a catalogued field or a structure holding
/// some (the catalog stays the one allow-list: a label cannot bring a field in), and its texts
/// are short, printable and present in both languages.
fn compile_labels(
    src: &Source,
    ds: &str,
    entry: &DatasetEntry,
    fields: &Trie<Arc<str>>,
) -> Result<std::collections::BTreeMap<String, Label>, PolicyError> {
    let mut out = std::collections::BTreeMap::new();
    if let Some(l) = &entry.label
        && let Some(why) = bad_label(l.get_ref())
    {
        return Err(src.err(l.span(), format!("dataset `{ds}`: its label {why}")));
    }
    for (p, label) in &entry.labels {
        let segs = parse_path(src, p, &format!("dataset `{ds}`, label"))?;
        if fields.get(&segs).is_none() {
            return Err(src.err(
                p.span(),
                format!("dataset `{ds}`: label for `{}`, which the dataset's fields do not name; a label cannot add a field, catalogue it under `fields` first or fix the path", p.get_ref()),
            ));
        }
        if let Some(why) = bad_label(label) {
            return Err(src.err(
                p.span(),
                format!("dataset `{ds}`: the label of `{}` {why}", p.get_ref()),
            ));
        }
        out.insert(p.get_ref().clone(), label.clone());
    }
    Ok(out)
}

/// Why a label's texts cannot be shown, if they cannot.
fn bad_label(l: &Label) -> Option<&'static str> {
    let bad =
        |t: &str| t.trim().is_empty() || t.chars().count() > 120 || t.chars().any(char::is_control);
    (bad(&l.en) || bad(&l.zh_cn))
        .then_some("must have `en` and `zh-CN` texts of 1 to 120 printable characters")
}

/// The classified paths; a prohibited class or a prohibited field name is refused.
fn compile_fields(
    src: &Source,
    ds: &str,
    entry: &DatasetEntry,
    classes: &HashMap<String, Class>,
) -> Result<Trie<Arc<str>>, PolicyError> {
    let mut fields = Trie::default();
    for (p, class) in &entry.fields {
        let segs = parse_path(src, p, &format!("dataset `{ds}`, path"))?;
        let Some(c) = classes.get(class.get_ref()) else {
            return Err(src.err(
                class.span(),
                format!("dataset `{ds}`, path `{}`: unknown class `{}`; declare it in classes.toml or fix the name", p.get_ref(), class.get_ref()),
            ));
        };
        let forbidden_name = segs.iter().any(|s| {
            matches!(s, Seg::Key(k) if PROHIBITED_NAMES.contains(&k.to_ascii_lowercase().as_str()))
        });
        if c.category == Category::Prohibited || forbidden_name {
            return Err(src.err(
                p.span(),
                format!("dataset `{ds}`, path `{}`: class `{}` is information the credit-reporting regulation forbids collecting (征信业管理条例 art. 14: religion, genes, fingerprints, blood type, diseases and medical history, ...); it cannot be catalogued. Remove the field", p.get_ref(), class.get_ref()),
            ));
        }
        fields.insert(&segs, c.name.clone()).map_err(|e| {
            src.err(
                p.span(),
                format!(
                    "dataset `{ds}`, path `{}` {e}; it can never apply as written",
                    p.get_ref()
                ),
            )
        })?;
    }
    Ok(fields)
}

fn compile_rows(
    src: &Source,
    ds: &str,
    rows: Option<&toml::Spanned<String>>,
    fields: &Trie<Arc<str>>,
) -> Result<Option<Vec<Seg>>, PolicyError> {
    let Some(r) = rows else { return Ok(None) };
    let segs = parse_path(src, r, &format!("dataset `{ds}`, rows"))?;
    if segs.last() != Some(&Seg::AnyIndex) {
        return Err(src.err(
            r.span(),
            format!("dataset `{ds}`: rows must end in `[*]`, e.g. `items[*]`"),
        ));
    }
    if fields.get(&segs).is_none() {
        return Err(src.err(
            r.span(),
            format!(
                "dataset `{ds}`: no field is classified under rows `{}`",
                r.get_ref()
            ),
        ));
    }
    Ok(Some(segs))
}

/// An array path ending in `[*]` whose records the catalog names: the path without the `[*]`.
fn record_array(
    src: &Source,
    ds: &str,
    what: &str,
    p: &toml::Spanned<String>,
    fields: &Trie<Arc<str>>,
) -> Result<Vec<Seg>, PolicyError> {
    let segs = parse_path(src, p, &format!("dataset `{ds}`, {what}"))?;
    if segs.last() != Some(&Seg::AnyIndex) {
        return Err(src.err(
            p.span(),
            format!("dataset `{ds}`: {what} must end in `[*]`"),
        ));
    }
    if fields.get(&segs).is_none() {
        return Err(src.err(
            p.span(),
            format!(
                "dataset `{ds}`: {what} `{}` are not in the catalog",
                p.get_ref()
            ),
        ));
    }
    Ok(segs[..segs.len() - 1].to_vec())
}

fn compile_dated(
    src: &Source,
    ds: &str,
    d: &DatedEntry,
    fields: &Trie<Arc<str>>,
) -> Result<DatedRule, PolicyError> {
    let array = record_array(src, ds, "dated records", &d.records, fields)?;
    let mut full = array.clone();
    full.push(Seg::AnyIndex);
    let node = fields.get(&full).expect("checked by record_array");
    if node.value.is_none() && !node.keys.contains_key(&d.date) {
        return Err(src.err(
            d.records.span(),
            format!(
                "dataset `{ds}`: records `{}` have no classified `{}` field",
                d.records.get_ref(),
                d.date
            ),
        ));
    }
    Ok(DatedRule {
        array,
        date: d.date.clone(),
        end: d.end.clone(),
        id: d.id.clone(),
        good_when: d
            .good_when
            .as_ref()
            .map(|a| (a.field.clone(), a.values.clone())),
        until: d.until.clone(),
        withdrawn: d.withdrawn.clone(),
        repaired: d.repaired.clone(),
        display: d.display,
        severity: d.severity.clone(),
        severity_default: d.severity_default.clone(),
    })
}

fn compile_flag(
    src: &Source,
    ds: &str,
    f: &FlagEntry,
    rows: Option<&[Seg]>,
    fields: &Trie<Arc<str>>,
) -> Result<FlagRule, PolicyError> {
    let within: Vec<Seg> = path::parse(f.entries.get_ref()).map_err(|e| {
        src.err(
            f.entries.span(),
            format!("dataset `{ds}`, flag entries: {e}"),
        )
    })?;
    let full: Vec<Seg> = rows.unwrap_or(&[]).iter().chain(&within).cloned().collect();
    if within.last() != Some(&Seg::AnyIndex) || fields.get(&full).is_none() {
        return Err(src.err(
            f.entries.span(),
            format!(
                "dataset `{ds}`: flag entries `{}` must end in `[*]` and be in the catalog",
                f.entries.get_ref()
            ),
        ));
    }
    Ok(FlagRule {
        flag: f.flag.clone(),
        entries: within[..within.len() - 1].to_vec(),
        list_field: f.list_field.clone(),
        list: f.list.clone(),
    })
}

fn parse_period(src: &Source, s: &toml::Spanned<String>) -> Result<Period, PolicyError> {
    Period::parse(s.get_ref()).ok_or_else(|| {
        src.err(
            s.span(),
            format!(
                "`{}` is not a period; write e.g. \"3m\", \"1y\" or \"90d\"",
                s.get_ref()
            ),
        )
    })
}

pub(super) fn compile_disclosure(
    src: &Source,
    d: &DisclosureFile,
    purposes: &HashMap<String, super::Purpose>,
) -> Result<Windows, PolicyError> {
    let mut max = BTreeMap::new();
    for (sev, p) in &d.display.max {
        let period = match p.get_ref().as_str() {
            "none" => Longest::Never,
            "unbounded" => Longest::Unbounded,
            _ => Longest::For(parse_period(src, p)?),
        };
        max.insert(sev.clone(), period);
    }
    let mut min = BTreeMap::new();
    for (sev, p) in &d.display.min {
        min.insert(sev.clone(), parse_period(src, p)?);
    }
    let mut full_history = HashSet::new();
    for p in &d.display.full_history_purposes {
        if !purposes.contains_key(p.get_ref()) {
            return Err(src.err(
                p.span(),
                format!("display: unknown purpose `{}`", p.get_ref()),
            ));
        }
        full_history.insert(p.get_ref().clone());
    }
    Ok(Windows {
        retention: parse_period(src, &d.retention.after_end)?,
        full_history,
        display: Display { max, min },
    })
}

/// The public tier: a personal identifier or sensitive data is removed there, whatever mask a
/// role chose (masked identifiers still identify).
fn never_public(c: &Class) -> bool {
    c.personal_identifier || c.category == Category::Sensitive
}

fn action(
    role: &Role,
    c: &Class,
    class: &Arc<str>,
    overrides: &BTreeMap<String, MaskSpec>,
) -> Action {
    let chosen = overrides.get(class.as_ref());
    let mask = if role.clearance == Tier::T1 && never_public(c) {
        Some(MaskSpec::Remove)
    } else if c.tier <= role.clearance {
        chosen.filter(|m| !m.is_clear()).cloned()
    } else {
        Some(
            chosen
                .or(c.default_mask.as_ref())
                .cloned()
                .unwrap_or(MaskSpec::Remove),
        )
    };
    Action {
        class: class.clone(),
        identifies: c.identifies,
        mask,
        t4: c.tier == Tier::T4,
    }
}

/// Whether some class of the trie is seen clear by this clearance and satisfies `pred`.
fn admits(
    t: &Trie<Arc<str>>,
    classes: &HashMap<String, Class>,
    clearance: Tier,
    pred: &dyn Fn(&Class) -> bool,
) -> bool {
    t.value.as_ref().is_some_and(|c| {
        let c = &classes[c.as_ref()];
        c.tier <= clearance && pred(c)
    }) || t.keys.values().any(|n| admits(n, classes, clearance, pred))
        || t.any_index
            .as_deref()
            .is_some_and(|n| admits(n, classes, clearance, pred))
}

pub(super) fn compile_plan(
    role: &Role,
    purpose: &super::Purpose,
    ds: &CompiledDataset,
    classes: &HashMap<String, Class>,
    overrides: &BTreeMap<String, MaskSpec>,
    windows: &Windows,
) -> Plan {
    let fields = ds
        .fields
        .map(&|class: &Arc<str>| action(role, &classes[class.as_ref()], class, overrides));
    let admits_t3 = admits(&ds.fields, classes, role.clearance, &|c| c.tier >= Tier::T3);
    let sensitive = role.clearance > Tier::T1
        && admits(&ds.fields, classes, role.clearance, &|c| {
            c.category == Category::Sensitive
        });
    // PIPL art. 13 and 29: a legal duty needs no consent; any other basis reading sensitive
    // personal information needs the person's separate consent.
    let needs_separate_consent = sensitive && purpose.legal_basis != super::LegalBasis::LegalDuty;
    let natural = ds.subject_type == Some(crate::domain::SubjectType::Natural);
    Plan {
        role: role.name.clone(),
        dataset: ds.name.clone(),
        purpose: purpose.code.clone(),
        clearance: role.clearance,
        row_scope: role.row_scope,
        needs_consent: (role.consent_for_natural && natural && admits_t3) || needs_separate_consent,
        needs_separate_consent,
        region_unknown: role.row_scope == RowScope::Region && ds.region.is_none(),
        fields,
        rows: ds.rows.clone(),
        region: ds.region.clone(),
        subject: ds.subject.clone(),
        subject_type: ds.subject_type,
        dated: ds.dated.clone(),
        flags: ds.flags.clone(),
        retention: windows.retention,
        display: (!windows.full_history.contains(&purpose.code)).then(|| windows.display.clone()),
    }
}

/// Visits every array reached by `segs` (which may contain `[*]`).
fn for_each_array(v: &mut Value, segs: &[Seg], f: &mut impl FnMut(&mut Vec<Value>)) {
    match segs.split_first() {
        None => {
            if let Value::Array(a) = v {
                f(a)
            }
        }
        Some((Seg::Key(k), rest)) => {
            if let Some(child) = v.as_object_mut().and_then(|m| m.get_mut(k)) {
                for_each_array(child, rest, f)
            }
        }
        Some((Seg::AnyIndex, rest)) => {
            if let Value::Array(items) = v {
                for item in items {
                    for_each_array(item, rest, f)
                }
            }
        }
    }
}

/// Whether some array reached by `segs` (as `for_each_array` reaches them) has an item.
fn has_records(v: &Value, segs: &[Seg]) -> bool {
    match segs.split_first() {
        None => v.as_array().is_some_and(|a| !a.is_empty()),
        Some((Seg::Key(k), rest)) => v.get(k).is_some_and(|c| has_records(c, rest)),
        Some((Seg::AnyIndex, rest)) => v
            .as_array()
            .is_some_and(|items| items.iter().any(|i| has_records(i, rest))),
    }
}

fn date_of(v: &Value) -> Option<Date> {
    let s = v.as_str()?.get(..10)?;
    plain_date(s).unwrap_or_else(|| {
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        Date::parse(s, &fmt).ok()
    })
}

/// `YYYY-MM-DD` in ASCII digits, the form stores send: `Some` of what `time`'s parser answers
/// for it (the date, or none for a month 13 or a 30 February), read directly; `None` for any
/// other shape, which is left to that parser. The parser was 1% of a 100-row list's
/// instructions for the few dozen dates it read (callgrind); `tests::plain_dates_read_as_time_parses_them`
/// compares the two on every month and day of many years.
fn plain_date(s: &str) -> Option<Option<Date>> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    if !(digits(0..4) && digits(5..7) && digits(8..10)) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| b[r].iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let month = time::Month::try_from(n(5..7) as u8).ok();
    Some(month.and_then(|m| Date::from_calendar_date(i32::from(n(0..4)), m, n(8..10) as u8).ok()))
}

fn value_at<'v>(v: &'v Value, segs: &[Seg]) -> Option<&'v Value> {
    let mut v = v;
    for s in segs {
        v = match s {
            Seg::Key(k) => v.get(k)?,
            Seg::AnyIndex => return None,
        };
    }
    Some(v)
}

impl Plan {
    /// The type of subject the dataset's records are about, as the catalog declares it.
    pub fn subject_type(&self) -> Option<crate::domain::SubjectType> {
        self.subject_type
    }

    /// Whether the purpose reads full history (`full_history_purposes`: supervision,
    /// enforcement, the subject's own record): such a reader still sees a restricted record,
    /// marked, where every other reader does not.
    pub fn sees_full_history(&self) -> bool {
        self.display.is_none()
    }

    /// Removes, before the plan is applied, every record whose subject `restricted` names (a
    /// completed restriction request, PIPL art. 44): rows of a list are dropped and counted in
    /// `withheld_records`; a single record empties the answer and is `out_of_scope` (answered
    /// as no such record, so the restriction itself is not disclosed). Ids are asked in their
    /// canonical form, read before masking.
    pub fn withhold_subjects(
        &self,
        doc: &mut Value,
        restricted: &dyn Fn(&str) -> bool,
        out: &mut Outcome,
    ) {
        let Some(subject) = &self.subject else {
            return;
        };
        let is_restricted = |v: &Value| {
            value_at(v, subject)
                .and_then(Value::as_str)
                .is_some_and(|s| restricted(&canonical(self.subject_type, s)))
        };
        match &self.rows {
            Some(rows) => for_each_array(doc, &rows[..rows.len() - 1], &mut |items| {
                let before = items.len();
                items.retain(|r| !is_restricted(r));
                out.withheld_records += before - items.len();
            }),
            None => {
                if is_restricted(doc) {
                    out.withheld_records += 1;
                    out.out_of_scope = true;
                    *doc = Value::Object(Map::new());
                }
            }
        }
    }

    /// Applies the plan to a parsed answer in place. Never fails: whatever cannot be judged is
    /// withheld.
    pub fn apply(&self, doc: &mut Value, ctx: &ApplyCtx<'_>) -> Outcome {
        self.apply_annotated(doc, ctx, None)
    }

    /// Applies the plan, adding what `annotate` answers for each released record under the
    /// key `_objections`. The annotator is asked with the record's subject id as the store
    /// sent it (canonical when it parses), read before masking, and its answer is put on that
    /// same record once masked: a role that sees the id masked is annotated all the same, and
    /// a row the masking removes cannot shift the marks of the rows after it.
    pub fn apply_annotated(
        &self,
        doc: &mut Value,
        ctx: &ApplyCtx<'_>,
        annotate: Option<&mut Annotator<'_>>,
    ) -> Outcome {
        let mut out = Outcome::default();
        self.withhold(doc, ctx, &mut out);
        if out.out_of_scope {
            return out;
        }
        let record = match (&self.subject, &self.rows) {
            (None, _) => None,
            (Some(subject), Some(rows)) => self.fields.get(rows).map(|node| (node, subject)),
            (Some(subject), None) => Some((&self.fields, subject)),
        };
        let mut w = Walker {
            ctx,
            out: &mut out,
            seen: HashMap::default(),
            ids: foldhash::fast::RandomState::default(),
            noted: (None, String::new()),
            records: record.map(|(node, subject)| Records {
                node,
                subject,
                kind: self.subject_type,
                single: self.rows.is_none(),
                annotate,
            }),
        };
        let root = Trail {
            key: "",
            parent: None,
        };
        if walk(&self.fields, doc, &mut w, &root) == Walk::Remove {
            *doc = Value::Object(Map::new());
        }
        out
    }

    /// Disclosure windows, then flags from current entries, then row scope.
    fn withhold(&self, doc: &mut Value, ctx: &ApplyCtx<'_>, out: &mut Outcome) {
        let subject_of = |v: &Value| {
            let path = self.subject.as_deref()?;
            value_at(v, path)
                .and_then(Value::as_str)
                .map(|s| canonical(self.subject_type, s))
        };
        self.count_unknown_values(doc, out);
        for rule in &self.dated {
            match self.rows.as_deref() {
                // The rows themselves are the dated records (a list's entries): each row names
                // its own subject.
                Some(rows) if rule.array == rows[..rows.len() - 1] => {
                    for_each_array(doc, &rule.array, &mut |records| {
                        self.retain_dated(rule, records, &|r| subject_of(r), ctx, out)
                    });
                }
                // Dated records inside each row (a row's penalties or list entries): the row's
                // subject is theirs.
                Some(rows) if rule.array.starts_with(rows) => {
                    for_each_array(doc, &rows[..rows.len() - 1], &mut |items| {
                        for row in items.iter_mut() {
                            // Only an expired record names its subject: a row with no records
                            // here (most rows) is spared parsing its id.
                            let within = &rule.array[rows.len()..];
                            let subject =
                                has_records(row, within).then(|| subject_of(row)).flatten();
                            for_each_array(row, within, &mut |records| {
                                self.retain_dated(rule, records, &|_| subject.clone(), ctx, out)
                            });
                        }
                    });
                }
                // A single record's arrays: the record's subject.
                _ => {
                    let subject = if self.rows.is_none() {
                        subject_of(doc)
                    } else {
                        None
                    };
                    for_each_array(doc, &rule.array, &mut |records| {
                        self.retain_dated(rule, records, &|_| subject.clone(), ctx, out)
                    });
                }
            }
        }
        self.derive_flags(doc, ctx.today, out);
        self.scope(doc, ctx, out);
    }

    /// Counts the dated records whose `good_when` field is none of the values the rules on
    /// their array declare; each array and field is counted once, by its first rule.
    fn count_unknown_values(&self, doc: &mut Value, out: &mut Outcome) {
        for (i, rule) in self.dated.iter().enumerate() {
            let Some((field, _)) = &rule.good_when else {
                continue;
            };
            let group = |r: &&DatedRule| {
                r.array == rule.array && r.good_when.as_ref().is_some_and(|(f, _)| f == field)
            };
            if self.dated[..i].iter().any(|r| group(&r)) {
                continue;
            }
            let known: Vec<&String> = self
                .dated
                .iter()
                .filter(group)
                .flat_map(|r| r.good_when.iter().flat_map(|(_, v)| v))
                .collect();
            for_each_array(doc, &rule.array, &mut |records| {
                out.unknown_values += records
                    .iter()
                    .filter(|r| {
                        !r.get(field)
                            .and_then(Value::as_str)
                            .is_some_and(|v| known.iter().any(|k| *k == v))
                    })
                    .count();
            });
        }
    }

    /// Keeps the dated records on display; those past retention are withheld and listed in
    /// `expired` with their subject, so that a deletion request names whose record it is.
    fn retain_dated(
        &self,
        rule: &DatedRule,
        records: &mut Vec<Value>,
        subject_of: &dyn Fn(&Value) -> Option<String>,
        ctx: &ApplyCtx<'_>,
        out: &mut Outcome,
    ) {
        let before = records.len();
        records.retain(|r| match self.judge(rule, r, ctx.today) {
            Judged::Released => true,
            Judged::Hidden => false,
            Judged::Expired => {
                if out.expired.len() < MAX_SUBJECTS {
                    out.expired.push(Expired {
                        dataset: self.dataset.clone(),
                        subject: subject_of(r),
                        record_ref: rule.reference(r),
                        store: None,
                    });
                }
                false
            }
        });
        out.withheld_records += before - records.len();
    }

    fn scope(&self, doc: &mut Value, ctx: &ApplyCtx<'_>, out: &mut Outcome) {
        if self.row_scope != RowScope::Region {
            return;
        }
        let region = self.region.as_deref().unwrap_or(&[]);
        let in_scope = |row: &Value| {
            ctx.region.is_some()
                && !region.is_empty()
                && value_at(row, region).and_then(Value::as_str) == ctx.region
        };
        match &self.rows {
            Some(rows) => for_each_array(doc, &rows[..rows.len() - 1], &mut |items| {
                let before = items.len();
                items.retain(in_scope);
                out.dropped_rows += before - items.len();
            }),
            None => {
                if !in_scope(doc) {
                    out.out_of_scope = true;
                    *doc = Value::Object(Map::new());
                }
            }
        }
    }

    /// A flag withheld (its record has no entries to show it current): counted like any field
    /// the plan removes.
    fn count_withheld_flag(&self, row: &[Seg], f: &FlagRule, out: &mut Outcome) {
        let at: Vec<Seg> = row
            .iter()
            .cloned()
            .chain([Seg::Key(f.flag.clone())])
            .collect();
        match self.fields.get(&at).and_then(|n| n.value.as_ref()) {
            Some(a) => count(out, &a.class),
            None => out.masked += 1,
        }
    }

    /// Recomputes each flag of each record from its current entries (not removed, not past
    /// `valid_until`, among those released); a record without its entries loses the flag,
    /// since nothing shows it is current.
    fn derive_flags(&self, doc: &mut Value, today: Date, out: &mut Outcome) {
        if self.flags.is_empty() {
            return;
        }
        let row: &[Seg] = self.rows.as_deref().unwrap_or(&[]);
        let mut each = |record: &mut Value| {
            for f in &self.flags {
                let current =
                    value_at(record, &f.entries)
                        .and_then(Value::as_array)
                        .map(|entries| {
                            entries.iter().any(|e| {
                                e.get(&f.list_field).and_then(Value::as_str)
                                    == Some(f.list.as_str())
                                    && entry_current(e, today)
                            })
                        });
                // Only a flag the record carries is set or withheld; each is found once
                // (`get_mut`, `remove`), not checked first with `contains_key`.
                let Some(obj) = record.as_object_mut() else {
                    continue;
                };
                match current {
                    Some(b) => {
                        if let Some(slot) = obj.get_mut(&f.flag) {
                            *slot = Value::Bool(b);
                        }
                    }
                    None => {
                        if obj.remove(&f.flag).is_some() {
                            self.count_withheld_flag(row, f, out);
                        }
                    }
                }
            }
        };
        match &self.rows {
            Some(rows) => for_each_array(doc, &rows[..rows.len() - 1], &mut |items| {
                items.iter_mut().for_each(&mut each)
            }),
            None => each(doc),
        }
    }

    fn judge(&self, rule: &DatedRule, record: &Value, today: Date) -> Judged {
        if !rule.is_adverse(record) {
            return Judged::Released;
        }
        let Some(date) = record.get(&rule.date).and_then(date_of) else {
            // An undated adverse record cannot be placed in its windows: withheld.
            return Judged::Hidden;
        };
        // 征信业管理条例 art. 16: from the day the act ended; without that day, from the record's
        // own date (a penalty's decision comes after the act, so this errs towards release:
        // stores are expected to send `ended_at`).
        let end = rule
            .end
            .as_ref()
            .and_then(|f| record.get(f))
            .and_then(date_of)
            .unwrap_or(date);
        if today > self.retention.after(end) {
            return Judged::Expired;
        }
        match &self.display {
            Some(d) if rule.display && !d.shows(rule, record, date, today) => Judged::Hidden,
            _ => Judged::Released,
        }
    }
}

/// A list entry is current when it is not removed and its validity has not lapsed. A removal
/// or validity that is not a date ends it (nothing shows it current).
fn entry_current(e: &Value, today: Date) -> bool {
    let removed = match e.get("removed_at") {
        None | Some(Value::Null) => false,
        Some(v) => date_of(v).is_none_or(|d| today >= d),
    };
    let lapsed = match e.get("valid_until") {
        None | Some(Value::Null) => false,
        Some(v) => date_of(v).is_none_or(|d| today > d),
    };
    !removed && !lapsed
}

enum Judged {
    Released,
    /// Out of display for this purpose (or undatable).
    Hidden,
    /// Past the retention limit: withheld from everyone, deletion asked for.
    Expired,
}

impl DatedRule {
    fn reference(&self, record: &Value) -> String {
        let id = self.id.as_ref().and_then(|f| record.get(f));
        match id {
            Some(Value::String(s)) => s.chars().take(200).collect(),
            Some(Value::Number(n)) => n.to_string(),
            _ => format!(
                "{}@{}",
                self.date,
                record
                    .get(&self.date)
                    .and_then(Value::as_str)
                    .unwrap_or("?")
            ),
        }
    }
}

impl Display {
    /// Whether a dated adverse record is on display today: within the longest period of its
    /// severity, before any `until` date, not withdrawn, not repaired (a repair counts from
    /// the end of the shortest period at the earliest).
    fn shows(&self, rule: &DatedRule, record: &Value, date: Date, today: Date) -> bool {
        let severity = rule.severity(record);
        // Unknown severity: the shortest period, so doubt withholds sooner.
        let max = match severity.and_then(|s| self.max.get(s)) {
            Some(p) => *p,
            None => self
                .max
                .values()
                .min_by_key(|l| match l {
                    Longest::Never => (0, date),
                    Longest::For(p) => (1, p.after(date)),
                    Longest::Unbounded => (2, date),
                })
                .copied()
                .unwrap_or(Longest::Never),
        };
        match max {
            Longest::Never => return false,
            Longest::For(p) if today > p.after(date) => return false,
            _ => {}
        }
        for f in &rule.until {
            match record.get(f) {
                None | Some(Value::Null) => {}
                Some(v) => match date_of(v) {
                    Some(d) if today <= d => {}
                    _ => return false,
                },
            }
        }
        let set = |f: &String| record.get(f).is_some_and(|v| !v.is_null());
        // A withdrawal (revocation, removal) takes effect on its day; a bad date withdraws now.
        if rule
            .withdrawn
            .iter()
            .filter(|f| set(f))
            .any(|f| record.get(f).and_then(date_of).is_none_or(|d| today >= d))
        {
            return false;
        }
        if let Some(f) = rule.repaired.as_ref().filter(|f| set(f)) {
            let min = severity.and_then(|s| self.min.get(s));
            let earliest = min.map_or(date, |m| m.after(date));
            let repaired = record.get(f).and_then(date_of).unwrap_or(date);
            if today >= repaired.max(earliest) {
                return false;
            }
        }
        true
    }
}

#[derive(PartialEq, Eq)]
enum Walk {
    Keep,
    Remove,
}

/// Counts a masked field under its class; the class is cloned (an atomic increment) only the
/// first time it is counted in an answer.
fn count(out: &mut Outcome, class: &Arc<str>) {
    out.masked += 1;
    match out.by_class.get_mut(class) {
        Some(n) => *n += 1,
        None => {
            out.by_class.insert(class.clone(), 1);
        }
    }
}

/// The path to the current value, as a linked list on the stack: built into a string only
/// when an unclassified field must be named, so the common case allocates nothing.
#[derive(Clone, Copy)]
struct Trail<'a> {
    key: &'a str,
    parent: Option<&'a Trail<'a>>,
}

impl Trail<'_> {
    fn render(&self) -> String {
        let mut parts = vec![self.key];
        let mut at = self.parent;
        while let Some(t) = at {
            parts.push(t.key);
            at = t.parent;
        }
        parts.retain(|p| !p.is_empty());
        parts.reverse();
        parts.join(".")
    }
}

fn unclassified(out: &mut Outcome, trail: &Trail<'_>) {
    out.masked += 1;
    out.unclassified += 1;
    if out.unclassified_paths.len() < 32 {
        out.unclassified_paths.push(trail.render());
    }
}

/// One pass over the value and the plan's trie together.
fn walk(
    node: &Trie<Action>,
    v: &mut Value,
    w: &mut Walker<'_, '_, '_, '_>,
    trail: &Trail<'_>,
) -> Walk {
    if w.records
        .as_ref()
        .is_some_and(|r| std::ptr::eq(r.node, node))
    {
        return record(node, v, w, trail);
    }
    walk_value(node, v, w, trail)
}

/// One record (a row, or the whole answer): its subject is read and noted before masking, and
/// the annotation for that subject is put on the record itself once masked.
fn record(
    node: &Trie<Action>,
    v: &mut Value,
    w: &mut Walker<'_, '_, '_, '_>,
    trail: &Trail<'_>,
) -> Walk {
    let Some(r) = w.records.as_ref().filter(|_| v.is_object()) else {
        return walk_value(node, v, w, trail);
    };
    let (kind, single) = (r.kind, r.single);
    let raw = value_at(v, r.subject).and_then(Value::as_str);
    let id = raw.map(|s| canonical(kind, s));
    if let Some(id) = &id {
        w.touch(id);
    }
    // `canonical` parsed it as `kind`: noted if it parsed, and a leaf would not note it if not.
    w.noted.0 = kind.filter(|_| raw.is_some());
    w.noted.1.clear();
    w.noted.1.push_str(raw.unwrap_or_default());
    let mut verdict = walk_value(node, v, w, trail);
    if single && verdict == Walk::Remove {
        // The whole answer was emptied: it is still the record, and still contested.
        *v = Value::Object(Map::new());
        verdict = Walk::Keep;
    }
    if verdict == Walk::Keep
        && let Some(id) = &id
        && let Some(annotate) = w.records.as_mut().and_then(|r| r.annotate.as_mut())
        && let Some(note) = annotate(id)
        && let Some(obj) = v.as_object_mut()
    {
        obj.insert("_objections".into(), note);
        w.out.annotated += 1;
    }
    verdict
}

fn walk_value(
    node: &Trie<Action>,
    v: &mut Value,
    w: &mut Walker<'_, '_, '_, '_>,
    trail: &Trail<'_>,
) -> Walk {
    if let Some(action) = &node.value {
        return leaf(action, v, w, trail);
    }
    match v {
        Value::Object(map) => walk_object(node, map, w, trail),
        Value::Array(items) => match node.any_index.as_deref() {
            Some(n) => walk_items(n, items, w, trail),
            None => {
                unclassified(w.out, trail);
                Walk::Remove
            }
        },
        // A scalar where the catalog expects structure: not classified as such.
        _ => {
            unclassified(w.out, trail);
            Walk::Remove
        }
    }
}

/// An object's fields, in key order, each kept or removed where it stands (`retain`: no list
/// of removed keys, no key copied, no second lookup to remove it).
fn walk_object(
    node: &Trie<Action>,
    map: &mut Map<String, Value>,
    w: &mut Walker<'_, '_, '_, '_>,
    trail: &Trail<'_>,
) -> Walk {
    let had_fields = !map.is_empty();
    map.retain(|k, child| {
        let here = Trail {
            key: k,
            parent: Some(trail),
        };
        match node.keys.get(k) {
            None => {
                unclassified(w.out, &here);
                false
            }
            Some(n) => walk(n, child, w, &here) == Walk::Keep,
        }
    });
    // A structure that had fields and keeps none says nothing: it goes too.
    if had_fields && map.is_empty() {
        Walk::Remove
    } else {
        Walk::Keep
    }
}

/// An array's items, in order, each kept or removed in place (no second vector).
fn walk_items(
    n: &Trie<Action>,
    items: &mut Vec<Value>,
    w: &mut Walker<'_, '_, '_, '_>,
    trail: &Trail<'_>,
) -> Walk {
    let here = Trail {
        key: "[*]",
        parent: Some(trail),
    };
    let had_items = !items.is_empty();
    items.retain_mut(|item| walk(n, item, w, &here) == Walk::Keep);
    if had_items && items.is_empty() {
        Walk::Remove
    } else {
        Walk::Keep
    }
}

/// A classified node: the class's mask applied to a scalar; anything else is removed.
fn leaf(action: &Action, v: &mut Value, w: &mut Walker<'_, '_, '_, '_>, trail: &Trail<'_>) -> Walk {
    // A class applies to a scalar at its path (or at `[*]` for an array of scalars):
    // structure the store nests there is named by no one, and leaves with nothing.
    if v.is_object() || v.is_array() {
        unclassified(w.out, trail);
        return Walk::Remove;
    }
    if let (Some(kind), Some(s)) = (action.identifies, v.as_str())
        && !w.is_noted(kind, s)
        && let Ok(id) = crate::domain::SubjectId::parse(kind, s)
    {
        w.touch(id.as_str());
    }
    match &action.mask {
        None => {
            if action.t4 && !v.is_null() {
                w.out.released_t4 += 1;
            }
            Walk::Keep
        }
        Some(m) => {
            count(w.out, &action.class);
            match mask::apply(m, v, w.ctx.pseudonym_key) {
                Some(masked) => {
                    *v = masked;
                    Walk::Keep
                }
                None => Walk::Remove,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_add_calendar_months_and_clamp() {
        let d = |s: &str| {
            Date::parse(
                s,
                &time::macros::format_description!("[year]-[month]-[day]"),
            )
            .unwrap()
        };
        assert_eq!(
            Period::parse("3m").unwrap().after(d("2024-11-30")),
            d("2025-02-28")
        );
        assert_eq!(
            Period::parse("1y").unwrap().after(d("2024-02-29")),
            d("2025-02-28")
        );
        assert_eq!(
            Period::parse("90d").unwrap().after(d("2024-01-01")),
            d("2024-03-31")
        );
        assert!(
            Period::parse("3w").is_none()
                && Period::parse("0y").is_none()
                && Period::parse("").is_none()
        );
    }
}

#[cfg(test)]
mod date_tests {
    use super::*;

    fn parsed(s: &str) -> Option<Date> {
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        Date::parse(s, &fmt).ok()
    }

    /// The direct reading answers what `time`'s parser answers, on every month 00-19 and day
    /// 00-39 of years around each edge, and on 29 February of every year.
    #[test]
    fn plain_dates_read_as_time_parses_them() {
        for y in [
            0, 1, 4, 99, 100, 400, 1900, 1999, 2000, 2023, 2024, 2100, 9998, 9999,
        ] {
            for m in 0..20 {
                for d in 0..40 {
                    let s = format!("{y:04}-{m:02}-{d:02}");
                    assert_eq!(plain_date(&s), Some(parsed(&s)), "{s}");
                }
            }
        }
        for y in 0..=9999 {
            let s = format!("{y:04}-02-29");
            assert_eq!(plain_date(&s), Some(parsed(&s)), "{s}");
        }
        for other in [
            "2024-1-012",
            "+202-01-01",
            "2024/01/01",
            "２０２４-01-01",
            "2024-01-0a",
            "20240101xx",
        ] {
            assert_eq!(plain_date(other), None, "{other}");
        }
        for s in [
            "2024-05-12T10:00:00Z",
            "2024-05-12",
            "2024-5-12",
            "+2024-05-12",
            "x",
            "",
        ] {
            let v = Value::String(s.into());
            assert_eq!(date_of(&v), s.get(..10).and_then(parsed), "{s}");
        }
    }
}

#[cfg(test)]
mod touch_tests {
    use super::*;

    /// Two ids that share a hash (forced here: the store could find such a pair) are both
    /// noted, each once, and an id already noted is not noted again.
    #[test]
    fn ids_that_share_a_hash_are_noted_once_each() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k");
        let ctx = ApplyCtx {
            region: None,
            today: time::OffsetDateTime::now_utc().date(),
            pseudonym_key: &key,
        };
        let mut out = Outcome::default();
        let mut w = Walker {
            ctx: &ctx,
            out: &mut out,
            seen: HashMap::default(),
            ids: foldhash::fast::RandomState::default(),
            noted: (None, String::new()),
            records: None,
        };
        w.touch("a");
        // "b" and "c" are filed under "a"'s hash, as a collision would file them.
        let a = w.ids.hash_one("a");
        w.seen.insert(w.ids.hash_one("b"), 0);
        w.seen.insert(w.ids.hash_one("c"), 0);
        for id in ["b", "a", "b", "c", "c", "d", "a"] {
            w.touch(id);
        }
        assert_eq!(w.seen[&a], 0);
        assert_eq!(out.subjects, ["a", "b", "c", "d"]);
    }
}

#[cfg(test)]
mod annotation_tests {
    use serde_json::json;

    use super::*;

    fn shipped() -> super::super::PolicySet {
        super::super::PolicySet::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies"),
        )
        .unwrap()
    }

    /// A row the masking empties (and so removes) must not shift the marks of the rows after
    /// it: each mark sits on the row whose subject it is, or nowhere.
    #[test]
    fn a_removed_row_does_not_shift_the_marks_of_later_rows() {
        let set = shipped();
        let plan = set
            .decide("regulator", "supervision", "entity_list")
            .unwrap();
        let a = crate::domain::Uscc::complete("9111000012345678").unwrap();
        let b = crate::domain::Uscc::complete("9111000012345679").unwrap();
        let mut doc = json!({"items": [
            {"junk": 1},
            {"uscc": a.as_str(), "name": "A"},
            {"uscc": b.as_str(), "name": "B"},
        ]});
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k");
        let ctx = ApplyCtx {
            region: None,
            today: time::OffsetDateTime::now_utc().date(),
            pseudonym_key: &key,
        };
        let contested = a.as_str().to_string();
        let mut note = |id: &str| (id == contested).then(|| json!(["mark of A"]));
        let out = plan.apply_annotated(&mut doc, &ctx, Some(&mut note));
        let items = doc["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{doc}");
        assert_eq!(items[0]["uscc"], a.as_str());
        assert_eq!(items[0]["_objections"], json!(["mark of A"]), "{doc}");
        assert!(items[1].get("_objections").is_none(), "{doc}");
        assert_eq!(out.annotated, 1);
        assert_eq!(
            out.subjects,
            vec![a.as_str().to_string(), b.as_str().to_string()]
        );
    }

    /// A store's value that is not an id is recorded as sent only while it is short; a long
    /// one is recorded as its digest (bounded, so it cannot stall PostgreSQL's index), and a
    /// valid id is recorded exactly (rev3 F5).
    #[test]
    fn a_long_value_that_is_not_an_id_is_recorded_bounded() {
        let set = shipped();
        let plan = set
            .decide("regulator", "supervision", "entity_list")
            .unwrap();
        let a = crate::domain::Uscc::complete("9111000012345678").unwrap();
        let long = "z".repeat(3000);
        let short = "not-an-id";
        let mut doc = json!({"items": [
            {"uscc": a.as_str(), "name": "A"},
            {"uscc": long, "name": "L"},
            {"uscc": short, "name": "S"},
        ]});
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k");
        let ctx = ApplyCtx {
            region: None,
            today: time::OffsetDateTime::now_utc().date(),
            pseudonym_key: &key,
        };
        let out = plan.apply_annotated(&mut doc, &ctx, None);
        let digest = ring::digest::digest(&ring::digest::SHA256, long.as_bytes());
        assert_eq!(
            out.subjects,
            vec![
                a.as_str().to_string(),
                format!("sha256:{}", hex::encode(digest.as_ref())),
                short.to_string(),
            ]
        );
        assert!(
            out.subjects
                .iter()
                .all(|s| s.len() <= MAX_RAW_SUBJECT_BYTES)
        );
    }
}
