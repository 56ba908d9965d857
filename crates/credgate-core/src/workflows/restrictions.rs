//! Which records are restricted: a subject's completed restriction request (PIPL art. 44, the
//! right to restrict processing) withholds the subject's records in every dataset of the store
//! it names (single records and list rows alike: restricting processing is about the subject,
//! not one route, so the `entity_list` row goes with the `entity` record) from every reader
//! but those of a full-history purpose (supervision, enforcement, the subject's own record),
//! who see them marked. The dataset the request names is kept in the mark only. A handler's
//! `lift` move ends it.
//!
//! Kept in memory beside the marks (`marks::Marks::restrictions`), loaded at start, refreshed
//! by every change this process makes and rebuilt on another replica's signal, so that an
//! answer from a store with no restriction costs one lookup.

use std::{collections::HashMap, sync::RwLock};

use serde_json::{Value, json};

use super::requests::Request;
use crate::{
    domain::SubjectType,
    storage::{self, Db, StorageError, micros_to_rfc3339},
};

/// (subject type, subject id) -> the mark a full-history reader sees.
type ByRecord = HashMap<(SubjectType, String), Value>;

/// store -> its restricted subjects (whatever dataset each request names): an answer from a
/// store with none costs one lookup.
#[derive(Debug, Default)]
pub struct Restrictions(RwLock<HashMap<String, ByRecord>>);

/// What a full-history reader is told about a restricted record.
fn mark_of(r: &Request) -> Value {
    json!({"id": r.id, "status": "restricted", "request": "restriction", "dataset": r.dataset,
           "since": micros_to_rfc3339(r.updated_at)})
}

fn key_of(r: &Request) -> Option<(SubjectType, String)> {
    let kind = r.subject_type.parse::<SubjectType>().ok()?;
    Some((kind, r.record_ref.clone()))
}

impl Restrictions {
    /// Rebuilds the whole index (at start, and on another replica's signal).
    pub async fn reload_all(&self, db: &Db) -> Result<(), StorageError> {
        let mut fresh: HashMap<String, ByRecord> = HashMap::new();
        for r in storage::requests::all_restricting(db).await? {
            if let Some(key) = key_of(&r) {
                // A subject with several restrictions in one store shows the first one read.
                fresh
                    .entry(r.store.clone())
                    .or_default()
                    .entry(key)
                    .or_insert_with(|| mark_of(&r));
            }
        }
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Rebuilds one subject's restrictions in one store, after a change to their requests.
    pub async fn refresh(
        &self,
        db: &Db,
        store: &str,
        kind: SubjectType,
        record_ref: &str,
    ) -> Result<(), StorageError> {
        let now = storage::requests::restricting_for_record(db, store, record_ref).await?;
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        let by = map.entry(store.to_string()).or_default();
        by.remove(&(kind, record_ref.to_string()));
        for r in now.iter().filter(|r| r.subject_type == kind.as_str()) {
            if let Some(key) = key_of(r) {
                by.entry(key).or_insert_with(|| mark_of(r));
            }
        }
        if by.is_empty() {
            map.remove(store);
        }
        Ok(())
    }

    /// Whether any subject of this store is restricted: when none is, an answer needs no
    /// lookup per record.
    pub fn has(&self, store: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(store)
    }

    /// The mark of a restricted subject's records in this store (any dataset), or none when
    /// the subject is not restricted there.
    pub fn mark(&self, store: &str, kind: SubjectType, subject: &str) -> Option<Value> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(store)?.get(&(kind, subject.to_string())).cloned()
    }
}
