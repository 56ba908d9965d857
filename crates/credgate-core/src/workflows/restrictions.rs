//! Which records are restricted: a subject's completed restriction request (PIPL art. 44, the
//! right to restrict processing) withholds the subject's records of the dataset it names from
//! every reader but those of a full-history purpose (supervision, enforcement, the subject's
//! own record), who see them marked. A handler's `lift` move ends it.
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

/// store -> dataset -> its restricted records: an answer from a dataset with none costs two
/// lookups.
#[derive(Debug, Default)]
pub struct Restrictions(RwLock<HashMap<String, HashMap<String, ByRecord>>>);

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
        let mut fresh: HashMap<String, HashMap<String, ByRecord>> = HashMap::new();
        for r in storage::requests::all_restricting(db).await? {
            if let Some(key) = key_of(&r) {
                fresh
                    .entry(r.store.clone())
                    .or_default()
                    .entry(r.dataset.clone())
                    .or_default()
                    .insert(key, mark_of(&r));
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
        let datasets = map.entry(store.to_string()).or_default();
        for by in datasets.values_mut() {
            by.remove(&(kind, record_ref.to_string()));
        }
        for r in now.iter().filter(|r| r.subject_type == kind.as_str()) {
            if let Some(key) = key_of(r) {
                datasets
                    .entry(r.dataset.clone())
                    .or_default()
                    .insert(key, mark_of(r));
            }
        }
        datasets.retain(|_, by| !by.is_empty());
        if datasets.is_empty() {
            map.remove(store);
        }
        Ok(())
    }

    /// Whether any record of this store's dataset is restricted: when none is, an answer needs
    /// no lookup per record.
    pub fn has(&self, store: &str, dataset: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(store)
            .is_some_and(|d| d.contains_key(dataset))
    }

    /// The mark of a restricted record, or none when it is not restricted.
    pub fn mark(
        &self,
        store: &str,
        dataset: &str,
        kind: SubjectType,
        subject: &str,
    ) -> Option<Value> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(store)?
            .get(dataset)?
            .get(&(kind, subject.to_string()))
            .cloned()
    }
}
