//! SQLite's WAL checkpoints, moved off the audit writer's commits.
//!
//! By default SQLite checkpoints inside the commit that takes the WAL past 1000 pages: that
//! commit copies the pages back into the database and fsyncs it before it returns, and every
//! request of its batch, and every batch queued behind it, waits (issue 18's profile: every
//! ~17th batch under load). Here a task copies the WAL back beside the writer instead, in two
//! steps, because neither alone keeps the WAL short:
//! - `PASSIVE` checkpoints outside the write turn copy most of the pages while commits go on.
//!   They never finish under load: a commit landing meanwhile leaves frames uncopied, and the
//!   WAL restarts only after a checkpoint that copied every frame (measured when this ran
//!   alone: the WAL grew 212 MB -> 1.6 GB in 32 s).
//! - So once the WAL passes `CAP_FRAMES`, the task takes the write turn and copies the few
//!   frames committed since; the next commit then starts the WAL over at its beginning.
//!
//! Connections still checkpoint inline past `BACKSTOP_PAGES`, should this task stop or fall
//! behind; `journal_size_limit` shrinks the file back after such a spike.

use std::time::Duration;

use super::{Backend, Db, StorageError};

/// The WAL length, in frames, past which the task completes a checkpoint under the write turn:
/// SQLite's own default threshold, so the WAL stays as long as it was.
const CAP_FRAMES: i64 = 1000;

/// Each connection's own automatic checkpoint (`PRAGMA wal_autocheckpoint`), as a backstop.
pub(super) const BACKSTOP_PAGES: i64 = 10_000;

/// The WAL file is cut back to this many bytes when it restarts after a spike.
pub(super) const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// How often the task looks while commits arrive, and while none do.
const BUSY_TICK: Duration = Duration::from_millis(20);
const IDLE_TICK: Duration = Duration::from_millis(100);

/// What one `PRAGMA wal_checkpoint` reported: frames in the WAL and frames copied back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    frames: i64,
    copied: i64,
}

impl Db {
    /// Starts the checkpoint task on SQLite (a task that ends at once on PostgreSQL). One per
    /// serving process; kept by the web layer's task supervisor.
    pub fn spawn_checkpoints(&self) -> tokio::task::JoinHandle<()> {
        let db = self.clone();
        tokio::spawn(async move {
            if db.backend == Backend::Sqlite {
                keep_short(db).await;
            }
        })
    }
}

/// The task's loop. A failed step is logged and tried again at the next tick: the connections'
/// own backstop bounds the WAL meanwhile.
async fn keep_short(db: Db) {
    let mut conn = None;
    let mut tick = IDLE_TICK;
    loop {
        tokio::time::sleep(tick).await;
        if db.usable().is_err() {
            conn = None;
            continue;
        }
        match step(&db, &mut conn).await {
            Ok(busy) => tick = if busy { BUSY_TICK } else { IDLE_TICK },
            Err(e) => {
                tracing::debug!(error = %e, "WAL checkpoint not done; retried");
                conn = None;
                tick = IDLE_TICK;
            }
        }
    }
}

/// One pass: copy what can be copied beside the writer, then, past the cap, the rest under the
/// write turn. Returns whether the WAL held uncopied frames (commits are arriving).
async fn step(db: &Db, conn: &mut Option<sqlx::AnyConnection>) -> Result<bool, StorageError> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(db.own_connection().await?),
    };
    let seen = checkpoint(c).await?;
    if seen.frames >= CAP_FRAMES {
        let _turn = db.write_turn().await;
        checkpoint(c).await?;
    }
    Ok(seen.copied < seen.frames)
}

/// A `PASSIVE` checkpoint: copies what no reader still needs, waits for nobody.
async fn checkpoint(conn: &mut sqlx::AnyConnection) -> Result<Progress, StorageError> {
    let (_busy, frames, copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(conn)
        .await?;
    Ok(Progress { frames, copied })
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
    async fn write_load(db: &Db, file: &TempDb, n: usize) -> u64 {
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

    /// 640 commits of 64 KiB write 40 MB of WAL frames. With the task, the WAL restarts at about
    /// `CAP_FRAMES` (4 MB) and stays well under 16 MB. Without it, the connections' backstop
    /// lets it pass 16 MB (this test fails with the task's spawn removed).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_restarts_under_continuous_commits() {
        let (db, file) = temp_db().await;
        let task = db.spawn_checkpoints();
        let longest = write_load(&db, &file, 640).await;
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
        let longest = write_load(&db, &file, 640).await;
        assert!(
            longest >= 16 * 1024 * 1024,
            "the backstop checkpointed early: {longest} bytes"
        );
    }
}
