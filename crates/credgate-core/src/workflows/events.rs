//! The history every workflow item keeps: who moved it, when, from what to what, and why.

use serde_json::{Value, json};
use sqlx::{AnyConnection, Row};

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

pub async fn record(conn: &mut AnyConnection, s: &Step<'_>) -> Result<(), StorageError> {
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
    .execute(conn)
    .await?;
    Ok(())
}

/// Tables whose items move by status. A closed set: the name goes into SQL text.
#[derive(Clone, Copy)]
pub enum Table {
    Objections,
    Complaints,
    Reports,
    Requests,
}

/// Moves an item from `step.from` to `step.to` and records the step, in the caller's
/// transaction. The update is guarded by the current status, so of two concurrent moves only
/// one succeeds; `Ok(false)` means this one lost and nothing was written.
pub async fn advance(
    conn: &mut AnyConnection,
    table: Table,
    s: &Step<'_>,
) -> Result<bool, StorageError> {
    let name = match table {
        Table::Objections => "objections",
        Table::Complaints => "complaints",
        Table::Reports => "reports",
        Table::Requests => "requests",
    };
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {name} SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4"
    )))
    .bind(s.to)
    .bind(s.at)
    .bind(s.id)
    .bind(s.from)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    record(conn, s).await?;
    Ok(true)
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

/// The history as the data subject reads it: when the item moved and from what status to
/// what, nothing more. Who handled it (a client id or a staff person's id) and the handler's
/// notes are internal; the subject reads the item's `answer`, written for them.
pub fn for_subject(steps: Vec<Value>) -> Vec<Value> {
    steps
        .into_iter()
        .map(|s| json!({"at": s["at"], "from": s["from"], "to": s["to"]}))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subjects_history_names_no_handler_and_no_note() {
        let steps = vec![json!({"at": "2026-01-01T00:00:00Z", "by": "staff:alice",
            "from": "submitted", "to": "refused", "note": "internal: see ticket 7"})];
        let shown = for_subject(steps);
        assert_eq!(
            shown,
            vec![json!({"at": "2026-01-01T00:00:00Z", "from": "submitted", "to": "refused"})]
        );
    }
}
