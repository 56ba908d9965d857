//! Whether the database can take a request, known before a request asks.
//!
//! Without this, a request finds out by waiting: with PostgreSQL stopped, sqlx retries a refused
//! connection until the pool's acquire timeout, so every request (and every audit batch behind
//! it) waited seconds for its 503. Here one background probe (`Db::spawn_probe`, started by the
//! serving process) looks ahead every `PROBE_EVERY`:
//! - PostgreSQL: it pings on a connection of its own, so a busy pool is never mistaken for a
//!   dead server; a failed ping gets one fresh connection before the server is called down.
//! - SQLite: it reads the free space of the filesystem under the database file (statvfs: no
//!   write of its own that could take the last page from the audit log), and checks that the
//!   path still names the file the pool opened (device and inode, taken at open). A file
//!   deleted, or replaced by `mv` (a backup restored over it), under a running gateway is
//!   otherwise never noticed: the pool's connections keep the old inode open, so every commit,
//!   audit records included, lands in a file that is gone at the next restart.
//!
//! While either says no, the pool's circuit is open: its connect options point at a scheme no
//! driver serves, so an acquire that needs a new connection fails at once instead of retrying
//! (sqlx rereads the options on each retry, so acquires already waiting fail too). Idle
//! connections are pinged on acquire and dropped when the server is gone. The probe closes the
//! circuit when the database answers (or the disk has room) again: service resumes without a
//! restart. A replaced file is the exception: that condition never clears (a file put back at
//! the path is another database, which the process's chain heads would not match), and only a
//! restart opens the file now at the path. `/readyz` names the condition.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use sqlx::{AnyConnection, AnyPool, Connection, any::AnyConnectOptions};

/// How often the probe looks: a fault is known (and requests fail fast) within about this.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// A ping or a connect slower than this counts as no answer. Generous, so that a server slowed
/// by load is not called down (which would refuse every request) while it still answers.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Below this much free space the SQLite disk counts as full. An audit batch appends a few
/// pages to the WAL and a checkpoint may grow the main file by as many; below this the next
/// commit may fail half-way through a batch, so requests are refused before they read a store.
const DISK_FLOOR_BYTES: u64 = 1024 * 1024;

/// The URL the pool connects to while the circuit is open: no driver has this scheme, so sqlx
/// fails the connect at once (a configuration error is not retried). The name says why in the
/// log line of whoever saw the failure.
const OPEN_CIRCUIT: &str = "credgate-circuit-open:database-known-down";

/// What the probe last saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Up,
    /// PostgreSQL does not answer.
    Unreachable,
    /// The filesystem under the SQLite database has less than `DISK_FLOOR_BYTES` free.
    DiskFull,
    /// The SQLite database's path no longer names the file the pool opened (deleted, or
    /// another file moved over it). Sticky: only a restart clears it.
    FileReplaced,
}

/// Which file a path named: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The file the path names now (symbolic links followed, as SQLite follows them).
    fn of(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// What the SQLite database's path names, against the file the pool opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AtPath {
    /// The file the pool opened.
    Same,
    /// Nothing: the file was deleted (or a directory on the way to it).
    Missing,
    /// Another file: one moved over the path (a rename). A copy written into the file itself
    /// (`cp` over it) keeps the inode and is not seen here.
    Other,
    /// It cannot be known (the file could not be read at open, or a stat failed otherwise).
    /// Not read at open: counted as replaced, since nothing says a commit lands in the file a
    /// restart would open. A stat failing later: refused while it fails (`probe`).
    Unknown,
}

/// Compares the file the pool opened with what a stat of its path finds now.
fn at_path(opened: Option<FileId>, now: std::io::Result<FileId>) -> AtPath {
    match (opened, now) {
        (Some(o), Ok(n)) if o == n => AtPath::Same,
        (Some(_), Ok(_)) => AtPath::Other,
        (_, Err(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            AtPath::Missing
        }
        _ => AtPath::Unknown,
    }
}

pub(super) struct Health {
    /// The options the pool uses while the circuit is closed (they hold the password: never
    /// printed, see `Debug`).
    options: AnyConnectOptions,
    /// The SQLite database file, whose filesystem the probe watches; `None` for PostgreSQL and
    /// an in-memory SQLite.
    sqlite_file: Option<PathBuf>,
    /// The file `sqlite_file` named when the database was opened (`None` if it could not be
    /// read then, which the probe counts as replaced).
    opened_as: Option<FileId>,
    unreachable: AtomicBool,
    disk_full: AtomicBool,
    /// Set once and never cleared (see `Condition::FileReplaced`).
    replaced: AtomicBool,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("condition", &self.condition())
            .finish_non_exhaustive()
    }
}

impl Health {
    /// Called once the SQLite file exists and before the pool opens its connections: the file
    /// the path names now is the one they open (a file swapped in between is caught later as
    /// replaced, which refuses: never the other way round).
    pub(super) fn new(options: AnyConnectOptions, sqlite_file: Option<PathBuf>) -> Self {
        let opened_as = sqlite_file.as_deref().and_then(|f| FileId::of(f).ok());
        Self {
            options,
            sqlite_file,
            opened_as,
            unreachable: AtomicBool::new(false),
            disk_full: AtomicBool::new(false),
            replaced: AtomicBool::new(false),
        }
    }

    /// The options a connection is opened with while the circuit is closed.
    pub(super) fn options(&self) -> &AnyConnectOptions {
        &self.options
    }

    pub(super) fn condition(&self) -> Condition {
        if self.replaced.load(Ordering::Relaxed) {
            Condition::FileReplaced
        } else if self.unreachable.load(Ordering::Relaxed) {
            Condition::Unreachable
        } else if self.disk_full.load(Ordering::Relaxed) {
            Condition::DiskFull
        } else {
            Condition::Up
        }
    }

    /// Records what the probe saw and opens or closes the pool's circuit on a change.
    /// A replaced file stays so whatever the probe sees later.
    fn observe(&self, pool: &AnyPool, seen: Condition) {
        let before = self.condition();
        if seen == Condition::FileReplaced {
            self.replaced.store(true, Ordering::Relaxed);
        } else {
            self.unreachable
                .store(seen == Condition::Unreachable, Ordering::Relaxed);
            self.disk_full
                .store(seen == Condition::DiskFull, Ordering::Relaxed);
        }
        let now = self.condition();
        metrics::gauge!("credgate_storage_up").set(f64::from(u8::from(now == Condition::Up)));
        if before == now {
            return;
        }
        if now == Condition::Up {
            pool.set_connect_options(self.options.clone());
            tracing::warn!(was = ?before, "storage usable again; requests resume");
        } else {
            pool.set_connect_options(open_circuit());
            // A replaced file has a line of its own (`file_replaced_now`'s caller).
            if now != Condition::FileReplaced {
                tracing::error!(condition = ?now, "storage unusable; requests fail fast (503) until the probe sees it usable");
            }
        }
    }

    /// Whether the SQLite database's path no longer names the file the pool opened; what it
    /// names instead when so. `None` for PostgreSQL and an in-memory SQLite.
    fn file_replaced_now(&self) -> Option<AtPath> {
        let file = self.sqlite_file.as_ref()?;
        match at_path(self.opened_as, FileId::of(file)) {
            AtPath::Same => None,
            other => Some(other),
        }
    }

    /// After a commit, before it is acknowledged: whether the SQLite path still names the file
    /// the pool opened, looked at now (a stat: microseconds), not as the probe last saw it up to
    /// `PROBE_EVERY` ago. A commit in that window went into an unlinked file and is gone at the
    /// next start, so its batch must not be acknowledged. Deleted or replaced: marked as the
    /// probe would (for good, circuit open). Unknown: refused this once, the probe decides.
    pub(super) fn confirm_file(&self, pool: &AnyPool) -> Result<(), Condition> {
        match self.file_replaced_now() {
            None => Ok(()),
            Some(found) => {
                let seen = judge(found, self.opened_as.is_some());
                if seen == Condition::FileReplaced {
                    self.observe(pool, seen);
                }
                Err(seen)
            }
        }
    }

    /// The SQLite disk's state now; `None` when there is no file to watch or it cannot be read
    /// (a vanished file is for the requests to report, not for a guess here).
    fn disk_full_now(&self) -> Option<bool> {
        let file = self.sqlite_file.as_ref()?;
        let s = rustix::fs::statvfs(file).ok()?;
        Some(s.f_bavail.saturating_mul(s.f_frsize) < DISK_FLOOR_BYTES)
    }
}

fn open_circuit() -> AnyConnectOptions {
    OPEN_CIRCUIT
        .parse()
        .expect("the open-circuit URL is a valid URL")
}

/// What the file at the SQLite path says of the storage, as `judge` decides from what the
/// stat found (`None`: the file the pool opened, or no file to watch). Logs a replaced file
/// once (the next rounds stop at the sticky condition).
fn file_condition(found: Option<AtPath>, health: &Health) -> Option<Condition> {
    let seen = judge(found?, health.opened_as.is_some());
    let path = health.sqlite_file.as_deref().unwrap_or(Path::new(""));
    if seen == Condition::FileReplaced {
        tracing::error!(
            path = %path.display(),
            ?found,
            "the SQLite database file was deleted or replaced under the running gateway: \
             nothing more can be committed to the file it opened (it would be lost at the \
             next restart), so requests are refused (503) until the gateway is restarted"
        );
    }
    // The other case is logged by `observe` when the condition changes, not every round.
    Some(seen)
}

/// A file deleted or replaced is for good (`FileReplaced`), and so is one that could not be
/// read at open (nothing says commits land in the file a restart would open). A stat failing
/// otherwise later (EACCES of a parent directory changed for a moment, ESTALE or EIO on a
/// network filesystem) refuses while it fails, as an unreachable server does: a passing error
/// must not need a restart.
fn judge(found: AtPath, opened_known: bool) -> Condition {
    match found {
        AtPath::Unknown if opened_known => Condition::Unreachable,
        _ => Condition::FileReplaced,
    }
}

/// The probe's loop; see the module's comment. Runs until its task is aborted.
pub(super) async fn probe(db: super::Db) {
    let mut conn: Option<AnyConnection> = None;
    loop {
        let health = &db.health;
        let seen = if db.backend() == super::Backend::Postgres
            && !answers(&health.options, &mut conn).await
        {
            Condition::Unreachable
        } else if health.condition() == Condition::FileReplaced {
            Condition::FileReplaced
        } else if let Some(seen) = file_condition(health.file_replaced_now(), health) {
            seen
        } else if health.disk_full_now() == Some(true) {
            Condition::DiskFull
        } else {
            Condition::Up
        };
        health.observe(db.pool(), seen);
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// Whether the server answers a ping on the probe's connection, or else on a fresh one (a
/// connection the server dropped, say after a restart, is not an outage).
async fn answers(options: &AnyConnectOptions, conn: &mut Option<AnyConnection>) -> bool {
    if let Some(c) = conn.as_mut()
        && matches!(
            tokio::time::timeout(PROBE_TIMEOUT, c.ping()).await,
            Ok(Ok(()))
        )
    {
        return true;
    }
    *conn = None;
    let fresh = tokio::time::timeout(PROBE_TIMEOUT, async {
        let mut c = AnyConnection::connect_with(options).await?;
        c.ping().await?;
        Ok::<_, sqlx::Error>(c)
    })
    .await;
    match fresh {
        Ok(Ok(c)) => {
            *conn = Some(c);
            true
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "storage probe: no connection");
            false
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The open circuit must fail at once: sqlx retries refused connections and transient
    /// server errors until the acquire timeout, but not a configuration error.
    #[tokio::test]
    async fn an_open_circuit_fails_an_acquire_at_once() {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(30))
            .connect_lazy_with(open_circuit());
        let started = std::time::Instant::now();
        let e = pool
            .acquire()
            .await
            .expect_err("no driver serves the scheme");
        assert!(matches!(e, sqlx::Error::Configuration(_)), "{e:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_path_naming_another_file_or_none_is_not_the_opened_file() {
        let opened = FileId { dev: 8, ino: 42 };
        let gone = |kind| Err(std::io::Error::from(kind));
        assert_eq!(at_path(Some(opened), Ok(opened)), AtPath::Same);
        // `mv copy credgate.db`: same device, another inode.
        let moved = FileId { dev: 8, ino: 43 };
        assert_eq!(at_path(Some(opened), Ok(moved)), AtPath::Other);
        // The same inode number on another filesystem is another file.
        let elsewhere = FileId { dev: 9, ino: 42 };
        assert_eq!(at_path(Some(opened), Ok(elsewhere)), AtPath::Other);
        use std::io::ErrorKind as K;
        assert_eq!(at_path(Some(opened), gone(K::NotFound)), AtPath::Missing);
        assert_eq!(
            at_path(Some(opened), gone(K::NotADirectory)),
            AtPath::Missing
        );
        assert_eq!(
            at_path(Some(opened), gone(K::PermissionDenied)),
            AtPath::Unknown
        );
        // Unread at open: nothing to compare with, so not the same.
        assert_eq!(at_path(None, Ok(opened)), AtPath::Unknown);
        // Deleted or replaced: for good; a stat failing after a good open: while it fails.
        assert_eq!(judge(AtPath::Missing, true), Condition::FileReplaced);
        assert_eq!(judge(AtPath::Other, true), Condition::FileReplaced);
        assert_eq!(judge(AtPath::Unknown, true), Condition::Unreachable);
        assert_eq!(judge(AtPath::Unknown, false), Condition::FileReplaced);
    }

    #[tokio::test]
    async fn a_deleted_or_moved_over_file_is_seen_and_never_forgotten() {
        // No tempfile in this crate's dev-dependencies: a directory of this process's own.
        let dir = std::env::temp_dir().join(format!(
            "credgate-health-{}-{}",
            std::process::id(),
            std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("credgate.db");
        std::fs::write(&db, b"x").unwrap();
        let h = Health::new("sqlite://unused".parse().unwrap(), Some(db.clone()));
        assert_eq!(h.file_replaced_now(), None);
        let copy = dir.join("copy.db");
        std::fs::copy(&db, &copy).unwrap();
        std::fs::rename(&copy, &db).unwrap();
        assert_eq!(h.file_replaced_now(), Some(AtPath::Other));
        std::fs::remove_file(&db).unwrap();
        assert_eq!(h.file_replaced_now(), Some(AtPath::Missing));

        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new().connect_lazy_with(open_circuit());
        h.observe(&pool, Condition::FileReplaced);
        assert_eq!(h.condition(), Condition::FileReplaced);
        // The probe keeps seeing it replaced; and even told up (a file back at the path), it
        // stays so.
        h.observe(&pool, Condition::Up);
        assert_eq!(h.condition(), Condition::FileReplaced);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_debug_form_holds_no_connect_options() {
        let h = Health::new(
            "postgres://u:secret-password@127.0.0.1/x".parse().unwrap(),
            None,
        );
        let shown = format!("{h:?}");
        assert!(!shown.contains("secret-password"), "{shown}");
        assert!(shown.contains("Up"), "{shown}");
    }
}
