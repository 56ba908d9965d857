//! The `lockdowns` table: a security officer stops a client or a whole org at once.

use serde::Serialize;

use sqlx::AnyConnection;

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

/// A new lockdown, not yet stored, and its creation time as stored.
pub fn prepare(
    client_id: Option<&str>,
    org: Option<&str>,
    reason: &str,
    by: &str,
) -> (Lockdown, i64) {
    let now = now_micros();
    let l = Lockdown {
        id: format!("ld_{}", uuid::Uuid::new_v4().simple()),
        client_id: client_id.map(Into::into),
        org: org.map(Into::into),
        reason: reason.into(),
        created_by: by.into(),
        created_at: micros_to_rfc3339(now),
        lifted_at: None,
    };
    (l, now)
}

/// Stores a prepared lockdown inside the caller's transaction.
pub async fn insert_in(conn: &mut AnyConnection, l: &Lockdown, at: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO lockdowns (id, client_id, org, reason, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&l.id)
    .bind(&l.client_id)
    .bind(&l.org)
    .bind(&l.reason)
    .bind(&l.created_by)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Lifts an active lockdown inside the caller's transaction; `false` if there is no active one
/// with that id.
pub async fn lift_in(conn: &mut AnyConnection, id: &str, by: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE lockdowns SET lifted_at = $1, lifted_by = $2 WHERE id = $3 AND lifted_at IS NULL",
    )
    .bind(now_micros())
    .bind(by)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Whether an active lockdown has this id (the check before a lift is deferred).
pub async fn is_active(db: &Db, id: &str) -> Result<bool, StorageError> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM lockdowns WHERE id = $1 AND lifted_at IS NULL")
            .bind(id)
            .fetch_one(db.pool())
            .await?;
    Ok(n > 0)
}

/// The lockdowns in force, newest first: what an officer must know before adding or lifting one.
pub async fn list_active(db: &Db) -> Result<Vec<Lockdown>, StorageError> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT id, client_id, org, reason, created_by, created_at FROM lockdowns \
         WHERE lifted_at IS NULL ORDER BY created_at DESC, id",
    )
    .fetch_all(db.pool())
    .await?;
    let lockdown = |r: &sqlx::any::AnyRow| -> Result<Lockdown, sqlx::Error> {
        Ok(Lockdown {
            id: r.try_get("id")?,
            client_id: r.try_get("client_id")?,
            org: r.try_get("org")?,
            reason: r.try_get("reason")?,
            created_by: r.try_get("created_by")?,
            created_at: micros_to_rfc3339(r.try_get("created_at")?),
            lifted_at: None,
        })
    };
    Ok(rows.iter().map(lockdown).collect::<Result<_, _>>()?)
}
