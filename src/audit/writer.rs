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

use super::{AuditConfig, AuditError, AuditRecord, Committed, Pending, chain, store};
use crate::storage::{Db, now_micros};

pub(super) struct Writer {
    pub db: Db,
    pub rx: mpsc::Receiver<Pending>,
    pub signing: Ed25519KeyPair,
    pub key_id: String,
    pub config: AuditConfig,
    pub healthy: Arc<AtomicBool>,
    pub queued: Arc<AtomicUsize>,
    pub failures: Arc<std::sync::atomic::AtomicU64>,
    pub committed: tokio::sync::broadcast::Sender<Arc<AuditRecord>>,
}

pub(super) async fn run(mut w: Writer) {
    let wait = Duration::from_micros(w.config.batch_wait_us);
    let mut known = None;
    let mut conn = store::WriterConn::new(w.db.clone());
    while let Some(first) = w.rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + wait;
        while batch.len() < w.config.batch_max {
            match w.rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => match tokio::time::timeout_at(deadline, w.rx.recv()).await {
                    Ok(Some(p)) => batch.push(p),
                    _ => break,
                },
            }
        }
        w.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        metrics::histogram!("credgate_audit_batch_size").record(batch.len() as f64);

        let key_id = w.key_id.clone();
        let every = w.config.checkpoint_every;
        let every_us = w.config.checkpoint_secs as i64 * 1_000_000;
        let signing = &w.signing;
        let n = batch.len();
        let (mut records, acks): (Vec<AuditRecord>, Vec<_>) =
            batch.into_iter().map(|p| (p.record, p.ack)).unzip();
        let appended = store::append(&mut conn, &mut known, &mut records, |stored, records| {
            chain_onto(stored, records, every, every_us, signing, &key_id)
        })
        .await;
        match appended {
            Ok(()) => {
                w.healthy.store(true, Ordering::Relaxed);
                for (ack, r) in acks.into_iter().zip(records) {
                    let _ = ack.send(Ok(Committed {
                        id: r.id.clone(),
                        seq: r.seq,
                    }));
                    let _ = w.committed.send(Arc::new(r));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = n, "audit commit failed; nothing released");
                metrics::counter!("credgate_audit_write_failures_total").increment(1);
                w.healthy.store(false, Ordering::Relaxed);
                w.failures.fetch_add(1, Ordering::Relaxed);
                for ack in acks {
                    let _ = ack.send(Err(AuditError::WriteFailed));
                }
            }
        }
    }
}

/// Chains `records` onto the stored head, in order, and signs a checkpoint when `every` records
/// or `every_us` have passed since the last one, whichever replica made it.
fn chain_onto(
    stored: &store::Head,
    records: &mut [AuditRecord],
    every: i64,
    every_us: i64,
    signing: &Ed25519KeyPair,
    key_id: &str,
) -> Option<store::Checkpoint> {
    let (seq, hash) = chain::link(stored.seq, stored.hash.clone(), records);
    let now = now_micros();
    let due = seq - stored.checkpoint_seq >= every || now - stored.checkpoint_time_us >= every_us;
    due.then(|| store::Checkpoint {
        seq,
        time_us: now,
        signature: chain::sign_checkpoint(signing, seq, &hash, now),
        hash,
        key_id: key_id.to_string(),
    })
}
