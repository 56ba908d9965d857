//! `credgate keys rotate | list`: the gateway's keys, kept in the database wrapped under
//! master.key; never their material on the terminal.

use clap::Subcommand;

use super::ConfigArg;
use crate::storage::Db;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Add a new token-signing key. Every replica signs with it within a second; tokens signed
    /// by the older key stay valid until they expire.
    Rotate {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List the stored keys: purpose, generation, kid, created (never key material).
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
}

pub async fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Rotate { config } => {
            let config = config.load()?;
            let db = Db::open(&config.storage_url).await?;
            let keyring = crate::auth::keyring::Keyring::open(&config.key_dir)?;
            let key = keyring
                .rotate(&db, crate::auth::keyring::KeyUse::TokenSigning)
                .await?;
            println!(
                "token-signing key generation {} added: kid {}; replicas sign with it within a second, older tokens stay valid until they expire",
                key.generation, key.kid
            );
        }
        KeysCommand::List { config } => {
            use crate::auth::keyring::KeyUse;
            let config = config.load()?;
            let db = Db::open(&config.storage_url).await?;
            let keyring = crate::auth::keyring::Keyring::open(&config.key_dir)?;
            for purpose in [
                KeyUse::TokenSigning,
                KeyUse::AuditSigning,
                KeyUse::Pseudonym,
                KeyUse::Reports,
            ] {
                for k in keyring.load(&db, purpose).await? {
                    println!(
                        "{:<14} {:>3}  {:<28} {}",
                        purpose.as_str(),
                        k.generation,
                        k.kid,
                        crate::storage::micros_to_rfc3339(k.created_at)
                    );
                }
            }
        }
    }
    Ok(())
}
