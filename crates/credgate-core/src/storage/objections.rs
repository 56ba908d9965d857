//! The `objections` table: filing within the caps, reading, the columns a transition sets
//! besides the status, and the deadline watcher's once-only alert flag.

use sqlx::{AnyConnection, Row};

use super::{Backend, Db, StorageError};
use crate::{
    audit::{ChangeError, Refused},
    auth::subject::SubjectLimitConfig,
    domain::SubjectId,
    workflows::objections::{Objection, Status},
};

const COLUMNS: &str = "id, subject_id, subject_type, store, dataset, record_ref, field, reason, requested_correction, \
    status, created_at, accept_due_at, decide_due_at, store_ticket, store_finding, correction, outcome";

fn from_row(r: &sqlx::any::AnyRow) -> Result<Objection, sqlx::Error> {
    let status: String = r.try_get("status")?;
    Ok(Objection {
        id: r.try_get("id")?,
        subject_id: r.try_get("subject_id")?,
        subject_type: r.try_get("subject_type")?,
        store: r.try_get("store")?,
        dataset: r.try_get("dataset")?,
        record_ref: r.try_get("record_ref")?,
        field: r.try_get("field")?,
        reason: r.try_get("reason")?,
        requested_correction: r.try_get("requested_correction")?,
        status: Status::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown status {status:?}").into()))?,
        created_at: r.try_get("created_at")?,
        accept_due_at: r.try_get("accept_due_at")?,
        decide_due_at: r.try_get("decide_due_at")?,
        store_ticket: r.try_get("store_ticket")?,
        store_finding: r.try_get("store_finding")?,
        correction: r.try_get("correction")?,
        outcome: r.try_get("outcome")?,
    })
}

async fn select(db: &Db, filter: &str, binds: &[&str]) -> Result<Vec<Objection>, StorageError> {
    let sql = format!("SELECT {COLUMNS} FROM objections {filter}");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in binds {
        q = q.bind(*b);
    }
    let rows = q.fetch_all(db.pool()).await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

pub async fn get(db: &Db, id: &str) -> Result<Option<Objection>, StorageError> {
    Ok(select(db, "WHERE id = $1", &[id]).await?.pop())
}

pub async fn for_record(
    db: &Db,
    store: &str,
    record_ref: &str,
) -> Result<Vec<Objection>, StorageError> {
    let filter = "WHERE store = $1 AND record_ref = $2 ORDER BY created_at";
    select(db, filter, &[store, record_ref]).await
}

pub async fn all_marked(db: &Db) -> Result<Vec<Objection>, StorageError> {
    select(db, "WHERE status NOT IN ('rejected', 'withdrawn')", &[]).await
}

/// A subject's objections, newest first. Own means the same id and the same type.
pub async fn list_for_subject(
    db: &Db,
    subject: &SubjectId,
) -> Result<Vec<Objection>, StorageError> {
    let filter = "WHERE subject_id = $1 AND subject_type = $2 ORDER BY created_at DESC";
    let kind = subject.subject_type().as_str();
    select(db, filter, &[subject.as_str(), kind]).await
}

/// Every objection, oldest first (the handlers' list).
pub async fn list_all(db: &Db) -> Result<Vec<Objection>, StorageError> {
    select(db, "ORDER BY created_at", &[]).await
}

/// What a transition writes besides the status (set by the guarded move before this, in the
/// same transaction): a correction, the store's ticket, its finding (on `answered`), the outcome
/// (on a decision).
pub async fn set_details_in(
    conn: &mut AnyConnection,
    id: &str,
    to: Status,
    correction: Option<&str>,
    ticket: Option<&str>,
    note: Option<&str>,
) -> Result<(), StorageError> {
    let finding = (to == Status::Answered).then_some(note).flatten();
    let outcome =
        matches!(to, Status::Corrected | Status::Upheld | Status::Unresolved).then(|| to.as_str());
    sqlx::query(
        "UPDATE objections SET correction = COALESCE($1, correction), \
         store_ticket = COALESCE($2, store_ticket), store_finding = COALESCE($3, store_finding), \
         outcome = COALESCE($4, outcome) WHERE id = $5",
    )
    .bind(correction)
    .bind(ticket)
    .bind(finding)
    .bind(outcome)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Statuses in which an objection is open (see `Status::is_open`).
const OPEN: &str = "status NOT IN ('closed', 'rejected', 'withdrawn')";

/// A stable 64-bit key for `pg_advisory_xact_lock`: the first 8 bytes of SHA-256 over the
/// tagged parts (stable across processes and releases, unlike `std`'s hashers).
pub(super) fn lock_key(parts: &[&str]) -> i64 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"credgate:objection-cap");
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p.as_bytes());
    }
    let d = ctx.finish();
    i64::from_be_bytes(d.as_ref()[..8].try_into().expect("8 bytes"))
}

/// On PostgreSQL, serialises the filings that count against the same caps: the counts below
/// run at READ COMMITTED, so two replicas' concurrent filings would each miss the other's.
/// Held until the transaction ends. SQLite needs none: its writers hold `BEGIN IMMEDIATE`.
/// Always subject first, then record, so that two filings cannot wait on each other.
async fn lock_caps(
    conn: &mut AnyConnection,
    backend: Backend,
    o: &Objection,
) -> Result<(), ChangeError> {
    if backend != Backend::Postgres {
        return Ok(());
    }
    for key in [
        lock_key(&["subject", &o.subject_type, &o.subject_id]),
        lock_key(&["record", &o.store, &o.record_ref]),
    ] {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Serialises filings under one cap on PostgreSQL (SQLite writes one at a time anyway): the
/// transaction's advisory lock on the tagged key.
pub(super) async fn lock_in(
    conn: &mut AnyConnection,
    backend: Backend,
    parts: &[&str],
) -> Result<(), ChangeError> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(lock_key(parts))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Refuses a new objection beyond the caps on open ones: per subject (type and id) and per
/// record. Counted inside the filing's transaction, after `lock_caps`, so a burst cannot slip
/// past together, on one replica or several.
pub async fn check_caps(
    conn: &mut AnyConnection,
    backend: Backend,
    o: &Objection,
    caps: &SubjectLimitConfig,
) -> Result<(), ChangeError> {
    lock_caps(conn, backend, o).await?;
    let per_subject: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM objections WHERE subject_id = $1 AND subject_type = $2 AND {OPEN}"
    )))
    .bind(&o.subject_id)
    .bind(&o.subject_type)
    .fetch_one(&mut *conn)
    .await?;
    let per_record: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM objections WHERE store = $1 AND record_ref = $2 AND {OPEN}"
    )))
    .bind(&o.store)
    .bind(&o.record_ref)
    .fetch_one(&mut *conn)
    .await?;
    if per_record >= i64::from(caps.max_open_objections_per_record) {
        return Err(ChangeError::Refused(Refused::Conflict(format!(
            "this record already has {per_record} open objections, the most one record may carry; \
             withdraw one or wait for a decision"
        ))));
    }
    if per_subject >= i64::from(caps.max_open_objections_per_subject) {
        return Err(ChangeError::Refused(Refused::Conflict(format!(
            "this subject already has {per_subject} open objections, the most one subject may hold"
        ))));
    }
    Ok(())
}

/// Stores a new objection inside the caller's transaction (its history row is the caller's).
pub async fn insert_in(conn: &mut AnyConnection, o: &Objection) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO objections (id, subject_id, subject_type, store, dataset, record_ref, field, reason, \
         requested_correction, status, created_at, accept_due_at, decide_due_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $11)",
    )
    .bind(&o.id)
    .bind(&o.subject_id)
    .bind(&o.subject_type)
    .bind(&o.store)
    .bind(&o.dataset)
    .bind(&o.record_ref)
    .bind(&o.field)
    .bind(&o.reason)
    .bind(&o.requested_correction)
    .bind(o.status.as_str())
    .bind(o.created_at)
    .bind(o.accept_due_at)
    .bind(o.decide_due_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Open objections past their deadline not yet alerted: (id, the deadline that passed,
/// acceptance or decision).
pub async fn overdue_unalerted(
    db: &Db,
    now: i64,
) -> Result<Vec<(String, &'static str)>, StorageError> {
    let rows = sqlx::query(
        "SELECT id, status, accept_due_at, decide_due_at FROM objections \
         WHERE overdue_alerted = 0 AND status IN ('submitted', 'accepted', 'forwarded', 'answered')",
    )
    .fetch_all(db.pool())
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let submitted = r.try_get::<String, _>("status")? == "submitted";
        let due: i64 = r.try_get(if submitted {
            "accept_due_at"
        } else {
            "decide_due_at"
        })?;
        if now > due {
            let what = if submitted { "acceptance" } else { "decision" };
            out.push((r.try_get("id")?, what));
        }
    }
    Ok(out)
}

/// Takes (`true`) or gives back (`false`) the objection's one overdue alert. Every replica
/// watches; the guarded update lets one of them raise it. Returns whether this call changed it.
pub async fn set_alerted(db: &Db, id: &str, alerted: bool) -> Result<bool, StorageError> {
    let (to, from) = if alerted { (1i64, 0i64) } else { (0, 1) };
    let done = sqlx::query(
        "UPDATE objections SET overdue_alerted = $1 WHERE id = $2 AND overdue_alerted = $3",
    )
    .bind(to)
    .bind(id)
    .bind(from)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One undelivered row of the `outbox`: an accepted objection on its way to its store.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The idempotency key the store sees.
    pub id: String,
    pub objection_id: String,
    pub store: String,
    pub payload: String,
    pub attempts: i64,
}

/// Queues a delivery inside the acceptance's transaction.
pub async fn enqueue_in(
    conn: &mut AnyConnection,
    d: &Delivery,
    now: i64,
) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO outbox (id, objection_id, store, payload, attempts, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, 0, $5, $5)",
    )
    .bind(&d.id)
    .bind(&d.objection_id)
    .bind(&d.store)
    .bind(&d.payload)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Queues a deletion request (retention, `workflows::outbox::deletions`) in the caller's
/// transaction. Its id is derived from the record, so a request already queued by an earlier
/// read is left as it is.
pub async fn enqueue_deletion_in(
    conn: &mut AnyConnection,
    id: &str,
    store: &str,
    payload: &str,
    now: i64,
) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO outbox (id, objection_id, store, payload, attempts, next_attempt_at, created_at) \
         VALUES ($1, $1, $2, $3, 0, $4, $4) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(store)
    .bind(payload)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deliveries due at `now` and claimed by no live replica, oldest first, at most 20.
pub async fn due_deliveries(db: &Db, now: i64) -> Result<Vec<Delivery>, StorageError> {
    let rows = sqlx::query(
        "SELECT id, objection_id, store, payload, attempts FROM outbox \
         WHERE delivered_at IS NULL AND next_attempt_at <= $1 \
         AND (claimed_until IS NULL OR claimed_until < $1) ORDER BY created_at LIMIT 20",
    )
    .bind(now)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Delivery {
                id: r.try_get("id")?,
                objection_id: r.try_get("objection_id")?,
                store: r.try_get("store")?,
                payload: r.try_get("payload")?,
                attempts: r.try_get("attempts")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// Claims one due delivery for `replica` until `until`. The guarded update succeeds for one
/// deliverer only; the others skip the row.
pub async fn claim_delivery(
    db: &Db,
    id: &str,
    replica: &str,
    until: i64,
    now: i64,
) -> Result<bool, StorageError> {
    let done = sqlx::query(
        "UPDATE outbox SET claimed_by = $1, claimed_until = $2 \
         WHERE id = $3 AND delivered_at IS NULL AND next_attempt_at <= $4 \
         AND (claimed_until IS NULL OR claimed_until < $4)",
    )
    .bind(replica)
    .bind(until)
    .bind(id)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records an attempt's outcome and releases the claim: delivered at `at` (`Ok`), or failed
/// with its error, retried from `at` (`Err`). Only while `replica` still holds the claim: if it
/// lapsed and another replica took the delivery over, that one records it, and a late outcome
/// here must not wipe its claim (a redelivery carries the same key, so the store keeps one
/// ticket). Returns whether the outcome was recorded.
pub async fn attempted(
    db: &Db,
    id: &str,
    replica: &str,
    at: i64,
    outcome: Result<(), &str>,
) -> Result<bool, StorageError> {
    let q = match outcome {
        Ok(()) => sqlx::query(
            "UPDATE outbox SET delivered_at = $1, attempts = attempts + 1, last_error = NULL, \
             claimed_until = NULL WHERE id = $2 AND claimed_by = $3",
        )
        .bind(at)
        .bind(id)
        .bind(replica),
        Err(why) => sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2, \
             claimed_until = NULL WHERE id = $3 AND claimed_by = $4",
        )
        .bind(at)
        .bind(why)
        .bind(id)
        .bind(replica),
    };
    Ok(q.execute(db.pool()).await?.rows_affected() == 1)
}
