//! The history every workflow item keeps: who moved it, when, from what to what, and why.

use serde_json::{Value, json};
use sqlx::{Any, Row, Transaction};

use crate::storage::{Db, StorageError, micros_to_rfc3339};

/// One step of an item's history.
pub struct Step<'a> {
    pub kind: &'a str,
    pub id: &'a str,
    pub at: i64,
    pub actor: &'a str,
    pub from: Option<&'a str>,
    pub to: &'a str,
    pub note: Option<&'a str>,
}

pub async fn record(tx: &mut Transaction<'_, Any>, s: &Step<'_>) -> Result<(), StorageError> {
    let Step {
        kind,
        id,
        at,
        actor,
        from,
        to,
        note,
    } = *s;
    sqlx::query(
        "INSERT INTO workflow_events (kind, item_id, at, actor, from_status, to_status, note) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(kind)
    .bind(id)
    .bind(at)
    .bind(actor)
    .bind(from)
    .bind(to)
    .bind(note)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn history(db: &Db, kind: &str, id: &str) -> Result<Vec<Value>, StorageError> {
    let rows = sqlx::query(
        "SELECT at, actor, from_status, to_status, note FROM workflow_events \
         WHERE kind = $1 AND item_id = $2 ORDER BY at",
    )
    .bind(kind)
    .bind(id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(json!({
                "at": micros_to_rfc3339(r.try_get("at")?),
                "by": r.try_get::<String, _>("actor")?,
                "from": r.try_get::<Option<String>, _>("from_status")?,
                "to": r.try_get::<String, _>("to_status")?,
                "note": r.try_get::<Option<String>, _>("note")?,
            }))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}
