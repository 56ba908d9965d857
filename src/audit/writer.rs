//! The one writer: drains what is queued (up to `batch_max`, or what arrives within
//! `batch_wait_us` of the first), chains the hashes in order, inserts the batch in one
//! transaction, commits, then acknowledges every sender. One fsync serves the whole batch.
//! A failed commit acknowledges every sender with an error; the chain head is re-read, so the
//! next batch chains onto what is really stored.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use ring::signature::Ed25519KeyPair;
use tokio::sync::mpsc;

use super::{AuditConfig, AuditError, AuditRecord, Committed, Pending, chain, store};
use crate::storage::{Db, now_micros};

pub(super) struct Writer {
    pub db: Db,
    pub rx: mpsc::Receiver<Pending>,
    pub head: store::Head,
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
    let mut last_checkpoint = Instant::now();
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

        let mut head = w.head.clone();
        let mut records = Vec::with_capacity(batch.len());
        for p in &batch {
            let mut r = p.record.clone();
            head.seq += 1;
            r.seq = head.seq;
            r.prev_hash = head.hash.clone();
            r.hash = chain::hash(&r.prev_hash, &r);
            head.hash = r.hash.clone();
            records.push(r);
        }
        let due = head.seq - w.head.checkpoint_seq >= w.config.checkpoint_every
            || last_checkpoint.elapsed() >= Duration::from_secs(w.config.checkpoint_secs);
        let checkpoint = due.then(|| {
            let t = now_micros();
            store::Checkpoint {
                seq: head.seq,
                time_us: t,
                hash: head.hash.clone(),
                key_id: w.key_id.clone(),
                signature: chain::sign_checkpoint(&w.signing, head.seq, &head.hash, t),
            }
        });
        match store::insert_batch(&w.db, &records, checkpoint.as_ref()).await {
            Ok(()) => {
                if let Some(cp) = &checkpoint {
                    head.checkpoint_seq = cp.seq;
                    last_checkpoint = Instant::now();
                }
                w.head = head;
                w.healthy.store(true, Ordering::Relaxed);
                for (p, r) in batch.into_iter().zip(records) {
                    let _ = p.ack.send(Ok(Committed {
                        id: r.id.clone(),
                        seq: r.seq,
                    }));
                    let _ = w.committed.send(Arc::new(r));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = batch.len(), "audit commit failed; nothing released");
                metrics::counter!("credgate_audit_write_failures_total").increment(1);
                w.healthy.store(false, Ordering::Relaxed);
                w.failures.fetch_add(1, Ordering::Relaxed);
                for p in batch {
                    let _ = p.ack.send(Err(AuditError::WriteFailed));
                }
                if let Ok(h) = store::head(&w.db).await {
                    w.head = h;
                }
            }
        }
    }
}
