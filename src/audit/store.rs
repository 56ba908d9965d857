//! SQL for the audit tables. Every filter value is a bound parameter; nothing a caller sends is
//! ever spliced into SQL text.

use sqlx::{Row, any::AnyRow};

use super::AuditRecord;
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
    bytes_out, upstream_us, total_us, client_addr, prev_hash, hash";

/// Rows per multi-row INSERT: 26 columns each, well under SQLite's and PostgreSQL's limits on
/// bound parameters. One statement per chunk instead of one per record keeps the writer's
/// round trips to the database few, whatever the batch size.
const CHUNK: usize = 64;

/// Splits into chunks of at most CHUNK whose lengths are powers of two. Every distinct statement
/// text is prepared and cached per connection; powers of two keep that to seven shapes
/// instead of one per batch length.
fn pow2_chunks<T>(mut items: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    while !items.is_empty() {
        let n = CHUNK.min(1 << items.len().ilog2());
        let (head, rest) = items.split_at(n);
        out.push(head);
        items = rest;
    }
    out
}

/// Positional `?` for SQLite (named `$N` makes SQLite look every parameter up by name, which is
/// quadratic in a large multi-row insert); `$N` for PostgreSQL.
fn placeholders(backend: Backend, rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let cells: Vec<String> = (1..=cols)
                .map(|c| match backend {
                    Backend::Sqlite => "?".to_string(),
                    Backend::Postgres => format!("${}", r * cols + c),
                })
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

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

/// The head as this writer last left it, and the `audit_writer` counter its batch set.
#[derive(Debug, Clone)]
pub struct KnownHead {
    batches: i64,
    head: Head,
}

/// Appends one batch as one transaction, whichever replica writes it. The first statement
/// bumps the `audit_writer` counter: its row lock makes every other writer (this process or
/// another replica) wait until this batch commits, so the head read next is the real head and
/// the batch chains onto it. On SQLite a write as the first statement also takes the
/// database's write lock before any read, so no stale snapshot can be chained onto.
///
/// `known` saves the head queries when nobody else wrote since this writer's last batch: the
/// counter then is exactly one past what that batch left.
///
/// `chain` receives the head and returns the chained records and, when one is due, the
/// checkpoint; it runs under the lock, so it must be quick (hashing and one signature).
pub async fn append<F>(
    writer: &mut WriterConn,
    known: &mut Option<KnownHead>,
    chain: F,
) -> Result<Vec<AuditRecord>, StorageError>
where
    F: FnOnce(&Head) -> (Vec<AuditRecord>, Option<Checkpoint>),
{
    let backend = writer.db.backend();
    let result = append_on(writer.get().await?, backend, known, chain).await;
    if result.is_err() {
        writer.conn = None;
    }
    result
}

async fn append_on<F>(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    known: &mut Option<KnownHead>,
    chain: F,
) -> Result<Vec<AuditRecord>, StorageError>
where
    F: FnOnce(&Head) -> (Vec<AuditRecord>, Option<Checkpoint>),
{
    let last = known.take();
    let mut tx = sqlx::Connection::begin(conn).await?;
    let batches: i64 =
        sqlx::query("UPDATE audit_writer SET batches = batches + 1 WHERE id = 1 RETURNING batches")
            .fetch_one(&mut *tx)
            .await?
            .try_get("batches")?;
    let head = match last {
        Some(k) if k.batches + 1 == batches => k.head,
        _ => read_head(&mut tx).await?,
    };
    let (records, checkpoint) = chain(&head);
    insert_batch(&mut tx, backend, &records, checkpoint.as_ref()).await?;
    tx.commit().await?;
    let mut next = head;
    if let Some(r) = records.last() {
        next.seq = r.seq;
        next.hash = r.hash.clone();
    }
    if let Some(cp) = &checkpoint {
        next.checkpoint_seq = cp.seq;
        next.checkpoint_time_us = cp.time_us;
    }
    *known = Some(KnownHead {
        batches,
        head: next,
    });
    Ok(records)
}

async fn insert_batch(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    records: &[AuditRecord],
    checkpoint: Option<&Checkpoint>,
) -> Result<(), StorageError> {
    for chunk in pow2_chunks(records) {
        let sql = format!(
            "INSERT INTO audit_log ({COLUMNS}) VALUES {}",
            placeholders(backend, chunk.len(), 26)
        );
        let mut q = sqlx::query(&sql);
        for r in chunk {
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
                .bind(&r.hash);
        }
        q.execute(&mut **tx).await?;
    }
    let touched: Vec<(&str, i64)> = records
        .iter()
        .flat_map(|r| {
            let mut seen = std::collections::HashSet::new();
            r.subjects
                .iter()
                .filter(move |s| seen.insert(s.as_str()))
                .map(move |s| (s.as_str(), r.seq))
        })
        .collect();
    for chunk in pow2_chunks(&touched) {
        let sql = format!(
            "INSERT INTO audit_subjects (subject_id, seq) VALUES {}",
            placeholders(backend, chunk.len(), 2)
        );
        let mut q = sqlx::query(&sql);
        for (s, seq) in chunk {
            q = q.bind(*s).bind(*seq);
        }
        q.execute(&mut **tx).await?;
    }
    if let Some(cp) = checkpoint {
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, time_us, hash, key_id, signature) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(cp.seq)
        .bind(cp.time_us)
        .bind(&cp.hash)
        .bind(&cp.key_id)
        .bind(&cp.signature)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
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
    })
}

/// Records with `seq > after`, oldest first: the unit of verification and export.
pub async fn page_after(db: &Db, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StorageError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
    ))
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
        sql += &format!(
            " AND a.seq IN (SELECT seq FROM audit_subjects WHERE subject_id = {})",
            next()
        );
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
    let mut q = sqlx::query(&sql);
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

/// Accesses by institutions (and the public) to this subject's records, newest first.
pub async fn access_log(
    db: &Db,
    subject: &str,
    limit: i64,
) -> Result<Vec<AuditRecord>, StorageError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM audit_log WHERE seq IN \
         (SELECT seq FROM audit_subjects WHERE subject_id = $1) \
         AND kind IN ('data', 'profile', 'public') ORDER BY seq DESC LIMIT $2"
    ))
    .bind(subject)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}
