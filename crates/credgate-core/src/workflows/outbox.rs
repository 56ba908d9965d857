//! The transactional outbox: an accepted objection's delivery is written in the same transaction
//! as the acceptance, and a deliverer retries it with backoff until the store confirms, across
//! restarts. The delivery's id is the idempotency key, so a redelivery is the same ticket.
//! The same task watches deadlines and raises an alert for each overdue objection, complaint
//! and subject request. Every replica
//! runs it; claims and guarded updates make each delivery and each alert happen once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::json;

use super::objections::{self, Actor, Objection, Status};
use crate::{
    audit::Deferred,
    services::Core,
    storage::{
        self, StorageError,
        complaints::{Alerted, DeadlineClaim},
        objections::Delivery,
    },
};

pub async fn enqueue(
    conn: &mut sqlx::AnyConnection,
    o: &Objection,
    now: i64,
) -> Result<(), StorageError> {
    let payload = json!({
        "objection_id": o.id, "dataset": o.dataset, "record_ref": o.record_ref,
        "field": o.field, "reason": o.reason, "requested_correction": o.requested_correction,
    });
    let d = Delivery {
        id: format!("dl_{}", uuid::Uuid::now_v7().simple()),
        objection_id: o.id.clone(),
        store: o.store.clone(),
        payload: payload.to_string(),
        attempts: 0,
    };
    storage::objections::enqueue_in(conn, &d, now).await
}

/// Asks the store, through this same outbox, to delete records past the retention limit
/// (征信业管理条例 art. 16: 超过5年的，应当予以删除): the change the audit layer commits with the
/// read's record, so a request is queued only with the record of the read that found it. The
/// delivery id is derived from the store, dataset, subject and record, so every later read of
/// it finds the request already queued, and rows of different subjects never share one; the
/// deliverer posts it like an objection (`kind: deletion`) and, finding no objection of that
/// id, only marks it delivered. Records without a store (not released by the gateway) are
/// skipped.
///
/// A request this replica queued within `RecentDeletions::RECHECK_US` is not written again:
/// every read of an expired record would otherwise turn a plain read into a write
/// transaction (11% of a 100-row list's instructions in the benchmark, and SQLite's one
/// writer). `None` when nothing is left to queue: the read takes the batched path.
pub fn deletions(
    expired: Vec<crate::policy::Expired>,
    now: i64,
    recent: &Arc<RecentDeletions>,
) -> Option<Deferred> {
    let rows: Vec<(String, String, String)> = expired
        .iter()
        .filter_map(|e| Some((deletion(e)?, e.store.clone()?)))
        .map(|((id, payload), store)| (id, store, payload))
        .filter(|(id, _, _)| !recent.queued_lately(id, now))
        .collect();
    if rows.is_empty() {
        return None;
    }
    let (rows, recent) = (Arc::new(rows), recent.clone());
    Some(Deferred::new(move |conn| {
        let (rows, recent) = (rows.clone(), recent.clone());
        Box::pin(async move {
            for (id, store, payload) in rows.iter() {
                storage::objections::enqueue_deletion_in(&mut *conn, id, store, payload, now)
                    .await?;
            }
            // Noted inside the transaction: should its commit fail, this replica asks again
            // only after `RECHECK_US`, and the insert is idempotent either way.
            recent.note(rows.iter().map(|(id, _, _)| id.clone()), now);
            Ok(())
        })
    }))
}

/// Deletion requests this replica wrote, by delivery id, with when. Bounded: past `CAP`
/// entries the stale ones go, and if none are stale all go (a forgotten id costs one
/// idempotent insert, never a missed deletion).
#[derive(Default)]
pub struct RecentDeletions(Mutex<HashMap<String, i64>>);

impl RecentDeletions {
    const RECHECK_US: i64 = 10 * 60 * 1_000_000;
    const CAP: usize = 100_000;

    fn queued_lately(&self, id: &str, now: i64) -> bool {
        let seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(id).is_some_and(|t| now - t < Self::RECHECK_US)
    }

    fn note(&self, ids: impl Iterator<Item = String>, now: i64) {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= Self::CAP {
            seen.retain(|_, t| now - *t < Self::RECHECK_US);
            if seen.len() >= Self::CAP {
                seen.clear();
            }
        }
        seen.extend(ids.map(|id| (id, now)));
    }
}

/// The delivery id and payload of one deletion request.
fn deletion(e: &crate::policy::Expired) -> Option<(String, String)> {
    let store = e.store.as_deref()?;
    let subject = e.subject.as_deref().unwrap_or("");
    let key = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{store}\n{}\n{subject}\n{}", e.dataset, e.record_ref).as_bytes(),
    );
    let id = format!("del_{}", &hex::encode(key.as_ref())[..32]);
    let payload = json!({
        "kind": "deletion", "dataset": e.dataset.as_ref(), "subject": e.subject,
        "record_ref": e.record_ref,
        "reason": "retention period ended (征信业管理条例 art. 16)",
    });
    Some((id, payload.to_string()))
}

/// Backoff after `attempts` failures: 1 s, 2 s, 4 s ... capped at five minutes.
pub fn backoff_us(attempts: i64) -> i64 {
    (1_000_000i64 << attempts.clamp(0, 9)).min(300 * 1_000_000)
}

pub fn spawn(state: Core) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(state.config.workflows.poll_ms));
        loop {
            tick.tick().await;
            if let Err(e) = deliver_due(&state).await {
                tracing::warn!(error = %e, "outbox pass failed");
            }
            if let Err(e) = watch_deadlines(&state).await {
                tracing::warn!(error = %e, "deadline pass failed");
            }
        }
    })
}

async fn deliver_due(state: &Core) -> Result<(), StorageError> {
    let now = state.clock.now();
    for d in storage::objections::due_deliveries(&state.db, now).await? {
        let store = state.stores.get(&d.store);
        let attempt_takes = store.map_or(Duration::ZERO, |s| s.response_timeout());
        if !claim(state, &d.id, now, attempt_takes).await? {
            continue;
        }
        let outcome = match store {
            Some(store) => {
                store
                    .deliver_objection(&d.id, d.payload.clone().into_bytes())
                    .await
            }
            None => Err(format!("store `{}` is no longer configured", d.store)),
        };
        match outcome {
            Ok(ticket) => delivered(state, &d, &ticket).await?,
            Err(why) => {
                let retry_at = state.clock.now() + backoff_us(d.attempts);
                let replica = state.replica.as_ref();
                storage::objections::attempted(&state.db, &d.id, replica, retry_at, Err(&why))
                    .await?;
                tracing::warn!(objection = %d.objection_id, store = %d.store, attempts = d.attempts + 1, error = %why, "objection delivery failed; will retry");
            }
        }
    }
    Ok(())
}

/// The store confirmed: the delivery is done and an accepted objection becomes forwarded,
/// with the store's ticket.
async fn delivered(state: &Core, d: &Delivery, ticket: &str) -> Result<(), StorageError> {
    let (replica, now) = (state.replica.as_ref(), state.clock.now());
    storage::objections::attempted(&state.db, &d.id, replica, now, Ok(())).await?;
    if let Some(o) = objections::get(&state.db, &d.objection_id).await?
        && o.status == Status::Accepted
    {
        let note = format!("delivered to store `{}`, ticket {ticket}", d.store);
        let m = objections::Move {
            note: Some(&note),
            correction: None,
            ticket: Some(ticket),
        };
        let by = (Actor::Delivery, "outbox");
        objections::transition(state, &o, Status::Forwarded, by, m).await?;
    }
    tracing::info!(objection = %d.objection_id, store = %d.store, "objection delivered");
    Ok(())
}

/// What a claim holds beyond the longest an attempt may take (the store's response deadline):
/// time to record the outcome. A claim of a replica that died mid-attempt lapses that soon
/// after, and another replica (or the restarted one) takes the delivery over.
const CLAIM_MARGIN: Duration = Duration::from_secs(2);

/// Claims one due delivery for this replica. The guarded update succeeds for one deliverer
/// only; the others skip the row. Should a claim lapse while its attempt is still being
/// recorded, the redelivery carries the same idempotency key: the store keeps one ticket.
async fn claim(
    state: &Core,
    id: &str,
    now: i64,
    attempt_takes: Duration,
) -> Result<bool, StorageError> {
    let lease_us = (attempt_takes + CLAIM_MARGIN).as_micros() as i64;
    let replica = state.replica.as_ref();
    storage::objections::claim_delivery(&state.db, id, replica, now + lease_us, now).await
}

/// Raises one alert for each deadline passed: an objection's acceptance or decision, a
/// complaint's handling, a request's acceptance or completion (a request's extended deadline is
/// alerted again). Every replica watches; the guarded claims let one of them raise each alert.
async fn watch_deadlines(state: &Core) -> Result<(), StorageError> {
    let now = state.clock.now();
    let db = &state.db;
    for (id, what) in storage::objections::overdue_unalerted(db, now).await? {
        if !storage::objections::set_alerted(db, &id, true).await? {
            continue;
        }
        let detail = format!("objection {id} is past its {what} deadline");
        if let Err(e) = alert(state, "objection-overdue", &detail).await {
            // Give the alert back, so that a later pass raises it.
            storage::objections::set_alerted(db, &id, false).await?;
            return Err(e);
        }
    }
    for (id, due) in storage::complaints::overdue_unalerted(db, now).await? {
        let claim = DeadlineClaim {
            table: Alerted::Complaints,
            id: &id,
            due,
        };
        let detail = format!("complaint {id} is past its handling deadline");
        raise_once(state, &claim, "complaint-overdue", &detail).await?;
    }
    for (id, due, what) in storage::requests::overdue_unalerted(db, now).await? {
        let claim = DeadlineClaim {
            table: Alerted::Requests,
            id: &id,
            due,
        };
        let detail = format!("request {id} is past its {what} deadline");
        raise_once(state, &claim, "request-overdue", &detail).await?;
    }
    Ok(())
}

/// Claims the deadline's one alert and raises it, or gives the claim back if it cannot.
async fn raise_once(
    state: &Core,
    claim: &DeadlineClaim<'_>,
    rule: &str,
    detail: &str,
) -> Result<(), StorageError> {
    if !claim.take(&state.db).await? {
        return Ok(());
    }
    if let Err(e) = alert(state, rule, detail).await {
        claim.give_back(&state.db).await?;
        return Err(e);
    }
    Ok(())
}

async fn alert(state: &Core, rule: &str, detail: &str) -> Result<(), StorageError> {
    crate::audit::alerts::insert(&state.db, rule, None, detail, &[]).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Expired;

    fn expired(subject: &str) -> Expired {
        Expired {
            dataset: "person.records".into(),
            subject: Some(subject.into()),
            record_ref: "r1".into(),
            store: Some("power".into()),
        }
    }

    #[test]
    fn a_deletion_queued_lately_is_not_written_again_until_the_recheck() {
        let recent = Arc::new(RecentDeletions::default());
        let t0 = 1_000_000_000;
        assert!(deletions(vec![expired("A")], t0, &recent).is_some());
        // The change ran (as inside the read's transaction): A is noted.
        let (id, _) = deletion(&expired("A")).unwrap();
        recent.note(std::iter::once(id), t0);
        assert!(deletions(vec![expired("A")], t0 + 1, &recent).is_none());
        assert!(
            deletions(vec![expired("A"), expired("B")], t0 + 1, &recent).is_some(),
            "B was never queued"
        );
        let later = t0 + RecentDeletions::RECHECK_US;
        assert!(deletions(vec![expired("A")], later, &recent).is_some());
    }

    #[test]
    fn the_memory_of_queued_deletions_is_bounded() {
        let recent = RecentDeletions::default();
        let ids = (0..RecentDeletions::CAP).map(|i| format!("del_{i}"));
        recent.note(ids, 0);
        recent.note(std::iter::once("del_new".to_string()), 1);
        let seen = recent.0.lock().unwrap();
        assert!(seen.len() <= RecentDeletions::CAP);
        assert!(seen.contains_key("del_new"));
    }
}
