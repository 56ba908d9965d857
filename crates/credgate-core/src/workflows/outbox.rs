//! The transactional outbox: an accepted objection's delivery is written in the same transaction
//! as the acceptance, and a deliverer retries it with backoff until the store confirms, across
//! restarts. The delivery's id is the idempotency key, so a redelivery is the same ticket.
//! The same task watches deadlines and raises an alert for each overdue objection. Every replica
//! runs it; claims and guarded updates make each delivery and each alert happen once.

use std::time::Duration;

use serde_json::json;
use sqlx::Row;

use super::objections::{self, Actor, Objection, Status};
use crate::{services::Core, storage::StorageError};

pub async fn enqueue(
    conn: &mut sqlx::AnyConnection,
    o: &Objection,
    now: i64,
) -> Result<(), StorageError> {
    let payload = json!({
        "objection_id": o.id, "dataset": o.dataset, "record_ref": o.record_ref,
        "field": o.field, "reason": o.reason, "requested_correction": o.requested_correction,
    });
    sqlx::query(
        "INSERT INTO outbox (id, objection_id, store, payload, attempts, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, 0, $5, $5)",
    )
    .bind(format!("dl_{}", uuid::Uuid::now_v7().simple()))
    .bind(&o.id)
    .bind(&o.store)
    .bind(payload.to_string())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Asks the store, through this same outbox, to delete records past the retention limit
/// (征信业管理条例 art. 16: 超过5年的，应当予以删除). The delivery id is derived from the
/// record, so every later read of it finds the request already queued; the deliverer posts it
/// like an objection (`kind: deletion`) and, finding no objection of that id, only marks it
/// delivered.
pub async fn request_deletions(
    state: &Core,
    store: &str,
    expired: &[crate::policy::Expired],
) -> Result<(), StorageError> {
    let now = state.clock.now();
    for e in expired {
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
        sqlx::query(
            "INSERT INTO outbox (id, objection_id, store, payload, attempts, next_attempt_at, created_at) \
             VALUES ($1, $1, $2, $3, 0, $4, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&id)
        .bind(store)
        .bind(payload.to_string())
        .bind(now)
        .execute(state.db.pool())
        .await?;
    }
    Ok(())
}

/// The hook on the data path: queues the deletion requests off the request's path (a read
/// never waits on them; the next read of an expired record queues it again if this failed).
pub fn spawn_deletions(state: &Core, store: &str, expired: &[crate::policy::Expired]) {
    let (state, store, expired) = (state.clone(), store.to_string(), expired.to_vec());
    tokio::spawn(async move {
        if let Err(e) = request_deletions(&state, &store, &expired).await {
            tracing::warn!(error = %e, store = %store, "deletion request not queued; the next read retries");
        }
    });
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
    let rows = sqlx::query(
        "SELECT id, objection_id, store, payload, attempts FROM outbox \
         WHERE delivered_at IS NULL AND next_attempt_at <= $1 \
         AND (claimed_until IS NULL OR claimed_until < $1) ORDER BY created_at LIMIT 20",
    )
    .bind(now)
    .fetch_all(state.db.pool())
    .await?;
    for r in rows {
        let id: String = r.try_get("id")?;
        let store_name: String = r.try_get("store")?;
        let store = state.stores.get(&store_name);
        let attempt_takes = store.map_or(Duration::ZERO, |s| s.response_timeout());
        if !claim(state, &id, now, attempt_takes).await? {
            continue;
        }
        let objection_id: String = r.try_get("objection_id")?;
        let payload: String = r.try_get("payload")?;
        let attempts: i64 = r.try_get("attempts")?;
        let outcome = match store {
            Some(store) => store.deliver_objection(&id, payload.into_bytes()).await,
            None => Err(format!("store `{store_name}` is no longer configured")),
        };
        match outcome {
            Ok(ticket) => {
                sqlx::query("UPDATE outbox SET delivered_at = $1, attempts = attempts + 1, last_error = NULL, claimed_until = NULL WHERE id = $2")
                    .bind(state.clock.now())
                    .bind(&id)
                    .execute(state.db.pool())
                    .await?;
                if let Some(o) = objections::get(&state.db, &objection_id).await?
                    && o.status == Status::Accepted
                {
                    let note = format!("delivered to store `{store_name}`, ticket {ticket}");
                    let m = objections::Move {
                        note: Some(&note),
                        correction: None,
                        ticket: Some(&ticket),
                    };
                    objections::transition(
                        state,
                        &o,
                        Status::Forwarded,
                        (Actor::Delivery, "outbox"),
                        m,
                    )
                    .await?;
                }
                tracing::info!(objection = %objection_id, store = %store_name, "objection delivered");
            }
            Err(why) => {
                sqlx::query("UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2, claimed_until = NULL WHERE id = $3")
                    .bind(state.clock.now() + backoff_us(attempts))
                    .bind(&why)
                    .bind(&id)
                    .execute(state.db.pool())
                    .await?;
                tracing::warn!(objection = %objection_id, store = %store_name, attempts = attempts + 1, error = %why, "objection delivery failed; will retry");
            }
        }
    }
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
    let done = sqlx::query(
        "UPDATE outbox SET claimed_by = $1, claimed_until = $2 \
         WHERE id = $3 AND delivered_at IS NULL AND next_attempt_at <= $4 \
         AND (claimed_until IS NULL OR claimed_until < $4)",
    )
    .bind(state.replica.as_ref())
    .bind(now + lease_us)
    .bind(id)
    .bind(now)
    .execute(state.db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

async fn watch_deadlines(state: &Core) -> Result<(), StorageError> {
    let now = state.clock.now();
    let rows = sqlx::query(
        "SELECT id, status, accept_due_at, decide_due_at FROM objections \
         WHERE overdue_alerted = 0 AND status IN ('submitted', 'accepted', 'forwarded', 'answered')",
    )
    .fetch_all(state.db.pool())
    .await?;
    for r in rows {
        let status: String = r.try_get("status")?;
        let due: i64 = if status == "submitted" {
            r.try_get("accept_due_at")?
        } else {
            r.try_get("decide_due_at")?
        };
        if now <= due {
            continue;
        }
        let id: String = r.try_get("id")?;
        let what = if status == "submitted" {
            "acceptance"
        } else {
            "decision"
        };
        // Every replica watches; the guarded update lets one of them raise the alert.
        let mine = sqlx::query(
            "UPDATE objections SET overdue_alerted = 1 WHERE id = $1 AND overdue_alerted = 0",
        )
        .bind(&id)
        .execute(state.db.pool())
        .await?
        .rows_affected()
            == 1;
        if !mine {
            continue;
        }
        if let Err(e) = crate::audit::alerts::insert(
            &state.db,
            "objection-overdue",
            None,
            &format!("objection {id} is past its {what} deadline"),
            &[],
        )
        .await
        {
            // Give the alert back, so that a later pass raises it.
            sqlx::query("UPDATE objections SET overdue_alerted = 0 WHERE id = $1")
                .bind(&id)
                .execute(state.db.pool())
                .await?;
            return Err(e);
        }
    }
    Ok(())
}
