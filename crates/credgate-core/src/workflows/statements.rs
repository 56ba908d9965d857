//! The subject's own statements (本人声明, issue 15 item 1): a short text a data subject attaches
//! to one of their records, shown with that record (on the dataset it was filed under) to every
//! reader until they withdraw it. It may not name a third person (see `refuse_identifiers`).
//! Which records carry one is kept in memory, like the objection marks, so that annotating an
//! answer is a lookup; loaded at start, refreshed after every change this process makes, and
//! rebuilt when another replica signals a change (the objections topic).

use std::{collections::HashMap, sync::Arc, sync::RwLock};

use serde::Deserialize;
use serde_json::{Value, json};
use unicode_normalization::UnicodeNormalization as _;

use super::WorkflowError;
use crate::{
    audit::{ChangeError, Deferred, Refused},
    domain::{SubjectId, SubjectType},
    services::Core,
    storage::{
        Db, StorageError, micros_to_rfc3339, signals,
        statements::{self as repo, Statement},
    },
};

/// Longest statement, in characters after normalisation.
pub const MAX_TEXT_CHARS: usize = 1000;
/// Active statements one subject may keep on one record, and in all.
pub const MAX_PER_RECORD: i64 = 3;
pub const MAX_PER_SUBJECT: i64 = 50;
/// What one record's `_statements` may add to an answer: at most this many entries and bytes;
/// the rest is counted in a final `{"truncated": n}` entry.
pub const MAX_ANNOTATED: usize = 3;
pub const MAX_ANNOTATION_BYTES: usize = 8192;

/// A statement as filed (the body of `POST /subject/statements`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    pub store: String,
    pub dataset: String,
    pub record_ref: String,
    pub text: String,
}

/// The text as kept: NFC, line breaks as `\n`, no other control or invisible formatting
/// character (a bidi override or a zero-width character would let a statement display as
/// something else than it says to every reader), trimmed, 1-`MAX_TEXT_CHARS` characters.
pub fn normalise_text(raw: &str) -> Result<String, WorkflowError> {
    let text: String = raw.replace("\r\n", "\n").nfc().collect();
    let text = text.trim();
    let bad = text.chars().find(|c| {
        (c.is_control() && *c != '\n')
            || crate::domain::names::is_hidden_char(*c)
            || *c == '\u{FFFD}'
    });
    if let Some(c) = bad {
        return Err(WorkflowError::BadRequest(format!(
            "text has a control or invisible formatting character (U+{:04X})",
            c as u32
        )));
    }
    let n = text.chars().count();
    if n == 0 || n > MAX_TEXT_CHARS {
        return Err(WorkflowError::BadRequest(format!(
            "text must be 1-{MAX_TEXT_CHARS} characters"
        )));
    }
    Ok(text.to_string())
}

/// A statement is shown unmasked to every reader of the record, so it may not carry a third
/// person's identifiers: a valid resident ID number, a mobile phone number, or a USCC other
/// than the filer's own. The text is compared folded (NFKC, so full-width digits count; the
/// usual separators inside a number dropped), which errs towards refusing.
fn refuse_identifiers(text: &str, own: &SubjectId) -> Result<(), WorkflowError> {
    let folded: Vec<char> = text
        .nfkc()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '_' | '/' | '\u{3000}'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let refuse = |why: &str| {
        Err(WorkflowError::BadRequest(format!(
            "text {why}: a statement is shown to every reader, unmasked; leave it out"
        )))
    };
    for w in folded.windows(18) {
        let cand: String = w.iter().collect();
        if !cand.chars().all(|c| c.is_ascii_alphanumeric()) {
            continue;
        }
        if crate::domain::ResidentId::parse(&cand).is_ok() && cand != own.as_str() {
            return refuse("carries a resident ID number");
        }
        if crate::domain::Uscc::parse(&cand).is_ok() && cand != own.as_str() {
            return refuse("carries another organisation's USCC");
        }
    }
    let digit = |i: usize| folded.get(i).is_some_and(char::is_ascii_digit);
    for i in 0..folded.len() {
        let mobile = folded[i] == '1'
            && folded.get(i + 1).is_some_and(|c| ('3'..='9').contains(c))
            && (i + 2..i + 11).all(digit);
        if mobile && (i == 0 || !digit(i - 1)) && !digit(i + 11) {
            return refuse("carries a mobile phone number");
        }
    }
    Ok(())
}

/// Checks a submission against the catalog and the caller, as objections are checked: a known
/// store and dataset about the caller's type of subject, and their own record (named by their
/// own id). Returns the statement to file.
pub fn prepare(
    state: &Core,
    subject: &SubjectId,
    req: Submission,
) -> Result<Statement, WorkflowError> {
    let known = state
        .stores
        .datasets()
        .any(|(s, d)| s == req.store && d == req.dataset);
    if !known {
        return Err(WorkflowError::BadRequest(
            "no such store and dataset".into(),
        ));
    }
    let policies = state.policies();
    if policies
        .dataset(&req.dataset)
        .and_then(|d| d.subject_type)
        .is_some_and(|t| t != subject.subject_type())
    {
        return Err(WorkflowError::BadRequest(format!(
            "dataset `{}` is not about a {} subject",
            req.dataset,
            subject.subject_type().as_str()
        )));
    }
    if req.record_ref.trim().to_ascii_uppercase() != subject.as_str() {
        return Err(WorkflowError::BadRequest(
            "record_ref must be your own USCC or ID number".into(),
        ));
    }
    let text = normalise_text(&req.text)?;
    refuse_identifiers(&text, subject)?;
    Ok(Statement {
        id: format!("st_{}", uuid::Uuid::now_v7().simple()),
        subject_id: subject.as_str().into(),
        subject_type: subject.subject_type().as_str().into(),
        store: req.store,
        dataset: req.dataset,
        record_ref: subject.as_str().into(),
        text,
        created_at: state.clock.now(),
        withdrawn_at: None,
    })
}

/// Files the statement in the audit record's transaction, within the caps; the index is
/// refreshed after commit.
pub fn filing(state: &Core, s: Statement) -> Deferred {
    let refresh = refresh_after(state, &s);
    let backend = state.db.backend();
    let s = Arc::new(s);
    Deferred::new(move |conn| {
        let s = s.clone();
        Box::pin(async move {
            repo::lock_subject_in(conn, backend, &s).await?;
            let (per_record, per_subject) = repo::count_active_in(conn, &s).await?;
            if per_record >= MAX_PER_RECORD || per_subject >= MAX_PER_SUBJECT {
                return Err(ChangeError::Refused(Refused::Conflict(format!(
                    "at most {MAX_PER_RECORD} active statements per record and \
                     {MAX_PER_SUBJECT} in all; withdraw one first"
                ))));
            }
            repo::insert_in(conn, &s).await?;
            signals::bump(&mut *conn, signals::OBJECTIONS, None).await?;
            Ok(())
        })
    })
    .then(refresh)
}

/// Withdraws the subject's own statement in the audit record's transaction: 404 if it is not
/// theirs or no longer active there.
pub fn withdrawal(state: &Core, subject: SubjectId, s: Statement) -> Deferred {
    let refresh = refresh_after(state, &s);
    let now = state.clock.now();
    let (subject, id) = (Arc::new(subject), Arc::new(s.id));
    Deferred::new(move |conn| {
        let (subject, id) = (subject.clone(), id.clone());
        Box::pin(async move {
            if !repo::withdraw_in(conn, &subject, &id, now).await? {
                return Err(ChangeError::Refused(Refused::NotFound(
                    "no such statement".into(),
                )));
            }
            signals::bump(&mut *conn, signals::OBJECTIONS, None).await?;
            Ok(())
        })
    })
    .then(refresh)
}

fn refresh_after(
    state: &Core,
    s: &Statement,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (state, store, record) = (state.clone(), s.store.clone(), s.record_ref.clone());
    let dataset = s.dataset.clone();
    let kind = s.subject_type.parse::<SubjectType>().ok();
    async move {
        let Some(kind) = kind else { return };
        if let Err(e) = state
            .statements
            .refresh(&state.db, (&store, &dataset), kind, &record)
            .await
        {
            tracing::warn!(error = %e, "statements not refreshed; the replica signal will");
        }
    }
}

/// store -> (subject type, dataset, record ref) -> the record's `_statements` annotation. A
/// statement is shown on the dataset it was filed under only.
type Index = HashMap<String, HashMap<(SubjectType, String, String), Value>>;

/// Records that carry a statement, with their annotation built (and capped) when they change.
#[derive(Debug, Default)]
pub struct Statements {
    index: RwLock<Index>,
    /// Held by `reload_all` and `refresh` from their read of storage to their write of the
    /// index, as `marks::Marks` does: a whole reload (the replica signal, which this process's
    /// own filing bumps too) that read storage just before a statement committed could
    /// otherwise write its index after that statement's own refresh, and the record would
    /// show the older annotation until the next change.
    update: tokio::sync::Mutex<()>,
}

/// The annotation of one record: newest statements first, capped in count and bytes.
fn annotation_of(list: &[&Statement]) -> Value {
    let mut order: Vec<&&Statement> = list.iter().collect();
    order.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    let mut out = Vec::new();
    let mut bytes = 0;
    for s in &order {
        let v = json!({"id": s.id, "dataset": s.dataset, "text": s.text,
                       "created_at": micros_to_rfc3339(s.created_at)});
        let size = v.to_string().len();
        if out.len() == MAX_ANNOTATED || bytes + size > MAX_ANNOTATION_BYTES {
            break;
        }
        bytes += size;
        out.push(v);
    }
    if out.len() < order.len() {
        out.push(json!({"truncated": order.len() - out.len()}));
    }
    Value::Array(out)
}

impl Statements {
    pub async fn load(db: &Db) -> Result<Self, StorageError> {
        let index = Self::default();
        index.reload_all(db).await?;
        Ok(index)
    }

    /// Rebuilds the whole index: at start, and when another replica signalled a change.
    pub async fn reload_all(&self, db: &Db) -> Result<(), StorageError> {
        let _update = self.update.lock().await;
        let all = repo::all_active(db).await?;
        type Key = (String, SubjectType, String, String);
        let mut by: HashMap<Key, Vec<&Statement>> = HashMap::new();
        for s in &all {
            if let Ok(kind) = s.subject_type.parse::<SubjectType>() {
                let key = (
                    s.store.clone(),
                    kind,
                    s.dataset.clone(),
                    s.record_ref.clone(),
                );
                by.entry(key).or_default().push(s);
            }
        }
        let mut fresh: Index = HashMap::new();
        for ((store, kind, dataset, record), list) in by {
            fresh
                .entry(store)
                .or_default()
                .insert((kind, dataset, record), annotation_of(&list));
        }
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Rebuilds one record's entry after a change to its statements.
    pub async fn refresh(
        &self,
        db: &Db,
        (store, dataset): (&str, &str),
        kind: SubjectType,
        record_ref: &str,
    ) -> Result<(), StorageError> {
        let _update = self.update.lock().await;
        let list = repo::active_for_record(db, store, record_ref).await?;
        let mine: Vec<&Statement> = list
            .iter()
            .filter(|s| s.subject_type == kind.as_str() && s.dataset == dataset)
            .collect();
        let mut map = self.index.write().unwrap_or_else(|p| p.into_inner());
        let key = (kind, dataset.to_string(), record_ref.to_string());
        if mine.is_empty() {
            if let Some(records) = map.get_mut(store) {
                records.remove(&key);
                if records.is_empty() {
                    map.remove(store);
                }
            }
        } else {
            map.entry(store.to_string())
                .or_default()
                .insert(key, annotation_of(&mine));
        }
        Ok(())
    }

    /// Whether any record of this store carries a statement.
    pub fn has_store(&self, store: &str) -> bool {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(store)
    }

    /// The `_statements` annotation of one record of this dataset, of a subject of this type.
    pub fn annotation(
        &self,
        (store, dataset): (&str, &str),
        kind: SubjectType,
        record_ref: &str,
    ) -> Option<Value> {
        let map = self.index.read().unwrap_or_else(|p| p.into_inner());
        map.get(store)?
            .get(&(kind, dataset.to_string(), record_ref.to_string()))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_normalised_and_hostile_characters_refused() {
        assert_eq!(
            normalise_text("  e\u{301}\r\nok ").unwrap(),
            "\u{e9}\nok",
            "NFC, CRLF, trimmed"
        );
        for bad in [
            "",
            "   ",
            "a\u{0}b",
            "a\u{1b}[31mb",
            "ab\u{202E}cd",
            "a\u{200B}b",
            "a\u{061C}b",
            "a\u{00AD}b",
            "a\u{E0041}b",
            "a\tb",
        ] {
            assert!(normalise_text(bad).is_err(), "{bad:?}");
        }
        assert!(normalise_text(&"长".repeat(MAX_TEXT_CHARS)).is_ok());
        assert!(normalise_text(&"长".repeat(MAX_TEXT_CHARS + 1)).is_err());
    }

    fn st(i: usize, text: &str) -> Statement {
        Statement {
            id: format!("st_{i}"),
            subject_id: "X".into(),
            subject_type: "legal".into(),
            store: "power".into(),
            dataset: "entity".into(),
            record_ref: "X".into(),
            text: text.into(),
            created_at: i as i64,
            withdrawn_at: None,
        }
    }

    #[test]
    fn the_annotation_is_capped_newest_first_with_a_marker() {
        let many: Vec<Statement> = (0..10).map(|i| st(i, "x")).collect();
        let refs: Vec<&Statement> = many.iter().collect();
        let a = annotation_of(&refs);
        let list = a.as_array().unwrap();
        assert_eq!(list.len(), MAX_ANNOTATED + 1);
        assert_eq!(list[0]["id"], "st_9");
        assert_eq!(
            list[MAX_ANNOTATED],
            json!({"truncated": 10 - MAX_ANNOTATED})
        );
        let long: Vec<Statement> = (0..3).map(|i| st(i, &"长".repeat(1000))).collect();
        let refs: Vec<&Statement> = long.iter().collect();
        assert!(annotation_of(&refs).to_string().len() <= MAX_ANNOTATION_BYTES + 32);
    }
}
