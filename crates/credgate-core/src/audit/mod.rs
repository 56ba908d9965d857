//! The audit log: one record per request on `/v1`, `/public`, `/subject`, `/admin` and
//! `/oauth/token`, committed before any data leaves (group commit through one writer),
//! hash-chained, with signed checkpoints. Response bodies, secrets and whistleblower identity
//! never enter it.

pub mod alerts;
pub mod archive;
pub mod chain;
pub mod export;
pub mod flood;
pub mod index_store;
pub mod indexer;
pub mod ship;
mod step_rows;
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
    /// The person acting, for a staff provider's token: their id and their organisation as the
    /// provider asserts them. Records with either are hashed in encoding v2 (`chain`), which
    /// covers both; a v1 record never carries them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_org: Option<String>,
    /// The legal basis (a `LegalBasis` code) of the purpose the request declared, as decided:
    /// the record itself says on what ground data was processed (PIPL art. 13). Records with
    /// it, or with either id below, are hashed in encoding v3 (`chain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_basis: Option<String>,
    /// The caller's own `X-Request-Id`, when it was well formed (`proxy::trace`); the gateway's
    /// id stays `request_id` and the response's `X-Request-Id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_request_id: Option<String>,
    /// The W3C trace id of a well-formed `traceparent` the caller sent (32 lowercase hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The chain the record belongs to: the `[audit] writer_id` of the process that wrote it
    /// (`legacy` for every record written before chains were per writer).
    #[serde(default)]
    pub writer_id: String,
    /// The record's place in its chain, from 1 with no gaps. `seq` orders the whole log; this
    /// orders one chain, and encoding v4 hashes it (with `writer_id`) instead of `seq`.
    #[serde(default)]
    pub chain_seq: i64,
}

/// What a handler learns about its request, for the record the audit layer writes.
#[derive(Debug, Default, Clone)]
pub struct AuditInfo {
    pub kind: Option<&'static str>,
    pub client_id: Option<String>,
    pub org: Option<String>,
    pub role: Option<String>,
    pub actor_subject: Option<String>,
    /// The staff person acting (see `AuditRecord::actor`) and their organisation.
    pub actor: Option<String>,
    pub actor_org: Option<String>,
    pub purpose: Option<String>,
    /// The declared purpose's legal basis code, from the policies the request was decided by.
    pub legal_basis: Option<String>,
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
    /// Records past retention the answer withheld: their deletion is requested in the audit
    /// record's transaction (`workflows::outbox::deletions`). Not part of the record.
    pub expired: Vec<crate::policy::Expired>,
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

/// A state change a handler defers until its audit record commits: the audit writer applies it
/// and appends the record in one database transaction, so a change exists only with its record
/// (and a record of a change only with the change). It may run more than once (again when
/// another replica's writer took the chain's head meanwhile), so it checks the state it
/// changes (`UPDATE ... WHERE status = $from`) rather than trusting what the handler read.
pub trait Change: Send + Sync + 'static {
    fn apply<'a>(
        &'a self,
        conn: &'a mut sqlx::AnyConnection,
    ) -> futures_util::future::BoxFuture<'a, Result<(), ChangeError>>;
}

impl<F> Change for F
where
    F: for<'a> Fn(
            &'a mut sqlx::AnyConnection,
        ) -> futures_util::future::BoxFuture<'a, Result<(), ChangeError>>
        + Send
        + Sync
        + 'static,
{
    fn apply<'a>(
        &'a self,
        conn: &'a mut sqlx::AnyConnection,
    ) -> futures_util::future::BoxFuture<'a, Result<(), ChangeError>> {
        self(conn)
    }
}

/// What a change's closure returns (`Box::pin(async move { .. }) as Pending<'_>`).
pub type Pending<'a> = futures_util::future::BoxFuture<'a, Result<(), ChangeError>>;

/// Why a deferred change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The state no longer allows it (a concurrent transition won, a cap is reached): answered
    /// with this error, and the refusal is recorded instead.
    #[error("{0}")]
    Refused(Refused),
    #[error("storage: {0}")]
    Storage(#[from] sqlx::Error),
}

impl From<crate::storage::StorageError> for ChangeError {
    fn from(e: crate::storage::StorageError) -> Self {
        match e {
            crate::storage::StorageError::Database(e) => Self::Storage(e),
            other => Self::Storage(sqlx::Error::Protocol(other.to_string())),
        }
    }
}

/// How a deferred change refuses: the state it found does not allow it. The web layer answers
/// with the matching problem (409 or 404) and records the refusal.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    /// A concurrent transition won, or a cap is reached.
    #[error("{0}")]
    Conflict(String),
    /// What the change was about is gone.
    #[error("{0}")]
    NotFound(String),
    /// The change holds a value the database cannot store (a NUL in PostgreSQL text): the
    /// caller's input, not an outage, so no audit-failure alarm.
    #[error("{0}")]
    Unstorable(String),
}

/// What runs after a deferred change committed (refreshing in-memory caches).
type After = std::sync::Mutex<Option<futures_util::future::BoxFuture<'static, ()>>>;

/// A response extension: the change the audit layer hands to the writer with the record.
#[derive(Clone)]
pub struct Deferred {
    change: Arc<dyn Change>,
    after: Arc<After>,
}

impl Deferred {
    /// The bound is spelled out (not `impl Change`) so that a closure's signature is inferred
    /// for every lifetime of its connection.
    pub fn new<F>(change: F) -> Self
    where
        F: for<'a> Fn(&'a mut sqlx::AnyConnection) -> Pending<'a> + Send + Sync + 'static,
    {
        Self {
            change: Arc::new(change),
            after: Arc::new(Mutex::new(None)),
        }
    }

    /// Runs `f` once the change has committed (never if it did not).
    pub fn then(self, f: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        *self.after.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::pin(f));
        self
    }

    /// This change and then `next`'s, in one transaction: both commit with the record or
    /// neither does. What waits for the commit is this change's (`next`'s must have none, and
    /// the deletion requests a read queues have none). Why: a request whose handler changed
    /// state (a self-query counts itself) may also have withheld records past retention, and
    /// their deletion requests must not be dropped for it.
    pub fn followed_by(self, next: Deferred) -> Self {
        Self {
            change: Arc::new(Both(self.change, next.change)),
            after: self.after,
        }
    }

    /// The change itself, for the writer to run in the record's transaction.
    pub fn change(&self) -> Arc<dyn Change> {
        self.change.clone()
    }

    /// Runs what waits for the commit (see `then`).
    pub async fn committed(self) {
        let after = self.after.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(f) = after {
            f.await;
        }
    }
}

/// Two changes, in order, in one transaction (`Deferred::followed_by`).
struct Both(Arc<dyn Change>, Arc<dyn Change>);

impl Change for Both {
    fn apply<'a>(&'a self, conn: &'a mut sqlx::AnyConnection) -> Pending<'a> {
        Box::pin(async move {
            self.0.apply(&mut *conn).await?;
            self.1.apply(conn).await
        })
    }
}

/// Why `append_with` failed.
#[derive(Debug)]
pub enum Refusal {
    /// The change was refused; neither it nor its record exists.
    Change(Refused),
    /// The change or its record could not be written; neither exists.
    Audit(AuditError),
}

#[derive(Debug, Clone)]
pub struct Committed {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// A batch closes at this many records...
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    /// ...or, when fewer than `writer::ENOUGH` are queued as the writer takes it, this long
    /// after its first record arrived (the whole window, then what queued): the commit window. DESIGN.md names it
    /// `commit_window_us`, which outside tooling writes; both names are read.
    #[serde(default = "default_batch_wait_us", alias = "commit_window_us")]
    pub batch_wait_us: u64,
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: i64,
    #[serde(default = "default_checkpoint_secs")]
    pub checkpoint_secs: u64,
    /// Records are kept at least this long before they may be archived (never below 183).
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// The chain this process writes (DESIGN.md, `[audit] writer_id`): stable across restarts
    /// of one replica, different for every replica. Unset, it is the host name and the listen
    /// address ([`AuditConfig::for_listener`]).
    #[serde(default)]
    pub writer_id: Option<String>,
    /// `[audit.ship]`: the external sink this process ships its chain to (`ship`); none when
    /// absent.
    #[serde(default)]
    pub ship: Option<crate::config::ShipConfig>,
    /// Whether this process runs the subject indexer (`audit::indexer`). On by default; off
    /// leaves this replica's chain to the others' indexers, and lets a test show that searches
    /// are exact before anything is indexed.
    #[serde(default = "default_indexer")]
    pub indexer: bool,
}

fn default_indexer() -> bool {
    true
}

/// The longest writer id: it is stored in every record and named in archive file names.
pub const MAX_WRITER_ID: usize = 128;

/// Why a configured writer id is refused: empty, too long, `legacy` (the chain of records
/// written before per-writer chains), or holding a character outside printable ASCII (it is
/// hashed, logged, shown on pages and put in file names).
pub fn check_writer_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_WRITER_ID {
        return Err(format!("must be 1 to {MAX_WRITER_ID} characters"));
    }
    if id == chain::LEGACY_WRITER {
        return Err(format!(
            "`{}` names the chain written before per-writer chains",
            chain::LEGACY_WRITER
        ));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("only printable ASCII without spaces".into());
    }
    Ok(())
}

impl AuditConfig {
    /// This config with `writer_id` filled in when unset: the host name and `listen`. With
    /// port 0 the address is not stable across restarts either, so a random suffix keeps two
    /// such processes on one host (tests, a demo beside a gateway) on chains of their own.
    pub fn for_listener(mut self, listen: std::net::SocketAddr) -> Self {
        if self.writer_id.is_none() {
            self.writer_id = Some(default_writer_id(listen));
        }
        self
    }
}

fn default_writer_id(listen: std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && check_writer_id(h).is_ok())
        .unwrap_or_else(|| "host".into());
    let mut id = format!("{host}/{listen}");
    if listen.port() == 0 {
        id.push('-');
        id.push_str(&uuid::Uuid::new_v4().simple().to_string()[..8]);
    }
    id.chars().take(MAX_WRITER_ID).collect()
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

pub(crate) struct Queued {
    record: AuditRecord,
    /// The response released T4 data clear: told to the alert rules, never hashed or stored.
    t4_released: bool,
    /// With a change, the writer commits it with the record, alone in its transaction.
    change: Option<Arc<dyn Change>>,
    ack: oneshot::Sender<Result<Committed, Refusal>>,
    /// The thread and runtime the sender waits on: the writer hands a batch's answers to
    /// each thread in one task (`writer::Acks`).
    home: writer::Home,
}

/// Handle on the audit writer. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: Option<mpsc::Sender<Queued>>,
    /// The database, for the no-op benchmark mode's changes (there is no writer to apply them).
    db: Db,
    healthy: Arc<AtomicBool>,
    queued: Arc<AtomicUsize>,
    /// True while the writer holds records it has taken off the queue and not yet acknowledged.
    busy: Arc<AtomicBool>,
    failures: Arc<std::sync::atomic::AtomicU64>,
    /// The chain this process writes.
    writer_id: Arc<str>,
    /// Committed records, for the alert rules (which need the records themselves).
    pub committed: tokio::sync::broadcast::Sender<CommittedRecord>,
    /// This chain's newest committed place, for the tasks a commit only wakes (the indexer,
    /// the shipper: they read the log itself). A `watch` holds one value, so a receiver that
    /// reads late (a shipper whose sink is down) pins no records, and a commit made while it
    /// was busy still marks the value changed: no wake-up is missed (rev3 F2).
    head: tokio::sync::watch::Sender<i64>,
}

/// A committed record as the alert rules receive it, with what the request knew beside the
/// record: whether it released T4 data clear (the record names masked classes, not released
/// ones, and this flag is not part of what is hashed or stored).
#[derive(Debug, Clone)]
pub struct CommittedRecord {
    pub record: Arc<AuditRecord>,
    pub t4_released: bool,
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
        clock: Arc<crate::clock::Clock>,
    ) -> Result<Self, crate::storage::StorageError> {
        let (committed, _) = tokio::sync::broadcast::channel(4096);
        let head = tokio::sync::watch::Sender::new(0);
        let healthy = Arc::new(AtomicBool::new(true));
        let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let queued = Arc::new(AtomicUsize::new(0));
        let busy = Arc::new(AtomicBool::new(false));
        let writer_id = config
            .writer_id
            .clone()
            .unwrap_or_else(|| default_writer_id(([0, 0, 0, 0], 0).into()));
        if std::env::var("CREDGATE_AUDIT_NOOP").is_ok_and(|v| v == NOOP_ACK) {
            tracing::error!(
                "AUDIT LOG DISABLED (CREDGATE_AUDIT_NOOP): nothing is recorded; benchmarks only"
            );
            return Ok(Self {
                tx: None,
                db,
                healthy,
                queued,
                busy,
                failures,
                writer_id: writer_id.into(),
                committed,
                head,
            });
        }
        // Fail at start, not on the first request, when the log cannot be read.
        store::chain_head(&db, &writer_id).await?;
        tracing::info!(writer_id = %writer_id, "audit: writing this process's chain");
        let (tx, rx) = mpsc::channel(config.batch_max * 8);
        tokio::spawn(writer::run(writer::Writer {
            db: db.clone(),
            clock,
            rx,
            signing,
            key_id,
            writer_id: writer_id.clone(),
            config,
            healthy: healthy.clone(),
            queued: queued.clone(),
            busy: busy.clone(),
            failures: failures.clone(),
            committed: committed.clone(),
            head: head.clone(),
        }));
        Ok(Self {
            tx: Some(tx),
            db,
            healthy,
            queued,
            busy,
            failures,
            writer_id: writer_id.into(),
            committed,
            head,
        })
    }

    /// Wakes on each commit of this process's writer: `changed()` returns once a record was
    /// committed since the receiver last looked (`Err` once the writer is gone for good). It
    /// carries the chain's newest place, never records.
    pub fn wake(&self) -> tokio::sync::watch::Receiver<i64> {
        self.head.subscribe()
    }

    /// The chain this process writes (`[audit] writer_id`, or its default).
    pub fn writer_id(&self) -> &str {
        &self.writer_id
    }

    /// Waits until every record queued so far is committed (or its commit failed), for at most
    /// `limit`; false if the time ran out. Shutdown calls it once nothing queues any more, so
    /// that a record queued just before SIGTERM is not lost with the process.
    pub async fn drain(&self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Queue first, then the writer: a record counted in neither is committed and its
            // answer handed to its sender's runtime, because the writer is busy from taking a
            // record until then. That answer runs on a runtime still alive: serving loops end
            // after the last drain (`web::workers`), the root's runtime after that.
            let empty = self.queued.load(Ordering::SeqCst) == 0;
            if empty && !self.busy.load(Ordering::SeqCst) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Queues the record and waits until it is committed (or the commit failed).
    pub async fn append(&self, record: AuditRecord) -> Result<Committed, AuditError> {
        self.append_released(record, false).await
    }

    /// As `append`, telling the alert rules whether the response released T4 data clear.
    pub async fn append_released(
        &self,
        record: AuditRecord,
        t4_released: bool,
    ) -> Result<Committed, AuditError> {
        match self.send(record, None, t4_released).await {
            Ok(c) => Ok(c),
            Err(Refusal::Audit(e)) => Err(e),
            // Without a change there is nothing to refuse.
            Err(Refusal::Change(_)) => Err(AuditError::WriteFailed),
        }
    }

    /// Commits `change` and `record` in one transaction, or neither.
    pub async fn append_with(
        &self,
        record: AuditRecord,
        change: Arc<dyn Change>,
    ) -> Result<Committed, Refusal> {
        self.send(record, Some(change), false).await
    }

    async fn send(
        &self,
        record: AuditRecord,
        change: Option<Arc<dyn Change>>,
        t4_released: bool,
    ) -> Result<Committed, Refusal> {
        let Some(tx) = &self.tx else {
            if let Some(change) = change {
                writer::apply_unaudited(&self.db, &*change).await?;
            }
            return Ok(Committed { id: record.id });
        };
        let (ack, done) = oneshot::channel();
        self.queued.fetch_add(1, Ordering::SeqCst);
        metrics::gauge!("credgate_audit_queue_depth")
            .set(self.queued.load(Ordering::Relaxed) as f64);
        let pending = Queued {
            record,
            t4_released,
            change,
            ack,
            home: writer::Home::current(),
        };
        if tx.send(pending).await.is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Refusal::Audit(AuditError::Closed));
        }
        done.await
            .unwrap_or(Err(Refusal::Audit(AuditError::Closed)))
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
