//! The subject index, written behind the request's path (issue 18, decision 3).
//!
//! Officers search the log by organisation, client, time, decision and store through B-tree
//! indexes on `audit_log` itself, maintained by the record's own INSERT. The one index that is
//! a table of its own is `audit_subjects` (subject -> records): a 100-row list names 100
//! subjects, and writing those rows inside the request's commit made the answer wait for them.
//! This task writes them instead, after the commit:
//!
//! - **Progress per chain.** `audit_index_progress(writer_id, chain_seq)` says every record of
//!   that chain up to that place has its rows. It is kept per chain, never as a global `seq`:
//!   on PostgreSQL `seq` is a sequence, so a lower one may commit after a higher one from
//!   another replica, but within a chain records commit in chain order.
//! - **One step, one transaction.** A step reads up to [`BATCH`] committed records after a
//!   chain's progress, inserts their rows (`ON CONFLICT DO NOTHING`: a crash, or another
//!   replica, leaves only rows that say the same thing) and moves the progress, all in one
//!   transaction: on PostgreSQL an explicit one (a plain INSERT first, falling back to ON
//!   CONFLICT DO NOTHING); on SQLite one upsert of the progress whose triggers insert the rows
//!   (migration 0080), so SQLite's single write lock is never held across an await. A crash
//!   loses nothing and duplicates nothing; the next start carries on.
//! - **Several replicas.** Each indexes its own chain as soon as its writer commits, and other
//!   chains only when their progress has not moved for [`FOREIGN_GRACE`] (a stopped replica's
//!   tail, the migrated `legacy` chain). Should two processes index one chain at once, the
//!   progress moves by an optimistic update (`WHERE chain_seq = <what the step read>`): one
//!   commits, the other rolls back its step. We chose that over an advisory lock because it is
//!   the same SQL on both backends, it cannot be left held by a stuck connection, and the race
//!   it settles is rare by the rule above; its whole cost is one step done twice.
//! - **Exact before it catches up.** A subject's searches (`store::search` with `subject`,
//!   `store::access_log_at`) take the index's candidates and add every record above its
//!   chain's progress whose own `subjects` names the subject (`index_store::unindexed_naming`).
//!   Results never depend on the lag; only their cost does.
//! - **How far.** `index_store::indexed_through` is the time before which every committed
//!   record is indexed; `GET /admin/audit` answers it as `indexed_through`.
//!
//! The task wakes on each commit of this process's writer (the `committed` broadcast the alert
//! rules read) and on a [`TICK`], and leaves at least [`MIN_GAP`] between passes: an idle
//! gateway indexes a record milliseconds after it commits, and under load each step takes
//! many records.

use std::time::Duration;

use tokio::sync::broadcast::{self, error::TryRecvError};

use super::index_store::{self, ChainProgress, Step};
use crate::storage::{Db, StorageError, now_micros};

/// Records a step indexes at most: one transaction. On SQLite it holds the write lock while it
/// runs, so it is kept to what takes a few milliseconds for single-subject records.
pub const BATCH: i64 = 2000;

/// The least time between two passes under load.
pub const MIN_GAP: Duration = Duration::from_millis(50);

/// A pass runs at least this often without any commit (other replicas' chains).
pub const TICK: Duration = Duration::from_millis(500);

/// Another replica's chain is left to that replica unless its progress has not moved for this
/// long while it has records to index.
pub const FOREIGN_GRACE: Duration = Duration::from_secs(2);

/// After a failed pass (storage down), the next waits this long.
const RETRY: Duration = Duration::from_secs(1);

/// Starts the indexer for the process whose writer writes chain `own` and announces its
/// commits on `committed`. With `enabled` false it returns at once: other replicas index this
/// one's chain (after [`FOREIGN_GRACE`]), and searches stay exact meanwhile.
pub fn spawn(
    db: Db,
    own: String,
    committed: broadcast::Receiver<super::CommittedRecord>,
    enabled: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !enabled {
            tracing::info!("audit indexer off in this process ([audit] indexer = false)");
            return;
        }
        run(db, own, committed).await;
    })
}

async fn run(db: Db, own: String, mut committed: broadcast::Receiver<super::CommittedRecord>) {
    let mut open = true;
    let mut last_foreign: Option<tokio::time::Instant> = None;
    loop {
        let started = tokio::time::Instant::now();
        let foreign = last_foreign.is_none_or(|t| t.elapsed() >= TICK);
        if foreign {
            last_foreign = Some(started);
        }
        if let Err(e) = pass(&db, Some(&own), foreign).await {
            tracing::warn!(error = %e, "audit indexer: pass failed; retrying");
            tokio::time::sleep(RETRY).await;
            continue;
        }
        open = wait(&mut committed, open).await;
        tokio::time::sleep(MIN_GAP.saturating_sub(started.elapsed())).await;
        open = drain(&mut committed, open);
    }
}

/// Waits for a commit of this process's writer or the tick. `open` false: the writer is gone
/// (its channel closed), so only the tick wakes the task.
async fn wait(committed: &mut broadcast::Receiver<super::CommittedRecord>, open: bool) -> bool {
    if !open {
        tokio::time::sleep(TICK).await;
        return false;
    }
    tokio::select! {
        msg = committed.recv() => !matches!(msg, Err(broadcast::error::RecvError::Closed)),
        _ = tokio::time::sleep(TICK) => true,
    }
}

/// Empties the channel: one pass serves every commit announced so far.
fn drain(committed: &mut broadcast::Receiver<super::CommittedRecord>, open: bool) -> bool {
    if !open {
        return false;
    }
    loop {
        match committed.try_recv() {
            Ok(_) | Err(TryRecvError::Lagged(_)) => {}
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Closed) => return false,
        }
    }
}

/// Whether a pass indexes `chain` now: this process's own chain always; another when `foreign`
/// is due and its progress has stood still for [`FOREIGN_GRACE`] (when `own` is `None`, every
/// chain: `catch_up`).
fn due(chain: &ChainProgress, own: Option<&str>, foreign: bool, now_us: i64) -> bool {
    match own {
        None => true,
        Some(own) if chain.writer_id == own => true,
        Some(_) => foreign && now_us - chain.indexed_us >= FOREIGN_GRACE.as_micros() as i64,
    }
}

/// One pass: every due chain indexed to the head it has when its last step runs. Returns how
/// many records were indexed.
async fn pass(db: &Db, own: Option<&str>, foreign: bool) -> Result<i64, StorageError> {
    let chains = {
        let mut conn = db.pool().acquire().await?;
        index_store::chains(&mut conn).await?
    };
    let now_us = now_micros();
    let mut indexed = 0;
    // `catch_up` (no `own`) must not return before every chain is indexed, so it carries on
    // after losing a race; the background task leaves the chain to the winner.
    let persist = own.is_none();
    for chain in chains.iter().filter(|c| due(c, own, foreign, now_us)) {
        indexed += index_chain(db, &chain.writer_id, chain.indexed_through, persist).await?;
    }
    Ok(indexed)
}

/// Steps through one chain from `done` until a step finds it at its head. When another
/// process moved its progress first, that process carries on, unless `persist`: then the
/// progress is read again and the steps go on from there.
async fn index_chain(
    db: &Db,
    writer_id: &str,
    mut done: i64,
    persist: bool,
) -> Result<i64, StorageError> {
    let mut indexed = 0;
    loop {
        match index_store::index_step(db, writer_id, done, BATCH).await? {
            Step::UpToDate => return Ok(indexed),
            Step::Lost => {
                metrics::counter!("credgate_audit_index_races_total").increment(1);
                if !persist {
                    return Ok(indexed);
                }
                done = index_store::progress_of(db, writer_id).await?;
            }
            Step::Indexed { to, records, .. } => {
                metrics::counter!("credgate_audit_indexed_records_total")
                    .increment(records.max(0) as u64);
                indexed += records;
                done = to;
                if records < BATCH {
                    return Ok(indexed);
                }
            }
        }
    }
}

/// Indexes every chain to its head now, whoever writes it: for tests, and for tools that want
/// the index complete before they read it. Returns how many records it indexed.
pub async fn catch_up(db: &Db) -> Result<i64, StorageError> {
    pass(db, None, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(id: &str, indexed_us: i64) -> ChainProgress {
        ChainProgress {
            writer_id: id.into(),
            indexed_through: 0,
            indexed_us,
        }
    }

    #[test]
    fn own_chain_always_due_another_only_when_stalled() {
        let now = 10_000_000;
        assert!(due(&chain("me", now), Some("me"), false, now));
        assert!(!due(
            &chain("other", now - 1_000_000),
            Some("me"),
            true,
            now
        ));
        assert!(!due(&chain("other", 0), Some("me"), false, now));
        assert!(due(&chain("other", now - 2_000_000), Some("me"), true, now));
        assert!(due(&chain("other", now), None, false, now));
    }
}
