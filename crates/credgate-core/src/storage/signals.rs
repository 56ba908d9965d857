//! Change signals between replicas. Some state is held in memory for speed (the policy set, the
//! signing keys, the index of contested records); a change to it bumps its topic's counter in
//! `replica_signals`, in the same transaction as the change where there is one. Every replica
//! polls the few rows of that table and refreshes what moved (see `crate::replicas`).

use std::collections::HashMap;

use sqlx::{Any, Executor, Row};

use super::{Db, StorageError};

/// The signing keys changed (a rotation).
pub const KEYS: &str = "keys";
/// A policy reload happened; `detail` is the digest of the set that was loaded.
pub const POLICIES: &str = "policies";
/// An objection was filed or moved: the marks on answers may have changed.
pub const OBJECTIONS: &str = "objections";
/// A client or lockdown changed (bumped by triggers on those tables).
pub const CLIENTS: &str = "clients";

/// A topic's counter and the detail of its last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub version: i64,
    pub detail: Option<String>,
}

/// Bumps `topic` and returns its new version.
pub async fn bump<'c, E>(exec: E, topic: &str, detail: Option<&str>) -> Result<i64, StorageError>
where
    E: Executor<'c, Database = Any>,
{
    let row = sqlx::query(
        "UPDATE replica_signals SET version = version + 1, detail = $1 WHERE topic = $2 \
         RETURNING version",
    )
    .bind(detail)
    .bind(topic)
    .fetch_one(exec)
    .await?;
    Ok(row.try_get("version")?)
}

/// Every topic's current signal: one small query, polled by each replica.
pub async fn read(db: &Db) -> Result<HashMap<String, Signal>, StorageError> {
    let rows = sqlx::query("SELECT topic, version, detail FROM replica_signals")
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("topic")?,
                Signal {
                    version: r.try_get("version")?,
                    detail: r.try_get("detail")?,
                },
            ))
        })
        .collect()
}
