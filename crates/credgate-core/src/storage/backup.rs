//! `credgate backup`: a consistent copy of the embedded SQLite database taken while the
//! gateway serves. SQLite's `VACUUM INTO` reads one snapshot (a read transaction: under WAL it
//! neither blocks the gateway's writer nor sees half of a commit) and writes it out compacted.
//! PostgreSQL has its own tools (pg_dump, base backups with WAL archiving for point-in-time
//! recovery), and the design forbids home-made stand-ins for them, so it is refused there.

use std::{
    io,
    path::{Path, PathBuf},
};

use super::{Backend, Db};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "credgate backup copies the embedded SQLite database only; back up PostgreSQL with its \
         own tools: pg_dump for a logical copy, or base backups with WAL archiving for \
         point-in-time recovery (PITR). Keep master.key (and the rest of the key directory) \
         with every copy: the keys in the database are wrapped under it"
    )]
    Postgres,
    #[error("{0} exists already; a backup never overwrites a file (choose a new name)")]
    Exists(PathBuf),
    #[error("no SQLite database at {0}")]
    NoDatabase(PathBuf),
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the copy failed: {0}")]
    Database(#[from] sqlx::Error),
}

/// The database file a `sqlite://` URL names, if it names one (not `:memory:`).
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://")?;
    let file = rest.split('?').next().unwrap_or(rest);
    (!file.is_empty() && !file.starts_with(':')).then(|| PathBuf::from(file))
}

/// Copies the database behind `db` to `out`, which must not exist. The copy is written under a
/// temporary name beside `out` (created exclusively, 0600: it holds the audit log and client
/// hashes) and linked to `out` only once complete and synced, so `out` is either absent or a
/// whole database, and a file that appears meanwhile is never replaced (`link` refuses).
/// Returns the copy's size in bytes.
pub async fn sqlite_copy(db: &Db, out: &Path) -> Result<u64, BackupError> {
    if db.backend() == Backend::Postgres {
        return Err(BackupError::Postgres);
    }
    if out.symlink_metadata().is_ok() {
        return Err(BackupError::Exists(out.to_path_buf()));
    }
    let io_at = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Io { path, source }
    };
    let name = out.file_name().ok_or_else(|| BackupError::Io {
        path: out.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    let partial = out.with_file_name(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    create_private(&partial).map_err(io_at(&partial))?;
    let copied = vacuum_into(db, &partial).await;
    let linked = copied.and_then(|()| {
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(io_at(&partial))?;
        std::fs::hard_link(&partial, out).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => BackupError::Exists(out.to_path_buf()),
            _ => io_at(out)(e),
        })
    });
    // Whatever happened, the temporary name goes; on success `out` keeps the data.
    let _ = std::fs::remove_file(&partial);
    linked?;
    sync_parent(out);
    std::fs::metadata(out).map(|m| m.len()).map_err(io_at(out))
}

/// SQLite writes the snapshot into an empty file only; the bound parameter keeps the path out
/// of the SQL text (no quoting of a name the operator chose).
async fn vacuum_into(db: &Db, file: &Path) -> Result<(), BackupError> {
    let target = file.to_str().ok_or_else(|| BackupError::Io {
        path: file.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not valid UTF-8"),
    })?;
    sqlx::query("VACUUM INTO $1")
        .bind(target.to_string())
        .execute(db.pool())
        .await?;
    Ok(())
}

fn create_private(path: &Path) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(drop)
}

/// The new name is durable once its directory is synced; a failure here loses nothing that
/// the copy itself holds, so it is not an error.
fn sync_parent(out: &Path) {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_file_url_names_a_file() {
        assert_eq!(
            sqlite_file("sqlite:///var/lib/credgate/credgate.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/credgate/credgate.db"))
        );
        assert_eq!(sqlite_file("sqlite://:memory:"), None);
        assert_eq!(sqlite_file("postgres://db/credgate"), None);
    }

    #[tokio::test]
    async fn a_copy_never_replaces_a_file_and_leaves_no_partial_one() {
        // No tempfile in this crate's dependencies: a fresh directory of our own, removed after.
        let dir = std::env::temp_dir().join(format!("credgate-backup-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        let db = Db::open(&format!("sqlite://{}/a.db", dir.display()))
            .await
            .unwrap();
        let out = dir.join("copy.db");
        assert!(sqlite_copy(&db, &out).await.unwrap() > 0);
        let before = std::fs::read(&out).unwrap();
        assert!(matches!(
            sqlite_copy(&db, &out).await,
            Err(BackupError::Exists(_))
        ));
        assert_eq!(std::fs::read(&out).unwrap(), before, "the first copy stays");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        db.pool().close().await;
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!names.iter().any(|n| n.contains("partial")), "{names:?}");
    }
}
