//! The `lockdowns` table: a security officer stops a client or a whole org at once.

use serde::Serialize;

use super::{Db, StorageError, micros_to_rfc3339, now_micros};

#[derive(Debug, Clone, Serialize)]
pub struct Lockdown {
    pub id: String,
    pub client_id: Option<String>,
    pub org: Option<String>,
    pub reason: String,
    pub created_by: String,
    pub created_at: String,
    pub lifted_at: Option<String>,
}

pub async fn create(
    db: &Db,
    client_id: Option<&str>,
    org: Option<&str>,
    reason: &str,
    by: &str,
) -> Result<Lockdown, StorageError> {
    let id = format!("ld_{}", uuid::Uuid::new_v4().simple());
    let now = now_micros();
    sqlx::query(
        "INSERT INTO lockdowns (id, client_id, org, reason, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(client_id)
    .bind(org)
    .bind(reason)
    .bind(by)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(Lockdown {
        id,
        client_id: client_id.map(Into::into),
        org: org.map(Into::into),
        reason: reason.into(),
        created_by: by.into(),
        created_at: micros_to_rfc3339(now),
        lifted_at: None,
    })
}

/// Lifts an active lockdown; `false` if there is no active one with that id.
pub async fn lift(db: &Db, id: &str, by: &str) -> Result<bool, StorageError> {
    let done = sqlx::query(
        "UPDATE lockdowns SET lifted_at = $1, lifted_by = $2 WHERE id = $3 AND lifted_at IS NULL",
    )
    .bind(now_micros())
    .bind(by)
    .bind(id)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() > 0)
}
