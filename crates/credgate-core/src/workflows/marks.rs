//! Which records are contested, kept in memory so that marking answers costs nothing when no
//! objection is open. An open credit-repair or correction request marks its record the same
//! way (`"request": kind` in the entry): every reader learns the record is being reviewed. Loaded at start, refreshed by every change this process makes, and rebuilt
//! when another replica signals a change.

use std::{collections::HashMap, sync::RwLock};

use serde_json::{Value, json};

use super::{
    objections::{self, Status},
    requests,
};
use crate::{
    domain::SubjectType,
    storage::{Db, StorageError},
};

#[derive(Debug, Clone)]
struct Mark {
    id: String,
    /// An objection's status, or an open request's (`submitted`, `accepted`, `extended`).
    status: &'static str,
    /// Still open: the header announces it.
    open: bool,
    /// For a subject request: its kind (`repair`, `correction`).
    request: Option<&'static str>,
    dataset: String,
    field: Option<String>,
    /// For an unresolved outcome: the subject's statement, kept with the record for good.
    statement: Option<String>,
    /// For an unresolved outcome: the store's finding, kept beside the subject's statement so
    /// that a reader sees both sides.
    finding: Option<String>,
}

/// What one record's marks add to an answer, built (and capped) when the marks change, so
/// that marking an answer is a lookup and a clone.
#[derive(Debug, Clone)]
struct Entry {
    annotation: Value,
    pending: bool,
}

/// At most this many objections are listed in one record's `_objections`, and at most this
/// many bytes of them: a subject filing objection after objection must not grow every answer
/// about the record. What is left out is counted in a final `{"truncated": n}` entry.
pub const MAX_ANNOTATED: usize = 8;
pub const MAX_ANNOTATION_BYTES: usize = 4096;
/// A statement kept with the record is cut to this many characters in the annotation.
const MAX_STATEMENT_CHARS: usize = 500;

/// The marked records of one store, by the type of their subject and then their id: the
/// same 18 characters can be a valid USCC and a valid resident ID number, and a mark on a
/// company's record must not land on a person's.
type ByRecord = HashMap<SubjectType, HashMap<String, Entry>>;

/// store -> subject type -> record ref -> entry: looked up by `&str` without allocating.
/// Beside them, the restricted records (`restrictions`), loaded and refreshed with the marks.
#[derive(Debug, Default)]
pub struct Marks {
    records: RwLock<HashMap<String, ByRecord>>,
    pub restrictions: super::restrictions::Restrictions,
    /// Held by `reload_all` and `refresh` from their read of storage to their write of the
    /// map. Without it a whole reload (the replica signal, which this process's own filing
    /// bumps too) that read storage just before an objection committed could write its map
    /// after that objection's own refresh, and the record's newest mark was lost until the
    /// next change (seen once in CI: the answer counted one objection fewer than were filed).
    update: tokio::sync::Mutex<()>,
}

fn entry_of(marks: &[Mark]) -> Entry {
    // Open objections first: they are what the header announces.
    let mut order: Vec<&Mark> = marks.iter().collect();
    order.sort_by_key(|m| !(m.open && m.statement.is_none()));
    let mut list = Vec::new();
    let mut bytes = 0;
    for m in &order {
        let mut v = json!({"id": m.id, "status": m.status, "dataset": m.dataset, "field": m.field});
        if let Some(kind) = m.request {
            v["request"] = json!(kind);
        }
        if let Some(s) = &m.statement {
            v["statement"] = json!(s.chars().take(MAX_STATEMENT_CHARS).collect::<String>());
        }
        if let Some(f) = &m.finding {
            v["store_finding"] = json!(f.chars().take(MAX_STATEMENT_CHARS).collect::<String>());
        }
        let size = v.to_string().len();
        if list.len() == MAX_ANNOTATED || bytes + size > MAX_ANNOTATION_BYTES {
            break;
        }
        bytes += size;
        list.push(v);
    }
    if list.len() < order.len() {
        list.push(json!({"truncated": order.len() - list.len()}));
    }
    Entry {
        annotation: Value::Array(list),
        pending: marks.iter().any(|m| m.open && m.statement.is_none()),
    }
}

fn marks_of(list: Vec<objections::Objection>) -> Vec<Mark> {
    list.into_iter()
        .filter(|o| {
            o.status.is_open()
                || o.status == Status::Closed && o.outcome.as_deref() == Some("unresolved")
        })
        .map(|o| Mark {
            statement: (!o.status.is_open()).then(|| o.reason.clone()),
            finding: (!o.status.is_open())
                .then(|| o.store_finding.clone())
                .flatten(),
            id: o.id,
            status: if o.status.is_open() {
                o.status.as_str()
            } else {
                Status::Unresolved.as_str()
            },
            open: o.status.is_open(),
            request: None,
            dataset: o.dataset,
            field: o.field,
        })
        .collect()
}

/// An open repair or correction request marks its record while it is open (the whole record:
/// a request names no field).
fn request_marks(list: Vec<requests::Request>) -> Vec<Mark> {
    list.into_iter()
        .filter(|r| r.marks_record())
        .map(|r| Mark {
            id: r.id,
            status: r.status.as_str(),
            open: true,
            request: Some(r.kind.as_str()),
            dataset: r.dataset,
            field: None,
            statement: None,
            finding: None,
        })
        .collect()
}

impl Marks {
    pub async fn load(db: &Db) -> Result<Self, StorageError> {
        let marks = Self::default();
        marks.reload_all(db).await?;
        Ok(marks)
    }

    /// Rebuilds the whole index from storage: at start, and when another replica has filed or
    /// moved an objection (see `crate::replicas`). Open objections are few, so this is cheap.
    pub async fn reload_all(&self, db: &Db) -> Result<(), StorageError> {
        let _update = self.update.lock().await;
        let mut by: HashMap<(String, SubjectType, String), Vec<Mark>> = HashMap::new();
        for o in objections::all_marked(db).await? {
            let Ok(kind) = o.subject_type.parse::<SubjectType>() else {
                continue;
            };
            by.entry((o.store.clone(), kind, o.record_ref.clone()))
                .or_default()
                .extend(marks_of(vec![o]));
        }
        for r in crate::storage::requests::all_open(db).await? {
            let Ok(kind) = r.subject_type.parse::<SubjectType>() else {
                continue;
            };
            by.entry((r.store.clone(), kind, r.record_ref.clone()))
                .or_default()
                .extend(request_marks(vec![r]));
        }
        let mut fresh: HashMap<String, ByRecord> = HashMap::new();
        for ((store, kind, record), m) in by {
            if !m.is_empty() {
                fresh
                    .entry(store)
                    .or_default()
                    .entry(kind)
                    .or_default()
                    .insert(record, entry_of(&m));
            }
        }
        *self.records.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        self.restrictions.reload_all(db).await
    }

    /// Rebuilds the marks of one record (store, subject type, id) after a change to its
    /// objections.
    pub async fn refresh(
        &self,
        db: &Db,
        store: &str,
        kind: SubjectType,
        record_ref: &str,
    ) -> Result<(), StorageError> {
        let _update = self.update.lock().await;
        let list = objections::for_record(db, store, record_ref).await?;
        let mut m = marks_of(
            list.into_iter()
                .filter(|o| o.subject_type == kind.as_str())
                .collect(),
        );
        let asked = crate::storage::requests::open_for_record(db, store, record_ref).await?;
        m.extend(request_marks(
            asked
                .into_iter()
                .filter(|r| r.subject_type == kind.as_str())
                .collect(),
        ));
        self.restrictions
            .refresh(db, store, kind, record_ref)
            .await?;
        let mut map = self.records.write().unwrap_or_else(|p| p.into_inner());
        if m.is_empty() {
            if let Some(by_type) = map.get_mut(store) {
                if let Some(records) = by_type.get_mut(&kind) {
                    records.remove(record_ref);
                    if records.is_empty() {
                        by_type.remove(&kind);
                    }
                }
                if by_type.is_empty() {
                    map.remove(store);
                }
            }
        } else {
            map.entry(store.to_string())
                .or_default()
                .entry(kind)
                .or_default()
                .insert(record_ref.to_string(), entry_of(&m));
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.records
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Whether any record of this store is marked: when none is, an answer from it needs no
    /// lookup per record.
    pub fn has_store(&self, store: &str) -> bool {
        self.records
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(store)
    }

    /// The `_objections` annotation for one record of a subject of this type, and whether
    /// any is still open.
    pub fn annotation(
        &self,
        store: &str,
        kind: SubjectType,
        record_ref: &str,
    ) -> Option<(Value, bool)> {
        let map = self.records.read().unwrap_or_else(|p| p.into_inner());
        let e = map.get(store)?.get(&kind)?.get(record_ref)?;
        Some((e.annotation.clone(), e.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(i: usize, statement: Option<String>) -> Mark {
        Mark {
            id: format!("ob_{i}"),
            status: if statement.is_some() {
                "unresolved"
            } else {
                "submitted"
            },
            open: statement.is_none(),
            request: None,
            dataset: "entity".into(),
            field: Some("name".into()),
            finding: statement.clone(),
            statement,
        }
    }

    #[test]
    fn the_annotation_is_capped_in_count_and_bytes_with_a_marker() {
        let many: Vec<Mark> = (0..300).map(|i| mark(i, None)).collect();
        let e = entry_of(&many);
        let list = e.annotation.as_array().unwrap();
        assert_eq!(list.len(), MAX_ANNOTATED + 1);
        assert_eq!(
            list[MAX_ANNOTATED],
            json!({"truncated": 300 - MAX_ANNOTATED})
        );
        assert!(e.pending);
        let long: Vec<Mark> = (0..6).map(|i| mark(i, Some("长".repeat(5000)))).collect();
        let e = entry_of(&long);
        assert!(e.annotation.to_string().len() <= MAX_ANNOTATION_BYTES + 64);
        assert!(e.annotation.as_array().unwrap().last().unwrap()["truncated"].as_u64() > Some(0));
        assert!(!e.pending, "unresolved statements are kept, not pending");
        let few = entry_of(&[mark(1, None)]);
        assert_eq!(few.annotation.as_array().unwrap().len(), 1);
    }
}
