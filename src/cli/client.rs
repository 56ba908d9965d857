//! `credgate client add | disable | enable | list`: institutions (machine clients); a secret
//! is shown once and kept only as its argon2 hash.

use anyhow::bail;
use clap::Subcommand;

use super::ConfigArg;
use crate::{
    auth::secrets,
    config::is_name,
    policy::PolicySet,
    storage::{Db, clients},
};

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Register an institution; its secret is printed once and stored only as a hash.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        org: String,
        #[arg(long)]
        role: String,
        /// Region code (6-digit administrative division) for regionally scoped roles.
        #[arg(long)]
        region: Option<String>,
        /// Print a JSON object instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Disable a client: running gateways refuse its tokens within a second.
    Disable {
        id: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Enable a disabled client again (lockdowns covering it stay in force).
    Enable {
        id: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List clients (never their secrets).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

pub async fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Add {
            name,
            org,
            role,
            region,
            json,
            config,
        } => {
            let config = config.load()?;
            refuse_reserved(&config, &role)?;
            let db = Db::open(&config.storage_url).await?;
            let (record, secret) = add_client(&db, &name, &org, &role, region.as_deref()).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "client_id": record.id, "client_secret": secret, "name": record.name,
                        "org": record.org, "role": record.role, "region": record.region,
                    })
                );
            } else {
                println!("client_id:     {}", record.id);
                println!("client_secret: {secret}");
                println!("(the secret is shown only this once; credgate keeps only its hash)");
            }
        }
        ClientCommand::Disable { id, config } => {
            let db = Db::open(&config.load()?.storage_url).await?;
            if !clients::disable(&db, &id).await? {
                bail!("no client with id {id}");
            }
            println!("client {id} disabled");
        }
        ClientCommand::Enable { id, config } => {
            let db = Db::open(&config.load()?.storage_url).await?;
            if !clients::enable(&db, &id).await? {
                bail!("no client with id {id}");
            }
            println!("client {id} enabled");
        }
        ClientCommand::List { json, config } => {
            let db = Db::open(&config.load()?.storage_url).await?;
            let list = clients::list(&db).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for c in list {
                    println!(
                        "{}  {:<9} {:<24} {:<20} {}",
                        c.id,
                        format!("{:?}", c.status).to_lowercase(),
                        c.role,
                        c.org,
                        c.name
                    );
                }
            }
        }
    }
    Ok(())
}

/// A role the policy reserves for the public or a data subject is never a client's.
/// Unreadable policies cannot say so; the gateway, which cannot run without them, still gives
/// such a client no token and serves it nothing.
fn refuse_reserved(config: &crate::config::Config, role: &str) -> anyhow::Result<()> {
    match PolicySet::load(&config.policy_dir) {
        Ok(set) => {
            if let Some(who) = set.reserved(role) {
                bail!(
                    "--role {role} is reserved for the {} and is never a client's",
                    who.who()
                );
            }
        }
        Err(e) => eprintln!("warning: --role not checked against the policies ({e})"),
    }
    Ok(())
}

/// Validates and registers a client; returns the record and its one-time secret.
pub async fn add_client(
    db: &Db,
    name: &str,
    org: &str,
    role: &str,
    region: Option<&str>,
) -> anyhow::Result<(clients::ClientRecord, String)> {
    let text_ok = |s: &str, max: usize| {
        !s.trim().is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control)
    };
    if !text_ok(name, 200) {
        bail!("--name must be 1-200 characters without control characters");
    }
    if !is_name(org) {
        bail!("--org must be 1-64 characters of a-z, 0-9, '-' or '_'");
    }
    if !is_name(role) {
        bail!("--role must be 1-64 characters of a-z, 0-9, '-' or '_'");
    }
    if let Some(r) = region
        && (r.len() != 6 || !r.bytes().all(|b| b.is_ascii_digit()))
    {
        bail!("--region must be a 6-digit administrative division code, e.g. 110000");
    }
    let secret = secrets::generate_secret();
    let hash = {
        let secret = secret.clone();
        tokio::task::spawn_blocking(move || secrets::hash_secret(&secret)).await?
    };
    let id = secrets::generate_client_id();
    let record = clients::insert(
        db,
        clients::NewClient {
            id: &id,
            name,
            org,
            role,
            region,
            secret_hash: &hash,
        },
    )
    .await?;
    Ok((record, secret))
}
