//! Retention: records older than the retention minimum (default five years, never less than six
//! months) may be moved to an archive file, up to a signed checkpoint. The live log then
//! verifies from that checkpoint, and the archive file carries the checkpoint it ends at.

use std::{io::Write, path::Path};

use serde_json::json;
use sqlx::Row;

use super::{AuditRecord, store};
use crate::storage::{Db, StorageError};

/// The floor no configuration can go below.
pub const MIN_RETENTION_DAYS: u32 = 183;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("archive file {0}: {1}")]
    File(String, std::io::Error),
}

impl From<sqlx::Error> for ArchiveError {
    fn from(e: sqlx::Error) -> Self {
        Self::Storage(e.into())
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Archived {
    /// The chain archived.
    pub writer_id: String,
    /// The chain's places archived, `from_seq ..= upto_seq` (for the legacy chain these are
    /// also the records' `seq`).
    pub from_seq: i64,
    pub upto_seq: i64,
    pub records: i64,
    pub file: String,
    /// Set when the retention alone would have archived further: a sink has not confirmed
    /// the rest (shown in `audit archive`'s output).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_back: Option<HeldBack>,
}

/// A chain archived less far than its retention allows, or not at all, because a syslog sink
/// (`[audit.ship]`) has not confirmed its records beyond `confirmed_through`. Archiving them
/// would remove records that sink never received: its copy, the one the database's
/// administrators cannot touch, would have a silent gap (rev3 F4).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HeldBack {
    pub writer_id: String,
    pub sink: String,
    /// The chain's place that sink has confirmed through (`audit_shipping`).
    pub confirmed_through: i64,
    /// The place the retention alone would have archived through.
    pub retention_allows: i64,
}

impl std::fmt::Display for HeldBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chain `{}`: archived only up to a checkpoint at or below place {} (the retention \
             allows {}): sink `{}` has confirmed only that far",
            self.writer_id, self.confirmed_through, self.retention_allows, self.sink
        )
    }
}

/// What `archive_report` did: the chains archived, and every chain held back by a sink.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub archived: Vec<Archived>,
    pub held_back: Vec<HeldBack>,
}

/// Where one chain's verification starts: the place and hash of its last archived record
/// (0 and genesis if none).
pub async fn base(db: &Db, writer_id: &str) -> Result<(i64, String), StorageError> {
    let mut conn = db.pool().acquire().await?;
    base_on(&mut conn, writer_id).await
}

/// `base`, on a connection the caller holds (the audit writer's).
pub(super) async fn base_on(
    conn: &mut sqlx::AnyConnection,
    writer_id: &str,
) -> Result<(i64, String), StorageError> {
    let row = sqlx::query(
        "SELECT upto_chain_seq, hash FROM audit_archives WHERE writer_id = $1 \
         ORDER BY upto_chain_seq DESC LIMIT 1",
    )
    .bind(writer_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        Some(r) => (r.try_get("upto_chain_seq")?, r.try_get("hash")?),
        None => (0, super::chain::GENESIS.into()),
    })
}

/// Archives, chain by chain, every record up to the chain's newest checkpoint that is older
/// than `retention_days` at `now_us` and that every sink has confirmed, into `dir`: one file
/// per chain. Returns what each chain gave (nothing for a chain with no such checkpoint); a
/// chain held back by a sink is logged as a warning, and named in its `Archived` when part of
/// it was archived (`archive_report` lists them all).
pub async fn archive(
    db: &Db,
    retention_days: u32,
    now_us: i64,
    dir: &Path,
) -> Result<Vec<Archived>, ArchiveError> {
    let report = archive_report(db, retention_days, now_us, dir).await?;
    for held in &report.held_back {
        tracing::warn!(
            writer_id = %held.writer_id,
            sink = %held.sink,
            confirmed_through = held.confirmed_through,
            retention_allows = held.retention_allows,
            "audit archive held back: {held}"
        );
    }
    Ok(report.archived)
}

/// `archive`, with the chains a sink held back.
pub async fn archive_report(
    db: &Db,
    retention_days: u32,
    now_us: i64,
    dir: &Path,
) -> Result<Report, ArchiveError> {
    let days = retention_days.max(MIN_RETENTION_DAYS) as i64;
    let cutoff = now_us - days * 86_400 * 1_000_000;
    let mut report = Report::default();
    for writer_id in store::writers(db).await? {
        let (archived, held) = archive_chain(db, &writer_id, cutoff, now_us, dir).await?;
        report.held_back.extend(held);
        report.archived.extend(archived);
    }
    Ok(report)
}

/// The newest checkpoint of the chain above `from` older than `cutoff` (so is every record
/// before it), and, when a sink has not confirmed that far, the newest one it has confirmed
/// with what held it back.
async fn checkpoint_to_archive(
    db: &Db,
    writer_id: &str,
    from: i64,
    cutoff: i64,
) -> Result<(Option<store::Checkpoint>, Option<HeldBack>), ArchiveError> {
    let old: Vec<store::Checkpoint> = store::chain_checkpoints(db, writer_id)
        .await?
        .into_iter()
        .filter(|c| c.chain_seq > from && c.time_us < cutoff)
        .collect();
    let Some(newest) = old.last() else {
        return Ok((None, None));
    };
    let least = crate::storage::shipping::least_confirmed(db, writer_id).await?;
    match least {
        Some((sink, confirmed)) if confirmed < newest.chain_seq => {
            let held = HeldBack {
                writer_id: writer_id.to_string(),
                sink,
                confirmed_through: confirmed,
                retention_allows: newest.chain_seq,
            };
            let within = old.into_iter().rfind(|c| c.chain_seq <= confirmed);
            Ok((within, Some(held)))
        }
        _ => Ok((old.last().cloned(), None)),
    }
}

async fn archive_chain(
    db: &Db,
    writer_id: &str,
    cutoff: i64,
    now_us: i64,
    dir: &Path,
) -> Result<(Option<Archived>, Option<HeldBack>), ArchiveError> {
    let (from, _) = base(db, writer_id).await?;
    let (cp, held) = checkpoint_to_archive(db, writer_id, from, cutoff).await?;
    let Some(cp) = cp else {
        return Ok((None, held));
    };
    let name = file_name(writer_id, from + 1, cp.chain_seq);
    let path = dir.join(&name);
    let count = write_file(db, &path, from, &cp).await?;
    drop_archived(db, &cp, now_us, &name, count).await?;
    let archived = Archived {
        writer_id: writer_id.to_string(),
        from_seq: from + 1,
        upto_seq: cp.chain_seq,
        records: count,
        file: path.display().to_string(),
        held_back: held.clone(),
    };
    Ok((Some(archived), held))
}

/// The legacy chain keeps the file names it always had; another chain's name carries its
/// writer id, reduced to characters safe in a file name, and a digest of the id so that two
/// ids that reduce alike never share a name.
fn file_name(writer_id: &str, from: i64, upto: i64) -> String {
    if writer_id == super::chain::LEGACY_WRITER {
        return format!("credgate-audit-{from:012}-{upto:012}.ndjson");
    }
    let safe: String = writer_id
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let digest = ring::digest::digest(&ring::digest::SHA256, writer_id.as_bytes());
    let tag = hex::encode(&digest.as_ref()[..4]);
    format!("credgate-audit-{safe}-{tag}-{from:012}-{upto:012}.ndjson")
}

/// Writes the chain's records `from + 1 ..= cp.chain_seq` to `path`, headed by the checkpoint
/// they end at, and syncs the file: the rows are deleted only after this returns, so a crash
/// loses nothing.
async fn write_file(
    db: &Db,
    path: &Path,
    from: i64,
    cp: &store::Checkpoint,
) -> Result<i64, ArchiveError> {
    let io = |e| ArchiveError::File(path.display().to_string(), e);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    let header = json!({
        "archive": "credgate-audit", "writer_id": cp.writer_id,
        "from_seq": from + 1, "upto_seq": cp.chain_seq,
        "checkpoint": {"seq": cp.seq, "writer_id": cp.writer_id, "chain_seq": cp.chain_seq,
                       "time_us": cp.time_us, "hash": cp.hash,
                       "key_id": cp.key_id, "signature": cp.signature},
    });
    writeln!(file, "{header}").map_err(io)?;
    let mut after = from;
    let mut count = 0;
    while after < cp.chain_seq {
        let page: Vec<AuditRecord> = store::chain_page_after(db, &cp.writer_id, after, 1000)
            .await?
            .into_iter()
            .filter(|r| r.chain_seq <= cp.chain_seq)
            .collect();
        let Some(last) = page.last() else { break };
        after = last.chain_seq;
        for r in &page {
            file.write_all(&super::export::ndjson_line(r)).map_err(io)?;
            count += 1;
        }
    }
    let file = file.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(count)
}

/// Records the archive and deletes its rows in one transaction. The archive row goes first:
/// it is what lets the guard triggers permit these deletes (of this chain's records only).
async fn drop_archived(
    db: &Db,
    cp: &store::Checkpoint,
    now_us: i64,
    name: &str,
    count: i64,
) -> Result<(), ArchiveError> {
    let mut tx = db.pool().begin().await?;
    sqlx::query(
        "INSERT INTO audit_archives \
         (upto_seq, hash, archived_at, file_name, records, writer_id, upto_chain_seq) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(cp.seq)
    .bind(&cp.hash)
    .bind(now_us)
    .bind(name)
    .bind(count)
    .bind(&cp.writer_id)
    .bind(cp.chain_seq)
    .execute(&mut *tx)
    .await?;
    // Before the deletes: an indexer step holding the progress row commits first, and its
    // rows are then deleted below; one that comes later finds the progress moved and rolls back.
    super::index_store::archived_through(&mut tx, &cp.writer_id, cp.chain_seq).await?;
    sqlx::query(
        "DELETE FROM audit_subjects WHERE seq IN \
         (SELECT seq FROM audit_log WHERE writer_id = $1 AND chain_seq <= $2)",
    )
    .bind(&cp.writer_id)
    .bind(cp.chain_seq)
    .execute(&mut *tx)
    .await?;
    // The chain's step rows (migration 0090) that the archive covers whole; one straddling the
    // cut stays (the guard refuses it), and verification accepts its `seq`s below the cut.
    sqlx::query(
        "DELETE FROM audit_subject_steps \
         WHERE writer_id = $1 AND first_seq <= $2 AND last_seq <= $2",
    )
    .bind(&cp.writer_id)
    .bind(cp.seq)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM audit_log WHERE writer_id = $1 AND chain_seq <= $2")
        .bind(&cp.writer_id)
        .bind(cp.chain_seq)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
