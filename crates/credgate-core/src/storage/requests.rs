//! The `requests` table: data subjects' requests about their records (credit repair,
//! correction, restriction, deletion) and their deadlines.

use sqlx::{AnyConnection, Row};

use super::{Db, StorageError};
use crate::{
    domain::SubjectId,
    workflows::requests::{Kind, Request, Status},
};

const COLUMNS: &str = "id, subject_id, subject_type, kind, store, dataset, record_ref, reason, \
     status, created_at, updated_at, accept_due_at, finish_due_at, outcome, answer";

fn from_row(r: &sqlx::any::AnyRow) -> Result<Request, sqlx::Error> {
    let status: String = r.try_get("status")?;
    let kind: String = r.try_get("kind")?;
    let bad = |what: &str, v: &str| sqlx::Error::Decode(format!("unknown {what} {v:?}").into());
    Ok(Request {
        id: r.try_get("id")?,
        subject_id: r.try_get("subject_id")?,
        subject_type: r.try_get("subject_type")?,
        kind: Kind::parse(&kind).ok_or_else(|| bad("kind", &kind))?,
        store: r.try_get("store")?,
        dataset: r.try_get("dataset")?,
        record_ref: r.try_get("record_ref")?,
        reason: r.try_get("reason")?,
        status: Status::parse(&status).ok_or_else(|| bad("status", &status))?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        accept_due_at: r.try_get("accept_due_at")?,
        finish_due_at: r.try_get("finish_due_at")?,
        outcome: r.try_get("outcome")?,
        answer: r.try_get("answer")?,
    })
}

async fn select(db: &Db, filter: &str, binds: &[&str]) -> Result<Vec<Request>, StorageError> {
    let sql = format!("SELECT {COLUMNS} FROM requests {filter}");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in binds {
        q = q.bind(*b);
    }
    let rows = q.fetch_all(db.pool()).await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

pub async fn get(db: &Db, id: &str) -> Result<Option<Request>, StorageError> {
    Ok(select(db, "WHERE id = $1", &[id]).await?.pop())
}

/// A subject's requests, newest first. Own means the same id and the same type.
pub async fn list_for_subject(db: &Db, subject: &SubjectId) -> Result<Vec<Request>, StorageError> {
    let filter = "WHERE subject_id = $1 AND subject_type = $2 ORDER BY created_at DESC";
    let kind = subject.subject_type().as_str();
    select(db, filter, &[subject.as_str(), kind]).await
}

/// Every request, oldest first (the handlers' queue).
pub async fn list_all(db: &Db) -> Result<Vec<Request>, StorageError> {
    select(db, "ORDER BY created_at", &[]).await
}

/// Where a request is open: submitted, accepted or extended.
const OPEN: &str = "status IN ('submitted', 'accepted', 'extended')";

/// Every open request (the marks index is built from the repair and correction ones).
pub async fn all_open(db: &Db) -> Result<Vec<Request>, StorageError> {
    select(db, &format!("WHERE {OPEN}"), &[]).await
}

/// Where a request restricts its record: a completed restriction (a lifted one is `lifted`).
const RESTRICTING: &str = "kind = 'restriction' AND status = 'completed'";

/// Every restriction in force (the restrictions index), oldest first: a subject with several
/// in one store shows the same (first) mark on every replica.
pub async fn all_restricting(db: &Db) -> Result<Vec<Request>, StorageError> {
    let filter = format!("WHERE {RESTRICTING} ORDER BY updated_at, id");
    select(db, &filter, &[]).await
}

/// The restrictions in force on one subject's records in one store.
pub async fn restricting_for_record(
    db: &Db,
    store: &str,
    record_ref: &str,
) -> Result<Vec<Request>, StorageError> {
    let filter =
        format!("WHERE store = $1 AND record_ref = $2 AND {RESTRICTING} ORDER BY updated_at, id");
    select(db, &filter, &[store, record_ref]).await
}

/// The open requests about one record.
pub async fn open_for_record(
    db: &Db,
    store: &str,
    record_ref: &str,
) -> Result<Vec<Request>, StorageError> {
    let filter = format!("WHERE store = $1 AND record_ref = $2 AND {OPEN} ORDER BY created_at");
    select(db, &filter, &[store, record_ref]).await
}

/// The subject's open requests, counted inside the filing's transaction: `max` or more refuse
/// the new one. On PostgreSQL the count takes the same per-subject advisory lock as the
/// objection caps (under its own key), so two concurrent filings cannot both pass.
pub async fn check_cap_in(
    conn: &mut AnyConnection,
    backend: super::Backend,
    r: &Request,
    max: u32,
) -> Result<(), crate::audit::ChangeError> {
    let key = ["requests", r.subject_type.as_str(), r.subject_id.as_str()];
    super::objections::lock_in(conn, backend, &key).await?;
    let open: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM requests WHERE subject_id = $1 AND subject_type = $2 AND {OPEN}"
    )))
    .bind(&r.subject_id)
    .bind(&r.subject_type)
    .fetch_one(&mut *conn)
    .await?;
    if open >= i64::from(max) {
        return Err(crate::audit::ChangeError::Refused(
            crate::audit::Refused::Conflict(format!(
                "this subject already has {open} open requests, the most one subject may hold; \
                 wait for a decision"
            )),
        ));
    }
    Ok(())
}

/// Stores a new request inside the caller's transaction (its history row is the caller's).
pub async fn insert_in(conn: &mut AnyConnection, r: &Request) -> Result<(), StorageError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO requests ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, NULL, NULL, NULL)"
    )))
    .bind(&r.id)
    .bind(&r.subject_id)
    .bind(&r.subject_type)
    .bind(r.kind.as_str())
    .bind(&r.store)
    .bind(&r.dataset)
    .bind(&r.record_ref)
    .bind(&r.reason)
    .bind(r.status.as_str())
    .bind(r.created_at)
    .bind(r.accept_due_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// What a move writes besides the status (set by the guarded move before this, in the same
/// transaction): a new finishing deadline, the outcome and the answer the subject reads.
pub async fn set_details_in(
    conn: &mut AnyConnection,
    id: &str,
    finish_due_at: Option<i64>,
    outcome: Option<&str>,
    answer: Option<&str>,
) -> Result<(), StorageError> {
    sqlx::query(
        "UPDATE requests SET finish_due_at = COALESCE($1, finish_due_at), \
         outcome = COALESCE($2, outcome), answer = COALESCE($3, answer) WHERE id = $4",
    )
    .bind(finish_due_at)
    .bind(outcome)
    .bind(answer)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Open requests past their current deadline whose deadline is not yet alerted:
/// (id, due, acceptance or completion).
pub async fn overdue_unalerted(
    db: &Db,
    now: i64,
) -> Result<Vec<(String, i64, &'static str)>, StorageError> {
    let rows = sqlx::query(
        "SELECT id, status, accept_due_at, finish_due_at, alerted_due_at FROM requests \
         WHERE status IN ('submitted', 'accepted', 'extended')",
    )
    .fetch_all(db.pool())
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let submitted = r.try_get::<String, _>("status")? == "submitted";
        let (due, what): (Option<i64>, _) = if submitted {
            (Some(r.try_get("accept_due_at")?), "acceptance")
        } else {
            (r.try_get("finish_due_at")?, "completion")
        };
        let alerted: i64 = r.try_get("alerted_due_at")?;
        if let Some(due) = due
            && now > due
            && alerted != due
        {
            out.push((r.try_get("id")?, due, what));
        }
    }
    Ok(out)
}
