//! `credgate backup --out FILE`: an online copy of the SQLite database, beside a running
//! gateway (`storage::backup`). On PostgreSQL it refuses and names the tools that do it.

use std::path::PathBuf;

use clap::Args;

use super::ConfigArg;
use crate::storage::{Db, backup};

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The file to write (must not exist; created 0600). Keep it with the key directory's
    /// master.key: the keys inside the database are wrapped under it.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub config: ConfigArg,
}

pub async fn run(args: BackupArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    // Refused before connecting: nothing is created for a backup that cannot be taken (a
    // connect to a missing SQLite file would create an empty database).
    if !config.storage_url.starts_with("sqlite://") {
        return Err(backup::BackupError::Postgres.into());
    }
    if let Some(file) = backup::sqlite_file(&config.storage_url)
        && !file.is_file()
    {
        return Err(backup::BackupError::NoDatabase(file).into());
    }
    // `connect`, not `open`: a backup reads; it never migrates the database it copies.
    let db = Db::connect(&config.storage_url).await?;
    let bytes = backup::sqlite_copy(&db, &args.out).await?;
    db.pool().close().await;
    let report = serde_json::json!({
        "file": args.out.display().to_string(),
        "bytes": bytes,
        "keep_with": crate::auth::keyring::master_key_path(&config.key_dir).display().to_string(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
