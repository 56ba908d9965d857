//! SQL for the audit tables. Every filter value is a bound parameter; nothing a caller sends is
//! ever spliced into SQL text.

use sqlx::{Row, any::AnyRow};

use super::{AuditRecord, Change, ChangeError};
use crate::storage::{Backend, Db, StorageError};

/// The chain's head as stored: the last record and the last checkpoint.
#[derive(Debug, Clone)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
    pub checkpoint_seq: i64,
    /// When the last checkpoint was signed; with none yet, when the first record was written.
    pub checkpoint_time_us: i64,
}

#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub seq: i64,
    pub time_us: i64,
    pub hash: String,
    pub key_id: String,
    pub signature: String,
}

pub async fn head(db: &Db) -> Result<Head, StorageError> {
    let mut conn = db.pool().acquire().await?;
    read_head(&mut conn).await
}

async fn read_head(conn: &mut sqlx::AnyConnection) -> Result<Head, StorageError> {
    let row = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    let cp = sqlx::query("SELECT seq, time_us FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    let (checkpoint_seq, checkpoint_time_us) = match cp {
        Some(c) => (c.try_get("seq")?, c.try_get("time_us")?),
        None => {
            let first: Option<i64> =
                sqlx::query("SELECT time_us FROM audit_log ORDER BY seq LIMIT 1")
                    .fetch_optional(&mut *conn)
                    .await?
                    .map(|r| r.try_get("time_us"))
                    .transpose()?;
            (0, first.unwrap_or_else(crate::storage::now_micros))
        }
    };
    Ok(match row {
        Some(r) => Head {
            seq: r.try_get("seq")?,
            hash: r.try_get("hash")?,
            checkpoint_seq,
            checkpoint_time_us,
        },
        // Everything archived (or nothing written yet): chain onto the archive's last record.
        None => {
            let (seq, hash) = super::archive::base_on(conn).await?;
            Head {
                seq,
                hash,
                checkpoint_seq,
                checkpoint_time_us,
            }
        }
    })
}

const COLUMNS: &str = "seq, id, time_us, request_id, kind, client_id, org, role, actor_subject, \
    purpose, consent_id, method, path, store, dataset, subjects, decision, rule, masked, status, \
    bytes_out, upstream_us, total_us, client_addr, prev_hash, hash, actor, actor_org, legal_basis, \
    caller_request_id, trace_id";

/// The writer's own connection, kept from batch to batch. Taking one from the pool for each
/// batch cost a liveness ping: one more round trip to SQLite's thread (or to PostgreSQL) per
/// commit. After a failed batch it is dropped, and the next batch starts on a fresh one.
pub struct WriterConn {
    db: Db,
    conn: Option<sqlx::AnyConnection>,
}

impl WriterConn {
    pub fn new(db: Db) -> Self {
        Self { db, conn: None }
    }

    async fn get(&mut self) -> Result<&mut sqlx::AnyConnection, StorageError> {
        if self.conn.is_none() {
            self.conn = Some(self.db.pool().acquire().await?.detach());
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }
}

/// How often a batch may find its sequence numbers taken by another replica before the writer
/// gives up on it. Each loss means another writer committed, so the chain moves on regardless.
const MAX_CONFLICTS: usize = 64;

/// Appends one batch, whichever replica writes it, as a single INSERT committed on its own: one
/// round trip and one fsync a batch (plus a transaction when a checkpoint is due). The records'
/// subjects are indexed by a trigger in the same statement (migration 0009).
///
/// There is no lock. `known` is the head this writer left after its last batch; the batch takes
/// the sequence numbers after it. If another writer took them first, the primary key on `seq`
/// (or the database's link check, see migration 0009) refuses the whole batch; the writer then
/// reads the real head, chains the batch onto it again and retries.
///
/// `chain` sets each record's `seq`, `prev_hash` and `hash` from the head and returns the
/// checkpoint when one is due. It may run more than once for a batch.
pub async fn append<F>(
    writer: &mut WriterConn,
    known: &mut Option<Head>,
    records: &mut [AuditRecord],
    chain: F,
) -> Result<(), StorageError>
where
    F: Fn(&Head, &mut [AuditRecord]) -> Option<Checkpoint>,
{
    let backend = writer.db.backend();
    let mut conflicts = 0;
    loop {
        let conn = writer.get().await?;
        let head = match known.take() {
            Some(h) => h,
            None => match read_head(conn).await {
                Ok(h) => h,
                Err(e) => {
                    writer.conn = None;
                    return Err(e);
                }
            },
        };
        let checkpoint = chain(&head, records);
        match write(conn, backend, records, checkpoint.as_ref()).await {
            Ok(()) => {
                *known = Some(advanced(head, records, checkpoint.as_ref()));
                return Ok(());
            }
            Err(e) if is_conflict(&e) && conflicts < MAX_CONFLICTS => {
                conflicts += 1;
                tracing::debug!(
                    conflicts,
                    "audit batch raced another writer; chaining again"
                );
            }
            Err(e) => {
                writer.conn = None;
                return Err(e.into());
            }
        }
    }
}

/// Another writer got there first: its records hold our sequence numbers, or our first record
/// no longer links to the head.
fn is_conflict(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.kind() == sqlx::error::ErrorKind::UniqueViolation
                || d.message().contains("does not link to the head")
        }
        _ => false,
    }
}

/// One stored row, as the JSON PostgreSQL's INSERT unpacks. `subjects` and `masked` are stored as JSON
/// text, as before.
#[derive(serde::Serialize)]
struct StoredRow<'a> {
    seq: i64,
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
}

impl<'a> From<&'a AuditRecord> for StoredRow<'a> {
    fn from(r: &'a AuditRecord) -> Self {
        StoredRow {
            seq: r.seq,
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
            subjects: serde_json::to_string(&r.subjects).expect("strings serialise"),
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
        }
    }
}

/// The batch's INSERT on PostgreSQL: every record in one bound JSON array, unpacked by the
/// server. One statement text whatever the batch size, and one bound value instead of 26 a
/// record (measured: 61 -> 53 us of gateway CPU a request). Nothing is spliced into SQL.
fn postgres_insert() -> &'static str {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "INSERT INTO audit_log ({COLUMNS}) SELECT {COLUMNS} \
             FROM jsonb_populate_recordset(NULL::audit_log, $1::jsonb) ORDER BY seq"
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
fn sqlite_insert(rows: usize) -> String {
    let row = format!("({})", vec!["?"; COLUMNS.split(',').count()].join(", "));
    format!(
        "INSERT INTO audit_log ({COLUMNS}) VALUES {}",
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
    for r in records {
        q = q
            .bind(r.seq)
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
            .bind(serde_json::to_string(&r.subjects).expect("strings serialise"))
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
            .bind(&r.trace_id);
    }
    q
}

/// The batch's INSERT, on a connection or inside a transaction.
async fn insert_records(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    records: &[AuditRecord],
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

async fn insert_checkpoint(
    conn: &mut sqlx::AnyConnection,
    cp: &Checkpoint,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_checkpoints (seq, time_us, hash, key_id, signature) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(cp.seq)
    .bind(cp.time_us)
    .bind(&cp.hash)
    .bind(&cp.key_id)
    .bind(&cp.signature)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn write(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    records: &[AuditRecord],
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
    records: &[AuditRecord],
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
/// transaction, or neither does. A lost race for the head rolls both back and runs the change
/// again on the real head; a refused change leaves the chain as it was.
pub async fn append_change<F>(
    writer: &mut WriterConn,
    known: &mut Option<Head>,
    records: &mut [AuditRecord],
    change: &dyn Change,
    chain: F,
) -> Result<(), ChangeOutcome>
where
    F: Fn(&Head, &mut [AuditRecord]) -> Option<Checkpoint>,
{
    let backend = writer.db.backend();
    let mut conflicts = 0;
    loop {
        let conn = writer.get().await.map_err(ChangeOutcome::Failed)?;
        let head = match known.take() {
            Some(h) => h,
            None => match read_head(conn).await {
                Ok(h) => h,
                Err(e) => {
                    writer.conn = None;
                    return Err(ChangeOutcome::Failed(e));
                }
            },
        };
        let checkpoint = chain(&head, records);
        match write_with_change(conn, backend, change, records, checkpoint.as_ref()).await {
            Ok(()) => {
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
            }
            Err(ChangeFailed::Audit(e)) => {
                writer.conn = None;
                return Err(ChangeOutcome::Failed(e.into()));
            }
        }
    }
}

/// The head after `records` (and the checkpoint) were committed onto `head`.
fn advanced(mut head: Head, records: &[AuditRecord], checkpoint: Option<&Checkpoint>) -> Head {
    if let Some(r) = records.last() {
        head.seq = r.seq;
        head.hash = r.hash.clone();
    }
    if let Some(cp) = checkpoint {
        head.checkpoint_seq = cp.seq;
        head.checkpoint_time_us = cp.time_us;
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

pub async fn checkpoints(db: &Db) -> Result<Vec<Checkpoint>, StorageError> {
    let rows = sqlx::query(
        "SELECT seq, time_us, hash, key_id, signature FROM audit_checkpoints ORDER BY seq",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Checkpoint {
                seq: r.try_get("seq")?,
                time_us: r.try_get("time_us")?,
                hash: r.try_get("hash")?,
                key_id: r.try_get("key_id")?,
                signature: r.try_get("signature")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
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
    let mut sql = format!("SELECT {COLUMNS} FROM audit_log a WHERE 1 = 1");
    if !b.staff_actions {
        sql += " AND a.kind <> 'admin'";
    }
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    if b.org.is_some() {
        sql += &format!(" AND a.org = {}", next());
    }
    if b.client.is_some() {
        sql += &format!(" AND a.client_id = {}", next());
    }
    if b.subject.is_some() {
        sql += &subject_clause(&next());
    }
    if b.store.is_some() {
        sql += &format!(" AND a.store = {}", next());
    }
    if b.decision.is_some() {
        sql += &format!(" AND a.decision = {}", next());
    }
    if b.from_us.is_some() {
        sql += &format!(" AND a.time_us >= {}", next());
    }
    if b.to_us.is_some() {
        sql += &format!(" AND a.time_us < {}", next());
    }
    if before.is_some() {
        sql += &format!(" AND a.seq < {}", next());
    }
    if ascending_after.is_some() {
        sql += &format!(" AND a.seq > {} ORDER BY a.seq ASC", next());
    } else {
        sql += " ORDER BY a.seq DESC";
    }
    sql += &format!(" LIMIT {}", next());
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for v in [&b.org, &b.client, &b.subject, &b.store, &b.decision]
        .into_iter()
        .flatten()
    {
        q = q.bind(v.clone());
    }
    for v in [b.from_us, b.to_us, before, ascending_after]
        .into_iter()
        .flatten()
    {
        q = q.bind(v);
    }
    let rows = q.bind(limit).fetch_all(db.pool()).await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// The records about a subject for the officers: those that touched the subject's records
/// (`audit_subjects`) and those the subject made themselves (`actor_subject`: consents,
/// complaints, withdrawals, page views). Each half is read by its own index (the primary key
/// of `audit_subjects`, `audit_log_actor_subject` of migration 0050), joined by UNION, so
/// neither is a scan of the log. `p` is the one placeholder, bound once and used twice
/// (both databases number placeholders, so a repeated `$n` is the same value).
fn subject_clause(p: &str) -> String {
    format!(
        " AND a.seq IN (SELECT seq FROM audit_subjects WHERE subject_id = {p} \
         UNION SELECT seq FROM audit_log WHERE actor_subject = {p})"
    )
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

/// Accesses by institutions (and the public) to this subject's records, newest first,
/// without those the policy withholds from the subject for now (`withhold_from_subject_days`:
/// notice of an enforcement case's reads may wait, PIPL arts. 18 and 35). The records exist;
/// staff see them; the subject sees them once the period has run.
pub async fn access_log(
    db: &Db,
    subject: &str,
    limit: i64,
    policies: &crate::policy::PolicySet,
) -> Result<Vec<AuditRecord>, StorageError> {
    let withheld: Vec<(&str, u32)> = policies
        .purpose_codes()
        .into_iter()
        .filter_map(|c| {
            let days = policies.purpose(c)?.withhold_from_subject_days;
            (days > 0).then_some((c, days))
        })
        .collect();
    access_log_at(db, subject, limit, &withheld, crate::storage::now_micros()).await
}

/// The access log as of `now_us`, leaving out reads for each `(purpose, days)` younger than
/// that many days. Filtered in the query, so `limit` counts what the subject may see.
pub async fn access_log_at(
    db: &Db,
    subject: &str,
    limit: i64,
    withheld: &[(&str, u32)],
    now_us: i64,
) -> Result<Vec<AuditRecord>, StorageError> {
    // COALESCE: a record without a purpose is never withheld (NOT of NULL would drop it).
    let clauses: String = (0..withheld.len())
        .map(|i| {
            format!(
                " AND NOT (COALESCE(purpose, '') = ${} AND time_us > ${})",
                3 + 2 * i,
                4 + 2 * i
            )
        })
        .collect();
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_log WHERE seq IN \
         (SELECT seq FROM audit_subjects WHERE subject_id = $1) \
         AND kind IN ('data', 'profile', 'public'){clauses} ORDER BY seq DESC LIMIT $2"
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(subject)
        .bind(limit);
    for (purpose, days) in withheld {
        let cutoff = now_us.saturating_sub(i64::from(*days).saturating_mul(86_400_000_000));
        q = q.bind(purpose.to_string()).bind(cutoff);
    }
    let rows = q.fetch_all(db.pool()).await?;
    let records = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    Ok(names(records, subject))
}
