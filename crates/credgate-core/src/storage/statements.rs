//! The `statements` and `self_queries` tables: a data subject's own statements (本人声明) on
//! their records, and how many times a year they have read their own record.

use serde::Serialize;
use sqlx::Row;

use super::{Db, StorageError, micros_to_rfc3339};
use crate::domain::SubjectId;

#[derive(Debug, Clone)]
pub struct Statement {
    pub id: String,
    pub subject_id: String,
    pub subject_type: String,
    pub store: String,
    pub dataset: String,
    pub record_ref: String,
    pub text: String,
    pub created_at: i64,
    pub withdrawn_at: Option<i64>,
}

/// What the subject sees of their statement.
#[derive(Debug, Serialize)]
pub struct StatementView {
    pub id: String,
    pub store: String,
    pub dataset: String,
    pub record_ref: String,
    pub text: String,
    pub created_at: String,
    pub withdrawn_at: Option<String>,
    pub status: &'static str,
}

impl Statement {
    pub fn view(&self) -> StatementView {
        StatementView {
            id: self.id.clone(),
            store: self.store.clone(),
            dataset: self.dataset.clone(),
            record_ref: self.record_ref.clone(),
            text: self.text.clone(),
            created_at: micros_to_rfc3339(self.created_at),
            withdrawn_at: self.withdrawn_at.map(micros_to_rfc3339),
            status: if self.withdrawn_at.is_some() {
                "withdrawn"
            } else {
                "active"
            },
        }
    }
}

const COLUMNS: &str =
    "id, subject_id, subject_type, store, dataset, record_ref, text, created_at, withdrawn_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<Statement, sqlx::Error> {
    Ok(Statement {
        id: r.try_get("id")?,
        subject_id: r.try_get("subject_id")?,
        subject_type: r.try_get("subject_type")?,
        store: r.try_get("store")?,
        dataset: r.try_get("dataset")?,
        record_ref: r.try_get("record_ref")?,
        text: r.try_get("text")?,
        created_at: r.try_get("created_at")?,
        withdrawn_at: r.try_get("withdrawn_at")?,
    })
}

/// Inserts inside the caller's transaction (the filing's audit record's).
pub async fn insert_in(conn: &mut sqlx::AnyConnection, s: &Statement) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO statements ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)"
    )))
    .bind(&s.id)
    .bind(&s.subject_id)
    .bind(&s.subject_type)
    .bind(&s.store)
    .bind(&s.dataset)
    .bind(&s.record_ref)
    .bind(&s.text)
    .bind(s.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// On PostgreSQL, serialises one subject's filings so the caps count each other (READ
/// COMMITTED would let two concurrent filings both pass): the transaction's advisory lock on a
/// key derived from the subject. SQLite's writer holds the database.
pub async fn lock_subject_in(
    conn: &mut sqlx::AnyConnection,
    backend: super::Backend,
    s: &Statement,
) -> Result<(), sqlx::Error> {
    if backend != super::Backend::Postgres {
        return Ok(());
    }
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        "credgate:statement-cap",
        s.subject_type.as_str(),
        &s.subject_id,
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let d = ctx.finish();
    let key = i64::from_be_bytes(d.as_ref()[..8].try_into().expect("8 bytes"));
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Active statements of this subject (type and id) on one record of one store, counted inside
/// the filing's transaction so that a burst cannot pass the cap together (on SQLite the
/// writer holds the database; on PostgreSQL the caller locks first).
pub async fn count_active_in(
    conn: &mut sqlx::AnyConnection,
    s: &Statement,
) -> Result<(i64, i64), sqlx::Error> {
    let per_record: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM statements WHERE subject_id = $1 AND subject_type = $2 \
         AND store = $3 AND record_ref = $4 AND withdrawn_at IS NULL",
    )
    .bind(&s.subject_id)
    .bind(&s.subject_type)
    .bind(&s.store)
    .bind(&s.record_ref)
    .fetch_one(&mut *conn)
    .await?;
    let per_subject: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM statements WHERE subject_id = $1 AND subject_type = $2 \
         AND withdrawn_at IS NULL",
    )
    .bind(&s.subject_id)
    .bind(&s.subject_type)
    .fetch_one(&mut *conn)
    .await?;
    Ok((per_record, per_subject))
}

pub async fn get(db: &Db, id: &str) -> Result<Option<Statement>, StorageError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM statements WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

/// The subject's statements, newest first, withdrawn ones included (their history).
pub async fn list_for_subject(
    db: &Db,
    subject: &SubjectId,
) -> Result<Vec<Statement>, StorageError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM statements WHERE subject_id = $1 AND subject_type = $2 \
         ORDER BY created_at DESC, id"
    )))
    .bind(subject.as_str())
    .bind(subject.subject_type().as_str())
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// Every active statement: what the in-memory index is built from.
pub async fn all_active(db: &Db) -> Result<Vec<Statement>, StorageError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM statements WHERE withdrawn_at IS NULL ORDER BY created_at, id"
    )))
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// Active statements on one record of one store, oldest first.
pub async fn active_for_record(
    db: &Db,
    store: &str,
    record_ref: &str,
) -> Result<Vec<Statement>, StorageError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM statements WHERE store = $1 AND record_ref = $2 \
         AND withdrawn_at IS NULL ORDER BY created_at, id"
    )))
    .bind(store)
    .bind(record_ref)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// Withdraws the subject's own active statement inside the caller's transaction; `false` if
/// there is none with that id for that subject (type and id) still active.
pub async fn withdraw_in(
    conn: &mut sqlx::AnyConnection,
    subject: &SubjectId,
    id: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE statements SET withdrawn_at = $1 WHERE id = $2 AND subject_id = $3 \
         AND subject_type = $4 AND withdrawn_at IS NULL",
    )
    .bind(now)
    .bind(id)
    .bind(subject.as_str())
    .bind(subject.subject_type().as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// This subject's self-queries in `year` so far.
pub async fn self_queries(db: &Db, subject: &SubjectId, year: i64) -> Result<i64, StorageError> {
    let n: Option<i64> = sqlx::query_scalar(
        "SELECT queries FROM self_queries WHERE subject_id = $1 AND subject_type = $2 AND year = $3",
    )
    .bind(subject.as_str())
    .bind(subject.subject_type().as_str())
    .bind(year)
    .fetch_optional(db.pool())
    .await?;
    Ok(n.unwrap_or(0))
}

/// Counts one self-query inside the caller's transaction (the query's audit record's), only
/// while the year's count is below `limit`: `false` when the limit was reached meanwhile.
/// The row is created first (a no-op if it exists), then raised under the guard in one
/// statement, so two concurrent queries cannot both pass the last free one.
pub async fn count_self_query_in(
    conn: &mut sqlx::AnyConnection,
    subject_id: &str,
    subject_type: &str,
    year: i64,
    limit: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "INSERT INTO self_queries (subject_id, subject_type, year, queries) VALUES ($1, $2, $3, 0) \
         ON CONFLICT (subject_id, subject_type, year) DO NOTHING",
    )
    .bind(subject_id)
    .bind(subject_type)
    .bind(year)
    .execute(&mut *conn)
    .await?;
    let done = sqlx::query(
        "UPDATE self_queries SET queries = queries + 1 \
         WHERE subject_id = $1 AND subject_type = $2 AND year = $3 AND queries < $4",
    )
    .bind(subject_id)
    .bind(subject_type)
    .bind(year)
    .bind(limit)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}
