//! Persistent state through sqlx's `Any` driver, so one code path serves the embedded SQLite
//! default and PostgreSQL. SQL here stays portable: `$N` placeholders, integers for times
//! (unix microseconds) and text for ids, which both backends read the same way.

pub mod backup;
pub mod clients;
pub mod complaints;
pub mod consents;
pub mod dashboard;
pub mod events;
pub mod health;
pub mod lockdowns;
pub mod objections;
pub mod reports;
pub mod requests;
pub mod sessions;
pub mod shipping;
pub mod signals;
pub mod statements;

use std::{path::PathBuf, str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    AnyPool, Executor,
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::Migrator,
};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage unavailable: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported storage URL (use sqlite://FILE or postgres://...)")]
    UnsupportedUrl,
    /// The background probe knows the database unusable (`health::Condition`): nothing is
    /// tried against it.
    #[error("storage known unusable: {0:?}")]
    KnownDown(health::Condition),
}

/// How long a request waits for a pooled connection. Short: a pool that stays exhausted this
/// long is an overload better answered 503 at once than queued, and while the database is down
/// the probe's open circuit (see `health`) ends the wait sooner still; before it, sqlx retried
/// a refused connection for all of the former 5 s, per request and per audit batch.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// SQLite's pool: one writer at a time, so more connections add only readers.
const SQLITE_POOL: u32 = 8;

impl StorageError {
    /// The database refused a value it cannot hold (PostgreSQL's `character_not_in_repertoire`
    /// or `untranslatable_character`: a NUL in text). That is the caller's input, not an
    /// outage: such an id names nothing and such a text can never be stored.
    pub fn is_unstorable_input(&self) -> bool {
        match self {
            StorageError::Database(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("22021" | "22P05"))
            }
            _ => false,
        }
    }
}

/// A handle on the gateway's database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// What the background probe last saw, shared by every clone (see `health`).
    health: Arc<health::Health>,
    /// SQLite's one write lock, taken in turn by this process's audit writer and its indexer
    /// (`write_turn`). Without it they met only in SQLite's busy handler, which sleeps 1 to
    /// 100 ms between tries: the indexer had to pause 30 ms after every step so that a
    /// waiting append got in, and that pause, not the work, bounded how fast it indexed.
    write_turn: Arc<tokio::sync::Mutex<()>>,
}

impl Db {
    /// Connects (creating a SQLite file if needed). Does not migrate.
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        sqlx::any::install_default_drivers();
        let (backend, url, file) = if let Some(rest) = url.strip_prefix("sqlite://") {
            let file = sqlite_file(rest);
            if let Some(f) = &file {
                create_private_sqlite_file(f)?;
            }
            let sep = if rest.contains('?') { '&' } else { '?' };
            let url = if rest.contains("mode=") {
                url.to_string()
            } else {
                format!("{url}{sep}mode=rwc")
            };
            (Backend::Sqlite, url, file)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string(), None)
        } else {
            return Err(StorageError::UnsupportedUrl);
        };
        let options = AnyConnectOptions::from_str(&url)?;
        if backend == Backend::Sqlite {
            // WAL once, on one connection, before the pool opens its eight at once: on a new
            // file each of them setting it needs the write lock, and the losers got SQLITE_BUSY
            // at once (a reader upgrading skips the busy handler), logged as an error.
            let mut first =
                <sqlx::AnyConnection as sqlx::Connection>::connect_with(&options).await?;
            first.execute("PRAGMA journal_mode = WAL;").await?;
            sqlx::Connection::close(first).await?;
        }
        let health = Arc::new(health::Health::new(options.clone(), file));
        let usable = health.clone();
        let size = match backend {
            Backend::Sqlite => SQLITE_POOL,
            Backend::Postgres => 16,
        };
        let mut pool = AnyPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(ACQUIRE_TIMEOUT);
        if backend == Backend::Sqlite {
            // A fixed set, opened at start and kept: each SQLite connection is a thread of
            // its own with its own page cache, prepared statements and schema, so a pool that
            // grew under a burst and was recycled every 30 minutes (sqlx's default lifetime)
            // grew the process's memory in steps long after warm-up (bench/soak). Kept open,
            // the footprint is reached in the first minutes and stays. A file handle costs
            // the database nothing; PostgreSQL's connections do, and keep the defaults.
            pool = pool
                .min_connections(size)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = pool
            // While the probe knows the database unusable, idle connections are not handed out
            // either: a new one is asked for, and the open circuit refuses it at once.
            .before_acquire(move |_, _| {
                let up = usable.condition() == health::Condition::Up;
                Box::pin(async move { Ok(up) })
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets CLI subcommands write while a gateway reads; FULL sync keeps
                        // a commit durable across power loss, not just process death.
                        // recursive_triggers: without it SQLite fires no DELETE trigger for
                        // the row an `INSERT OR REPLACE` replaces, so REPLACE walked past the
                        // append-only guards (it lowered a chain's index progress, rev3 F3).
                        // One trigger of ours writes the table it is on (0100's progress move
                        // empties `step_rows`): an UPDATE of that column alone, which fires no
                        // trigger that writes, so none recurses.
                        // cache_size: each connection keeps a page cache of its own (SQLite's
                        // default 2 MB), filled as the log grows and kept: nine connections'
                        // caches filling were the soak's slow RSS growth (bench/soak, measured
                        // in glibc's arenas while mimalloc's stayed flat). 512 KiB each holds
                        // the B-tree paths appends and indexed reads walk; the rest of the
                        // file is in the kernel's page cache, a read away.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; \
                             PRAGMA recursive_triggers = ON; PRAGMA cache_size = -512;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            backend,
            health,
            write_turn: Arc::default(),
        })
    }

    /// On SQLite, this process's turn at the write lock for the audit writer and the indexer:
    /// a FIFO queue, so an append waiting behind an index step is next, with no busy-handler
    /// sleep. Held across one write transaction, never while waiting for a pool connection.
    /// Other writers (the CLI, other processes) still meet them in the busy handler. `None` on
    /// PostgreSQL, whose row locks need no turn.
    pub async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.write_turn.lock().await),
            Backend::Postgres => None,
        }
    }

    pub async fn migrate(&self) -> Result<(), StorageError> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// Connects and migrates: what `serve` and every state-touching subcommand do first.
    pub async fn open(url: &str) -> Result<Self, StorageError> {
        let db = Self::connect(url).await?;
        db.migrate().await?;
        Ok(db)
    }

    pub async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Opens a PostgreSQL connection, retrying what the pool's own connect retries (a server
    /// starting up: refused, or `too_many_connections` / `cannot_connect_now`), 10 ms doubling
    /// to 500 ms between tries, until the probe knows the server down (then at once, as the
    /// pool's circuit fails its waiting acquires: retrying to the end of the bound held every
    /// request's batch 2 s, caught by `faults_db`); the caller bounds the whole.
    async fn connect_retrying(&self) -> Result<sqlx::AnyConnection, StorageError> {
        let mut backoff = Duration::from_millis(10);
        loop {
            match <sqlx::AnyConnection as sqlx::Connection>::connect_with(self.health.options())
                .await
            {
                Err(sqlx::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(sqlx::Error::Database(e)) if e.is_transient_in_connect_phase() => {}
                done => return Ok(done?),
            }
            self.usable()?;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// A connection of the caller's own, out of the pool (the audit writer keeps one). On
    /// PostgreSQL it is opened here, so its socket is driven by the caller's runtime: a pooled
    /// one may have been opened by a handler on a serving thread (`web::workers`), whose loop
    /// alone polls it, and a loop busy with a large answer would then hold every commit.
    /// SQLite's connections are threads of their own: one is taken from the pool.
    pub async fn own_connection(&self) -> Result<sqlx::AnyConnection, StorageError> {
        match self.backend {
            Backend::Sqlite => Ok(self.pool.acquire().await?.detach()),
            Backend::Postgres => {
                // The pool's circuit (`health`) is checked here too: these are the real options.
                self.usable()?;
                match tokio::time::timeout(ACQUIRE_TIMEOUT, self.connect_retrying()).await {
                    Ok(conn) => Ok(conn?),
                    Err(_) => Err(StorageError::Database(sqlx::Error::Io(
                        std::io::ErrorKind::TimedOut.into(),
                    ))),
                }
            }
        }
    }

    /// `Err(KnownDown)` while the probe knows the database unusable: for paths that must not
    /// start work whose record could not be kept (a connection held outside the pool, a store
    /// read whose answer could not be released).
    pub fn usable(&self) -> Result<(), StorageError> {
        match self.condition() {
            health::Condition::Up => Ok(()),
            down => Err(StorageError::KnownDown(down)),
        }
    }

    /// After a commit and before its acknowledgement (the audit writer's batches): on SQLite,
    /// whether the commit went into the file the path names now (`Health::confirm_file`).
    pub fn confirm_committed(&self) -> Result<(), StorageError> {
        self.health
            .confirm_file(&self.pool)
            .map_err(StorageError::KnownDown)
    }

    /// What the background probe last saw (`Up` where no probe runs: the CLI's subcommands).
    pub fn condition(&self) -> health::Condition {
        self.health.condition()
    }

    /// Starts the probe that keeps `condition` current and opens the pool's circuit while the
    /// database is unusable. One per serving process; kept by the web layer's task supervisor.
    pub fn spawn_probe(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(health::probe(self.clone()))
    }
}

/// The database file of a `sqlite://` URL's remainder; `None` for an in-memory database.
fn sqlite_file(rest: &str) -> Option<PathBuf> {
    let file = rest.split('?').next().unwrap_or(rest);
    if file.is_empty() || file.starts_with(':') || rest.contains("mode=memory") {
        return None;
    }
    Some(PathBuf::from(file))
}

/// Creates the SQLite file owner-only (0600) before SQLite does (it would use the umask, 0644
/// as a rule): it holds client hashes, the audit log and report texts. SQLite gives the `-wal`
/// and `-shm` files the database file's mode, so they follow. An existing file that others can
/// read is tightened, with a warning.
fn create_private_sqlite_file(path: &std::path::Path) -> Result<(), StorageError> {
    let io = |e: std::io::Error| StorageError::Database(sqlx::Error::Io(e));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let f = options.open(path).map_err(io)?;
        let mode = f.metadata().map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the database was readable by others; now 0600");
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
        }
    }
    #[cfg(not(unix))]
    options.open(path).map_err(io)?;
    Ok(())
}

pub use crate::domain::time::{micros_to_rfc3339, now_micros};

#[cfg(test)]
mod tests {
    /// All SQL lives here (the layering rule): the outbox's deletion INSERT and the statements'
    /// advisory lock, once written in `workflows`, stay out of it.
    #[test]
    fn the_workflows_hold_no_outbox_insert_and_no_advisory_lock() {
        for (name, src) in [
            ("outbox.rs", include_str!("../workflows/outbox.rs")),
            ("statements.rs", include_str!("../workflows/statements.rs")),
            ("requests.rs", include_str!("../workflows/requests.rs")),
            (
                "restrictions.rs",
                include_str!("../workflows/restrictions.rs"),
            ),
        ] {
            for sql in ["INSERT INTO", "pg_advisory", "sqlx::query"] {
                assert!(!src.contains(sql), "workflows/{name} holds `{sql}`");
            }
        }
    }
}
