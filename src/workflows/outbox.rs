//! The transactional outbox: an accepted objection's delivery is written in the same transaction
//! as the acceptance, and a deliverer retries it with backoff until the store confirms, across
//! restarts. The delivery's id is the idempotency key, so a redelivery is the same ticket.
//! The same task watches deadlines and raises an alert for each overdue objection.

use std::time::Duration;

use serde_json::json;
use sqlx::{Any, Row, Transaction};

use super::objections::{self, Actor, Objection, Status};
use crate::{http::AppState, storage::StorageError};

pub async fn enqueue(
    tx: &mut Transaction<'_, Any>,
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
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Backoff after `attempts` failures: 1 s, 2 s, 4 s ... capped at five minutes.
pub fn backoff_us(attempts: i64) -> i64 {
    (1_000_000i64 << attempts.clamp(0, 9)).min(300 * 1_000_000)
}

pub fn spawn(state: AppState) {
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
    });
}

async fn deliver_due(state: &AppState) -> Result<(), StorageError> {
    let now = state.clock.now();
    let rows = sqlx::query(
        "SELECT id, objection_id, store, payload, attempts FROM outbox \
         WHERE delivered_at IS NULL AND next_attempt_at <= $1 ORDER BY created_at LIMIT 20",
    )
    .bind(now)
    .fetch_all(state.db.pool())
    .await?;
    for r in rows {
        let id: String = r.try_get("id")?;
        let objection_id: String = r.try_get("objection_id")?;
        let store_name: String = r.try_get("store")?;
        let payload: String = r.try_get("payload")?;
        let attempts: i64 = r.try_get("attempts")?;
        let outcome = match state.stores.get(&store_name) {
            Some(store) => store.deliver_objection(&id, payload.into_bytes()).await,
            None => Err(format!("store `{store_name}` is no longer configured")),
        };
        match outcome {
            Ok(ticket) => {
                sqlx::query("UPDATE outbox SET delivered_at = $1, attempts = attempts + 1, last_error = NULL WHERE id = $2")
                    .bind(state.clock.now())
                    .bind(&id)
                    .execute(state.db.pool())
                    .await?;
                if let Some(o) = objections::get(&state.db, &objection_id).await?
                    && o.status == Status::Accepted
                {
                    let note = format!("delivered to store `{store_name}`, ticket {ticket}");
                    objections::transition(
                        state,
                        &o,
                        Status::Forwarded,
                        Actor::Delivery,
                        "outbox",
                        Some(&note),
                        None,
                        Some(&ticket),
                    )
                    .await?;
                }
                tracing::info!(objection = %objection_id, store = %store_name, "objection delivered");
            }
            Err(why) => {
                sqlx::query("UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2 WHERE id = $3")
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

async fn watch_deadlines(state: &AppState) -> Result<(), StorageError> {
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
        crate::audit::alerts::insert(
            &state.db,
            "objection-overdue",
            None,
            &format!("objection {id} is past its {what} deadline"),
            &[],
        )
        .await?;
        sqlx::query("UPDATE objections SET overdue_alerted = 1 WHERE id = $1")
            .bind(&id)
            .execute(state.db.pool())
            .await?;
    }
    Ok(())
}
