//! The subject index, written behind the request's path (issue 18, decision 3).
//!
//! Officers search the log by organisation, client, time, decision and store through B-tree
//! indexes on `audit_log` itself, maintained by the record's own INSERT. The one index that is
//! a table of its own is subject -> records: a 100-row list names 200 subjects (each company
//! and its legal representative), and writing those rows inside the request's commit made the
//! answer wait for them. This task writes them instead, after the commit, as one row per
//! subject per step (`audit_subject_steps`, migration 0090) holding the step's `seq`s that
//! name it. One row per (subject, record) (`audit_subjects`, still read for what was indexed
//! before 0090) cost 2-9 us a row, so 0.4-1.8 ms of CPU a list record, as much as the request
//! itself: at full load the index fell behind by about a second every second. A step of 100
//! list records naming the same 200 subjects now writes 200 rows, not 20,000 (a load whose
//! lists name different subjects each time still writes a row per distinct subject a step):
//!
//! - **Progress per chain.** `audit_index_progress(writer_id, chain_seq)` says every record of
//!   that chain up to that place has its rows. It is kept per chain, never as a global `seq`:
//!   on PostgreSQL `seq` is a sequence, so a lower one may commit after a higher one from
//!   another replica, but within a chain records commit in chain order.
//! - **One step, one statement.** A step takes the committed records after a chain's
//!   progress up to [`BATCH`] of cost (one a record plus one a subject it names: a
//!   200-subject list record costs 201), and moves the progress over them by one UPDATE whose
//!   triggers insert their rows (migrations 0080 and 0090, both backends: progress implies
//!   rows is a rule of the database, and a place above the chain's last record is refused).
//!   A row already at a row's key (planted) is left for verification to report. On SQLite the statement holds the one write lock while
//!   it runs, never across an await, and the cost bound keeps that to a few milliseconds
//!   whatever the records name. A crash loses nothing and duplicates nothing.
//! - **Several replicas.** Each indexes its own chain as soon as its writer commits, and other
//!   chains only when this process has seen their progress stand still for [`FOREIGN_GRACE`]
//!   (a stopped replica's tail, the migrated `legacy` chain), timed by its own monotonic clock:
//!   never by comparing its wall clock with a time another host wrote. Should two processes index one chain at once, the
//!   progress moves by an optimistic update (`WHERE chain_seq = <what the step read>`): one
//!   commits, the other rolls back its step. We chose that over an advisory lock because it is
//!   the same SQL on both backends, it cannot be left held by a stuck connection, and the race
//!   it settles is rare by the rule above; its whole cost is one step done twice.
//! - **Exact before it catches up.** A subject's searches (`store::search` with `subject`,
//!   `store::access_log_at`) take the index's candidates and add every record above its
//!   chain's progress whose own `subjects` names the subject, matched in SQL in the same
//!   statement (`index_store::unindexed_union`).
//!   Results never depend on the lag; only their cost does.
//! - **How far.** `index_store::indexed_through` is the time before which every committed
//!   record is indexed; `GET /admin/audit` answers it as `indexed_through`.
//!
//! The task wakes on each commit of this process's writer (`AuditLog::wake`, a `watch` of the
//! chain's head: it holds no records, so a long pass or a retry pins nothing) and on a [`TICK`], and leaves at least [`MIN_GAP`] between the starts of two passes: a record is indexed at
//! most about [`MIN_GAP`] after it commits (at once when no pass started in the [`MIN_GAP`]
//! before; the tick's passes count), and under load each step takes many records (fewer,
//! larger steps: see [`MIN_GAP`] for what that measured).

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;

use super::index_store::{self, ChainProgress, Step};
use crate::storage::{Backend, Db, StorageError};
use tokio::time::Instant;

/// The cost of one step at most (one a record plus one a subject it names; at least one
/// record): one statement, which on SQLite holds the write lock while it runs. The step writes
/// a row per distinct subject, so its time depends on how alike its records are: 100 list
/// records naming the same 200 subjects group 20,000 names into 200 rows; the worst case,
/// every name distinct, writes as many rows as the budget (at 2-9 us a row, 40-180 ms of
/// the write lock on SQLite; this process's writer waits one step at most, `Db::write_turn`).
/// With one row a record (before 0090) the budget was 2,000. Measured: 199 records naming 100
/// distinct subjects each were one step of 137 ms (debug build), and an append waited 183 ms
/// behind such steps. A budget sized by each step's time was tried (15 ms aimed at, 2,000 at
/// least; then 30 ms, 8,000): under a list load the steps took longer than that, shrank, and
/// the index fell 9.7 s and 3.3-4.0 s behind, against 0.37 s with this fixed budget (same
/// load, fresh gateways). The lag is the target; on PostgreSQL (no write lock to
/// share) the budget stays this; SQLite's steps use [`SQLITE_BATCH`] and are bounded in rows
/// (`index_store::STEP_ROWS`), which meets the worst case's wait too. It also bounds the
/// records a step reads ([`next_scan`]).
pub const BATCH: i64 = 20_000;

/// On SQLite, a step's budget of names instead of [`BATCH`]: its rows are grouped before it
/// takes the write lock (migration 0100) and bounded there by `index_store::STEP_ROWS`, so the
/// names bound only what it reads and groups outside the lock (about 250 100-row list records
/// a step, whose ~200 subjects make ~1.5 rows a record, not ~2.6 at 20,000). Measured in
/// alternated 12-s rounds of the list load (2-core host, 64 connections): at 20,000 the
/// gateway's CPU a request was 556-584 us and the list's p99 69-73 ms; at 50,000, 535-555 us
/// and 75-80 ms; at 100,000, 514-540 us and 82-88 ms (a request's commit can wait behind one
/// step's move). The lag stayed 0.3-0.8 s at each.
pub const SQLITE_BATCH: i64 = 50_000;

/// On SQLite, the least pause between two steps of one chain. This process's audit writer
/// needs none: it takes the write lock in turn with the steps (`Db::write_turn`, FIFO), so an
/// append waits one step at most. The pause ([`step_pause`]), at least this, is for writers
/// that meet the steps only in SQLite's busy handler (sessions, the CLI, another process): the
/// lock is free at least half the time. It is as long as the step's move, the only part that
/// holds the lock (since migration 0100 a step reads and groups its records before taking it; pausing
/// for the whole step, as before, left the indexer idle while nobody needed the lock, and
/// under a list load it fell behind: lag 3.1 s and growing over 15 s against 1.4 s before
/// 0100). (Before the turn, a fixed 30 ms pause let appends in, and bounded the indexer to
/// about 600 list records a second on a 2-core host: less than the gateway commits at full
/// load.)
pub const SQLITE_STEP_GAP: Duration = Duration::from_millis(2);

/// The pause after a SQLite step that held the write lock for `locked` and took `took` in
/// all: as long as the lock was held (others find it free at least half the time), and at
/// least a quarter of the whole step, so that catching up a backlog (steps of 20,000 single
/// records read and grouped outside the lock) takes at most about 80% of a core, not all of
/// one, from the requests beside it.
pub fn step_pause(locked: Duration, took: Duration) -> Duration {
    locked.max(took / 4).max(SQLITE_STEP_GAP)
}

/// The least time between the starts of two passes (counted from the pass before, so a commit
/// after a quiet spell is indexed at once, and one within this of a pass, the tick's included,
/// waits for the rest of it). Under load it sets
/// how many records a step takes, and a step's cost grows far slower than its records: each
/// step writes a row per distinct subject it saw, re-reads the index pages it touches (another
/// connection's commit emptied its connection's page cache) and commits once. Measured on a
/// 2-core host, 100-row list load (SQLite, 64 connections, same binary, 8 alternated rounds):
/// at 50 ms steps took ~30 list records and wrote ~7 rows a record; at 200 ms, ~100 records
/// and ~3 rows a record, the gateway's CPU a request fell 10% (1690 -> 1512 us), throughput
/// rose 15% (574 -> 658 req/s) and the largest lag went from 0.31-0.47 s to 0.45-0.71 s (the
/// issue's bound is 2 s; searches are exact whatever the lag). The entity load did not move.
pub const MIN_GAP: Duration = Duration::from_millis(200);

/// A pass runs at least this often without any commit (other replicas' chains).
pub const TICK: Duration = Duration::from_millis(500);

/// Another replica's chain is left to that replica unless its progress has not moved for this
/// long while it has records to index.
pub const FOREIGN_GRACE: Duration = Duration::from_secs(2);

/// The records a chain's first step reads (`index_store::index_step`'s `scan`); later steps
/// read what [`next_scan`] says.
const FIRST_SCAN: i64 = 64;

/// After a failed pass (storage down), the next waits this long.
const RETRY: Duration = Duration::from_secs(1);

/// Starts the indexer for the process whose writer writes chain `own` and announces its
/// commits on `wake` (`AuditLog::wake`). With `enabled` false it returns at once: other replicas index this
/// one's chain (after [`FOREIGN_GRACE`]), and searches stay exact meanwhile.
pub fn spawn(
    db: Db,
    own: String,
    wake: watch::Receiver<i64>,
    enabled: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !enabled {
            tracing::info!("audit indexer off in this process ([audit] indexer = false)");
            return;
        }
        run(db, own, wake).await;
    })
}

async fn run(db: Db, own: String, mut wake: watch::Receiver<i64>) {
    let mut open = true;
    let mut last_foreign: Option<tokio::time::Instant> = None;
    let mut seen = Seen::default();
    let mut scans = Scans::default();
    loop {
        let started = tokio::time::Instant::now();
        let foreign = last_foreign.is_none_or(|t| t.elapsed() >= TICK);
        if foreign {
            last_foreign = Some(started);
        }
        if let Err(e) = pass(&db, Some((&own, &mut seen)), &mut scans, foreign).await {
            tracing::warn!(error = %e, "audit indexer: pass failed; retrying");
            tokio::time::sleep(RETRY).await;
            continue;
        }
        open = wait(&mut wake, open).await;
        tokio::time::sleep(MIN_GAP.saturating_sub(started.elapsed())).await;
        // One pass serves every commit announced so far; a commit after this is seen changed.
        wake.mark_unchanged();
    }
}

/// Waits for a commit of this process's writer (one made since the last look, during the pass
/// included, returns at once) or the tick. `open` false: the writer is gone (its channel
/// closed), so only the tick wakes the task.
async fn wait(wake: &mut watch::Receiver<i64>, open: bool) -> bool {
    if !open {
        tokio::time::sleep(TICK).await;
        return false;
    }
    tokio::select! {
        changed = wake.changed() => changed.is_ok(),
        _ = tokio::time::sleep(TICK) => true,
    }
}

/// Other replicas' chains as this process last saw them: the progress, and when (this
/// process's monotonic clock) it was first seen at that place.
#[derive(Default)]
struct Seen(HashMap<String, (i64, Instant)>);

impl Seen {
    /// Whether `chain`'s progress has stood still for [`FOREIGN_GRACE`] as of `now`, judged
    /// here: another host's `indexed_us` is its wall clock, not ours.
    fn stalled(&mut self, chain: &ChainProgress, now: Instant) -> bool {
        let entry = self
            .0
            .entry(chain.writer_id.clone())
            .or_insert((chain.indexed_through, now));
        if entry.0 != chain.indexed_through {
            *entry = (chain.indexed_through, now);
        }
        now.saturating_duration_since(entry.1) >= FOREIGN_GRACE
    }
}

/// How many records each chain's next step reads, as the steps before it left it (the
/// records of a chain tend to look alike: a load of lists, or of single records).
#[derive(Default)]
struct Scans(HashMap<String, i64>);

/// The records the next step reads after one that read `scanned` of its `scan` and took
/// `records`: twice what it took when the budget stopped it (about the records the budget
/// holds, with room for cheaper ones), twice its `scan` when it took all it read. A step
/// reads at most [`BATCH`] records (each costs at least one) and at least one.
pub fn next_scan(scan: i64, records: i64, scanned: i64) -> i64 {
    let next = if records < scanned {
        records.saturating_mul(2)
    } else {
        scan.saturating_mul(2)
    };
    next.clamp(1, BATCH)
}

/// Whether a pass indexes `chain` now: this process's own chain always; another when `foreign`
/// is due and its progress has stood still for [`FOREIGN_GRACE`] (when `own` is `None`, every
/// chain: `catch_up`).
fn due(chain: &ChainProgress, own: Option<(&str, &mut Seen)>, foreign: bool, now: Instant) -> bool {
    match own {
        None => true,
        Some((own, _)) if chain.writer_id == own => true,
        Some((_, seen)) => seen.stalled(chain, now) && foreign,
    }
}

/// One pass: every due chain indexed to the head it has when its last step runs. Returns how
/// many records were indexed. One chain's failure (a step refused, a bad record) is logged
/// and counted, and the pass goes on to the others; the first error is returned at the end
/// (so the task waits [`RETRY`] before the next pass).
async fn pass(
    db: &Db,
    mut own: Option<(&str, &mut Seen)>,
    scans: &mut Scans,
    foreign: bool,
) -> Result<i64, StorageError> {
    let chains = {
        let mut conn = db.pool().acquire().await?;
        index_store::chains(&mut conn).await?
    };
    let now = Instant::now();
    let mut indexed = 0;
    let mut failed = None;
    // `catch_up` (no `own`) must not return before every chain is indexed, so it carries on
    // after losing a race; the background task leaves the chain to the winner.
    let persist = own.is_none();
    for chain in &chains {
        let own = own.as_mut().map(|(o, s)| (*o, &mut **s));
        if !due(chain, own, foreign, now) {
            continue;
        }
        let scan = scans.0.entry(chain.writer_id.clone()).or_insert(FIRST_SCAN);
        match index_chain(db, &chain.writer_id, chain.indexed_through, scan, persist).await {
            Ok(n) => indexed += n,
            Err(e) => {
                metrics::counter!("credgate_audit_index_errors_total").increment(1);
                tracing::warn!(writer = %chain.writer_id, error = %e, "audit indexer: chain failed");
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(indexed),
    }
}

/// Steps through one chain from `done` until a step finds it at its head, each step reading
/// `scan` records (kept for the chain's next pass). When another process moved its progress
/// first, that process carries on, unless `persist`: then the progress is read again and the
/// steps go on from there.
async fn index_chain(
    db: &Db,
    writer_id: &str,
    mut done: i64,
    scan: &mut i64,
    persist: bool,
) -> Result<i64, StorageError> {
    let mut indexed = 0;
    let budget = match db.backend() {
        Backend::Sqlite => SQLITE_BATCH,
        Backend::Postgres => BATCH,
    };
    loop {
        let started = Instant::now();
        match index_store::index_step(db, writer_id, done, budget, *scan).await? {
            Step::UpToDate => return Ok(indexed),
            Step::Lost => {
                metrics::counter!("credgate_audit_index_races_total").increment(1);
                if !persist {
                    return Ok(indexed);
                }
                done = index_store::progress_of(db, writer_id).await?;
            }
            Step::Indexed {
                to,
                records,
                scanned,
                at_head,
                locked,
                ..
            } => {
                *scan = next_scan(*scan, records, scanned);
                metrics::counter!("credgate_audit_indexed_records_total")
                    .increment(records.max(0) as u64);
                indexed += records;
                done = to;
                if at_head {
                    return Ok(indexed);
                }
                if db.backend() == Backend::Sqlite {
                    tokio::time::sleep(step_pause(locked, started.elapsed())).await;
                }
            }
        }
    }
}

/// Indexes every chain to its head now, whoever writes it: for tests, and for tools that want
/// the index complete before they read it. Returns how many records it indexed.
pub async fn catch_up(db: &Db) -> Result<i64, StorageError> {
    pass(db, None, &mut Scans::default(), true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(id: &str, indexed_through: i64) -> ChainProgress {
        ChainProgress {
            writer_id: id.into(),
            indexed_through,
            // Another host's wall clock: never read for the decision.
            indexed_us: i64::MAX,
        }
    }

    #[test]
    fn a_step_pauses_for_its_lock_or_a_quarter_of_itself() {
        let ms = Duration::from_millis;
        assert_eq!(step_pause(ms(12), ms(20)), ms(12), "the lock's time");
        assert_eq!(
            step_pause(ms(3), ms(80)),
            ms(20),
            "a quarter of a long read"
        );
        assert_eq!(step_pause(ms(0), ms(1)), SQLITE_STEP_GAP);
    }

    #[test]
    fn next_scan_follows_what_the_steps_take() {
        // Lists: the budget took 19 of 64 read; next, 38.
        assert_eq!(next_scan(64, 19, 64), 38);
        // Single records: all 64 read were taken; next, 128, up to BATCH.
        assert_eq!(next_scan(64, 64, 64), 128);
        assert_eq!(next_scan(BATCH, BATCH, BATCH), BATCH);
        // One huge record (over the budget alone): still one a step.
        assert_eq!(next_scan(38, 1, 38), 2);
        assert_eq!(next_scan(1, 0, 0), 2);
        assert_eq!(next_scan(i64::MAX, i64::MAX - 1, i64::MAX), BATCH);
    }

    #[test]
    fn own_chain_always_due_another_only_when_seen_standing_still() {
        let t0 = Instant::now();
        let mut seen = Seen::default();
        assert!(due(&chain("me", 5), Some(("me", &mut seen)), false, t0));
        // First sight: not yet.
        assert!(!due(&chain("other", 5), Some(("me", &mut seen)), true, t0));
        let later = t0 + FOREIGN_GRACE;
        assert!(!due(
            &chain("other", 5),
            Some(("me", &mut seen)),
            false,
            later
        ));
        assert!(due(
            &chain("other", 5),
            Some(("me", &mut seen)),
            true,
            later
        ));
        // It moved: the grace starts again from when this process saw it move.
        assert!(!due(
            &chain("other", 6),
            Some(("me", &mut seen)),
            true,
            later
        ));
        let again = later + FOREIGN_GRACE;
        assert!(due(
            &chain("other", 6),
            Some(("me", &mut seen)),
            true,
            again
        ));
        assert!(due(&chain("other", 6), None, false, t0));
    }
}
