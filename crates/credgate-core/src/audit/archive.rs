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
    pub from_seq: i64,
    pub upto_seq: i64,
    pub records: i64,
    pub file: String,
}

/// Where verification starts: the last archived record's seq and hash (0 and genesis if none).
pub async fn base(db: &Db) -> Result<(i64, String), StorageError> {
    let mut conn = db.pool().acquire().await?;
    base_on(&mut conn).await
}

/// `base`, on a connection the caller holds (the audit writer, inside its locked transaction).
pub(super) async fn base_on(conn: &mut sqlx::AnyConnection) -> Result<(i64, String), StorageError> {
    let row =
        sqlx::query("SELECT upto_seq, hash FROM audit_archives ORDER BY upto_seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
    Ok(match row {
        Some(r) => (r.try_get("upto_seq")?, r.try_get("hash")?),
        None => (0, super::chain::GENESIS.into()),
    })
}

/// Archives every record up to the newest checkpoint that is older than `retention_days` at
/// `now_us`, into `dir`. Returns `None` when nothing is old enough.
pub async fn archive(
    db: &Db,
    retention_days: u32,
    now_us: i64,
    dir: &Path,
) -> Result<Option<Archived>, ArchiveError> {
    let days = retention_days.max(MIN_RETENTION_DAYS) as i64;
    let cutoff = now_us - days * 86_400 * 1_000_000;
    let (from, _) = base(db).await?;
    // The newest checkpoint whose record (and so every record before it) is older than cutoff.
    let Some(cp) = store::checkpoints(db)
        .await?
        .into_iter()
        .rfind(|c| c.seq > from && c.time_us < cutoff)
    else {
        return Ok(None);
    };
    let name = format!("credgate-audit-{:012}-{:012}.ndjson", from + 1, cp.seq);
    let path = dir.join(&name);
    let count = write_file(db, &path, from, &cp).await?;
    drop_archived(db, &cp, now_us, &name, count).await?;
    Ok(Some(Archived {
        from_seq: from + 1,
        upto_seq: cp.seq,
        records: count,
        file: path.display().to_string(),
    }))
}

/// Writes records `from + 1 ..= cp.seq` to `path`, headed by the checkpoint they end at, and
/// syncs the file: the rows are deleted only after this returns, so a crash loses nothing.
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
        "archive": "credgate-audit", "from_seq": from + 1, "upto_seq": cp.seq,
        "checkpoint": {"seq": cp.seq, "time_us": cp.time_us, "hash": cp.hash,
                       "key_id": cp.key_id, "signature": cp.signature},
    });
    writeln!(file, "{header}").map_err(io)?;
    let mut after = from;
    let mut count = 0;
    while after < cp.seq {
        let page: Vec<AuditRecord> = store::page_after(db, after, 1000)
            .await?
            .into_iter()
            .filter(|r| r.seq <= cp.seq)
            .collect();
        let Some(last) = page.last() else { break };
        after = last.seq;
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
/// it is what lets the guard trigger permit these deletes.
async fn drop_archived(
    db: &Db,
    cp: &store::Checkpoint,
    now_us: i64,
    name: &str,
    count: i64,
) -> Result<(), ArchiveError> {
    let mut tx = db.pool().begin().await?;
    sqlx::query("INSERT INTO audit_archives (upto_seq, hash, archived_at, file_name, records) VALUES ($1, $2, $3, $4, $5)")
        .bind(cp.seq)
        .bind(&cp.hash)
        .bind(now_us)
        .bind(name)
        .bind(count)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM audit_subjects WHERE seq <= $1")
        .bind(cp.seq)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
        .bind(cp.seq)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
