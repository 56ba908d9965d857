//! Complaints: a data subject complains about an institution's use of their data. A handler
//! investigates within the regulation's deadline (`[workflows] complaint_days`), sees the audit
//! records of that org touching that subject, and upholds (optionally locking the org out at
//! once) or dismisses it, the latter only with a reason; the subject reads the answer.

use serde::Deserialize;
use serde_json::{Value, json};

use std::sync::Arc;

use super::{
    WorkflowError,
    events::{self, Table},
    machine::{self, Actor, Extra, Machine},
    text::{self, Field},
};
use crate::{
    audit::{Deferred, store as audit_store},
    domain::{SubjectId, names::is_name},
    services::Core,
    storage::{self, Db, StorageError, micros_to_rfc3339},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Submitted,
    Investigating,
    Upheld,
    Dismissed,
    Closed,
}

impl machine::Status for Status {
    const ALL: &'static [Self] = &[
        Status::Submitted,
        Status::Investigating,
        Status::Upheld,
        Status::Dismissed,
        Status::Closed,
    ];

    fn as_str(self) -> &'static str {
        Status::as_str(self)
    }
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Submitted => "submitted",
            Status::Investigating => "investigating",
            Status::Upheld => "upheld",
            Status::Dismissed => "dismissed",
            Status::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        <Self as machine::Status>::parse(s)
    }

    /// Still to be decided: its deadline runs.
    pub fn is_open(self) -> bool {
        matches!(self, Status::Submitted | Status::Investigating)
    }
}

/// submitted -> investigating -> upheld | dismissed -> closed, all by a handler.
pub static MACHINE: Machine<Status> = {
    use Actor::Handler;
    use Status::*;
    Machine {
        kind: "complaint",
        table: Table::Complaints,
        moves: &[
            (Submitted, Investigating, Handler),
            (Investigating, Upheld, Handler),
            (Investigating, Dismissed, Handler),
            (Upheld, Closed, Handler),
            (Dismissed, Closed, Handler),
        ],
    }
};

pub const CATEGORIES: &[&str] = &[
    "unauthorized_access",
    "purpose_misuse",
    "excessive_query",
    "data_leak",
    "other",
];

pub const DESCRIPTION: Field = Field::many("description", 4000);
pub const ANSWER: Field = Field::many("answer", 4000);

#[derive(Debug, Clone)]
pub struct Complaint {
    pub id: String,
    pub subject_id: String,
    pub subject_type: String,
    pub against_org: String,
    pub category: String,
    pub description: String,
    pub status: Status,
    /// upheld or dismissed, once decided.
    pub outcome: Option<String>,
    /// What the subject reads: the handler's answer to the complaint.
    pub answer: Option<String>,
    pub due_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Complaint {
    pub fn overdue(&self, now: i64) -> bool {
        self.status.is_open() && now > self.due_at
    }

    /// What the subject reads (the handlers' view adds who filed it).
    pub fn view(&self, now: i64) -> Value {
        json!({
            "id": self.id,
            "against_org": self.against_org,
            "category": self.category,
            "description": self.description,
            "status": self.status.as_str(),
            "outcome": self.outcome,
            "answer": self.answer,
            "due_at": self.status.is_open().then(|| micros_to_rfc3339(self.due_at)),
            "handle_by": micros_to_rfc3339(self.due_at),
            "overdue": self.overdue(now),
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

/// A data subject's complaint as filed (the body of `POST /subject/complaints`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    pub against_org: String,
    pub category: String,
    pub description: String,
}

/// A new complaint from the caller's submission, checked and normalised, due by the policy's
/// handling deadline.
pub fn prepare(
    state: &Core,
    subject: &SubjectId,
    req: Submission,
) -> Result<Complaint, WorkflowError> {
    if !is_name(&req.against_org) {
        return Err(WorkflowError::BadRequest(
            "against_org is not an org id".into(),
        ));
    }
    if !CATEGORIES.contains(&req.category.as_str()) {
        return Err(WorkflowError::BadRequest(format!(
            "category is one of: {}",
            CATEGORIES.join(", ")
        )));
    }
    let now = state.clock.now();
    Ok(Complaint {
        id: format!("cp_{}", uuid::Uuid::now_v7().simple()),
        subject_id: subject.as_str().into(),
        subject_type: subject.subject_type().as_str().into(),
        against_org: req.against_org,
        category: req.category,
        description: DESCRIPTION.clean(&req.description)?,
        status: Status::Submitted,
        outcome: None,
        answer: None,
        due_at: super::add_days(now, state.config.workflows.complaint_days),
        created_at: now,
        updated_at: now,
    })
}

/// Files the complaint and its first history row in the audit record's transaction.
pub fn filing(c: Complaint) -> Deferred {
    let c = Arc::new(c);
    Deferred::new(move |conn| {
        let c = c.clone();
        Box::pin(async move {
            storage::complaints::insert_in(conn, &c).await?;
            let step = events::Step {
                kind: MACHINE.kind,
                id: &c.id,
                at: c.created_at,
                actor: "subject",
                from: None,
                to: c.status.as_str(),
                note: None,
            };
            Ok(events::record(conn, &step).await?)
        })
    })
}

/// The subject's own complaint, or `NotFound` (another subject's id answers exactly like a
/// missing one). Own means the same id and the same type.
pub async fn own(db: &Db, subject: &SubjectId, id: &str) -> Result<Complaint, WorkflowError> {
    match storage::complaints::get(db, id).await? {
        Some(c) if subject.is_named(&c.subject_id, &c.subject_type) => Ok(c),
        _ => Err(not_found()),
    }
}

pub async fn get(db: &Db, id: &str) -> Result<Complaint, WorkflowError> {
    storage::complaints::get(db, id)
        .await?
        .ok_or_else(not_found)
}

fn not_found() -> WorkflowError {
    WorkflowError::NotFound("no such complaint".into())
}

pub async fn history(db: &Db, id: &str) -> Result<Vec<Value>, StorageError> {
    events::history(db, MACHINE.kind, id).await
}

/// The audit records of the complaint's org touching its subject: what the handler weighs.
pub async fn accesses(db: &Db, c: &Complaint) -> Result<Vec<Value>, StorageError> {
    let bounds = audit_store::Bounds {
        org: Some(c.against_org.clone()),
        subject: Some(c.subject_id.clone()),
        ..Default::default()
    };
    let records = audit_store::search(db, &bounds, None, 200, None).await?;
    Ok(records
        .iter()
        .map(|a| json!({"id": a.id, "time": micros_to_rfc3339(a.time_us), "client_id": a.client_id,
                        "role": a.role, "purpose": a.purpose, "store": a.store, "dataset": a.dataset,
                        "decision": a.decision, "status": a.status}))
        .collect())
}

/// A handler's move of a complaint (the body of its transitions route).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    pub to: String,
    #[serde(default)]
    pub note: Option<String>,
    /// On `upheld` or `dismissed`: what the subject reads (the note, if none is given).
    #[serde(default)]
    pub answer: Option<String>,
}

/// A checked move: the note and answer normalised, the dismissal's reason present. There is no
/// `lockdown` field (refused as unknown): a lockdown is the security officer's alone, and the org
/// a complaint names is the subject's free choice, so upholding one only proposes a lockdown.
struct Decided {
    to: Status,
    note: Option<String>,
    answer: Option<String>,
}

fn check(c: &Complaint, req: TransitionRequest) -> Result<Decided, WorkflowError> {
    let to = MACHINE.parse(&req.to)?;
    let note = text::NOTE.clean_or_none(req.note.as_deref())?;
    let answer = ANSWER.clean_or_none(req.answer.as_deref())?;
    MACHINE.check(c.status, to, Actor::Handler)?;
    let decision = matches!(to, Status::Upheld | Status::Dismissed);
    if to == Status::Dismissed && note.is_none() {
        return Err(WorkflowError::BadRequest(
            "a dismissal needs a note with the reason".into(),
        ));
    }
    if answer.is_some() && !decision {
        return Err(WorkflowError::BadRequest(
            "an answer goes with the decision (upheld or dismissed)".into(),
        ));
    }
    let answer = if decision {
        answer.or(note.clone())
    } else {
        None
    };
    Ok(Decided { to, note, answer })
}

/// Checks a handler's move and defers it, with the decision's answer, to the audit record's
/// transaction: all of it commits, or none. After an upheld complaint commits, the security
/// officer is alerted to decide on a lockdown of the org. Returns what the handler is answered.
pub fn decide(
    state: &Core,
    c: Complaint,
    req: TransitionRequest,
    actor: String,
) -> Result<(Value, Deferred), WorkflowError> {
    let Decided { to, note, answer } = check(&c, req)?;
    let now = state.clock.now();
    let mut after = c.clone();
    after.status = to;
    if matches!(to, Status::Upheld | Status::Dismissed) {
        after.outcome = Some(to.as_str().into());
        after.answer = answer.clone().or(after.answer);
    }
    let v = after.view(now);
    let mv = machine::Move {
        id: c.id.clone(),
        from: c.status,
        to,
        by: Actor::Handler,
        actor,
        note,
        at: now,
    };
    let done = {
        let (state, id, org) = (state.clone(), c.id.clone(), c.against_org.clone());
        async move {
            if to == Status::Upheld {
                propose_lockdown(&state, &id, &org).await;
            }
        }
    };
    let extra = decision_extra(c.id, to, answer);
    Ok((v, MACHINE.deferred(mv, Some(extra)).then(done)))
}

/// Raised after the upheld decision committed: the officer decides whether the org is locked
/// down. A failure is logged, not answered: the decision itself stands.
async fn propose_lockdown(state: &Core, id: &str, org: &str) {
    let detail =
        format!("complaint {id} against org {org} was upheld: consider a lockdown of {org}");
    if let Err(e) =
        crate::audit::alerts::insert(&state.db, "complaint-upheld", None, &detail, &[]).await
    {
        tracing::error!(complaint = %id, error = %e, "the lockdown proposal could not be raised");
    }
}

/// The decision's outcome and answer, written after the guarded move.
fn decision_extra(id: String, to: Status, answer: Option<String>) -> Extra {
    let parts = Arc::new((id, answer));
    Arc::new(move |conn| {
        let parts = parts.clone();
        Box::pin(async move {
            let (id, answer) = &*parts;
            if matches!(to, Status::Upheld | Status::Dismissed) {
                storage::complaints::decide_in(conn, id, to, answer.as_deref()).await?;
            }
            Ok(())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Actor::Handler;
    use Status::*;

    fn complaint(status: Status) -> Complaint {
        Complaint {
            id: "cp_1".into(),
            subject_id: "91350100M000100Y43".into(),
            subject_type: "legal".into(),
            against_org: "bank-a".into(),
            category: "other".into(),
            description: "x".into(),
            status,
            outcome: None,
            answer: None,
            due_at: 100,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn req(to: &str, note: Option<&str>, answer: Option<&str>, _: bool) -> TransitionRequest {
        TransitionRequest {
            to: to.into(),
            note: note.map(Into::into),
            answer: answer.map(Into::into),
        }
    }

    #[test]
    fn the_complaint_machine_allows_exactly_its_table() {
        machine::assert_exactly(
            &MACHINE,
            &[
                (Submitted, Investigating, Handler),
                (Investigating, Upheld, Handler),
                (Investigating, Dismissed, Handler),
                (Upheld, Closed, Handler),
                (Dismissed, Closed, Handler),
            ],
        );
    }

    #[test]
    fn a_dismissal_needs_a_reason_and_the_answer_defaults_to_it() {
        let c = complaint(Investigating);
        let no_reason = check(&c, req("dismissed", None, Some("no"), false));
        assert!(matches!(no_reason, Err(WorkflowError::BadRequest(_))));
        let d = check(
            &c,
            req("dismissed", Some(" no business link found "), None, false),
        )
        .unwrap();
        assert_eq!(d.answer.as_deref(), Some("no business link found"));
        let d = check(
            &c,
            req("upheld", Some("internal"), Some("we stopped them"), false),
        )
        .unwrap();
        assert_eq!(d.answer.as_deref(), Some("we stopped them"));
        let early = check(
            &complaint(Submitted),
            req("investigating", None, Some("a"), false),
        );
        assert!(matches!(early, Err(WorkflowError::BadRequest(_))));
        let lock = serde_json::from_value::<TransitionRequest>(
            serde_json::json!({"to": "upheld", "lockdown": true}),
        );
        assert!(
            lock.is_err(),
            "a handler's transition cannot carry a lockdown"
        );
        let unknown = check(&c, req("Upheld", None, None, false));
        assert!(matches!(unknown, Err(WorkflowError::BadRequest(_))));
    }

    #[test]
    fn only_an_open_complaint_past_its_deadline_is_overdue() {
        assert!(!complaint(Submitted).overdue(100));
        assert!(complaint(Submitted).overdue(101));
        assert!(complaint(Investigating).overdue(101));
        assert!(!complaint(Dismissed).overdue(101));
    }
}
