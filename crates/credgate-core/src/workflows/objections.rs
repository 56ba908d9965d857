//! Objections: an explicit state machine. On receipt the record is marked as contested; it is
//! accepted (or rejected) within working days, delivered to the store through the outbox,
//! answered, decided (corrected, upheld, unresolved) and closed. Every transition keeps who,
//! when and a note; an illegal one is 409 and changes nothing.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;

use std::sync::Arc;

use super::WorkflowError;
use crate::{
    audit::{ChangeError, Deferred, Refused},
    domain::{SubjectId, SubjectType},
    services::Core,
    storage::{Backend, Db, StorageError, micros_to_rfc3339, signals},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Submitted,
    Accepted,
    Forwarded,
    Answered,
    Corrected,
    Upheld,
    Unresolved,
    Closed,
    Rejected,
    Withdrawn,
}

/// Who moves an objection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    Subject,
    Handler,
    /// The outbox, when the store confirms receipt.
    Delivery,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Submitted => "submitted",
            Status::Accepted => "accepted",
            Status::Forwarded => "forwarded",
            Status::Answered => "answered",
            Status::Corrected => "corrected",
            Status::Upheld => "upheld",
            Status::Unresolved => "unresolved",
            Status::Closed => "closed",
            Status::Rejected => "rejected",
            Status::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Value::String(s.into())).ok()
    }

    /// Open: the record is marked as contested.
    pub fn is_open(self) -> bool {
        !matches!(self, Status::Closed | Status::Rejected | Status::Withdrawn)
    }

    /// The whole state machine, in one place.
    pub fn may_go(self, to: Status, by: Actor) -> bool {
        use Status::*;
        match by {
            Actor::Handler => matches!(
                (self, to),
                (Submitted, Accepted)
                    | (Submitted, Rejected)
                    | (Forwarded, Answered)
                    | (Answered, Corrected)
                    | (Answered, Upheld)
                    | (Answered, Unresolved)
                    | (Corrected, Closed)
                    | (Upheld, Closed)
                    | (Unresolved, Closed)
            ),
            Actor::Delivery => matches!((self, to), (Accepted, Forwarded)),
            Actor::Subject => matches!((self, to), (Submitted | Accepted | Forwarded, Withdrawn)),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Objection {
    pub id: String,
    #[serde(skip)]
    pub subject_id: String,
    /// `legal` or `natural`: with the id, who the subject is.
    #[serde(skip)]
    pub subject_type: String,
    pub store: String,
    pub dataset: String,
    pub record_ref: String,
    pub field: Option<String>,
    pub reason: String,
    pub requested_correction: Option<String>,
    pub status: Status,
    pub created_at: i64,
    pub accept_due_at: i64,
    pub decide_due_at: i64,
    pub store_ticket: Option<String>,
    pub store_finding: Option<String>,
    pub correction: Option<String>,
    /// corrected, upheld or unresolved, once decided.
    pub outcome: Option<String>,
}

impl Objection {
    /// The deadline that matters now: acceptance while submitted, decision until decided.
    pub fn due_at(&self) -> Option<i64> {
        match self.status {
            Status::Submitted => Some(self.accept_due_at),
            Status::Accepted | Status::Forwarded | Status::Answered => Some(self.decide_due_at),
            _ => None,
        }
    }

    pub fn overdue(&self, now: i64) -> bool {
        self.due_at().is_some_and(|d| now > d)
    }

    pub fn view(&self, now: i64) -> Value {
        let mut v = serde_json::to_value(self).expect("serialises");
        v["created_at"] = json!(micros_to_rfc3339(self.created_at));
        v["accept_due_at"] = json!(micros_to_rfc3339(self.accept_due_at));
        v["decide_due_at"] = json!(micros_to_rfc3339(self.decide_due_at));
        v["due_at"] = json!(self.due_at().map(micros_to_rfc3339));
        v["overdue"] = json!(self.overdue(now));
        v
    }
}

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
        status: Status::parse(&status).unwrap_or(Status::Submitted),
        created_at: r.try_get("created_at")?,
        accept_due_at: r.try_get("accept_due_at")?,
        decide_due_at: r.try_get("decide_due_at")?,
        store_ticket: r.try_get("store_ticket")?,
        store_finding: r.try_get("store_finding")?,
        correction: r.try_get("correction")?,
        outcome: r.try_get("outcome")?,
    })
}

pub async fn get(db: &Db, id: &str) -> Result<Option<Objection>, StorageError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM objections WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

pub async fn for_record(
    db: &Db,
    store: &str,
    record_ref: &str,
) -> Result<Vec<Objection>, StorageError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM objections WHERE store = $1 AND record_ref = $2 ORDER BY created_at"
    )))
    .bind(store)
    .bind(record_ref)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

pub async fn all_marked(db: &Db) -> Result<Vec<Objection>, StorageError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM objections WHERE status NOT IN ('rejected', 'withdrawn')"
    )))
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

pub async fn history(db: &Db, id: &str) -> Result<Vec<Value>, StorageError> {
    super::events::history(db, "objection", id).await
}

/// What a transition writes besides the status.
#[derive(Debug, Clone, Copy, Default)]
pub struct Move<'a> {
    pub note: Option<&'a str>,
    pub correction: Option<&'a str>,
    pub ticket: Option<&'a str>,
}

/// Moves an objection inside the caller's transaction, guarded by its current status in the
/// same statement, so two concurrent transitions cannot both succeed. Writes the event (and, on
/// acceptance, the outbox row). `Ok(false)`: illegal from the current status, nothing changed.
pub async fn transition_in(
    conn: &mut sqlx::AnyConnection,
    o: &Objection,
    to: Status,
    (by, actor): (Actor, &str),
    m: Move<'_>,
    now: i64,
) -> Result<bool, StorageError> {
    if !o.status.may_go(to, by) {
        return Ok(false);
    }
    let done = sqlx::query(
        "UPDATE objections SET status = $1, updated_at = $2, \
         correction = COALESCE($3, correction), store_ticket = COALESCE($4, store_ticket), \
         store_finding = CASE WHEN $5 = 'answered' THEN $6 ELSE store_finding END, \
         outcome = CASE WHEN $5 IN ('corrected', 'upheld', 'unresolved') THEN $5 ELSE outcome END \
         WHERE id = $7 AND status = $8",
    )
    .bind(to.as_str())
    .bind(now)
    .bind(m.correction)
    .bind(m.ticket)
    .bind(to.as_str())
    .bind(m.note)
    .bind(&o.id)
    .bind(o.status.as_str())
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    let step = super::events::Step {
        kind: "objection",
        id: &o.id,
        at: now,
        actor,
        from: Some(o.status.as_str()),
        to: to.as_str(),
        note: m.note,
    };
    super::events::record(&mut *conn, &step).await?;
    if to == Status::Accepted {
        super::outbox::enqueue(&mut *conn, o, now).await?;
    }
    signals::bump(&mut *conn, signals::OBJECTIONS, None).await?;
    Ok(true)
}

/// The objection as `transition_in` leaves it: what a handler answers before the commit.
pub fn moved(o: &Objection, to: Status, m: Move<'_>) -> Objection {
    let mut n = o.clone();
    n.status = to;
    if let Some(c) = m.correction {
        n.correction = Some(c.into());
    }
    if let Some(t) = m.ticket {
        n.store_ticket = Some(t.into());
    }
    if to == Status::Answered {
        n.store_finding = m.note.map(Into::into);
    }
    if matches!(to, Status::Corrected | Status::Upheld | Status::Unresolved) {
        n.outcome = Some(to.as_str().into());
    }
    n
}

/// A transition committed on its own (the outbox's delivery, which answers no request).
pub async fn transition(
    state: &Core,
    o: &Objection,
    to: Status,
    by: (Actor, &str),
    m: Move<'_>,
) -> Result<bool, StorageError> {
    let mut tx = state.db.pool().begin().await?;
    if !transition_in(&mut tx, o, to, by, m, state.clock.now()).await? {
        return Ok(false);
    }
    tx.commit().await?;
    refresh_marks(state, o).await?;
    Ok(true)
}

/// Rebuilds the marks of the objection's record: its store, its subject's type, its id.
async fn refresh_marks(state: &Core, o: &Objection) -> Result<(), StorageError> {
    match o.subject_type.parse::<SubjectType>() {
        Ok(kind) => {
            state
                .marks
                .refresh(&state.db, &o.store, kind, &o.record_ref)
                .await
        }
        // Only `legal` and `natural` are ever written; anything else marks nothing.
        Err(_) => Ok(()),
    }
}

/// A transition deferred to the audit record's transaction (see `crate::audit::Change`):
/// refused with 409 if the objection moved meanwhile; the marks are refreshed after commit.
pub fn deferred_transition(
    state: &Core,
    o: Objection,
    to: Status,
    actor: (Actor, String),
    m: (Option<String>, Option<String>),
    now: i64,
) -> Deferred {
    let refresh = {
        let (state, o) = (state.clone(), o.clone());
        async move {
            if let Err(e) = refresh_marks(&state, &o).await {
                tracing::warn!(error = %e, "marks not refreshed; the replica signal will");
            }
        }
    };
    let o = Arc::new(o);
    let (actor, m) = (Arc::new(actor), Arc::new(m));
    Deferred::new(move |conn| {
        let (o, actor, m) = (o.clone(), actor.clone(), m.clone());
        Box::pin(async move {
            let mv = Move {
                note: m.0.as_deref(),
                correction: m.1.as_deref(),
                ticket: None,
            };
            if transition_in(conn, &o, to, (actor.0, &actor.1), mv, now).await? {
                Ok(())
            } else {
                Err(ChangeError::Refused(Refused::Conflict(format!(
                    "the objection changed meanwhile; it cannot become {}",
                    to.as_str()
                ))))
            }
        })
    })
    .then(refresh)
}

/// A data subject's objection as filed (the body of `POST /subject/objections`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    pub store: String,
    pub dataset: String,
    pub record_ref: String,
    #[serde(default)]
    pub field: Option<String>,
    pub reason: String,
    #[serde(default)]
    pub requested_correction: Option<String>,
}

fn text_ok(s: &str, max: usize) -> bool {
    !s.trim().is_empty() && s.chars().count() <= max
}

/// Checks a submission against the catalog and the caller: a known store and dataset about
/// the caller's type of subject, their own record, a catalog field of that dataset.
pub fn check_submission(
    state: &Core,
    subject: &SubjectId,
    req: &Submission,
) -> Result<(), WorkflowError> {
    let known = state
        .stores
        .datasets()
        .any(|(s, d)| s == req.store && d == req.dataset);
    if !known {
        return Err(WorkflowError::BadRequest(
            "no such store and dataset".into(),
        ));
    }
    let policies = state.policies();
    let dataset = policies.dataset(&req.dataset);
    if dataset
        .and_then(|d| d.subject_type)
        .is_some_and(|t| t != subject.subject_type())
    {
        return Err(WorkflowError::BadRequest(format!(
            "dataset `{}` is not about a {} subject",
            req.dataset,
            subject.subject_type().as_str()
        )));
    }
    // A subject contests records about themselves: the record is named by their own id.
    if req.record_ref.trim().to_ascii_uppercase() != subject.as_str() {
        return Err(WorkflowError::BadRequest(
            "record_ref must be your own USCC or ID number".into(),
        ));
    }
    if !text_ok(&req.reason, 2000)
        || req
            .requested_correction
            .as_deref()
            .is_some_and(|c| !text_ok(c, 2000))
    {
        return Err(WorkflowError::BadRequest(
            "reason (1-2000 characters) is required; requested_correction must not be empty or too long".into(),
        ));
    }
    // Only names the catalog declares for this dataset: free text here would travel into every
    // answer's `_objections` annotation.
    if let Some(f) = &req.field
        && !dataset.is_some_and(|d| d.fields.iter().any(|(path, _)| path == f))
    {
        return Err(WorkflowError::BadRequest(format!(
            "field must be one of the catalog's fields of dataset `{}`",
            req.dataset
        )));
    }
    Ok(())
}

/// Statuses in which an objection is open (see `Status::is_open`).
const OPEN: &str = "status NOT IN ('closed', 'rejected', 'withdrawn')";

/// A stable 64-bit key for `pg_advisory_xact_lock`: the first 8 bytes of SHA-256 over the
/// tagged parts (stable across processes and releases, unlike `std`'s hashers).
fn lock_key(parts: &[&str]) -> i64 {
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
    conn: &mut sqlx::AnyConnection,
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

/// Refuses a new objection beyond the caps on open ones: per subject (type and id) and per
/// record. Counted inside the filing's transaction, after `lock_caps`, so a burst cannot slip
/// past together, on one replica or several.
async fn check_caps(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    o: &Objection,
    caps: &crate::auth::subject::SubjectLimitConfig,
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

/// Files `o` within the caps, inside the caller's transaction (the filing's audit record's):
/// what `POST /subject/objections` defers until its record commits.
pub async fn file_in(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    o: &Objection,
    caps: &crate::auth::subject::SubjectLimitConfig,
) -> Result<(), ChangeError> {
    check_caps(conn, backend, o, caps).await?;
    Ok(insert(conn, o).await?)
}

/// Files the objection inside the audit record's transaction.
async fn insert(conn: &mut sqlx::AnyConnection, o: &Objection) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO objections (id, subject_id, subject_type, store, dataset, record_ref, field, reason, \
         requested_correction, status, created_at, accept_due_at, decide_due_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'submitted', $10, $11, $12, $10)",
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
    .bind(o.created_at)
    .bind(o.accept_due_at)
    .bind(o.decide_due_at)
    .execute(&mut *conn)
    .await?;
    let step = super::events::Step {
        kind: "objection",
        id: &o.id,
        at: o.created_at,
        actor: "subject",
        from: None,
        to: "submitted",
        note: None,
    };
    super::events::record(&mut *conn, &step).await?;
    signals::bump(&mut *conn, signals::OBJECTIONS, None).await?;
    Ok(())
}

/// A new objection from a checked submission: submitted now, with its deadlines from config.
pub fn prepare(state: &Core, subject: &SubjectId, req: Submission) -> Objection {
    let now = state.clock.now();
    let cfg = &state.config.workflows;
    Objection {
        id: format!("ob_{}", uuid::Uuid::now_v7().simple()),
        subject_id: subject.as_str().into(),
        subject_type: subject.subject_type().as_str().into(),
        store: req.store,
        dataset: req.dataset,
        record_ref: subject.as_str().into(),
        field: req.field,
        reason: req.reason,
        requested_correction: req.requested_correction,
        status: Status::Submitted,
        created_at: now,
        accept_due_at: super::add_working_days(now, cfg.accept_working_days),
        decide_due_at: super::add_days(now, cfg.decide_days),
        store_ticket: None,
        store_finding: None,
        correction: None,
        outcome: None,
    }
}

/// Files `o` in the audit record's transaction (caps checked there, see `file_in`); the marks
/// are refreshed after commit.
pub fn filing(state: &Core, o: Objection) -> Deferred {
    let refresh = {
        let (state, o) = (state.clone(), o.clone());
        async move {
            if let Err(e) = refresh_marks(&state, &o).await {
                tracing::warn!(error = %e, "marks not refreshed; the replica signal will");
            }
        }
    };
    let caps = Arc::new(state.config.subject_limits.clone());
    let o = Arc::new(o);
    let backend = state.db.backend();
    Deferred::new(move |conn| {
        let (o, caps) = (o.clone(), caps.clone());
        Box::pin(async move { file_in(conn, backend, &o, &caps).await })
    })
    .then(refresh)
}

/// A subject's objections, newest first. Own means the same id and the same type.
pub async fn list_for_subject(
    db: &Db,
    subject: &SubjectId,
) -> Result<Vec<Objection>, StorageError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM objections WHERE subject_id = $1 AND subject_type = $2 \
         ORDER BY created_at DESC"
    )))
    .bind(subject.as_str())
    .bind(subject.subject_type().as_str())
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?)
}

/// Every objection, oldest first (the handlers' list).
pub async fn list_all(db: &Db) -> Result<Vec<Objection>, StorageError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM objections ORDER BY created_at"
    )))
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?)
}
