//! Which records are contested, kept in memory so that marking answers costs nothing when no
//! objection is open. Loaded at start, refreshed by every change this process makes, and rebuilt
//! when another replica signals a change.

use std::{collections::HashMap, sync::RwLock};

use serde_json::{Value, json};

use super::objections::{self, Status};
use crate::storage::{Db, StorageError};

#[derive(Debug, Clone)]
struct Mark {
    id: String,
    status: Status,
    dataset: String,
    field: Option<String>,
    /// For an unresolved outcome: the subject's statement, kept with the record for good.
    statement: Option<String>,
}

#[derive(Debug, Default)]
pub struct Marks(RwLock<HashMap<(String, String), Vec<Mark>>>);

fn marks_of(list: Vec<objections::Objection>) -> Vec<Mark> {
    list.into_iter()
        .filter(|o| {
            o.status.is_open()
                || o.status == Status::Closed && o.outcome.as_deref() == Some("unresolved")
        })
        .map(|o| Mark {
            statement: (!o.status.is_open()).then(|| o.reason.clone()),
            id: o.id,
            status: if o.status.is_open() {
                o.status
            } else {
                Status::Unresolved
            },
            dataset: o.dataset,
            field: o.field,
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
        let mut by: HashMap<(String, String), Vec<objections::Objection>> = HashMap::new();
        for o in objections::all_marked(db).await? {
            by.entry((o.store.clone(), o.record_ref.clone()))
                .or_default()
                .push(o);
        }
        let fresh: HashMap<_, _> = by
            .into_iter()
            .map(|(k, list)| (k, marks_of(list)))
            .filter(|(_, m)| !m.is_empty())
            .collect();
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    pub async fn refresh(
        &self,
        db: &Db,
        store: &str,
        record_ref: &str,
    ) -> Result<(), StorageError> {
        let m = marks_of(objections::for_record(db, store, record_ref).await?);
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        let key = (store.to_string(), record_ref.to_string());
        if m.is_empty() {
            map.remove(&key);
        } else {
            map.insert(key, m);
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.read().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    /// The `_objections` annotation for one record, and whether any is still open.
    pub fn annotation(&self, store: &str, record_ref: &str) -> Option<(Value, bool)> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        let marks = map.get(&(store.to_string(), record_ref.to_string()))?;
        let pending = marks
            .iter()
            .any(|m| m.status.is_open() && m.statement.is_none());
        let list: Vec<Value> = marks
            .iter()
            .map(|m| {
                let mut v =
                    json!({"id": m.id, "status": m.status, "dataset": m.dataset, "field": m.field});
                if let Some(s) = &m.statement {
                    v["statement"] = json!(s);
                }
                v
            })
            .collect();
        Some((Value::Array(list), pending))
    }
}
