//! SQLite's WAL checkpoints, moved off the audit writer's commits.
//!
//! By default SQLite checkpoints inside the commit that takes the WAL past 1000 pages: that
//! commit copies the pages back into the database and fsyncs it before it returns, and every
//! request of its batch, and every batch queued behind it, waits (issue 18's profile: every
//! ~17th batch under load). Here a task does that copy beside the writer instead, about as
//! often as SQLite did (every `RECORDS_PER_PASS` records the writer appends), in two steps,
//! because neither alone keeps the WAL short:
//! - a `PASSIVE` checkpoint outside the write turn copies most of the pages while commits go
//!   on. It never finishes under load: a commit landing meanwhile leaves frames uncopied, and
//!   the WAL restarts only after a checkpoint that copied every frame (measured when this ran
//!   alone: the WAL grew 212 MB -> 1.6 GB in 32 s);
//! - so the task then takes the write turn and copies the few frames committed since; the next
//!   commit starts the WAL over at its beginning.
//!
//! Passing more often costs more: each pass copies the B-trees' hot pages again and fsyncs the
//! database (a pass every 20 ms measured slower than SQLite's own checkpoints). Connections
//! still checkpoint inline past `BACKSTOP_PAGES`, should this task stop or fall behind;
//! `journal_size_limit` shrinks the file back after such a spike.

use std::time::Duration;

use tokio::sync::watch;

use super::{Backend, Db, StorageError};

/// Records appended between passes. A record writes about two pages to the WAL (issue 18's
/// trace: 59 frames a 28-record batch), so this is about SQLite's own 1000-page threshold.
const RECORDS_PER_PASS: i64 = 400;

/// Each connection's own automatic checkpoint (`PRAGMA wal_autocheckpoint`), as a backstop.
pub(super) const BACKSTOP_PAGES: i64 = 10_000;

/// The WAL file is cut back to this many bytes when it restarts after a spike.
pub(super) const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// A WAL that records reached but too few to pass is copied back once they stop this long.
const IDLE: Duration = Duration::from_secs(1);

impl Db {
    /// Starts the checkpoint task on SQLite (a task that ends at once on PostgreSQL), woken by
    /// `appended`: the writer's count of appended records (`AuditLog::wake`). One per serving
    /// process; kept by the web layer's task supervisor.
    pub fn spawn_checkpoints(&self, appended: watch::Receiver<i64>) -> tokio::task::JoinHandle<()> {
        let db = self.clone();
        tokio::spawn(async move {
            if db.backend == Backend::Sqlite {
                keep_short(db, appended).await;
            }
        })
    }
}

/// The task's loop: a pass each `RECORDS_PER_PASS` records, or once records stop for `IDLE`.
/// A failed pass is logged and tried again at the next: the connections' own backstop bounds
/// the WAL meanwhile.
async fn keep_short(db: Db, mut appended: watch::Receiver<i64>) {
    let mut conn = None;
    let mut last = *appended.borrow_and_update();
    loop {
        let woke = tokio::time::timeout(IDLE, appended.changed()).await;
        if matches!(woke, Ok(Err(_))) {
            return;
        }
        let now = *appended.borrow_and_update();
        let quiet = woke.is_err();
        if now - last < RECORDS_PER_PASS && !(quiet && now != last) {
            continue;
        }
        last = now;
        if let Err(e) = pass(&db, &mut conn).await {
            tracing::debug!(error = %e, "WAL checkpoint not done; retried at the next pass");
            conn = None;
        }
    }
}

/// One pass: copy what can be copied beside the writer, then the rest under the write turn.
async fn pass(db: &Db, conn: &mut Option<sqlx::AnyConnection>) -> Result<(), StorageError> {
    if db.usable().is_err() {
        return Ok(());
    }
    let c = match conn {
        Some(c) => c,
        None => conn.insert(db.own_connection().await?),
    };
    checkpoint(c).await?;
    // Always, even when that pass copied every frame it saw: a commit may have landed since,
    // and the WAL restarts only if it was all copied when the next commit begins.
    let _turn = db.write_turn().await;
    checkpoint(c).await
}

/// A `PASSIVE` checkpoint: copies what no reader still needs, waits for nobody. Its answer
/// (frames in the WAL, frames copied) is read to the end so that the statement is done.
async fn checkpoint(conn: &mut sqlx::AnyConnection) -> Result<(), StorageError> {
    let _: Vec<(i64, i64, i64)> = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_all(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database file of the test's own, removed with its WAL at the end.
    struct TempDb(std::path::PathBuf);

    impl Drop for TempDb {
        fn drop(&mut self) {
            for ext in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{ext}", self.0.display()));
            }
        }
    }

    fn wal_len(file: &TempDb) -> u64 {
        std::fs::metadata(format!("{}-wal", file.0.display())).map_or(0, |m| m.len())
    }

    /// Commits `n` transactions of 16 pages each under the write turn, as the audit writer
    /// does, and returns the longest the WAL file grew meanwhile.
    async fn write_load(db: &Db, file: &TempDb, n: usize, appended: &watch::Sender<i64>) -> u64 {
        let blob = vec![7u8; 64 * 1024];
        let mut longest = 0;
        for _ in 0..n {
            let _turn = db.write_turn().await;
            sqlx::query("INSERT INTO wal_test (b) VALUES ($1)")
                .bind(blob.clone())
                .execute(db.pool())
                .await
                .expect("insert");
            drop(_turn);
            // Each commit here writes 16 pages, as about 8 records do.
            appended.send_modify(|n| *n += 8);
            longest = longest.max(wal_len(file));
            // The writer's commits leave the runtime between batches too.
            tokio::task::yield_now().await;
        }
        longest
    }

    async fn temp_db() -> (Db, TempDb) {
        let path = std::env::temp_dir().join(format!("credgate-wal-{}.db", uuid::Uuid::new_v4()));
        let file = TempDb(path);
        let db = Db::connect(&format!("sqlite://{}", file.0.display()))
            .await
            .expect("connect");
        sqlx::query("CREATE TABLE wal_test (b BLOB)")
            .execute(db.pool())
            .await
            .expect("table");
        (db, file)
    }

    /// 640 commits of 64 KiB write 40 MB of WAL frames. With the task, the WAL restarts every
    /// `RECORDS_PER_PASS` records (about 3 MB here) and stays well under 16 MB. Without it, the connections' backstop
    /// lets it pass 16 MB (this test fails with the task's spawn removed).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_restarts_under_continuous_commits() {
        let (db, file) = temp_db().await;
        let (appended, wake) = watch::channel(0);
        let task = db.spawn_checkpoints(wake);
        let longest = write_load(&db, &file, 640, &appended).await;
        task.abort();
        assert!(
            longest < 16 * 1024 * 1024,
            "the WAL grew to {longest} bytes"
        );
        assert!(longest > 0, "nothing was written through the WAL");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_the_task_the_backstop_alone_lets_the_wal_grow() {
        let (db, file) = temp_db().await;
        let (appended, _) = watch::channel(0);
        let longest = write_load(&db, &file, 640, &appended).await;
        assert!(
            longest >= 16 * 1024 * 1024,
            "the backstop checkpointed early: {longest} bytes"
        );
    }

    /// Records that stop short of a pass are copied back once they stop: the commit after that
    /// restarts the WAL at its start, so the file does not grow (it grows by the commit's 64 KiB
    /// when the quiet pass is removed).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tail_short_of_a_pass_is_copied_back_once_records_stop() {
        let (db, file) = temp_db().await;
        let (appended, wake) = watch::channel(0);
        let task = db.spawn_checkpoints(wake);
        write_load(&db, &file, 10, &appended).await;
        let before = wal_len(&file);
        tokio::time::sleep(IDLE + Duration::from_millis(700)).await;
        write_load(&db, &file, 1, &appended).await;
        task.abort();
        assert_eq!(wal_len(&file), before, "the WAL did not restart");
    }
}
