//! The audit log: one record per request on `/v1`, `/public`, `/subject`, `/admin` and
//! `/oauth/token`, committed before any data leaves (group commit through one writer),
//! hash-chained, with signed checkpoints. Response bodies, secrets and whistleblower identity
//! never enter it.

pub mod alerts;
pub mod archive;
pub mod chain;
pub mod export;
pub mod flood;
pub mod layer;
pub mod store;
pub mod verify;
mod writer;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::storage::Db;

/// One audit record, as stored and as officers see it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub id: String,
    pub time_us: i64,
    pub request_id: String,
    /// data, profile, public, token, subject or admin.
    pub kind: String,
    pub client_id: Option<String>,
    pub org: Option<String>,
    pub role: Option<String>,
    /// The data subject acting, for subject-token requests.
    pub actor_subject: Option<String>,
    pub purpose: Option<String>,
    pub consent_id: Option<String>,
    pub method: String,
    pub path: String,
    pub store: Option<String>,
    pub dataset: Option<String>,
    /// Data subjects whose records the request touched.
    pub subjects: Vec<String>,
    /// allow, deny or error.
    pub decision: String,
    /// The rule that decided (for denials and errors).
    pub rule: Option<String>,
    /// Masked or removed fields per data class.
    pub masked: BTreeMap<String, u64>,
    pub status: u16,
    pub bytes_out: u64,
    pub upstream_us: Option<i64>,
    pub total_us: i64,
    pub client_addr: String,
    pub prev_hash: String,
    pub hash: String,
}

/// What a handler learns about its request, for the record the audit layer writes.
#[derive(Debug, Default, Clone)]
pub struct AuditInfo {
    pub kind: Option<&'static str>,
    pub client_id: Option<String>,
    pub org: Option<String>,
    pub role: Option<String>,
    pub actor_subject: Option<String>,
    pub purpose: Option<String>,
    pub consent_id: Option<String>,
    pub store: Option<String>,
    pub dataset: Option<String>,
    pub subjects: Vec<String>,
    pub rule: Option<String>,
    pub masked: BTreeMap<String, u64>,
    pub upstream_us: Option<i64>,
    /// T4 data was released clear (for the out-of-hours alert).
    pub t4_released: bool,
    /// The path and query as decided and forwarded (decoded once, re-encoded), recorded
    /// instead of the raw request target when set.
    pub canonical_path: Option<String>,
}

/// The request-scoped slot handlers fill; the audit layer reads it after the handler.
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(Arc<Mutex<AuditInfo>>);

impl AuditSlot {
    pub fn update(&self, f: impl FnOnce(&mut AuditInfo)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
    pub fn take(&self) -> AuditInfo {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("the audit log could not be written")]
    WriteFailed,
    #[error("the audit writer is not running")]
    Closed,
}

#[derive(Debug, Clone)]
pub struct Committed {
    pub id: String,
    pub seq: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// A batch closes at this many records...
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    /// ...or this long after its first record arrived.
    #[serde(default = "default_batch_wait_us")]
    pub batch_wait_us: u64,
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: i64,
    #[serde(default = "default_checkpoint_secs")]
    pub checkpoint_secs: u64,
    /// Records are kept at least this long before they may be archived (never below 183).
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

fn default_retention_days() -> u32 {
    1826
}

fn default_batch_max() -> usize {
    512
}
fn default_batch_wait_us() -> u64 {
    200
}
fn default_checkpoint_every() -> i64 {
    1000
}
fn default_checkpoint_secs() -> u64 {
    60
}

impl Default for AuditConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

pub(crate) struct Pending {
    record: AuditRecord,
    ack: oneshot::Sender<Result<Committed, AuditError>>,
}

/// Handle on the audit writer. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: Option<mpsc::Sender<Pending>>,
    healthy: Arc<AtomicBool>,
    queued: Arc<AtomicUsize>,
    failures: Arc<std::sync::atomic::AtomicU64>,
    /// Committed records, for the alert rules.
    pub committed: tokio::sync::broadcast::Sender<Arc<AuditRecord>>,
}

/// Set `CREDGATE_AUDIT_NOOP` to this to replace the writer by a no-op, for the benchmark that
/// measures what durable audit costs. Never in production: nothing is recorded.
pub const NOOP_ACK: &str = "benchmark-only-records-nothing";

impl AuditLog {
    pub async fn start(
        db: Db,
        signing: ring::signature::Ed25519KeyPair,
        key_id: String,
        config: AuditConfig,
    ) -> Result<Self, crate::storage::StorageError> {
        let (committed, _) = tokio::sync::broadcast::channel(4096);
        let healthy = Arc::new(AtomicBool::new(true));
        let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let queued = Arc::new(AtomicUsize::new(0));
        if std::env::var("CREDGATE_AUDIT_NOOP").is_ok_and(|v| v == NOOP_ACK) {
            tracing::error!(
                "AUDIT LOG DISABLED (CREDGATE_AUDIT_NOOP): nothing is recorded; benchmarks only"
            );
            return Ok(Self {
                tx: None,
                healthy,
                queued,
                failures,
                committed,
            });
        }
        // Fail at start, not on the first request, when the log cannot be read.
        store::head(&db).await?;
        let (tx, rx) = mpsc::channel(config.batch_max * 8);
        tokio::spawn(writer::run(writer::Writer {
            db,
            rx,
            signing,
            key_id,
            config,
            healthy: healthy.clone(),
            queued: queued.clone(),
            failures: failures.clone(),
            committed: committed.clone(),
        }));
        Ok(Self {
            tx: Some(tx),
            healthy,
            queued,
            failures,
            committed,
        })
    }

    /// Queues the record and waits until it is committed (or the commit failed).
    pub async fn append(&self, record: AuditRecord) -> Result<Committed, AuditError> {
        let Some(tx) = &self.tx else {
            return Ok(Committed {
                id: record.id,
                seq: 0,
            });
        };
        let (ack, done) = oneshot::channel();
        self.queued.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("credgate_audit_queue_depth")
            .set(self.queued.load(Ordering::Relaxed) as f64);
        if tx.send(Pending { record, ack }).await.is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(AuditError::Closed);
        }
        done.await.unwrap_or(Err(AuditError::Closed))
    }

    /// How many batch commits have failed since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// False after a failed commit, until one succeeds again.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}
