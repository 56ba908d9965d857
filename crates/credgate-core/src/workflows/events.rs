//! The history every workflow item keeps: who moved it, when, from what to what, and why.

use serde_json::{Value, json};
use sqlx::AnyConnection;

use crate::storage::{Db, StorageError};

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

/// Writes one history row in the caller's transaction (`storage::events`).
pub async fn record(conn: &mut AnyConnection, s: &Step<'_>) -> Result<(), StorageError> {
    crate::storage::events::insert_in(conn, s).await
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
    if !crate::storage::events::move_in(conn, name, s).await? {
        return Ok(false);
    }
    record(conn, s).await?;
    Ok(true)
}

pub async fn history(db: &Db, kind: &str, id: &str) -> Result<Vec<Value>, StorageError> {
    crate::storage::events::history(db, kind, id).await
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
