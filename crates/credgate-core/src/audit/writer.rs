//! The one writer: drains what is queued (up to `batch_max`, or what arrives within
//! `batch_wait_us` of the first), chains the hashes in order, inserts the batch as one
//! statement, then acknowledges every sender. One fsync serves the whole batch.
//! A failed commit acknowledges every sender with an error. A batch that another replica's
//! writer beat to the head is chained again onto the real head (see `store::append`), so the
//! writers of every replica share one chain.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use ring::signature::Ed25519KeyPair;
use tokio::sync::mpsc;

use super::{
    AuditConfig, AuditError, AuditRecord, Change, ChangeError, Committed, CommittedRecord, Queued,
    Refusal, chain, store,
};
use crate::storage::{Db, StorageError, now_micros};

pub(super) struct Writer {
    pub db: Db,
    pub rx: mpsc::Receiver<Queued>,
    pub signing: Ed25519KeyPair,
    pub key_id: String,
    pub config: AuditConfig,
    pub healthy: Arc<AtomicBool>,
    pub queued: Arc<AtomicUsize>,
    pub busy: Arc<AtomicBool>,
    pub failures: Arc<std::sync::atomic::AtomicU64>,
    pub committed: tokio::sync::broadcast::Sender<CommittedRecord>,
}

pub(super) async fn run(mut w: Writer) {
    let wait = Duration::from_micros(w.config.batch_wait_us);
    let mut known = None;
    let mut conn = store::WriterConn::new(w.db.clone());
    // A record with a change, received while a batch was filling: it runs after that batch.
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match w.rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        w.busy.store(true, Ordering::SeqCst);
        if first.change.is_some() {
            commit_change(&w, &mut conn, &mut known, first).await;
            w.busy.store(false, Ordering::SeqCst);
            continue;
        }
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + wait;
        while batch.len() < w.config.batch_max {
            let next = match w.rx.try_recv() {
                Ok(p) => p,
                Err(_) => match tokio::time::timeout_at(deadline, w.rx.recv()).await {
                    Ok(Some(p)) => p,
                    _ => break,
                },
            };
            // A change commits alone, after what was queued before it.
            if next.change.is_some() {
                carried = Some(next);
                break;
            }
            batch.push(next);
        }
        commit_batch(&w, &mut conn, &mut known, batch).await;
        w.busy.store(false, Ordering::SeqCst);
    }
}

/// Commits a batch of plain records as one statement and acknowledges every sender.
async fn commit_batch(
    w: &Writer,
    conn: &mut store::WriterConn,
    known: &mut Option<store::Head>,
    batch: Vec<Queued>,
) {
    w.queued.fetch_sub(batch.len(), Ordering::SeqCst);
    metrics::histogram!("credgate_audit_batch_size").record(batch.len() as f64);
    let n = batch.len();
    let (mut records, acks): (Vec<AuditRecord>, Vec<_>) = batch
        .into_iter()
        .map(|p| (p.record, (p.ack, p.t4_released)))
        .unzip();
    let appended = store::append(conn, known, &mut records, |stored, records| {
        chain_onto(stored, records, w)
    })
    .await;
    match appended {
        Ok(()) => {
            w.healthy.store(true, Ordering::Relaxed);
            for ((ack, t4), r) in acks.into_iter().zip(records) {
                acknowledge(w, ack, r, t4);
            }
        }
        Err(e) => {
            failed(w, &e, n);
            for (ack, _) in acks {
                let _ = ack.send(Err(Refusal::Audit(AuditError::WriteFailed)));
            }
        }
    }
}

/// Applies one record's change and appends the record in one transaction (see
/// `store::append_change`), then acknowledges: committed, refused, or failed.
async fn commit_change(
    w: &Writer,
    conn: &mut store::WriterConn,
    known: &mut Option<store::Head>,
    p: Queued,
) {
    w.queued.fetch_sub(1, Ordering::SeqCst);
    let Queued {
        record,
        t4_released,
        change,
        ack,
    } = p;
    let change = change.expect("only records with a change come here");
    let mut records = [record];
    let outcome = store::append_change(conn, known, &mut records, &*change, |stored, records| {
        chain_onto(stored, records, w)
    })
    .await;
    let [record] = records;
    match outcome {
        Ok(()) => {
            w.healthy.store(true, Ordering::Relaxed);
            acknowledge(w, ack, record, t4_released);
        }
        Err(store::ChangeOutcome::Refused(ChangeError::Refused(e))) => {
            let _ = ack.send(Err(Refusal::Change(e)));
        }
        Err(store::ChangeOutcome::Refused(ChangeError::Storage(e))) => {
            failed(w, &StorageError::from(e), 1);
            let _ = ack.send(Err(Refusal::Audit(AuditError::WriteFailed)));
        }
        Err(store::ChangeOutcome::Failed(e)) => {
            failed(w, &e, 1);
            let _ = ack.send(Err(Refusal::Audit(AuditError::WriteFailed)));
        }
    }
}

fn acknowledge(
    w: &Writer,
    ack: tokio::sync::oneshot::Sender<Result<Committed, Refusal>>,
    r: AuditRecord,
    t4_released: bool,
) {
    let _ = ack.send(Ok(Committed {
        id: r.id.clone(),
        seq: r.seq,
    }));
    let _ = w.committed.send(CommittedRecord {
        record: Arc::new(r),
        t4_released,
    });
}

fn failed(w: &Writer, e: &StorageError, n: usize) {
    tracing::error!(error = %e, records = n, "audit commit failed; nothing released");
    metrics::counter!("credgate_audit_write_failures_total").increment(1);
    w.healthy.store(false, Ordering::Relaxed);
    w.failures.fetch_add(1, Ordering::Relaxed);
}

/// The no-op benchmark mode has no writer: a change is committed on its own, unrecorded.
pub(super) async fn apply_unaudited(db: &Db, change: &dyn Change) -> Result<(), Refusal> {
    let failed = |e: sqlx::Error| {
        tracing::error!(error = %e, "change not committed");
        Refusal::Audit(AuditError::WriteFailed)
    };
    let mut tx = db.pool().begin().await.map_err(failed)?;
    match change.apply(&mut tx).await {
        Ok(()) => tx.commit().await.map_err(failed),
        Err(ChangeError::Refused(e)) => Err(Refusal::Change(e)),
        Err(ChangeError::Storage(e)) => Err(failed(e)),
    }
}

/// Chains `records` onto the stored head, in order, and signs a checkpoint when `every` records
/// or `every_us` have passed since the last one, whichever replica made it.
fn chain_onto(
    stored: &store::Head,
    records: &mut [AuditRecord],
    w: &Writer,
) -> Option<store::Checkpoint> {
    let every = w.config.checkpoint_every;
    let every_us = w.config.checkpoint_secs as i64 * 1_000_000;
    let (signing, key_id) = (&w.signing, &w.key_id);
    let (seq, hash) = chain::link(stored.seq, stored.hash.clone(), records);
    let now = now_micros();
    let due = seq - stored.checkpoint_seq >= every || now - stored.checkpoint_time_us >= every_us;
    due.then(|| store::Checkpoint {
        seq,
        time_us: now,
        signature: chain::sign_checkpoint(signing, seq, &hash, now),
        hash,
        key_id: key_id.clone(),
    })
}
