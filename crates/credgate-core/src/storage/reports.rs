//! The `reports` table: whistleblower reports, their sealed contact and their receipt's hash.

use sqlx::{AnyConnection, Row};

use super::{Db, StorageError};
use crate::workflows::reports::{Status, WhistleblowerReport};

const COLUMNS: &str =
    "id, about, category, description, contact_sealed, status, created_at, updated_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<WhistleblowerReport, sqlx::Error> {
    let status: String = r.try_get("status")?;
    Ok(WhistleblowerReport {
        id: r.try_get("id")?,
        about: r.try_get("about")?,
        category: r.try_get("category")?,
        description: r.try_get("description")?,
        contact_sealed: r.try_get("contact_sealed")?,
        status: Status::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown status {status:?}").into()))?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

async fn select(
    db: &Db,
    filter: &str,
    bind: Option<&str>,
) -> Result<Vec<WhistleblowerReport>, StorageError> {
    let sql = format!("SELECT {COLUMNS} FROM reports {filter}");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    if let Some(b) = bind {
        q = q.bind(b);
    }
    let rows = q.fetch_all(db.pool()).await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

pub async fn get(db: &Db, id: &str) -> Result<Option<WhistleblowerReport>, StorageError> {
    Ok(select(db, "WHERE id = $1", Some(id)).await?.pop())
}

/// The report whose receipt hashes to `receipt_hash`.
pub async fn by_receipt(
    db: &Db,
    receipt_hash: &str,
) -> Result<Option<WhistleblowerReport>, StorageError> {
    Ok(select(db, "WHERE receipt_hash = $1", Some(receipt_hash))
        .await?
        .pop())
}

/// Every report, oldest first (the handlers' queue).
pub async fn list_all(db: &Db) -> Result<Vec<WhistleblowerReport>, StorageError> {
    select(db, "ORDER BY created_at", None).await
}

/// Stores a new report inside the caller's transaction (its history row is the caller's).
pub async fn insert_in(
    conn: &mut AnyConnection,
    r: &WhistleblowerReport,
    receipt_hash: &str,
) -> Result<(), StorageError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO reports ({COLUMNS}, receipt_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)"
    )))
    .bind(&r.id)
    .bind(&r.about)
    .bind(&r.category)
    .bind(&r.description)
    .bind(&r.contact_sealed)
    .bind(r.status.as_str())
    .bind(r.created_at)
    .bind(receipt_hash)
    .execute(conn)
    .await?;
    Ok(())
}
