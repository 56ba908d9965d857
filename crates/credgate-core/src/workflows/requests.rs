//! Subject requests: a data subject asks for credit repair, correction, restriction or deletion
//! of one of their records. A handler accepts or refuses it within working days, then completes
//! or declines it within working days of acceptance, once extendable (`[workflows.requests]`).
//! A refusal or a decline needs its reason; the subject reads the answer.

use serde::Deserialize;
use serde_json::{Value, json};

use std::sync::Arc;

use super::{
    WorkflowError, add_working_days,
    events::{self, Table},
    machine::{self, Actor, Extra, Machine},
    text::{self, Field},
};
use crate::{
    audit::Deferred,
    domain::SubjectId,
    services::Core,
    storage::{self, Db, StorageError, micros_to_rfc3339, signals},
};

/// What the subject asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Credit repair (信用修复) of an adverse record.
    Repair,
    Correction,
    Restriction,
    Deletion,
}

impl Kind {
    pub const ALL: &'static [Kind] = &[
        Kind::Repair,
        Kind::Correction,
        Kind::Restriction,
        Kind::Deletion,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Repair => "repair",
            Kind::Correction => "correction",
            Kind::Restriction => "restriction",
            Kind::Deletion => "deletion",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Submitted,
    Accepted,
    Refused,
    Extended,
    Completed,
    Declined,
    /// A completed restriction, lifted by a handler (with a note): the record is released
    /// again.
    Lifted,
}

impl machine::Status for Status {
    const ALL: &'static [Self] = &[
        Status::Submitted,
        Status::Accepted,
        Status::Refused,
        Status::Extended,
        Status::Completed,
        Status::Declined,
        Status::Lifted,
    ];

    fn as_str(self) -> &'static str {
        Status::as_str(self)
    }
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Submitted => "submitted",
            Status::Accepted => "accepted",
            Status::Refused => "refused",
            Status::Extended => "extended",
            Status::Completed => "completed",
            Status::Declined => "declined",
            Status::Lifted => "lifted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        <Self as machine::Status>::parse(s)
    }

    /// An end: refused at intake, or completed or declined after review (a completed
    /// restriction may still be lifted), or lifted.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Refused | Status::Completed | Status::Declined | Status::Lifted
        )
    }
}

/// Accept or refuse; then complete or decline, with one extension between (an extended
/// request cannot be extended again: the table has no such move). A completed restriction can
/// be lifted (`moved` refuses the lift for every other kind).
pub static MACHINE: Machine<Status> = {
    use Actor::Handler;
    use Status::*;
    Machine {
        kind: "request",
        table: Table::Requests,
        moves: &[
            (Submitted, Accepted, Handler),
            (Submitted, Refused, Handler),
            (Accepted, Extended, Handler),
            (Accepted, Completed, Handler),
            (Accepted, Declined, Handler),
            (Extended, Completed, Handler),
            (Extended, Declined, Handler),
            (Completed, Lifted, Handler),
        ],
    }
};

pub const REASON: Field = Field::many("reason", 2000);
pub const ANSWER: Field = Field::many("answer", 4000);

#[derive(Debug, Clone)]
pub struct Request {
    pub id: String,
    pub subject_id: String,
    pub subject_type: String,
    pub kind: Kind,
    pub store: String,
    pub dataset: String,
    pub record_ref: String,
    pub reason: String,
    pub status: Status,
    pub created_at: i64,
    pub updated_at: i64,
    /// To accept or refuse by.
    pub accept_due_at: i64,
    /// To finish by: set on acceptance, moved once by an extension.
    pub finish_due_at: Option<i64>,
    /// completed, refused or declined, once final.
    pub outcome: Option<String>,
    pub answer: Option<String>,
}

impl Request {
    pub fn is_open(&self) -> bool {
        !self.status.is_final()
    }

    /// An open repair or correction request marks its record for every reader, as an open
    /// objection does: the record is under review.
    pub fn marks_record(&self) -> bool {
        self.is_open() && matches!(self.kind, Kind::Repair | Kind::Correction)
    }

    /// The moves a handler may make on this request now: the machine's, less a lift of
    /// anything but a restriction (the one rule the table cannot say, since it is by kind).
    /// What the console offers, so that it never offers a move `moved` refuses.
    pub fn handler_moves(&self) -> Vec<Status> {
        MACHINE
            .next(self.status, Actor::Handler)
            .into_iter()
            .filter(|to| *to != Status::Lifted || self.kind == Kind::Restriction)
            .collect()
    }

    /// A completed restriction withholds the subject's records of its dataset from readers
    /// of every purpose but the full-history ones (`restrictions`), until it is lifted.
    pub fn restricts(&self) -> bool {
        self.kind == Kind::Restriction && self.status == Status::Completed
    }

    /// What the store is asked to do once the request is completed: delivered through the
    /// outbox like an accepted objection, under an id derived from the request (a redelivery
    /// is the same ticket).
    pub fn delivery(&self) -> storage::objections::Delivery {
        // A lift is a delivery of its own (`restriction_lifted`), under its own id.
        let (kind, prefix) = match self.status {
            Status::Lifted => ("restriction_lifted", "rql_"),
            _ => (self.kind.as_str(), "rqd_"),
        };
        let payload = json!({
            "kind": kind, "request_id": self.id, "dataset": self.dataset,
            "record_ref": self.record_ref, "subject": self.subject_id,
            "subject_type": self.subject_type, "reason": self.reason, "answer": self.answer,
        });
        storage::objections::Delivery {
            id: format!("{prefix}{}", self.id.trim_start_matches("rq_")),
            objection_id: self.id.clone(),
            store: self.store.clone(),
            payload: payload.to_string(),
            attempts: 0,
        }
    }

    /// The deadline that matters now: acceptance while submitted, completion once accepted.
    pub fn due_at(&self) -> Option<i64> {
        match self.status {
            Status::Submitted => Some(self.accept_due_at),
            Status::Accepted | Status::Extended => self.finish_due_at,
            _ => None,
        }
    }

    pub fn overdue(&self, now: i64) -> bool {
        self.due_at().is_some_and(|d| now > d)
    }

    /// What the subject reads (the handlers' view adds who filed it).
    pub fn view(&self, now: i64) -> Value {
        json!({
            "id": self.id,
            "kind": self.kind.as_str(),
            "store": self.store,
            "dataset": self.dataset,
            "record_ref": self.record_ref,
            "reason": self.reason,
            "status": self.status.as_str(),
            "due_at": self.due_at().map(micros_to_rfc3339),
            "accept_due_at": micros_to_rfc3339(self.accept_due_at),
            "finish_due_at": self.finish_due_at.map(micros_to_rfc3339),
            "overdue": self.overdue(now),
            "outcome": self.outcome,
            "answer": self.answer,
            "created_at": micros_to_rfc3339(self.created_at),
            "updated_at": micros_to_rfc3339(self.updated_at),
        })
    }

    pub fn admin_view(&self, now: i64) -> Value {
        let mut v = self.view(now);
        v["subject"] = json!(self.subject_id);
        v["subject_type"] = json!(self.subject_type);
        v
    }
}

/// A subject's request as filed (the body of `POST /subject/requests`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    pub kind: String,
    pub store: String,
    pub dataset: String,
    pub record_ref: String,
    pub reason: String,
}

/// A new request from the caller's submission: about a record of their own in the catalog
/// (as an objection is), its reason normalised, due for acceptance by the policy's deadline.
pub fn prepare(
    state: &Core,
    subject: &SubjectId,
    req: Submission,
) -> Result<Request, WorkflowError> {
    let kind = Kind::parse(&req.kind).ok_or_else(|| {
        let kinds: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        WorkflowError::BadRequest(format!("kind is one of: {}", kinds.join(", ")))
    })?;
    let record = (
        req.store.as_str(),
        req.dataset.as_str(),
        req.record_ref.as_str(),
    );
    super::objections::check_own_record(state, subject, record)?;
    let reason = REASON.clean(&req.reason)?;
    let now = state.clock.now();
    let days = &state.config.workflows.requests;
    Ok(Request {
        id: format!("rq_{}", uuid::Uuid::now_v7().simple()),
        subject_id: subject.as_str().into(),
        subject_type: subject.subject_type().as_str().into(),
        kind,
        store: req.store,
        dataset: req.dataset,
        record_ref: subject.as_str().into(),
        reason,
        status: Status::Submitted,
        created_at: now,
        updated_at: now,
        accept_due_at: add_working_days(now, days.accept_working_days),
        finish_due_at: None,
        outcome: None,
        answer: None,
    })
}

/// Files the request and its first history row in the audit record's transaction, within the
/// cap on a subject's open requests (the objection cap's number, `subject_limits`); the marks
/// are refreshed after commit.
pub fn filing(state: &Core, r: Request) -> Deferred {
    let refresh = after_commit(state, &r);
    let max = state.config.subject_limits.max_open_objections_per_subject;
    let backend = state.db.backend();
    let r = Arc::new(r);
    Deferred::new(move |conn| {
        let r = r.clone();
        Box::pin(async move {
            storage::requests::check_cap_in(conn, backend, &r, max).await?;
            storage::requests::insert_in(conn, &r).await?;
            let step = events::Step {
                kind: MACHINE.kind,
                id: &r.id,
                at: r.created_at,
                actor: "subject",
                from: None,
                to: r.status.as_str(),
                note: None,
            };
            events::record(conn, &step).await?;
            signals::bump(&mut *conn, signals::OBJECTIONS, None).await?;
            Ok(())
        })
    })
    .then(refresh)
}

/// After a commit: the marks of the request's record, refreshed (or left to the replica
/// signal if that fails).
fn after_commit(state: &Core, r: &Request) -> impl std::future::Future<Output = ()> + use<> {
    let (state, r) = (state.clone(), r.clone());
    async move {
        let Ok(kind) = r.subject_type.parse::<crate::domain::SubjectType>() else {
            return;
        };
        if let Err(e) = state
            .marks
            .refresh(&state.db, &r.store, kind, &r.record_ref)
            .await
        {
            tracing::warn!(error = %e, "marks not refreshed; the replica signal will");
        }
    }
}

/// The subject's own request, or `NotFound` (another subject's id answers exactly like a
/// missing one). Own means the same id and the same type.
pub async fn own(db: &Db, subject: &SubjectId, id: &str) -> Result<Request, WorkflowError> {
    match storage::requests::get(db, id).await? {
        Some(r) if subject.is_named(&r.subject_id, &r.subject_type) => Ok(r),
        _ => Err(not_found()),
    }
}

pub async fn get(db: &Db, id: &str) -> Result<Request, WorkflowError> {
    storage::requests::get(db, id).await?.ok_or_else(not_found)
}

fn not_found() -> WorkflowError {
    WorkflowError::NotFound("no such request".into())
}

pub async fn history(db: &Db, id: &str) -> Result<Vec<Value>, StorageError> {
    events::history(db, MACHINE.kind, id).await
}

/// A handler's move of a request (the body of its transitions route).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    pub to: String,
    #[serde(default)]
    pub note: Option<String>,
    /// On a final move: what the subject reads (the note, if none is given).
    #[serde(default)]
    pub answer: Option<String>,
}

/// The request as a checked move leaves it: status, deadline, outcome and answer.
pub fn moved(
    r: &Request,
    req: TransitionRequest,
    days: &super::RequestDeadlines,
    now: i64,
) -> Result<(Request, Option<String>), WorkflowError> {
    let to = MACHINE.parse(&req.to)?;
    let note = text::NOTE.clean_or_none(req.note.as_deref())?;
    let answer = ANSWER.clean_or_none(req.answer.as_deref())?;
    MACHINE.check(r.status, to, Actor::Handler)?;
    if to == Status::Lifted && r.kind != Kind::Restriction {
        return Err(WorkflowError::Conflict(format!(
            "only a restriction can be lifted; this request is a {}",
            r.kind.as_str()
        )));
    }
    if matches!(to, Status::Refused | Status::Declined | Status::Lifted) && note.is_none() {
        return Err(WorkflowError::BadRequest(format!(
            "a request is {} only with a note giving the reason",
            to.as_str()
        )));
    }
    if answer.is_some() && !to.is_final() {
        return Err(WorkflowError::BadRequest(
            "an answer goes with the final move (completed, refused or declined)".into(),
        ));
    }
    let mut n = r.clone();
    n.status = to;
    n.updated_at = now;
    match to {
        Status::Accepted => {
            n.finish_due_at = Some(add_working_days(now, days.finish_working_days));
        }
        Status::Extended => {
            let from = r.finish_due_at.unwrap_or(now);
            n.finish_due_at = Some(add_working_days(from, days.extension_working_days));
        }
        _ => {}
    }
    if to == Status::Lifted {
        // The completion's answer stays unless the handler writes one for the lift.
        n.outcome = Some(to.as_str().into());
        n.answer = answer.or(r.answer.clone());
    } else if to.is_final() {
        n.outcome = Some(to.as_str().into());
        n.answer = answer.or(note.clone());
    }
    Ok((n, note))
}

/// Checks a handler's move and defers it, with its deadline, outcome and answer, to the audit
/// record's transaction. Returns the request as it will be.
pub fn decide(
    state: &Core,
    r: Request,
    req: TransitionRequest,
    actor: String,
) -> Result<(Request, Deferred), WorkflowError> {
    let now = state.clock.now();
    let (after, note) = moved(&r, req, &state.config.workflows.requests, now)?;
    let mv = machine::Move {
        id: r.id.clone(),
        from: r.status,
        to: after.status,
        by: Actor::Handler,
        actor,
        note,
        at: now,
    };
    let refresh = after_commit(state, &after);
    let written = Arc::new(after.clone());
    let extra: Extra = Arc::new(move |conn| {
        let n = written.clone();
        Box::pin(async move {
            let (due, outcome, answer) =
                (n.finish_due_at, n.outcome.as_deref(), n.answer.as_deref());
            storage::requests::set_details_in(&mut *conn, &n.id, due, outcome, answer).await?;
            if matches!(n.status, Status::Completed | Status::Lifted) {
                storage::objections::enqueue_in(&mut *conn, &n.delivery(), now).await?;
            }
            signals::bump(&mut *conn, signals::OBJECTIONS, None).await?;
            Ok(())
        })
    });
    Ok((after, MACHINE.deferred(mv, Some(extra)).then(refresh)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Actor::Handler;
    use Status::*;

    const MON_10: i64 = 1_764_583_200_000_000; // 2025-12-01T10:00:00Z, a Monday
    const DAY: i64 = 86_400 * 1_000_000;

    fn request(status: Status) -> Request {
        Request {
            id: "rq_1".into(),
            subject_id: "91350100M000100Y43".into(),
            subject_type: "legal".into(),
            kind: Kind::Repair,
            store: "power".into(),
            dataset: "penalties".into(),
            record_ref: "91350100M000100Y43".into(),
            reason: "repaired".into(),
            status,
            created_at: MON_10,
            updated_at: MON_10,
            accept_due_at: add_working_days(MON_10, 3),
            finish_due_at: None,
            outcome: None,
            answer: None,
        }
    }

    #[test]
    fn only_a_completed_restriction_offers_a_lift() {
        let repair = request(Status::Completed);
        assert!(!repair.handler_moves().contains(&Status::Lifted));
        let restriction = Request {
            kind: Kind::Restriction,
            ..request(Status::Completed)
        };
        assert_eq!(restriction.handler_moves(), [Status::Lifted]);
        assert!(
            request(Status::Submitted)
                .handler_moves()
                .contains(&Status::Accepted)
        );
    }

    fn to(s: &str, note: Option<&str>) -> TransitionRequest {
        TransitionRequest {
            to: s.into(),
            note: note.map(Into::into),
            answer: None,
        }
    }

    #[test]
    fn the_request_machine_allows_exactly_its_table_and_one_extension() {
        machine::assert_exactly(
            &MACHINE,
            &[
                (Submitted, Accepted, Handler),
                (Submitted, Refused, Handler),
                (Accepted, Extended, Handler),
                (Accepted, Completed, Handler),
                (Accepted, Declined, Handler),
                (Extended, Completed, Handler),
                (Extended, Declined, Handler),
                (Completed, Lifted, Handler),
            ],
        );
        assert!(
            !MACHINE.may_go(Extended, Extended, Handler),
            "extendable once"
        );
    }

    #[test]
    fn deadlines_run_in_working_days_and_extend_once_by_ten() {
        let days = crate::workflows::RequestDeadlines::default();
        let r = request(Submitted);
        // Monday + 3 working days = Thursday.
        assert_eq!(r.accept_due_at, MON_10 + 3 * DAY);
        let (a, _) = moved(&r, to("accepted", None), &days, MON_10).unwrap();
        // Monday + 7 working days = Wednesday of the next week.
        assert_eq!(a.finish_due_at, Some(MON_10 + 9 * DAY));
        let (e, _) = moved(&a, to("extended", None), &days, MON_10).unwrap();
        // Wednesday + 10 working days = Wednesday two weeks later.
        assert_eq!(e.finish_due_at, Some(MON_10 + 23 * DAY));
        assert!(e.overdue(MON_10 + 24 * DAY) && !e.overdue(MON_10 + 23 * DAY));
        let again = moved(&e, to("extended", None), &days, MON_10);
        assert!(
            matches!(again, Err(WorkflowError::Conflict(why)) if why.contains("completed, declined"))
        );
    }

    #[test]
    fn only_a_completed_restriction_is_lifted_and_only_with_a_note() {
        let days = crate::workflows::RequestDeadlines::default();
        let mut r = request(Completed);
        r.answer = Some("restricted as asked".into());
        let repair = moved(&r, to("lifted", Some("x")), &days, MON_10);
        assert!(matches!(repair, Err(WorkflowError::Conflict(why)) if why.contains("restriction")));
        r.kind = Kind::Restriction;
        assert!(r.restricts());
        let bare = moved(&r, to("lifted", None), &days, MON_10);
        assert!(matches!(bare, Err(WorkflowError::BadRequest(_))));
        let (n, note) = moved(&r, to("lifted", Some("court order ended")), &days, MON_10).unwrap();
        assert_eq!(n.status, Lifted);
        assert!(!n.restricts());
        assert_eq!(note.as_deref(), Some("court order ended"));
        assert_eq!(n.answer.as_deref(), Some("restricted as asked"));
        assert!(n.delivery().id.starts_with("rql_"));
        assert!(n.delivery().payload.contains("restriction_lifted"));
        let open = request(Accepted);
        assert!(moved(&open, to("lifted", Some("x")), &days, MON_10).is_err());
    }

    #[test]
    fn a_refusal_or_decline_needs_a_reason_that_becomes_the_answer() {
        let days = crate::workflows::RequestDeadlines::default();
        let r = request(Submitted);
        let bare = moved(&r, to("refused", None), &days, MON_10);
        assert!(matches!(bare, Err(WorkflowError::BadRequest(_))));
        let (n, _) = moved(&r, to("refused", Some("not your record")), &days, MON_10).unwrap();
        assert_eq!(
            (n.outcome.as_deref(), n.answer.as_deref()),
            (Some("refused"), Some("not your record"))
        );
        assert_eq!(n.due_at(), None);
        let unknown = moved(&r, to("approved", None), &days, MON_10);
        assert!(matches!(unknown, Err(WorkflowError::BadRequest(_))));
    }
}
