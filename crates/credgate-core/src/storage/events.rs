//! The `workflow_events` table, and the guarded status update of a workflow's own table: the
//! SQL behind `workflows::events`.

use serde_json::{Value, json};
use sqlx::{AnyConnection, Row};

use super::{Db, StorageError, micros_to_rfc3339};
use crate::workflows::events::Step;

pub async fn insert_in(conn: &mut AnyConnection, s: &Step<'_>) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO workflow_events (kind, item_id, at, actor, from_status, to_status, note) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(s.kind)
    .bind(s.id)
    .bind(s.at)
    .bind(s.actor)
    .bind(s.from)
    .bind(s.to)
    .bind(s.note)
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets the item's status to `s.to` only if it is still `s.from`; false when it was not (a
/// concurrent move won). `table` is one of a closed set of names (`workflows::events::Table`).
pub async fn move_in(
    conn: &mut AnyConnection,
    table: &'static str,
    s: &Step<'_>,
) -> Result<bool, StorageError> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4"
    )))
    .bind(s.to)
    .bind(s.at)
    .bind(s.id)
    .bind(s.from)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// An item's history, oldest first, as the handlers' view shows it.
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
