//! SQL of audit shipping (`crate::audit::ship`): how far each writer's chain has reached each
//! sink (migration 0070), the chain's head, and the checkpoints still to ship. The records
//! themselves are read with `audit::store::chain_page_after`.

use sqlx::Row;

use super::{Db, StorageError};
use crate::audit::store::Checkpoint;

/// How far a chain has been shipped to one sink: the chain's places of the last record and of
/// the last checkpoint written and flushed to it (0: nothing yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub records_through: i64,
    pub checkpoints_through: i64,
}

/// `writer_id`'s progress at `sink`; zero when it never shipped there.
pub async fn progress(db: &Db, writer_id: &str, sink: &str) -> Result<Progress, StorageError> {
    let row = sqlx::query(
        "SELECT records_through, checkpoints_through FROM audit_shipping \
         WHERE writer_id = $1 AND sink = $2",
    )
    .bind(writer_id)
    .bind(sink)
    .fetch_optional(db.pool())
    .await?;
    Ok(match row {
        Some(r) => Progress {
            records_through: r.try_get("records_through")?,
            checkpoints_through: r.try_get("checkpoints_through")?,
        },
        None => Progress::default(),
    })
}

/// Remembers `p` as `writer_id`'s progress at `sink` (one statement, an upsert: the first
/// batch shipped makes the row).
pub async fn save(
    db: &Db,
    writer_id: &str,
    sink: &str,
    p: Progress,
    now_us: i64,
) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO audit_shipping \
         (writer_id, sink, records_through, checkpoints_through, updated_us) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (writer_id, sink) DO UPDATE SET \
         records_through = excluded.records_through, \
         checkpoints_through = excluded.checkpoints_through, \
         updated_us = excluded.updated_us",
    )
    .bind(writer_id)
    .bind(sink)
    .bind(p.records_through)
    .bind(p.checkpoints_through)
    .bind(now_us)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The place of the chain's newest record still in the log (0: none), by the chain's unique
/// index: one seek, cheap enough to run every round for the lag.
pub async fn head(db: &Db, writer_id: &str) -> Result<i64, StorageError> {
    let row = sqlx::query("SELECT MAX(chain_seq) AS head FROM audit_log WHERE writer_id = $1")
        .bind(writer_id)
        .fetch_one(db.pool())
        .await?;
    Ok(row.try_get::<Option<i64>, _>("head")?.unwrap_or(0))
}

/// The chain's checkpoints at places in `(after, upto]`, in chain order: those a round ships
/// beside the records it read (by the `(writer_id, chain_seq)` index of migration 0060).
pub async fn checkpoints_between(
    db: &Db,
    writer_id: &str,
    after: i64,
    upto: i64,
) -> Result<Vec<Checkpoint>, StorageError> {
    let rows = sqlx::query(
        "SELECT seq, writer_id, chain_seq, time_us, hash, key_id, signature \
         FROM audit_checkpoints WHERE writer_id = $1 AND chain_seq > $2 AND chain_seq <= $3 \
         ORDER BY chain_seq, seq",
    )
    .bind(writer_id)
    .bind(after)
    .bind(upto)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Checkpoint {
                seq: r.try_get("seq")?,
                writer_id: r.try_get("writer_id")?,
                chain_seq: r.try_get("chain_seq")?,
                time_us: r.try_get("time_us")?,
                hash: r.try_get("hash")?,
                key_id: r.try_get("key_id")?,
                signature: r.try_get("signature")?,
            })
        })
        .collect()
}
