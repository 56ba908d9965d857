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
/// than `retention_days` at `now_us`, into `dir`: one file per chain. Returns what each chain
/// gave (nothing for a chain with no checkpoint old enough).
pub async fn archive(
    db: &Db,
    retention_days: u32,
    now_us: i64,
    dir: &Path,
) -> Result<Vec<Archived>, ArchiveError> {
    let days = retention_days.max(MIN_RETENTION_DAYS) as i64;
    let cutoff = now_us - days * 86_400 * 1_000_000;
    let mut done = Vec::new();
    for writer_id in store::writers(db).await? {
        if let Some(a) = archive_chain(db, &writer_id, cutoff, now_us, dir).await? {
            done.push(a);
        }
    }
    Ok(done)
}

async fn archive_chain(
    db: &Db,
    writer_id: &str,
    cutoff: i64,
    now_us: i64,
    dir: &Path,
) -> Result<Option<Archived>, ArchiveError> {
    let (from, _) = base(db, writer_id).await?;
    // The newest checkpoint whose record (and so every record before it) is older than cutoff.
    let Some(cp) = store::chain_checkpoints(db, writer_id)
        .await?
        .into_iter()
        .rfind(|c| c.chain_seq > from && c.time_us < cutoff)
    else {
        return Ok(None);
    };
    let name = file_name(writer_id, from + 1, cp.chain_seq);
    let path = dir.join(&name);
    let count = write_file(db, &path, from, &cp).await?;
    drop_archived(db, &cp, now_us, &name, count).await?;
    Ok(Some(Archived {
        writer_id: writer_id.to_string(),
        from_seq: from + 1,
        upto_seq: cp.chain_seq,
        records: count,
        file: path.display().to_string(),
    }))
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
    sqlx::query("DELETE FROM audit_log WHERE writer_id = $1 AND chain_seq <= $2")
        .bind(&cp.writer_id)
        .bind(cp.chain_seq)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
