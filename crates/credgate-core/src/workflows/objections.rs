//! Objections: an explicit state machine. On receipt the record is marked as contested; it is
//! accepted (or rejected) within working days, delivered to the store through the outbox,
//! answered, decided (corrected, upheld, unresolved) and closed. Every transition keeps who,
//! when and a note; an illegal one is 409, names the allowed next states, and changes nothing.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use std::sync::Arc;

use super::{
    WorkflowError,
    events::{self, Table},
    machine::{self, Extra, Machine},
    text::{self, Field},
};
use crate::{
    audit::{ChangeError, Deferred},
    auth::subject::SubjectLimitConfig,
    domain::{SubjectId, SubjectType},
    services::Core,
    storage::{self, Backend, Db, StorageError, micros_to_rfc3339, signals},
};

pub use super::machine::Actor;
pub use crate::storage::objections::{all_marked, for_record, get, list_all, list_for_subject};

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

impl machine::Status for Status {
    const ALL: &'static [Self] = &[
        Status::Submitted,
        Status::Accepted,
        Status::Forwarded,
        Status::Answered,
        Status::Corrected,
        Status::Upheld,
        Status::Unresolved,
        Status::Closed,
        Status::Rejected,
        Status::Withdrawn,
    ];

    fn as_str(self) -> &'static str {
        Status::as_str(self)
    }
}

/// The whole state machine, in one place.
pub static MACHINE: Machine<Status> = {
    use Actor::*;
    use Status::*;
    Machine {
        kind: "objection",
        table: Table::Objections,
        moves: &[
            (Submitted, Accepted, Handler),
            (Submitted, Rejected, Handler),
            (Forwarded, Answered, Handler),
            (Answered, Corrected, Handler),
            (Answered, Upheld, Handler),
            (Answered, Unresolved, Handler),
            (Corrected, Closed, Handler),
            (Upheld, Closed, Handler),
            (Unresolved, Closed, Handler),
            (Accepted, Forwarded, Delivery),
            (Submitted, Withdrawn, Subject),
            (Accepted, Withdrawn, Subject),
            (Forwarded, Withdrawn, Subject),
        ],
    }
};

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
        <Self as machine::Status>::parse(s)
    }

    /// Open: the record is marked as contested.
    pub fn is_open(self) -> bool {
        !matches!(self, Status::Closed | Status::Rejected | Status::Withdrawn)
    }

    pub fn may_go(self, to: Status, by: Actor) -> bool {
        MACHINE.may_go(self, to, by)
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

pub async fn history(db: &Db, id: &str) -> Result<Vec<Value>, StorageError> {
    events::history(db, "objection", id).await
}

/// What a transition writes besides the status.
#[derive(Debug, Clone, Copy, Default)]
pub struct Move<'a> {
    pub note: Option<&'a str>,
    pub correction: Option<&'a str>,
    pub ticket: Option<&'a str>,
}

/// Moves an objection inside the caller's transaction, guarded by its current status (see
/// `Machine::apply_in`), with its details and side effects: on acceptance the outbox row, on
/// every move the replicas' signal. `Ok(false)`: illegal or moved meanwhile, nothing changed.
pub async fn transition_in(
    conn: &mut sqlx::AnyConnection,
    o: &Objection,
    to: Status,
    (by, actor): (Actor, &str),
    m: Move<'_>,
    now: i64,
) -> Result<bool, StorageError> {
    let mv = machine::Move {
        id: o.id.clone(),
        from: o.status,
        to,
        by,
        actor: actor.into(),
        note: m.note.map(Into::into),
        at: now,
    };
    if !MACHINE.apply_in(conn, &mv).await? {
        return Ok(false);
    }
    details_in(conn, o, to, m, now).await?;
    Ok(true)
}

/// The objection's own columns and side effects of a move that succeeded.
async fn details_in(
    conn: &mut sqlx::AnyConnection,
    o: &Objection,
    to: Status,
    m: Move<'_>,
    now: i64,
) -> Result<(), StorageError> {
    storage::objections::set_details_in(conn, &o.id, to, m.correction, m.ticket, m.note).await?;
    if to == Status::Accepted {
        super::outbox::enqueue(&mut *conn, o, now).await?;
    }
    signals::bump(&mut *conn, signals::OBJECTIONS, None).await?;
    Ok(())
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

/// After a commit: the marks of the objection's record, refreshed (or left to the replica
/// signal if that fails).
fn after_commit(state: &Core, o: &Objection) -> impl std::future::Future<Output = ()> + use<> {
    let (state, o) = (state.clone(), o.clone());
    async move {
        if let Err(e) = refresh_marks(&state, &o).await {
            tracing::warn!(error = %e, "marks not refreshed; the replica signal will");
        }
    }
}

/// A handler's or subject's request to move an objection, as the web layer parsed it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    pub to: String,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub correction: Option<String>,
}

/// Checks a move by `by` against the table and the text rules (a rejection needs its reason)
/// and defers it to the audit record's transaction: refused with 409 if the objection moved
/// meanwhile; the marks are refreshed after commit. Returns the objection as it will be and
/// the history row the move writes.
pub fn decide(
    state: &Core,
    o: Objection,
    req: TransitionRequest,
    (by, actor): (Actor, String),
) -> Result<(Objection, Value, Deferred), WorkflowError> {
    let to = MACHINE.parse(&req.to)?;
    let note = text::NOTE.clean_or_none(req.note.as_deref())?;
    let correction = CORRECTION.clean_opt(req.correction.as_deref())?;
    if matches!(to, Status::Rejected) && note.is_none() {
        return Err(WorkflowError::BadRequest(
            "a rejection needs a note with the reason".into(),
        ));
    }
    MACHINE.check(o.status, to, by)?;
    let now = state.clock.now();
    let m = Move {
        note: note.as_deref(),
        correction: correction.as_deref(),
        ticket: None,
    };
    let after = moved(&o, to, m);
    let mv = machine::Move {
        id: o.id.clone(),
        from: o.status,
        to,
        by,
        actor,
        note: note.clone(),
        at: now,
    };
    let refresh = after_commit(state, &o);
    let step = mv.step_view();
    let (o, correction) = (Arc::new(o), Arc::new(correction));
    let extra: Extra = Arc::new(move |conn| {
        let (o, note, correction) = (o.clone(), note.clone(), correction.clone());
        Box::pin(async move {
            let m = Move {
                note: note.as_deref(),
                correction: correction.as_deref(),
                ticket: None,
            };
            Ok(details_in(conn, &o, to, m, now).await?)
        })
    });
    Ok((after, step, MACHINE.deferred(mv, Some(extra)).then(refresh)))
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

pub const REASON: Field = Field::many("reason", 2000);
pub const CORRECTION: Field = Field::many("requested_correction", 2000);

/// A record of the caller's, in a store and dataset of the catalog about the caller's type of
/// subject: what objections and requests are about.
pub fn check_own_record(
    state: &Core,
    subject: &SubjectId,
    (store, dataset, record_ref): (&str, &str, &str),
) -> Result<(), WorkflowError> {
    let known = state
        .stores
        .datasets()
        .any(|(s, d)| s == store && d == dataset);
    if !known {
        return Err(WorkflowError::BadRequest(
            "no such store and dataset".into(),
        ));
    }
    let policies = state.policies();
    if policies
        .dataset(dataset)
        .and_then(|d| d.subject_type)
        .is_some_and(|t| t != subject.subject_type())
    {
        return Err(WorkflowError::BadRequest(format!(
            "dataset `{dataset}` is not about a {} subject",
            subject.subject_type().as_str()
        )));
    }
    // A subject contests records about themselves: the record is named by their own id.
    if record_ref.trim().to_ascii_uppercase() != subject.as_str() {
        return Err(WorkflowError::BadRequest(
            "record_ref must be your own USCC or ID number".into(),
        ));
    }
    Ok(())
}

/// Checks a submission against the catalog and the caller (see `check_own_record`; a field
/// must be a catalog field of that dataset) and normalises its texts.
pub fn check_submission(
    state: &Core,
    subject: &SubjectId,
    req: &mut Submission,
) -> Result<(), WorkflowError> {
    check_own_record(state, subject, (&req.store, &req.dataset, &req.record_ref))?;
    req.reason = REASON.clean(&req.reason)?;
    req.requested_correction = CORRECTION.clean_opt(req.requested_correction.as_deref())?;
    // Only names the catalog declares for this dataset: free text here would travel into every
    // answer's `_objections` annotation.
    let policies = state.policies();
    if let Some(f) = &req.field
        && !policies
            .dataset(&req.dataset)
            .is_some_and(|d| d.fields.iter().any(|(path, _)| path == f))
    {
        return Err(WorkflowError::BadRequest(format!(
            "field must be one of the catalog's fields of dataset `{}`",
            req.dataset
        )));
    }
    Ok(())
}

/// Files `o` within the caps, inside the caller's transaction (the filing's audit record's):
/// what `POST /subject/objections` defers until its record commits.
pub async fn file_in(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    o: &Objection,
    caps: &SubjectLimitConfig,
) -> Result<(), ChangeError> {
    storage::objections::check_caps(conn, backend, o, caps).await?;
    storage::objections::insert_in(conn, o).await?;
    let step = events::Step {
        kind: MACHINE.kind,
        id: &o.id,
        at: o.created_at,
        actor: "subject",
        from: None,
        to: Status::Submitted.as_str(),
        note: None,
    };
    events::record(&mut *conn, &step).await?;
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
    let refresh = after_commit(state, &o);
    let caps = Arc::new(state.config.subject_limits.clone());
    let o = Arc::new(o);
    let backend = state.db.backend();
    Deferred::new(move |conn| {
        let (o, caps) = (o.clone(), caps.clone());
        Box::pin(async move { file_in(conn, backend, &o, &caps).await })
    })
    .then(refresh)
}

/// The subject's own objection, or `NotFound` (another subject's id answers exactly like a
/// missing one). Own means the same id and the same type.
pub async fn own(db: &Db, subject: &SubjectId, id: &str) -> Result<Objection, WorkflowError> {
    match get(db, id).await? {
        Some(o) if subject.is_named(&o.subject_id, &o.subject_type) => Ok(o),
        _ => Err(WorkflowError::NotFound("no such objection".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Actor::*;
    use Status::*;

    #[test]
    fn the_objection_machine_allows_exactly_its_table() {
        machine::assert_exactly(
            &MACHINE,
            &[
                (Submitted, Accepted, Handler),
                (Submitted, Rejected, Handler),
                (Forwarded, Answered, Handler),
                (Answered, Corrected, Handler),
                (Answered, Upheld, Handler),
                (Answered, Unresolved, Handler),
                (Corrected, Closed, Handler),
                (Upheld, Closed, Handler),
                (Unresolved, Closed, Handler),
                (Accepted, Forwarded, Delivery),
                (Submitted, Withdrawn, Subject),
                (Accepted, Withdrawn, Subject),
                (Forwarded, Withdrawn, Subject),
            ],
        );
        let Err(WorkflowError::Conflict(why)) = MACHINE.check(Answered, Closed, Handler) else {
            panic!()
        };
        assert_eq!(
            why,
            "the objection is answered and cannot become closed; \
             allowed next states: corrected, upheld, unresolved"
        );
    }
}
