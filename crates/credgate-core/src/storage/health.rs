//! Whether the database can take a request, known before a request asks.
//!
//! Without this, a request finds out by waiting: with PostgreSQL stopped, sqlx retries a refused
//! connection until the pool's acquire timeout, so every request (and every audit batch behind
//! it) waited seconds for its 503. Here one background probe (`Db::spawn_probe`, started by the
//! serving process) looks ahead every `PROBE_EVERY`:
//! - PostgreSQL: it pings on a connection of its own, so a busy pool is never mistaken for a
//!   dead server; a failed ping gets one fresh connection before the server is called down.
//! - SQLite: it reads the free space of the filesystem under the database file (statvfs: no
//!   write of its own that could take the last page from the audit log).
//!
//! While either says no, the pool's circuit is open: its connect options point at a scheme no
//! driver serves, so an acquire that needs a new connection fails at once instead of retrying
//! (sqlx rereads the options on each retry, so acquires already waiting fail too). Idle
//! connections are pinged on acquire and dropped when the server is gone. The probe closes the
//! circuit when the database answers (or the disk has room) again: service resumes without a
//! restart. `/readyz` names the condition.

use std::{
    path::PathBuf,
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
}

pub(super) struct Health {
    /// The options the pool uses while the circuit is closed (they hold the password: never
    /// printed, see `Debug`).
    options: AnyConnectOptions,
    /// The SQLite database file, whose filesystem the probe watches; `None` for PostgreSQL and
    /// an in-memory SQLite.
    sqlite_file: Option<PathBuf>,
    unreachable: AtomicBool,
    disk_full: AtomicBool,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("condition", &self.condition())
            .finish_non_exhaustive()
    }
}

impl Health {
    pub(super) fn new(options: AnyConnectOptions, sqlite_file: Option<PathBuf>) -> Self {
        Self {
            options,
            sqlite_file,
            unreachable: AtomicBool::new(false),
            disk_full: AtomicBool::new(false),
        }
    }

    pub(super) fn condition(&self) -> Condition {
        if self.unreachable.load(Ordering::Relaxed) {
            Condition::Unreachable
        } else if self.disk_full.load(Ordering::Relaxed) {
            Condition::DiskFull
        } else {
            Condition::Up
        }
    }

    /// Records what the probe saw and opens or closes the pool's circuit on a change.
    fn observe(&self, pool: &AnyPool, seen: Condition) {
        let before = self.condition();
        self.unreachable
            .store(seen == Condition::Unreachable, Ordering::Relaxed);
        self.disk_full
            .store(seen == Condition::DiskFull, Ordering::Relaxed);
        metrics::gauge!("credgate_storage_up").set(f64::from(u8::from(seen == Condition::Up)));
        if before == seen {
            return;
        }
        if seen == Condition::Up {
            pool.set_connect_options(self.options.clone());
            tracing::warn!(was = ?before, "storage usable again; requests resume");
        } else {
            pool.set_connect_options(open_circuit());
            tracing::error!(condition = ?seen, "storage unusable; requests fail fast (503) until the probe sees it usable");
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

/// The probe's loop; see the module's comment. Runs until its task is aborted.
pub(super) async fn probe(db: super::Db) {
    let mut conn: Option<AnyConnection> = None;
    loop {
        let seen = if db.backend() == super::Backend::Postgres
            && !answers(&db.health.options, &mut conn).await
        {
            Condition::Unreachable
        } else if db.health.disk_full_now() == Some(true) {
            Condition::DiskFull
        } else {
            Condition::Up
        };
        db.health.observe(db.pool(), seen);
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
