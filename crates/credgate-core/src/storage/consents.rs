//! The `consents` table.

use serde::Serialize;
use sqlx::Row;

use super::{Db, StorageError, micros_to_rfc3339, now_micros};
use crate::domain::SubjectId;

#[derive(Debug, Clone)]
pub struct ConsentRecord {
    pub id: String,
    pub subject_id: String,
    pub subject_type: String,
    pub grantee_org: String,
    pub purpose: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

impl ConsentRecord {
    /// Live at `now`: neither revoked nor expired.
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }

    /// Given by this subject: the same type and the same id.
    pub fn is_for(&self, subject: &SubjectId) -> bool {
        subject.is_named(&self.subject_id, &self.subject_type)
    }

    pub fn view(&self, now: i64) -> ConsentView {
        ConsentView {
            id: self.id.clone(),
            subject: self.subject_id.clone(),
            grantee_org: self.grantee_org.clone(),
            purpose: self.purpose.clone(),
            created_at: micros_to_rfc3339(self.created_at),
            expires_at: micros_to_rfc3339(self.expires_at),
            revoked_at: self.revoked_at.map(micros_to_rfc3339),
            status: if self.revoked_at.is_some() {
                "revoked"
            } else if self.expires_at <= now {
                "expired"
            } else {
                "active"
            },
        }
    }
}

/// What a data subject sees of their consent.
#[derive(Debug, Serialize)]
pub struct ConsentView {
    pub id: String,
    pub subject: String,
    pub grantee_org: String,
    pub purpose: String,
    pub created_at: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
    pub status: &'static str,
}

const COLUMNS: &str =
    "id, subject_id, subject_type, grantee_org, purpose, created_at, expires_at, revoked_at";

fn from_row(row: &sqlx::any::AnyRow) -> Result<ConsentRecord, sqlx::Error> {
    Ok(ConsentRecord {
        id: row.try_get("id")?,
        subject_id: row.try_get("subject_id")?,
        subject_type: row.try_get("subject_type")?,
        grantee_org: row.try_get("grantee_org")?,
        purpose: row.try_get("purpose")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// Inserts inside the caller's transaction (a deferred change, see `crate::audit::Change`):
/// the one way a consent is written, so that it commits with its audit record or not at all.
pub async fn insert_in(
    conn: &mut sqlx::AnyConnection,
    c: &ConsentRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO consents ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)"
    )))
    .bind(&c.id)
    .bind(&c.subject_id)
    .bind(&c.subject_type)
    .bind(&c.grantee_org)
    .bind(&c.purpose)
    .bind(c.created_at)
    .bind(c.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(db: &Db, id: &str) -> Result<Option<ConsentRecord>, StorageError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM consents WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

/// The subject's consents. A subject is its type and its id: a company and a person whose ids
/// are the same string are different subjects.
pub async fn list_for_subject(
    db: &Db,
    subject: &SubjectId,
) -> Result<Vec<ConsentRecord>, StorageError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM consents WHERE subject_id = $1 AND subject_type = $2 \
         ORDER BY created_at DESC, id"
    )))
    .bind(subject.as_str())
    .bind(subject.subject_type().as_str())
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// Revokes the subject's own consent, inside the caller's transaction; `false` if there is none
/// with that id for that subject (type and id). Revoking twice keeps the first time.
pub async fn revoke_in(
    conn: &mut sqlx::AnyConnection,
    subject: &SubjectId,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE consents SET revoked_at = COALESCE(revoked_at, $1) \
         WHERE id = $2 AND subject_id = $3 AND subject_type = $4",
    )
    .bind(now_micros())
    .bind(id)
    .bind(subject.as_str())
    .bind(subject.subject_type().as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}
