//! The one pattern every workflow follows: a typed status, one transition table saying who may
//! move an item from what to what, and one guarded move that writes the new status and a
//! history row in the transaction of the caller's audit record (`audit::Deferred`). Handlers
//! never compare status strings; they ask the machine.

use std::sync::Arc;

use sqlx::AnyConnection;

use super::{WorkflowError, events};
use crate::{
    audit::{ChangeError, Deferred, Pending, Refused},
    storage::StorageError,
};

/// Who moves an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The data subject the item is about (withdrawing an objection).
    Subject,
    /// A member of staff with the `objection_handler` role.
    Handler,
    /// The outbox, when the store confirms receipt.
    Delivery,
}

/// A workflow's status enum. `ALL` lists every status, so parsing and error messages come from
/// one place and an unknown status string is refused, never guessed.
pub trait Status: Copy + Eq + std::fmt::Debug + Send + Sync + 'static {
    const ALL: &'static [Self];

    fn as_str(self) -> &'static str;

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|x| x.as_str() == s)
    }
}

/// One workflow's state machine: its name in the history, its table, and every allowed move.
pub struct Machine<S: 'static> {
    /// The item's kind in `workflow_events` ("objection", "complaint", ...).
    pub kind: &'static str,
    pub table: events::Table,
    /// (from, to, who may make the move): the whole state machine.
    pub moves: &'static [(S, S, Actor)],
}

/// A decided move, as the guarded update writes it.
#[derive(Debug, Clone)]
pub struct Move<S> {
    pub id: String,
    pub from: S,
    pub to: S,
    pub by: Actor,
    /// Who, as the history names them: a client id, `subject`, `outbox`.
    pub actor: String,
    pub note: Option<String>,
    pub at: i64,
}

impl<S: Status> Move<S> {
    /// The history row this move will write, as `events::history` shows it: what a handler is
    /// answered before the commit.
    pub fn step_view(&self) -> serde_json::Value {
        serde_json::json!({"at": crate::storage::micros_to_rfc3339(self.at), "by": self.actor,
                           "from": self.from.as_str(), "to": self.to.as_str(), "note": self.note})
    }
}

/// What a workflow writes besides the status and the history row (its own columns, a
/// lockdown, an outbox row), in the same transaction, after the guarded update succeeded.
pub type Extra = Arc<dyn for<'a> Fn(&'a mut AnyConnection) -> Pending<'a> + Send + Sync>;

impl<S: Status> Machine<S> {
    pub fn may_go(&self, from: S, to: S, by: Actor) -> bool {
        self.moves
            .iter()
            .any(|&(f, t, a)| f == from && t == to && a == by)
    }

    /// The statuses `by` may move an item in `from` to, in table order.
    pub fn next(&self, from: S, by: Actor) -> Vec<S> {
        self.moves
            .iter()
            .filter(|&&(f, _, a)| f == from && a == by)
            .map(|&(_, t, _)| t)
            .collect()
    }

    /// A status named by a caller; an unknown name is a bad request that lists the known ones.
    pub fn parse(&self, s: &str) -> Result<S, WorkflowError> {
        S::parse(s).ok_or_else(|| {
            WorkflowError::BadRequest(format!(
                "unknown status; {} statuses are: {}",
                self.kind,
                names(S::ALL.iter().copied())
            ))
        })
    }

    /// Refuses a move the table does not allow, naming the moves it does allow (409).
    pub fn check(&self, from: S, to: S, by: Actor) -> Result<(), WorkflowError> {
        if self.may_go(from, to, by) {
            return Ok(());
        }
        let next = self.next(from, by);
        let allowed = if next.is_empty() {
            "none".to_string()
        } else {
            names(next.into_iter())
        };
        Err(WorkflowError::Conflict(format!(
            "the {} is {} and cannot become {}; allowed next states: {allowed}",
            self.kind,
            from.as_str(),
            to.as_str()
        )))
    }

    /// The guarded move inside the caller's transaction: the status changes only if it is still
    /// `from` (so of two concurrent moves one wins) and the history row is written with it.
    /// `Ok(false)`: illegal, or the item moved meanwhile; nothing was written.
    pub async fn apply_in(
        &self,
        conn: &mut AnyConnection,
        m: &Move<S>,
    ) -> Result<bool, StorageError> {
        if !self.may_go(m.from, m.to, m.by) {
            return Ok(false);
        }
        let step = events::Step {
            kind: self.kind,
            id: &m.id,
            at: m.at,
            actor: &m.actor,
            from: Some(m.from.as_str()),
            to: m.to.as_str(),
            note: m.note.as_deref(),
        };
        events::advance(conn, self.table, &step).await
    }

    /// The move (and `extra`) deferred to the audit record's transaction: refused with 409 if
    /// the item moved meanwhile, so the refusal is what gets recorded.
    pub fn deferred(&'static self, m: Move<S>, extra: Option<Extra>) -> Deferred {
        let m = Arc::new(m);
        Deferred::new(move |conn| {
            let (m, extra) = (m.clone(), extra.clone());
            Box::pin(async move {
                if !self.apply_in(conn, &m).await? {
                    return Err(ChangeError::Refused(Refused::Conflict(format!(
                        "the {} changed meanwhile; it cannot become {}",
                        self.kind,
                        m.to.as_str()
                    ))));
                }
                match extra {
                    Some(f) => f(conn).await,
                    None => Ok(()),
                }
            })
        })
    }
}

fn names<S: Status>(it: impl Iterator<Item = S>) -> String {
    it.map(Status::as_str).collect::<Vec<_>>().join(", ")
}

/// Checks one machine's table against the moves it must and must not allow: every listed move
/// is allowed for its actor and no other, every other pair is refused with the allowed next
/// states named. Used by each workflow's unit tests.
#[cfg(test)]
pub fn assert_exactly<S: Status>(m: &Machine<S>, allowed: &[(S, S, Actor)]) {
    for &from in S::ALL {
        for &to in S::ALL {
            for by in [Actor::Subject, Actor::Handler, Actor::Delivery] {
                let want = allowed.contains(&(from, to, by));
                assert_eq!(m.may_go(from, to, by), want, "{from:?} -> {to:?} by {by:?}");
                match m.check(from, to, by) {
                    Ok(()) => assert!(want),
                    Err(WorkflowError::Conflict(why)) => {
                        assert!(!want);
                        for n in m.next(from, by) {
                            assert!(why.contains(n.as_str()), "{why}");
                        }
                        if m.next(from, by).is_empty() {
                            assert!(why.ends_with("none"), "{why}");
                        }
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }
}
