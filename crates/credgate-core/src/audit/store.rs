//! SQL for the audit tables. Every filter value is a bound parameter; nothing a caller sends is
//! ever spliced into SQL text.

use sqlx::{Row, any::AnyRow};

use super::index_store::{self, StepCandidates, Walk};
use super::{AuditRecord, Change, ChangeError};
use crate::storage::{Backend, Db, StorageError};

/// The newest record of the whole log and the newest checkpoint of any chain. Kept for the
/// console's dashboard until it shows [`chain_status`]; a writer uses [`ChainHead`].
#[derive(Debug, Clone)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
    pub checkpoint_seq: i64,
    pub checkpoint_time_us: i64,
}

/// One chain's head as its writer knows it.
#[derive(Debug, Clone)]
pub struct ChainHead {
    /// The head's place in the chain (0: nothing written yet).
    pub chain_seq: i64,
    pub hash: String,
    /// The place the newest checkpoint signed (0: none).
    pub checkpoint_chain_seq: i64,
    /// When the oldest record not yet signed was committed (as far as the writer knows);
    /// `None` when the whole chain is signed. The idle tick signs the tail by this.
    pub unsigned_since_us: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The global `seq` of the record it signs (the database fills it in on insert).
    pub seq: i64,
    pub writer_id: String,
    pub chain_seq: i64,
    pub time_us: i64,
    pub hash: String,
    pub key_id: String,
    pub signature: String,
}

pub async fn head(db: &Db) -> Result<Head, StorageError> {
    let mut conn = db.pool().acquire().await?;
    let row = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    let cp = sqlx::query("SELECT seq, time_us FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    let (checkpoint_seq, checkpoint_time_us) = match cp {
        Some(c) => (c.try_get("seq")?, c.try_get("time_us")?),
        None => (0, 0),
    };
    let (seq, hash) = match row {
        Some(r) => (r.try_get("seq")?, r.try_get("hash")?),
        None => (0, super::chain::GENESIS.to_string()),
    };
    Ok(Head {
        seq,
        hash,
        checkpoint_seq,
        checkpoint_time_us,
    })
}

/// The head of `writer_id`'s chain as stored: its last record (or its archive boundary), its
/// last checkpoint, and since when its tail is unsigned.
pub async fn chain_head(db: &Db, writer_id: &str) -> Result<ChainHead, StorageError> {
    let mut conn = db.pool().acquire().await?;
    read_head(&mut conn, writer_id).await
}

/// Where verification stops in a chain: the greatest integer place (None: no record with one),
/// and, when some record's place is not an integer, that record, by its `seq` when that is one.
/// SQLite's `audit_log` is not STRICT: a place made text or a BLOB sorts above every integer,
/// so it shows as the last; one made REAL sorts among them, and the walk meets it as a record
/// it cannot read. `chain_head` failed on such a last record, and on a last record whose
/// `hash` is not text, naming nothing.
pub struct Upto {
    pub place: Option<i64>,
    pub not_a_place: Option<Option<i64>>,
}

pub async fn chain_upto(db: &Db, writer_id: &str) -> Result<Upto, StorageError> {
    if db.backend() == Backend::Postgres {
        let place: Option<i64> =
            sqlx::query_scalar("SELECT MAX(chain_seq) FROM audit_log WHERE writer_id = $1")
                .bind(writer_id)
                .fetch_one(db.pool())
                .await?;
        return Ok(Upto {
            place,
            not_a_place: None,
        });
    }
    let last = sqlx::query(
        "SELECT CASE WHEN typeof(chain_seq) = 'integer' THEN chain_seq END AS place, \
                CASE WHEN typeof(seq) = 'integer' THEN seq END AS seq \
         FROM audit_log WHERE writer_id = $1 ORDER BY chain_seq DESC LIMIT 1",
    )
    .bind(writer_id)
    .fetch_optional(db.pool())
    .await?;
    let Some(last) = last else {
        return Ok(Upto {
            place: None,
            not_a_place: None,
        });
    };
    if let Some(place) = last.try_get::<Option<i64>, _>("place")? {
        return Ok(Upto {
            place: Some(place),
            not_a_place: None,
        });
    }
    // Only an altered log comes here: the integer places are counted the long way.
    let place: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(chain_seq) FROM audit_log \
         WHERE writer_id = $1 AND typeof(chain_seq) = 'integer'",
    )
    .bind(writer_id)
    .fetch_one(db.pool())
    .await?;
    Ok(Upto {
        place,
        not_a_place: Some(last.try_get("seq")?),
    })
}

async fn read_head(
    conn: &mut sqlx::AnyConnection,
    writer_id: &str,
) -> Result<ChainHead, StorageError> {
    let row = sqlx::query(
        "SELECT chain_seq, hash FROM audit_log WHERE writer_id = $1 \
         ORDER BY chain_seq DESC LIMIT 1",
    )
    .bind(writer_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (chain_seq, hash) = match row {
        Some(r) => (r.try_get("chain_seq")?, r.try_get("hash")?),
        // Everything archived (or nothing written yet): chain onto the archive's last record.
        None => super::archive::base_on(conn, writer_id).await?,
    };
    let signed: i64 = sqlx::query(
        "SELECT chain_seq FROM audit_checkpoints WHERE writer_id = $1 \
         ORDER BY chain_seq DESC LIMIT 1",
    )
    .bind(writer_id)
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| r.try_get("chain_seq"))
    .transpose()?
    .unwrap_or(0);
    let unsigned_since_us = if chain_seq > signed {
        sqlx::query(
            "SELECT time_us FROM audit_log WHERE writer_id = $1 AND chain_seq > $2 \
             ORDER BY chain_seq LIMIT 1",
        )
        .bind(writer_id)
        .bind(signed)
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| r.try_get("time_us"))
        .transpose()?
    } else {
        None
    };
    Ok(ChainHead {
        chain_seq,
        hash,
        checkpoint_chain_seq: signed.min(chain_seq),
        unsigned_since_us,
    })
}

/// The time of the newest record of `writer_id`'s chain: what the clock may not go back behind
/// at start (`Clock::seed`).
pub async fn newest_time(db: &Db, writer_id: &str) -> Result<Option<i64>, StorageError> {
    let row = sqlx::query(
        "SELECT time_us FROM audit_log WHERE writer_id = $1 ORDER BY chain_seq DESC LIMIT 1",
    )
    .bind(writer_id)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(|r| r.try_get("time_us")).transpose()?)
}

/// The columns a record is stored with; the global `seq` is assigned by the INSERT.
const COLUMNS: &str = "seq, id, time_us, request_id, kind, client_id, org, role, actor_subject, \
    purpose, consent_id, method, path, store, dataset, subjects, decision, rule, masked, status, \
    bytes_out, upstream_us, total_us, client_addr, prev_hash, hash, actor, actor_org, legal_basis, \
    caller_request_id, trace_id, writer_id, chain_seq";

/// `COLUMNS` without `seq`: what a writer supplies.
fn written_columns() -> &'static str {
    COLUMNS.strip_prefix("seq, ").expect("seq comes first")
}

/// The writer's own connection, kept from batch to batch, and the chain it writes. Taking one
/// from the pool for each batch cost a liveness ping: one more round trip to SQLite's thread
/// (or to PostgreSQL) per commit. After a failed batch it is dropped, and the next batch starts
/// on a fresh one.
pub struct WriterConn {
    db: Db,
    writer_id: String,
    conn: Option<sqlx::AnyConnection>,
}

impl WriterConn {
    pub fn new(db: Db, writer_id: impl Into<String>) -> Self {
        Self {
            db,
            writer_id: writer_id.into(),
            conn: None,
        }
    }

    pub fn writer_id(&self) -> &str {
        &self.writer_id
    }

    async fn get(&mut self) -> Result<&mut sqlx::AnyConnection, StorageError> {
        // The kept connection is out of the pool's reach (its open circuit, `before_acquire`):
        // while the probe says the storage is unusable it is dropped and nothing is written.
        // A SQLite file deleted under the gateway would otherwise take every record into an
        // unlinked inode, gone at the next start, while the answers were released.
        if let Err(e) = self.db.usable() {
            self.conn = None;
            return Err(e);
        }
        if self.conn.is_none() {
            self.conn = Some(self.db.own_connection().await?);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// The head to chain onto: the one the last batch left, else the stored one.
    async fn head(&mut self, known: &mut Option<ChainHead>) -> Result<ChainHead, StorageError> {
        if let Some(h) = known.take() {
            return Ok(h);
        }
        let writer_id = self.writer_id.clone();
        let conn = self.get().await?;
        match read_head(conn, &writer_id).await {
            Ok(h) => Ok(h),
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

/// How often a batch may find its chain's head taken before the writer gives up on it. Only
/// another process writing under the same writer id (a misconfiguration) takes it.
const MAX_CONFLICTS: usize = 64;

/// Another process wrote this writer's chain: loud, because two replicas share a writer id.
fn shared_writer_id(writer_id: &str, conflicts: usize) {
    metrics::counter!("credgate_audit_chain_conflicts_total").increment(1);
    tracing::error!(
        writer_id,
        conflicts,
        "another process is writing this audit chain: two replicas share one [audit] writer_id; \
         the batch was refused and is chained again onto the real head (give each replica its own)"
    );
}

/// Appends one batch to this writer's chain as a single INSERT committed on its own: one
/// round trip and one fsync a batch (plus a transaction when a checkpoint is due). The
/// records' subjects are indexed by a trigger in the same statement (migration 0009).
///
/// No other replica writes this chain, so `known` (the head this writer left after its last
/// batch) is normally right. Should another process write under the same writer id, the
/// chain's unique index or the database's link check (migration 0060) refuses the whole batch;
/// the writer then reads the real head, chains the batch onto it again and retries, and says
/// so loudly. The chain never forks.
///
/// `chain` sets each record's `writer_id`, `chain_seq`, `prev_hash` and `hash` from the head
/// and returns the checkpoint when one is due. It may run more than once for a batch.
pub async fn append<F>(
    writer: &mut WriterConn,
    known: &mut Option<ChainHead>,
    records: &mut [AuditRecord],
    chain: F,
) -> Result<(), StorageError>
where
    F: Fn(&ChainHead, &mut [AuditRecord]) -> Option<Checkpoint>,
{
    let backend = writer.db.backend();
    let mut conflicts = 0;
    loop {
        let head = writer.head(known).await?;
        let checkpoint = chain(&head, records);
        let db = writer.db.clone();
        let conn = writer.get().await?;
        let turn = db.write_turn().await;
        let written = write(conn, backend, records, checkpoint.as_ref()).await;
        drop(turn);
        match written {
            Ok(()) => {
                // Committed, but into the file the path names? (A stat: `confirm_committed`.)
                if let Err(e) = db.confirm_committed() {
                    writer.conn = None;
                    return Err(e);
                }
                *known = Some(advanced(head, records, checkpoint.as_ref()));
                return Ok(());
            }
            Err(e) if is_conflict(&e) && conflicts < MAX_CONFLICTS => {
                conflicts += 1;
                shared_writer_id(&writer.writer_id, conflicts);
            }
            Err(e) => {
                writer.conn = None;
                return Err(e.into());
            }
        }
    }
}

/// Another writer got there first: its records hold our places in the chain, or our first
/// record no longer links to the chain's head.
fn is_conflict(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.kind() == sqlx::error::ErrorKind::UniqueViolation
                || d.message().contains("does not link to the head")
        }
        _ => false,
    }
}

/// One stored row, as the JSON PostgreSQL's INSERT unpacks. `subjects` and `masked` are stored
/// as JSON text, as before. No `seq`: the database assigns it.
#[derive(serde::Serialize)]
struct StoredRow<'a> {
    id: &'a str,
    time_us: i64,
    request_id: &'a str,
    kind: &'a str,
    client_id: Option<&'a str>,
    org: Option<&'a str>,
    role: Option<&'a str>,
    actor_subject: Option<&'a str>,
    purpose: Option<&'a str>,
    consent_id: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    store: Option<&'a str>,
    dataset: Option<&'a str>,
    subjects: String,
    decision: &'a str,
    rule: Option<&'a str>,
    masked: String,
    status: i32,
    bytes_out: i64,
    upstream_us: Option<i64>,
    total_us: i64,
    client_addr: &'a str,
    prev_hash: &'a str,
    hash: &'a str,
    actor: Option<&'a str>,
    actor_org: Option<&'a str>,
    legal_basis: Option<&'a str>,
    caller_request_id: Option<&'a str>,
    trace_id: Option<&'a str>,
    writer_id: &'a str,
    chain_seq: i64,
}

impl<'a> From<&'a AuditRecord> for StoredRow<'a> {
    fn from(r: &'a AuditRecord) -> Self {
        StoredRow {
            id: &r.id,
            time_us: r.time_us,
            request_id: &r.request_id,
            kind: &r.kind,
            client_id: r.client_id.as_deref(),
            org: r.org.as_deref(),
            role: r.role.as_deref(),
            actor_subject: r.actor_subject.as_deref(),
            purpose: r.purpose.as_deref(),
            consent_id: r.consent_id.as_deref(),
            method: &r.method,
            path: &r.path,
            store: r.store.as_deref(),
            dataset: r.dataset.as_deref(),
            subjects: crate::policy::json::string_list(&r.subjects),
            decision: &r.decision,
            rule: r.rule.as_deref(),
            masked: serde_json::to_string(&r.masked).expect("a map serialises"),
            status: r.status as i32,
            bytes_out: r.bytes_out as i64,
            upstream_us: r.upstream_us,
            total_us: r.total_us,
            client_addr: &r.client_addr,
            prev_hash: &r.prev_hash,
            hash: &r.hash,
            actor: r.actor.as_deref(),
            actor_org: r.actor_org.as_deref(),
            legal_basis: r.legal_basis.as_deref(),
            caller_request_id: r.caller_request_id.as_deref(),
            trace_id: r.trace_id.as_deref(),
            writer_id: &r.writer_id,
            chain_seq: r.chain_seq,
        }
    }
}

/// The batch's INSERT on PostgreSQL: every record in one bound JSON array, unpacked by the
/// server. One statement text whatever the batch size, and one bound value instead of 26 a
/// record (measured: 61 -> 53 us of gateway CPU a request). Nothing is spliced into SQL. `seq`
/// comes from the column's sequence (migration 0060), in chain order. `json`, not `jsonb`: the
/// batch is read once, and casting it to `jsonb` first built and key-sorted every record
/// (`qsort_arg`, `pushJsonbValue`, copies: the top of the server's profile under an entity
/// load); `json_populate_recordset` reads the text as it goes (+6.5-8% entity req/s).
fn postgres_insert() -> &'static str {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let cols = written_columns();
        format!(
            "INSERT INTO audit_log ({cols}) SELECT {cols} \
             FROM json_populate_recordset(NULL::audit_log, $1::json) ORDER BY chain_seq"
        )
    });
    &SQL
}

/// Batches up to this size use a statement prepared once and kept in the writer connection's
/// cache, one per size. Preparing the batch's statement anew was about a tenth of an append of
/// 40 records (SQLite's parser; measured 640 -> 560 us). Larger batches, which come only under
/// heavy load, are still prepared each time: caching every size up to `batch_max` (512) cost up
/// to 90 MB of peak RSS at 256 connections, and cutting them into cached chunks inside a
/// transaction was slower (more round trips to SQLite's thread).
const SQLITE_CACHED_ROWS: usize = 64;

/// The batch's INSERT on SQLite: one multi-row VALUES of exactly the batch's size, with
/// positional `?` (named `$N` makes SQLite look each one up by name, quadratic here). The JSON
/// form PostgreSQL uses is slower on SQLite: it turns each row back into text to read its
/// fields (measured: 73 -> 89 us a request).
///
/// Each row's first value is its place in the batch; its `seq` is that plus the largest seq
/// the log has held (archived records included). The statement holds SQLite's write lock, so
/// no other connection can take the same numbers; the subquery is uncorrelated, so SQLite
/// evaluates it once, before the first row is inserted.
fn sqlite_insert(rows: usize) -> String {
    let cols = written_columns();
    let n = cols.split(',').count();
    let row = format!("({})", vec!["?"; n + 1].join(", "));
    let values: Vec<String> = (2..=n + 1).map(|i| format!("column{i}")).collect();
    format!(
        "INSERT INTO audit_log (seq, {cols}) SELECT \
         (SELECT COALESCE(MAX(m), 0) FROM (SELECT MAX(seq) AS m FROM audit_log \
          UNION ALL SELECT MAX(upto_seq) FROM audit_archives)) + column1, {} \
         FROM (VALUES {})",
        values.join(", "),
        vec![row; rows].join(", ")
    )
}

/// The cached statements' text, built once: sqlx's cache needs the same `&str` each time.
fn sqlite_insert_cached(rows: usize) -> Option<&'static str> {
    static SQL: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| (1..=SQLITE_CACHED_ROWS).map(sqlite_insert).collect());
    (1..=SQLITE_CACHED_ROWS)
        .contains(&rows)
        .then(|| SQL[rows - 1].as_str())
}

fn bind_rows<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    records: &[AuditRecord],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for (place, r) in records.iter().enumerate() {
        q = q
            .bind(place as i64 + 1)
            .bind(&r.id)
            .bind(r.time_us)
            .bind(&r.request_id)
            .bind(&r.kind)
            .bind(&r.client_id)
            .bind(&r.org)
            .bind(&r.role)
            .bind(&r.actor_subject)
            .bind(&r.purpose)
            .bind(&r.consent_id)
            .bind(&r.method)
            .bind(&r.path)
            .bind(&r.store)
            .bind(&r.dataset)
            .bind(crate::policy::json::string_list(&r.subjects))
            .bind(&r.decision)
            .bind(&r.rule)
            .bind(serde_json::to_string(&r.masked).expect("a map serialises"))
            .bind(r.status as i32)
            .bind(r.bytes_out as i64)
            .bind(r.upstream_us)
            .bind(r.total_us)
            .bind(&r.client_addr)
            .bind(&r.prev_hash)
            .bind(&r.hash)
            .bind(&r.actor)
            .bind(&r.actor_org)
            .bind(&r.legal_basis)
            .bind(&r.caller_request_id)
            .bind(&r.trace_id)
            .bind(&r.writer_id)
            .bind(r.chain_seq);
    }
    q
}

/// The batch's INSERT, on a connection or inside a transaction. The records' `seq`s stay as
/// they were (0): nothing after the commit reads them (the X-Audit-Id is the record's `id`;
/// the log's readers read `seq` from the log). Returning them cost a message and a wake-up a
/// row between SQLite's connection thread and the writer (issue 18: 1.2 syscalls and 0.5
/// context switches a request).
async fn insert_records(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    records: &mut [AuditRecord],
) -> Result<(), sqlx::Error> {
    let insert = match backend {
        Backend::Sqlite => {
            let query = match sqlite_insert_cached(records.len()) {
                Some(cached) => sqlx::query(cached),
                None => {
                    sqlx::query(sqlx::AssertSqlSafe(sqlite_insert(records.len()))).persistent(false)
                }
            };
            bind_rows(query, records)
        }
        Backend::Postgres => {
            let rows: Vec<StoredRow> = records.iter().map(StoredRow::from).collect();
            let rows = serde_json::to_string(&rows).expect("audit rows serialise");
            sqlx::query(postgres_insert()).bind(rows)
        }
    };
    insert.execute(&mut *conn).await?;
    Ok(())
}

/// Fills in the `seq`s the database gave `records` (consecutive records of one chain), read
/// back from the log. The writer never needs them (`insert_records`); a tool or test that
/// keeps records after appending them does.
pub async fn read_seqs(db: &Db, records: &mut [AuditRecord]) -> Result<(), StorageError> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok(());
    };
    let rows = sqlx::query(
        "SELECT chain_seq, seq FROM audit_log \
         WHERE writer_id = $1 AND chain_seq >= $2 AND chain_seq <= $3",
    )
    .bind(first.writer_id.clone())
    .bind(first.chain_seq)
    .bind(last.chain_seq)
    .fetch_all(db.pool())
    .await?;
    let base = first.chain_seq;
    for row in rows {
        let place: i64 = row.try_get("chain_seq")?;
        if let Some(r) = records.get_mut((place - base) as usize) {
            r.seq = row.try_get("seq")?;
        }
    }
    Ok(())
}

/// Stores a checkpoint of the chain's record at `cp.chain_seq`, taking that record's `seq`;
/// nothing when the record does not hold `cp.hash` or the record is already signed (a batch's
/// checkpoint and the idle tick may name the same head).
async fn insert_checkpoint(
    conn: &mut sqlx::AnyConnection,
    cp: &Checkpoint,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_checkpoints (seq, writer_id, chain_seq, time_us, hash, key_id, signature) \
         SELECT seq, writer_id, chain_seq, $3, hash, $4, $5 FROM audit_log \
         WHERE writer_id = $1 AND chain_seq = $2 AND hash = $6 \
         ON CONFLICT DO NOTHING",
    )
    .bind(&cp.writer_id)
    .bind(cp.chain_seq)
    .bind(cp.time_us)
    .bind(&cp.key_id)
    .bind(&cp.signature)
    .bind(&cp.hash)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn write(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    records: &mut [AuditRecord],
    checkpoint: Option<&Checkpoint>,
) -> Result<(), sqlx::Error> {
    let Some(cp) = checkpoint else {
        return insert_records(conn, backend, records).await;
    };
    let mut tx = sqlx::Connection::begin(conn).await?;
    insert_records(&mut tx, backend, records).await?;
    insert_checkpoint(&mut tx, cp).await?;
    tx.commit().await
}

/// Signs the head of a chain on its own (the idle tick): the chain's tail is not left
/// unsigned for longer than `checkpoint_secs` when no batch comes to carry a checkpoint.
pub async fn append_checkpoint(
    writer: &mut WriterConn,
    cp: &Checkpoint,
) -> Result<(), StorageError> {
    let db = writer.db.clone();
    let conn = writer.get().await?;
    let turn = db.write_turn().await;
    let written = insert_checkpoint(conn, cp).await;
    drop(turn);
    if let Err(e) = written {
        writer.conn = None;
        return Err(e.into());
    }
    Ok(())
}

/// Signs another chain's head (see `append_checkpoint`), on a pooled connection.
pub async fn sign_head(db: &Db, cp: &Checkpoint) -> Result<(), StorageError> {
    let mut conn = db.pool().acquire().await?;
    insert_checkpoint(&mut conn, cp).await?;
    Ok(())
}

/// How a change's transaction ended, when it did not commit.
enum ChangeFailed {
    /// The change itself failed or was refused: nothing to retry.
    Change(ChangeError),
    /// The record could not be appended (a lost race is retried).
    Audit(sqlx::Error),
}

/// Opens the change's transaction. On SQLite it takes the write lock at once (`IMMEDIATE`): a
/// change that reads before it writes could otherwise find its snapshot stale at the first
/// write and fail without waiting.
async fn begin(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
) -> Result<sqlx::Transaction<'_, sqlx::Any>, sqlx::Error> {
    match backend {
        Backend::Sqlite => sqlx::Connection::begin_with(conn, "BEGIN IMMEDIATE").await,
        Backend::Postgres => sqlx::Connection::begin(conn).await,
    }
}

/// Applies `change`, appends `records` (and the checkpoint) and commits, all in one transaction.
async fn write_with_change(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    change: &dyn Change,
    records: &mut [AuditRecord],
    checkpoint: Option<&Checkpoint>,
) -> Result<(), ChangeFailed> {
    let mut tx = begin(conn, backend).await.map_err(ChangeFailed::Audit)?;
    if let Err(e) = change.apply(&mut tx).await {
        // An explicit rollback; if even that fails, the connection is dropped by the caller.
        return match tx.rollback().await {
            Ok(()) => Err(ChangeFailed::Change(e)),
            Err(r) => Err(ChangeFailed::Audit(r)),
        };
    }
    insert_records(&mut tx, backend, records)
        .await
        .map_err(ChangeFailed::Audit)?;
    if let Some(cp) = checkpoint {
        insert_checkpoint(&mut tx, cp)
            .await
            .map_err(ChangeFailed::Audit)?;
    }
    tx.commit().await.map_err(ChangeFailed::Audit)
}

/// What `append_change` reports when nothing was committed.
#[derive(Debug)]
pub enum ChangeOutcome {
    Refused(ChangeError),
    Failed(StorageError),
}

/// `append` for one record that carries a change: the change and the record commit in one
/// transaction, or neither does. A lost race for the head (another process under this writer
/// id) rolls both back and runs the change again on the real head; a refused change leaves
/// the chain as it was.
pub async fn append_change<F>(
    writer: &mut WriterConn,
    known: &mut Option<ChainHead>,
    records: &mut [AuditRecord],
    change: &dyn Change,
    chain: F,
) -> Result<(), ChangeOutcome>
where
    F: Fn(&ChainHead, &mut [AuditRecord]) -> Option<Checkpoint>,
{
    let backend = writer.db.backend();
    let mut conflicts = 0;
    loop {
        let head = writer.head(known).await.map_err(ChangeOutcome::Failed)?;
        let checkpoint = chain(&head, records);
        let db = writer.db.clone();
        let conn = writer.get().await.map_err(ChangeOutcome::Failed)?;
        let turn = db.write_turn().await;
        let written = write_with_change(conn, backend, change, records, checkpoint.as_ref()).await;
        drop(turn);
        match written {
            Ok(()) => {
                // Committed, but into the file the path names? (A stat: `confirm_committed`.)
                if let Err(e) = db.confirm_committed() {
                    writer.conn = None;
                    return Err(ChangeOutcome::Failed(e));
                }
                *known = Some(advanced(head, records, checkpoint.as_ref()));
                return Ok(());
            }
            Err(ChangeFailed::Change(ChangeError::Refused(e))) => {
                *known = Some(head);
                return Err(ChangeOutcome::Refused(ChangeError::Refused(e)));
            }
            Err(ChangeFailed::Change(ChangeError::Storage(e))) => {
                writer.conn = None;
                return Err(ChangeOutcome::Failed(e.into()));
            }
            Err(ChangeFailed::Audit(e)) if is_conflict(&e) && conflicts < MAX_CONFLICTS => {
                conflicts += 1;
                shared_writer_id(&writer.writer_id, conflicts);
            }
            Err(ChangeFailed::Audit(e)) => {
                writer.conn = None;
                return Err(ChangeOutcome::Failed(e.into()));
            }
        }
    }
}

/// The head after `records` (and the checkpoint) were committed onto `head`.
fn advanced(
    mut head: ChainHead,
    records: &[AuditRecord],
    checkpoint: Option<&Checkpoint>,
) -> ChainHead {
    if let Some(r) = records.last() {
        head.chain_seq = r.chain_seq;
        head.hash = r.hash.clone();
        // The first unsigned record's time, as `read_head` reads it back: the core's clock.
        head.unsigned_since_us.get_or_insert(records[0].time_us);
    }
    if let Some(cp) = checkpoint {
        head.checkpoint_chain_seq = cp.chain_seq;
        if cp.chain_seq >= head.chain_seq {
            head.unsigned_since_us = None;
        }
    }
    head
}

/// The head after an idle checkpoint signed it.
pub fn signed(mut head: ChainHead, cp: &Checkpoint) -> ChainHead {
    head.checkpoint_chain_seq = cp.chain_seq;
    if cp.chain_seq >= head.chain_seq {
        head.unsigned_since_us = None;
    }
    head
}

pub fn from_row(row: &AnyRow) -> Result<AuditRecord, sqlx::Error> {
    let subjects: String = row.try_get("subjects")?;
    let masked: String = row.try_get("masked")?;
    Ok(AuditRecord {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        time_us: row.try_get("time_us")?,
        request_id: row.try_get("request_id")?,
        kind: row.try_get("kind")?,
        client_id: row.try_get("client_id")?,
        org: row.try_get("org")?,
        role: row.try_get("role")?,
        actor_subject: row.try_get("actor_subject")?,
        purpose: row.try_get("purpose")?,
        consent_id: row.try_get("consent_id")?,
        method: row.try_get("method")?,
        path: row.try_get("path")?,
        store: row.try_get("store")?,
        dataset: row.try_get("dataset")?,
        // An unparseable stored value must not verify: keep it visible as a sentinel.
        subjects: serde_json::from_str(&subjects)
            .unwrap_or_else(|_| vec![format!("<corrupt:{subjects}>")]),
        decision: row.try_get("decision")?,
        rule: row.try_get("rule")?,
        masked: serde_json::from_str(&masked).unwrap_or_else(|_| {
            std::collections::BTreeMap::from([(format!("<corrupt:{masked}>"), 0)])
        }),
        status: row.try_get::<i32, _>("status")? as u16,
        bytes_out: row.try_get::<i64, _>("bytes_out")? as u64,
        upstream_us: row.try_get("upstream_us")?,
        total_us: row.try_get("total_us")?,
        client_addr: row.try_get("client_addr")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
        actor: row.try_get("actor")?,
        actor_org: row.try_get("actor_org")?,
        legal_basis: row.try_get("legal_basis")?,
        caller_request_id: row.try_get("caller_request_id")?,
        trace_id: row.try_get("trace_id")?,
        writer_id: row.try_get("writer_id")?,
        chain_seq: row.try_get("chain_seq")?,
    })
}

/// Records with `seq > after`, oldest first: the unit of verification and export.
pub async fn page_after(db: &Db, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StorageError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// Records of one chain with `chain_seq > after`, in chain order: the unit of verification
/// and archiving.
pub async fn chain_page_after(
    db: &Db,
    writer_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<AuditRecord>, StorageError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM audit_log WHERE writer_id = $1 AND chain_seq > $2 \
         ORDER BY chain_seq LIMIT $3"
    )))
    .bind(writer_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// A page of one chain for verification: its records, up to the first that cannot be read
/// (`undecodable`), where the page ends.
pub struct CheckedPage {
    pub records: Vec<AuditRecord>,
    pub undecodable: Option<Unreadable>,
}

/// A record that cannot be read: the place in its chain after which it stands, and its `seq`
/// when that is an integer.
pub struct Unreadable {
    pub writer_id: String,
    pub after: i64,
    pub seq: Option<i64>,
}

/// [`chain_page_after`], but a record holding a value of a form the gateway never writes (text
/// that is not UTF-8, a value of another type) ends the page and is named instead of failing
/// it: only an altered record holds one, and the driver refuses the whole read that meets it,
/// so `verify` answered an error naming no record. On such a failure the page is read again
/// one record at a time up to the one that fails.
pub async fn chain_page_checked(
    db: &Db,
    writer_id: &str,
    after: i64,
    limit: i64,
) -> Result<CheckedPage, StorageError> {
    let err = match chain_page_after(db, writer_id, after, limit).await {
        Ok(records) => {
            return Ok(CheckedPage {
                records,
                undecodable: None,
            });
        }
        Err(e) => e,
    };
    if !is_decode(&err) {
        return Err(err);
    }
    let mut records = Vec::new();
    let mut at = after;
    while records.len() < usize::try_from(limit).unwrap_or(0) {
        match chain_page_after(db, writer_id, at, 1).await {
            Ok(one) => {
                let Some(r) = one.into_iter().next() else {
                    break;
                };
                at = r.chain_seq;
                records.push(r);
            }
            Err(e) if is_decode(&e) => {
                let undecodable = Some(unreadable_after(db, writer_id, at).await?);
                return Ok(CheckedPage {
                    records,
                    undecodable,
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(CheckedPage {
        records,
        undecodable: None,
    })
}

/// The record after `at` in the chain, which cannot be read: its `seq` if that is an integer
/// (on SQLite a planted `seq` may be text: migration 0090).
async fn unreadable_after(db: &Db, writer_id: &str, at: i64) -> Result<Unreadable, StorageError> {
    let seq = match db.backend() {
        Backend::Sqlite => "CASE WHEN typeof(seq) = 'integer' THEN seq END",
        Backend::Postgres => "seq",
    };
    let seq: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {seq} FROM audit_log WHERE writer_id = $1 AND chain_seq > $2 \
         ORDER BY chain_seq LIMIT 1"
    )))
    .bind(writer_id)
    .bind(at)
    .fetch_optional(db.pool())
    .await?
    .flatten();
    Ok(Unreadable {
        writer_id: writer_id.to_string(),
        after: at,
        seq,
    })
}

/// Whether reading failed on a stored value of the wrong form (text that is not UTF-8), not
/// on the database.
fn is_decode(e: &StorageError) -> bool {
    matches!(
        e,
        StorageError::Database(sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. })
    )
}

/// The first record of `writer_id`'s chain at or below `base`, its archive boundary: there must
/// be none (archived records left the log; one there was put back, or forged into a place the
/// archive freed).
pub async fn chain_record_at_or_below(
    db: &Db,
    writer_id: &str,
    base: i64,
) -> Result<Option<AuditRecord>, StorageError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM audit_log WHERE writer_id = $1 AND chain_seq <= $2 \
         ORDER BY chain_seq LIMIT 1"
    )))
    .bind(writer_id)
    .bind(base)
    .fetch_optional(db.pool())
    .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

const CHECKPOINT_COLUMNS: &str = "seq, writer_id, chain_seq, time_us, hash, key_id, signature";

fn checkpoint_of(r: &AnyRow) -> Result<Checkpoint, sqlx::Error> {
    Ok(Checkpoint {
        seq: r.try_get("seq")?,
        writer_id: r.try_get("writer_id")?,
        chain_seq: r.try_get("chain_seq")?,
        time_us: r.try_get("time_us")?,
        hash: r.try_get("hash")?,
        key_id: r.try_get("key_id")?,
        signature: r.try_get("signature")?,
    })
}

/// Every chain's checkpoints, in `seq` order.
pub async fn checkpoints(db: &Db) -> Result<Vec<Checkpoint>, StorageError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY seq"
    )))
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(checkpoint_of).collect::<Result<_, _>>()?)
}

/// One chain's checkpoints, in chain order.
pub async fn chain_checkpoints(db: &Db, writer_id: &str) -> Result<Vec<Checkpoint>, StorageError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE writer_id = $1 \
         ORDER BY chain_seq, seq"
    )))
    .bind(writer_id)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(checkpoint_of).collect::<Result<_, _>>()?)
}

/// Every writer id that has records, checkpoints or archives, sorted. Each table is read by a
/// skip over its `(writer_id, ...)` index (a recursive step to the next larger id), so the
/// cost is one index seek per chain, not a scan of the log.
pub async fn writers(db: &Db) -> Result<Vec<String>, StorageError> {
    let mut all = std::collections::BTreeSet::new();
    for table in ["audit_log", "audit_checkpoints", "audit_archives"] {
        let sql = format!(
            "WITH RECURSIVE w(id) AS ( \
               SELECT MIN(writer_id) FROM {table} \
               UNION ALL \
               SELECT (SELECT MIN(writer_id) FROM {table} WHERE writer_id > w.id) FROM w \
               WHERE w.id IS NOT NULL) \
             SELECT id FROM w WHERE id IS NOT NULL"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(db.pool())
            .await?;
        for r in rows {
            all.insert(r.try_get::<String, _>("id")?);
        }
    }
    Ok(all.into_iter().collect())
}

/// A chain's state for the console's dashboard: how far it goes, how far it is signed, and its
/// last signed checkpoint. Read from the stored head and checkpoint, not verified (that is
/// `verify`'s work).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChainStatus {
    pub writer_id: String,
    /// The head's place in the chain (records ever written to it, archived ones included).
    pub head_chain_seq: i64,
    pub head_hash: String,
    /// When the head record was made; `None` when every record is archived or none written.
    pub head_time_us: Option<i64>,
    /// The place the newest checkpoint signed; `None` before the first one.
    pub signed_through: Option<i64>,
    /// When the newest checkpoint was signed, and by which key.
    pub last_checkpoint_time_us: Option<i64>,
    pub last_checkpoint_key_id: Option<String>,
    /// Records after the newest checkpoint (0: the whole chain is signed).
    pub unsigned: i64,
}

/// Every chain's [`ChainStatus`], by writer id.
pub async fn chain_status(db: &Db) -> Result<Vec<ChainStatus>, StorageError> {
    let mut out = Vec::new();
    let mut conn = db.pool().acquire().await?;
    for writer_id in writers(db).await? {
        let head = sqlx::query(
            "SELECT chain_seq, hash, time_us FROM audit_log WHERE writer_id = $1 \
             ORDER BY chain_seq DESC LIMIT 1",
        )
        .bind(&writer_id)
        .fetch_optional(&mut *conn)
        .await?;
        let (head_chain_seq, head_hash, head_time_us) = match head {
            Some(r) => (
                r.try_get("chain_seq")?,
                r.try_get("hash")?,
                Some(r.try_get("time_us")?),
            ),
            None => {
                let (n, h) = super::archive::base_on(&mut conn, &writer_id).await?;
                (n, h, None)
            }
        };
        let cp = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE writer_id = $1 \
             ORDER BY chain_seq DESC LIMIT 1"
        )))
        .bind(&writer_id)
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| checkpoint_of(&r))
        .transpose()?;
        out.push(ChainStatus {
            unsigned: head_chain_seq - cp.as_ref().map_or(0, |c| c.chain_seq.min(head_chain_seq)),
            writer_id,
            head_chain_seq,
            head_hash,
            head_time_us,
            signed_through: cp.as_ref().map(|c| c.chain_seq),
            last_checkpoint_time_us: cp.as_ref().map(|c| c.time_us),
            last_checkpoint_key_id: cp.map(|c| c.key_id),
        });
    }
    Ok(out)
}

/// Officers' filters. All optional; combined with AND.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub org: Option<String>,
    pub client: Option<String>,
    pub subject: Option<String>,
    pub store: Option<String>,
    pub decision: Option<String>,
    /// RFC 3339, inclusive.
    pub from: Option<String>,
    /// RFC 3339, exclusive.
    pub to: Option<String>,
    pub limit: Option<i64>,
    /// Opaque: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// For exports: csv or ndjson.
    pub format: Option<String>,
}

/// Parsed filter bounds, ready to bind.
#[derive(Debug, Default, Clone)]
pub struct Bounds {
    pub org: Option<String>,
    pub client: Option<String>,
    pub subject: Option<String>,
    /// The subject as the officer typed it, when the recorder's reduction changed it: records
    /// written before values over 128 bytes and the `sha256:` namespace were digested name
    /// such a value as sent, and are found by it still (rev4 R2).
    pub subject_as_sent: Option<String>,
    pub store: Option<String>,
    pub decision: Option<String>,
    pub from_us: Option<i64>,
    pub to_us: Option<i64>,
    /// Whether records of staff actions (kind `admin`) are included: only for an auditor, so
    /// that no one who acts as staff reviews the record of their own acts. Off by default.
    pub staff_actions: bool,
}

/// Newest first, below `before` (exclusive): new records have higher seqs and so never shift
/// a page already handed out.
pub async fn search(
    db: &Db,
    b: &Bounds,
    before: Option<i64>,
    limit: i64,
    ascending_after: Option<i64>,
) -> Result<Vec<AuditRecord>, StorageError> {
    // A subject's clause reads the writers (`subject_clause`): the statement starts with them.
    let cte = if b.subject.is_some() {
        super::index_store::WRITERS_CTE
    } else {
        ""
    };
    // Placeholders in binding order; the filters are written out twice when a subject is
    // given: on `a`, and inside each half of the subject's clause (`subject_clause`).
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    let org = b.org.as_ref().map(|_| next());
    let client = b.client.as_ref().map(|_| next());
    let subject = b.subject.as_ref().map(|_| next());
    let sent = b
        .subject
        .as_ref()
        .and(b.subject_as_sent.as_ref())
        .map(|_| next());
    let store = b.store.as_ref().map(|_| next());
    let decision = b.decision.as_ref().map(|_| next());
    let from = b.from_us.map(|_| next());
    let to = b.to_us.map(|_| next());
    let below = before.map(|_| next());
    let above = ascending_after.map(|_| next());
    let limit_p = next();
    // The step rows' candidates and the cut beyond which they were not read
    // (`index_store::step_candidates`): bound last, the same on every retry.
    let steps_p = subject.as_ref().map(|_| (next(), next()));
    let filters = |t: &str| {
        let mut f = String::new();
        if !b.staff_actions {
            f += &format!(" AND {t}kind <> 'admin'");
        }
        for (col, op, p) in [
            ("org", "=", &org),
            ("client_id", "=", &client),
            ("store", "=", &store),
            ("decision", "=", &decision),
            ("time_us", ">=", &from),
            ("time_us", "<", &to),
        ] {
            if let Some(p) = p {
                f += &format!(" AND {t}{col} {op} {p}");
            }
        }
        f
    };
    let seq = |t: &str| {
        let mut f = String::new();
        if let Some(p) = &below {
            f += &format!(" AND {t}seq < {p}");
        }
        if let Some(p) = &above {
            f += &format!(" AND {t}seq > {p}");
        }
        f
    };
    let order = if ascending_after.is_some() {
        "ASC"
    } else {
        "DESC"
    };
    let mut sql = format!(
        "{cte}SELECT {COLUMNS} FROM audit_log a WHERE 1 = 1{}{}",
        filters("a."),
        seq("a.")
    );
    if let (Some(p), Some((cands, cut))) = (&subject, &steps_p) {
        sql += &subject_clause(
            db.backend(),
            (p, sent.as_deref(), cands),
            (&filters("l."), &seq("s."), &seq("l.")),
            (order, &limit_p),
        );
        let beyond = if ascending_after.is_some() { "<" } else { ">" };
        sql += &format!(" AND a.seq {beyond} {cut}");
    }
    sql += &format!(" ORDER BY a.seq {order} LIMIT {limit_p}");
    let Some(subject) = &b.subject else {
        let mut conn = db.pool().acquire().await?;
        return search_run(&mut conn, &sql, b, (before, ascending_after, limit), None).await;
    };
    // A page short of its limit while step rows were left unread may miss records beyond
    // the cut: read twice the rows and run it again (the statement's text is the same).
    let walk = match ascending_after {
        Some(a) => Walk::Above(a),
        None => Walk::Below(before.unwrap_or(i64::MAX)),
    };
    let mut size = step_read(limit);
    let mut tx = index_store::snapshot(db).await?;
    loop {
        let mut steps = index_store::step_candidates(&mut tx, subject, walk, size).await?;
        if let Some(typed) = &b.subject_as_sent {
            let more = index_store::step_candidates(&mut tx, typed, walk, size).await?;
            steps = steps.merge(more, walk);
        }
        let bounds = (before, ascending_after, limit);
        let page = search_run(&mut tx, &sql, b, bounds, Some((&steps, walk))).await?;
        if page.len() as i64 >= limit || steps.cut.is_none() {
            tx.commit().await?;
            return Ok(page);
        }
        size = (size.0.saturating_mul(2), size.1.saturating_mul(2));
    }
}

/// The first read of a subject's step rows for a page of `limit` (`index_store::
/// step_candidates`' rows and need): the page and one over, from a sixteenth as many rows plus
/// eight (a hot subject's row holds up to 256; a cold one's, one or two, so its walk reads
/// again, twice as many rows each time, until the page is full).
fn step_read(limit: i64) -> (i64, i64) {
    let need = limit.saturating_add(1);
    (need / 16 + 8, need)
}

/// Runs `search`'s statement with its values bound in placeholder order.
async fn search_run(
    conn: &mut sqlx::AnyConnection,
    sql: &str,
    b: &Bounds,
    (before, ascending_after, limit): (Option<i64>, Option<i64>, i64),
    steps: Option<(&StepCandidates, Walk)>,
) -> Result<Vec<AuditRecord>, StorageError> {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    let sent = b.subject.as_ref().and(b.subject_as_sent.as_ref());
    for v in [&b.org, &b.client, &b.subject]
        .into_iter()
        .flatten()
        .chain(sent)
        .chain([&b.store, &b.decision].into_iter().flatten())
    {
        q = q.bind(v.clone());
    }
    for v in [b.from_us, b.to_us, before, ascending_after]
        .into_iter()
        .flatten()
    {
        q = q.bind(v);
    }
    q = q.bind(limit);
    if let Some((steps, walk)) = steps {
        q = q.bind(steps.json()).bind(steps.bound(walk));
    }
    let rows = q.fetch_all(conn).await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// The records about a subject for the officers: those that touched the subject's records
/// (`audit_subjects`) and those the subject made themselves (`actor_subject`: consents,
/// complaints, withdrawals, page views). Each half is read by its own index (the primary key
/// of `audit_subjects`, `audit_log_actor_subject` of migration 0050), joined by UNION, so
/// neither is a scan of the log. `p` is the one placeholder, bound once and used where needed
/// (both databases number placeholders, so a repeated `$n` is the same value).
///
/// Each half walks its index in the page's order from the cursor (`seq_s`, `seq_l`: the
/// search's bounds on `seq`) and stops after the page (`limit`), checking the search's other
/// filters (`filters`, on alias `l`) a row: the index half by a scalar subquery (one probe of
/// the log's primary key a row; PostgreSQL never turns it into a join; `IS NOT NULL`: see
/// `access_log_at`).
/// The page is the first `limit` of the union in that order, so it lies within the first
/// `limit` of each half. Gathering every seq naming the subject instead cost a subject with
/// 133,333 index rows 150-1,235 ms a page on PostgreSQL (300,000 records).
///
/// The index is written behind the path (`audit::indexer`): the third half is every record
/// above its chain's index progress that names the subject (`index_store::unindexed_union`;
/// the statement starts with `index_store::WRITERS_CTE`), so the answer is exact whatever the
/// indexer's lag, in one statement whose text does not change.
///
/// `sent`: a second placeholder, the value as typed when it differs from `p` (see
/// `Bounds::subject_as_sent`), whose records are added the same three ways.
fn subject_clause(
    backend: Backend,
    (p, sent, cands): (&str, Option<&str>, &str),
    (filters, seq_s, seq_l): (&str, &str, &str),
    (order, limit): (&str, &str),
) -> String {
    let naming = |p: &str| {
        format!(
            "SELECT seq FROM (SELECT s.seq FROM audit_subjects s WHERE s.subject_id = {p}{seq_s} \
               AND (SELECT 1 FROM audit_log l WHERE l.seq = s.seq{filters}) IS NOT NULL \
               ORDER BY s.seq {order} LIMIT {limit}) i \
             UNION SELECT seq FROM (SELECT l.seq FROM audit_log l WHERE l.actor_subject = {p}\
               {filters}{seq_l} ORDER BY l.seq {order} LIMIT {limit}) m{}",
            super::index_store::unindexed_union(backend, p)
        )
    };
    let steps = super::index_store::candidates_sql(backend, cands);
    match sent {
        None => format!(" AND a.seq IN ({}{steps})", naming(p)),
        Some(q) => format!(" AND a.seq IN ({} UNION {}{steps})", naming(p), naming(q)),
    }
}

/// The index only finds candidates: a record is about a subject when its own (hashed)
/// `subjects` list says so, so a row planted in `audit_subjects` shows no one's request to
/// anyone else.
fn names(records: Vec<AuditRecord>, subject: &str) -> Vec<AuditRecord> {
    records
        .into_iter()
        .filter(|r| r.subjects.iter().any(|s| s == subject))
        .collect()
}

/// One page of a subject's access log, newest first.
#[derive(Debug)]
pub struct AccessPage {
    /// The records on this page that name the subject.
    pub records: Vec<AuditRecord>,
    /// Where the next (older) page starts below, when older rows exist. Counted on the rows
    /// read, before `names` drops any, so a dropped row never ends the log early; a page may
    /// then hold fewer records than `limit`, even none, and still have a next one.
    ///
    /// A walk shows the records committed before its first page. On PostgreSQL `seq` is
    /// taken at INSERT, so a record of another replica can commit below a cursor already
    /// handed out; a walk started later shows it (the officers' search pages the same way;
    /// rev4 R3).
    pub next: Option<i64>,
}

/// Accesses by institutions (and the public) to this subject's records, newest first, at most
/// `limit` below `before`, without those the policy withholds from the subject for now
/// (`withhold_from_subject_days`: notice of an enforcement case's reads may wait, PIPL arts. 18
/// and 35). The records exist; staff see them; the subject sees them once the period has run.
/// A page, not the whole log: each record carries its whole subject list (a list read names a
/// hundred), so reading hundreds at once costs megabytes a request.
pub async fn access_log(
    db: &Db,
    subject: &str,
    (before, limit): (Option<i64>, i64),
    policies: &crate::policy::PolicySet,
) -> Result<AccessPage, StorageError> {
    let withheld: Vec<(&str, u32)> = policies
        .purpose_codes()
        .into_iter()
        .filter_map(|c| {
            let days = policies.purpose(c)?.withhold_from_subject_days;
            (days > 0).then_some((c, days))
        })
        .collect();
    let now = crate::storage::now_micros();
    access_log_at(db, subject, (before, limit), &withheld, now).await
}

/// The access log as of `now_us`, leaving out reads for each `(purpose, days)` younger than
/// that many days. Filtered in the query, so `limit` counts what the subject may see.
pub async fn access_log_at(
    db: &Db,
    subject: &str,
    (before, limit): (Option<i64>, i64),
    withheld: &[(&str, u32)],
    now_us: i64,
) -> Result<AccessPage, StorageError> {
    // COALESCE: a record without a purpose is never withheld (NOT of NULL would drop it).
    let clauses = |t: &str| -> String {
        (0..withheld.len())
            .map(|i| {
                format!(
                    " AND NOT (COALESCE({t}purpose, '') = ${} AND {t}time_us > ${})",
                    4 + 2 * i,
                    5 + 2 * i
                )
            })
            .collect()
    };
    // The index is walked newest first from the cursor and stops after the page (one row
    // over): its primary key is (subject_id, seq). An `IN` of every seq naming the subject
    // gathered the subject's whole history on each call, 24 ms and growing after ten minutes
    // of the soak for a page of one. Records not yet indexed are matched on their own
    // `subjects` (see `subject_clause`), in the same statement: its text is the same on every
    // call, so it is prepared once a connection and cached. One row past the page: `next`
    // only when older rows exist, so a log of exactly one page offers no empty page behind
    // it (rev4 R1b).
    //
    // On PostgreSQL the walk reads each row's kind and purpose by a scalar subquery (one probe
    // of the log's primary key a row, never turned into a join), not by a join: with the
    // subject and cursor known (a custom plan: a prepared statement's first five executions,
    // and later ones when `plan_cache_mode = auto` keeps them) the planner merged the join
    // with a backward scan of the whole log from its head, not from the cursor. 300,000
    // records: a page below a deep cursor of a subject with 133,333 index rows, or the first
    // page of a subject whose 13,000 rows are all old, took 110-150 ms, now 0.2-0.9 ms, in
    // both generic and custom plans. `IS NOT NULL`, not `= 1` or `IN`: the planner guesses
    // 99.5% of rows pass it (0.5% or 1.5% for the others), so the walk's estimated cost stays
    // near the page's, not above `jit_above_cost` (a search's page of 500 under `= 1`: 2.7 ms
    // to run, 250 ms to JIT-compile). SQLite walks the index and probes the log a row already.
    let walk = match db.backend() {
        Backend::Sqlite => format!(
            "SELECT s.seq FROM audit_subjects s JOIN audit_log l ON l.seq = s.seq \
             WHERE s.subject_id = $1 AND s.seq < $3 AND l.kind IN ('data', 'profile', 'public'){}",
            clauses("l.")
        ),
        Backend::Postgres => format!(
            "SELECT s.seq FROM audit_subjects s WHERE s.subject_id = $1 AND s.seq < $3 \
             AND (SELECT 1 FROM audit_log l WHERE l.seq = s.seq \
               AND l.kind IN ('data', 'profile', 'public'){}) IS NOT NULL",
            clauses("l.")
        ),
    };
    // Step rows (migration 0090) as candidates bound at `steps`, and the cut beyond which
    // rows were left unread (`index_store::step_candidates`) at `steps + 1`.
    let steps = 4 + 2 * withheld.len();
    let sql = format!(
        "{}SELECT {COLUMNS} FROM audit_log WHERE seq IN \
         (SELECT seq FROM ({walk} ORDER BY s.seq DESC LIMIT $2) newest{}{}) \
         AND kind IN ('data', 'profile', 'public') AND seq < $3 AND seq > ${}{} \
         ORDER BY seq DESC LIMIT $2",
        index_store::WRITERS_CTE,
        index_store::unindexed_union(db.backend(), "$1"),
        index_store::candidates_sql(db.backend(), &format!("${steps}")),
        steps + 1,
        clauses("")
    );
    let walk = Walk::Below(before.unwrap_or(i64::MAX));
    let mut size = step_read(limit);
    // A page short of one over its limit while step rows were left unread may miss records
    // beyond the cut: twice the rows, and again.
    let mut tx = index_store::snapshot(db).await?;
    let rows = loop {
        let cands = index_store::step_candidates(&mut tx, subject, walk, size).await?;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(subject)
            .bind(limit.saturating_add(1))
            .bind(before.unwrap_or(i64::MAX));
        for (purpose, days) in withheld {
            let cutoff = now_us.saturating_sub(i64::from(*days).saturating_mul(86_400_000_000));
            q = q.bind(purpose.to_string()).bind(cutoff);
        }
        let rows = q
            .bind(cands.json())
            .bind(cands.bound(walk))
            .fetch_all(&mut *tx)
            .await?;
        if rows.len() as i64 > limit || cands.cut.is_none() {
            tx.commit().await?;
            break rows;
        }
        size = (size.0.saturating_mul(2), size.1.saturating_mul(2));
    };
    let page = usize::try_from(limit).unwrap_or(0).min(rows.len());
    let records: Vec<AuditRecord> = rows[..page]
        .iter()
        .map(from_row)
        .collect::<Result<_, _>>()?;
    let next = (rows.len() > page)
        .then(|| records.last().map(|r| r.seq))
        .flatten();
    drop(rows);
    Ok(AccessPage {
        records: names(records, subject),
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL's INSERT reads each column by its key in the batch's JSON, and a key that
    /// names no column is ignored while the column stays NULL: the keys `StoredRow` writes must
    /// be exactly the columns the INSERT names.
    #[test]
    fn the_stored_rows_keys_are_the_written_columns() {
        let record = AuditRecord::default();
        let row = serde_json::to_value(StoredRow::from(&record)).unwrap();
        let keys: std::collections::BTreeSet<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let columns: std::collections::BTreeSet<&str> =
            written_columns().split(',').map(str::trim).collect();
        assert_eq!(keys, columns);
    }
}
