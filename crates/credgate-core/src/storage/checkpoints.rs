//! SQLite's WAL checkpoints, run beside the writers instead of inside them. SQLite's default
//! (`wal_autocheckpoint`, 1000 pages) runs a checkpoint inside the commit that crosses the
//! threshold: the audit writer's connection copied about 4 MB into the database file and
//! fsynced it inside one batch's commit, every ~17 batches under load, and every request of
//! that batch waited for it (issue 18: the entity row's p99). Every gateway connection now has
//! `wal_autocheckpoint = 0` (`Db::connect`), and this task checkpoints PASSIVE on a pooled
//! connection: a PASSIVE checkpoint takes no write lock, so batches keep committing into the
//! WAL while it copies, and the WAL restarts from its start at the next commit once all of it
//! is in the database.
//!
//! A process that opens the database without this task (a CLI command) writes little, and
//! SQLite checkpoints when the last connection closes. Durability does not depend on it: every
//! commit is in the fsynced WAL (`synchronous = FULL`) before it is acknowledged.

use std::time::Duration;

use sqlx::Row;

use super::{Backend, Db};

/// How often the task checkpoints. At full load the audit writer appends about 100 MB of WAL
/// frames a second; a tenth of a second's worth is copied at a time. Idle, a checkpoint with
/// nothing to copy reads the WAL index only.
const EVERY: Duration = Duration::from_millis(100);

/// What one PASSIVE checkpoint saw: the WAL's frames, and how many of them are in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointed {
    pub wal_frames: i64,
    pub copied: i64,
}

impl Db {
    /// One PASSIVE checkpoint, on a pooled connection. `None` on PostgreSQL.
    pub async fn checkpoint_wal(&self) -> Result<Option<Checkpointed>, super::StorageError> {
        if self.backend != Backend::Sqlite {
            return Ok(None);
        }
        let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&self.pool)
            .await?;
        Ok(Some(Checkpointed {
            wal_frames: row.try_get(1)?,
            copied: row.try_get(2)?,
        }))
    }

    /// Starts the checkpoint task (on SQLite; on PostgreSQL it ends at once). One per serving
    /// process; kept by the web layer's task supervisor.
    pub fn spawn_checkpoints(&self) -> tokio::task::JoinHandle<()> {
        let db = self.clone();
        tokio::spawn(async move {
            if db.backend != Backend::Sqlite {
                return;
            }
            let mut every = tokio::time::interval(EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                // While the database is known unusable the pool refuses anyway: no log spam.
                if db.usable().is_err() {
                    continue;
                }
                match db.checkpoint_wal().await {
                    Ok(Some(c)) => {
                        metrics::gauge!("credgate_sqlite_wal_frames").set(c.wal_frames as f64);
                    }
                    Ok(None) => return,
                    Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; retrying"),
                }
            }
        })
    }
}
