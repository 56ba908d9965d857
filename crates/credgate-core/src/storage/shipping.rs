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

/// One chain as this sink knows it: its newest record and checkpoint still in the log, and
/// the place saved for it (what the receiver is known to have read) with who ships it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainAtSink {
    pub writer_id: String,
    pub head: i64,
    pub checkpoint_head: i64,
    pub saved: Progress,
    pub owner: String,
    pub lease_until_us: i64,
}

impl ChainAtSink {
    /// Records or checkpoints in the log that the receiver is not known to hold.
    pub fn behind(&self) -> bool {
        self.head > self.saved.records_through
            || self.checkpoint_head > self.saved.checkpoints_through
    }

    /// A saved place past what the log holds: the row was edited (or the log cut).
    pub fn corrupt(&self) -> bool {
        self.saved.records_through > self.head
            || self.saved.checkpoints_through > self.checkpoint_head
    }
}

/// Every chain of the log (`audit::store::writers`, one index seek each) against this sink's
/// saved place: what `/readyz` reports as chains behind and what a shipper may adopt. A few
/// seeks per chain; chains are few (one per replica that ever ran).
pub async fn chains_at(db: &Db, sink: &str) -> Result<Vec<ChainAtSink>, StorageError> {
    let mut out = Vec::new();
    for writer_id in crate::audit::store::writers(db).await? {
        out.push(chain_at(db, &writer_id, sink).await?);
    }
    Ok(out)
}

/// One chain against this sink (see `chains_at`).
pub async fn chain_at(db: &Db, writer_id: &str, sink: &str) -> Result<ChainAtSink, StorageError> {
    let head = head(db, writer_id).await?;
    let row =
        sqlx::query("SELECT MAX(chain_seq) AS cp FROM audit_checkpoints WHERE writer_id = $1")
            .bind(writer_id)
            .fetch_one(db.pool())
            .await?;
    let checkpoint_head = row.try_get::<Option<i64>, _>("cp")?.unwrap_or(0);
    let lease = sqlx::query(
        "SELECT records_through, checkpoints_through, owner, lease_until_us \
         FROM audit_shipping WHERE writer_id = $1 AND sink = $2",
    )
    .bind(writer_id)
    .bind(sink)
    .fetch_optional(db.pool())
    .await?;
    let (saved, owner, lease_until_us) = match lease {
        Some(r) => (
            Progress {
                records_through: r.try_get("records_through")?,
                checkpoints_through: r.try_get("checkpoints_through")?,
            },
            r.try_get("owner")?,
            r.try_get("lease_until_us")?,
        ),
        None => (Progress::default(), String::new(), 0),
    };
    Ok(ChainAtSink {
        writer_id: writer_id.to_string(),
        head,
        checkpoint_head,
        saved,
        owner,
        lease_until_us,
    })
}

/// Takes (or renews) the lease on shipping `writer_id`'s chain to `sink` for `me` until
/// `until_us`. `force` (the chain's own writer) always takes it; otherwise only a lease that
/// is `me`'s or has run out is taken. True when `me` holds it now. The lease only keeps two
/// processes from shipping one chain twice over; correctness does not rest on it (each saves
/// only places its receiver read, so a race costs duplicates, never a gap).
pub async fn claim(
    db: &Db,
    writer_id: &str,
    sink: &str,
    me: &str,
    now_us: i64,
    until_us: i64,
    force: bool,
) -> Result<bool, StorageError> {
    let done = sqlx::query(
        "INSERT INTO audit_shipping \
         (writer_id, sink, records_through, checkpoints_through, updated_us, owner, lease_until_us) \
         VALUES ($1, $2, 0, 0, $3, $4, $5) \
         ON CONFLICT (writer_id, sink) DO UPDATE SET owner = excluded.owner, \
         lease_until_us = excluded.lease_until_us \
         WHERE $6 = 1 OR audit_shipping.owner = excluded.owner \
         OR audit_shipping.lease_until_us < $3",
    )
    .bind(writer_id)
    .bind(sink)
    .bind(now_us)
    .bind(me)
    .bind(until_us)
    .bind(i64::from(force))
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The hash of `writer_id`'s record at `chain_seq`, if the log still holds it: what
/// `audit verify --sink-file` compares a shipped record line with.
pub async fn record_hash_at(
    db: &Db,
    writer_id: &str,
    chain_seq: i64,
) -> Result<Option<String>, StorageError> {
    let row = sqlx::query("SELECT hash FROM audit_log WHERE writer_id = $1 AND chain_seq = $2")
        .bind(writer_id)
        .bind(chain_seq)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.map(|r| r.try_get("hash")).transpose()?)
}

/// The sink that has confirmed the least of `writer_id`'s chain, and the place it confirmed
/// (`records_through`); `None` when no sink was ever shipped to. Every sink named anywhere in
/// `audit_shipping` counts, and one with no row for this chain has confirmed nothing of it
/// (0): a chain not yet adopted, or a sink added, still has everything to receive. What
/// `audit archive` may remove stops there, so that no sink's copy gets a gap. A retired sink's
/// rows hold archiving back until an operator deletes them: that is the safe side. A place
/// past the chain's head confirms nothing (0): the shipper takes it for corruption and ships
/// again from the start, so archiving on its word would cut the sink's copy for good.
pub async fn least_confirmed(
    db: &Db,
    writer_id: &str,
) -> Result<Option<(String, i64)>, StorageError> {
    let row = sqlx::query(
        "SELECT s.sink AS sink, CASE WHEN r.records_through > \
         (SELECT COALESCE(MAX(chain_seq), 0) FROM audit_log WHERE writer_id = $1) THEN 0 \
         ELSE COALESCE(r.records_through, 0) END AS through \
         FROM (SELECT DISTINCT sink FROM audit_shipping) s \
         LEFT JOIN audit_shipping r ON r.sink = s.sink AND r.writer_id = $1 \
         ORDER BY through, s.sink LIMIT 1",
    )
    .bind(writer_id)
    .fetch_optional(db.pool())
    .await?;
    row.map(|r| Ok((r.try_get("sink")?, r.try_get("through")?)))
        .transpose()
}
