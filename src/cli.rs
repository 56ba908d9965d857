//! The command line of DESIGN.md. Every subcommand that touches state takes `--config`
//! (default `./credgate.toml`) and works beside a running gateway on the same storage.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::{
    auth::{secrets, subject::mint_demo_token},
    config::{Config, is_name},
    domain::{SubjectId, SubjectType},
    policy::PolicySet,
    storage::{Db, clients},
    web::App,
};

#[derive(Parser, Debug)]
#[command(
    name = "credgate",
    version,
    about = "Privacy and security gateway for credit-information access"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct ConfigArg {
    /// Configuration file [default: ./credgate.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Storage URL (sqlite://FILE or postgres://...); overrides the file and $CREDGATE_STORAGE_URL.
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
}

impl ConfigArg {
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(url) = &self.storage {
            config.storage_url = url.clone();
            config.validate()?;
        }
        Ok(config)
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Listen address; overrides the file and $CREDGATE_LISTEN.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(ConfigArg),
    /// Manage institutions (machine clients).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Mint tokens for testing and the demo.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Validate policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Rotate or list the gateway's keys (kept in the database, wrapped under master.key).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Verify or export the audit log (offline, beside a running gateway).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Run the synthetic credit-data store used by the demo and the tests.
    SampleStore(crate::sample_store::SampleStoreArgs),
    /// Run the sample store and the gateway together, with demo clients, and print what to try.
    Demo(crate::demo::DemoArgs),
}

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

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Mint a data-subject token with the demo identity provider's key; prints only the token.
    Subject {
        #[arg(long)]
        id: String,
        #[arg(long = "type", default_value = "legal")]
        subject_type: SubjectType,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the hash chain and the signed checkpoints; exits non-zero if anything is wrong.
    Verify {
        /// A previous report's `last_checkpoint`, kept outside the database: the log must
        /// still hold it (deleting the tail with its checkpoints is found). Written after
        /// each successful verification for the next one (created if absent, 0600).
        #[arg(long, value_name = "FILE")]
        witness: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Move records older than the retention minimum (up to a signed checkpoint) to an
    /// archive file in DIR; the live log keeps verifying from that checkpoint.
    Archive {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Write every record to stdout, oldest first.
    Export {
        #[arg(long, default_value = "ndjson", value_parser = ["csv", "ndjson"])]
        format: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Load and validate the policy directory.
    Check {
        /// Policy directory [default: ./policies]
        dir: Option<PathBuf>,
    },
    /// Run the policy test cases in DIR/tests/*.toml; exits non-zero on any failure.
    Test {
        /// Policy directory [default: ./policies]
        dir: Option<PathBuf>,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            crate::telemetry::init("info");
            let mut config = args.config.load()?;
            if let Some(listen) = args.listen {
                config.listen = listen;
            }
            let app = App::build(config).await?;
            tracing::info!(addr = %app.local_addr(), "credgate listening");
            // The port actually bound (the config may ask for port 0), for whoever started us.
            println!("listening on {}", app.local_addr());
            reload_on_sighup(app.state().clone());
            app.run_until(shutdown_signal()).await?;
        }
        Command::Migrate(c) => {
            let config = c.load()?;
            Db::open(&config.storage_url).await?;
            eprintln!("migrations applied");
        }
        Command::Client(cmd) => client_command(cmd).await?,
        Command::Token(TokenCommand::Subject {
            id,
            subject_type,
            config,
        }) => {
            let config = config.load()?;
            let demo = config.demo_identity_provider.as_ref().context(
                "this configuration has no demo_identity_provider; only the demo config can mint subject tokens",
            )?;
            let id = SubjectId::parse(subject_type, &id)
                .with_context(|| format!("--id is not a valid {} id", subject_type.as_str()))?;
            println!("{}", mint_demo_token(demo, &id, 3600)?);
        }
        Command::Policy(PolicyCommand::Check { dir }) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("policies"));
            match PolicySet::load(&dir) {
                Ok(set) => println!(
                    "policies in {} are valid: {} purposes, {} roles",
                    dir.display(),
                    set.purpose_codes().len(),
                    set.role_names().len()
                ),
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Policy(PolicyCommand::Test { dir }) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("policies"));
            match crate::policy::testing::run(&dir) {
                Ok(report) => {
                    for f in &report.failures {
                        println!("FAIL {f}");
                    }
                    println!("{} passed, {} failed", report.passed, report.failures.len());
                    if !report.failures.is_empty() {
                        return Ok(ExitCode::FAILURE);
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Keys(KeysCommand::Rotate { config }) => {
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
        Command::Keys(KeysCommand::List { config }) => {
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
        Command::Audit(AuditCommand::Verify { witness, config }) => {
            let config = config.load()?;
            let db = Db::open(&config.storage_url).await?;
            let keyring = crate::auth::keyring::Keyring::open(&config.key_dir)?;
            let key = keyring.gateway_keys(&db).await?.audit_signing;
            return verify_with_witness(&db, &key.public, witness.as_deref()).await;
        }
        Command::Audit(AuditCommand::Archive { out, config }) => {
            let config = config.load()?;
            let db = Db::open(&config.storage_url).await?;
            private_dir(&out)?;
            match crate::audit::archive::archive(
                &db,
                config.audit.retention_days,
                crate::storage::now_micros(),
                &out,
            )
            .await?
            {
                Some(a) => {
                    // The process umask (see main) already made it 0600; say so explicitly.
                    private_file(std::path::Path::new(&a.file))?;
                    println!("{}", serde_json::to_string_pretty(&a)?)
                }
                None => println!(
                    "nothing is older than the retention minimum ({} days) up to a checkpoint",
                    config.audit.retention_days
                ),
            }
        }
        Command::Audit(AuditCommand::Export { format, config }) => {
            use std::io::Write;
            let config = config.load()?;
            let db = Db::open(&config.storage_url).await?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            if format == "csv" {
                out.write_all(&crate::audit::export::csv_bytes(&[
                    crate::audit::export::CSV_HEADER
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                ]))?;
            }
            let mut after = 0;
            loop {
                let page = crate::audit::store::page_after(&db, after, 1000).await?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                if format == "csv" {
                    let rows: Vec<_> = page.iter().map(crate::audit::export::csv_row).collect();
                    out.write_all(&crate::audit::export::csv_bytes(&rows))?;
                } else {
                    for r in &page {
                        out.write_all(&crate::audit::export::ndjson_line(r))?;
                    }
                }
            }
            out.flush()?;
        }
        Command::SampleStore(args) => {
            crate::telemetry::init("info");
            let server = crate::sample_store::SampleStore::bind(&args).await?;
            // The port actually bound (`--listen` may ask for port 0), for whoever started us.
            println!("listening on {}", server.local_addr());
            server.run_until(shutdown_signal()).await?;
        }
        Command::Demo(args) => {
            crate::telemetry::init("warn,credgate=info");
            crate::demo::run(args, shutdown_signal()).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn client_command(cmd: ClientCommand) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Add {
            name,
            org,
            role,
            region,
            json,
            config,
        } => {
            let db = Db::open(&config.load()?.storage_url).await?;
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

/// SIGHUP reloads the policy set, on every replica, as `POST /admin/policies/reload` does.
fn reload_on_sighup(state: crate::web::AppState) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            match crate::replicas::reload_on_signal(&state).await {
                Ok(digest) => {
                    tracing::info!(%digest, "policies reloaded on SIGHUP; every replica told")
                }
                Err(e) => {
                    tracing::error!(error = %e, "policy reload refused; the previous set stays in force")
                }
            }
        }
    });
}

pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Archives hold the whole audit log: their directory is the owner's only (0700).
fn private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// `audit verify`, against the witness in `witness` when that file exists; a successful
/// verification leaves its last checkpoint there for the next run. A failed one leaves the
/// old witness untouched, so the evidence is not overwritten by the tampered log's head.
async fn verify_with_witness(
    db: &Db,
    public_key: &[u8],
    witness: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    use crate::audit::verify;
    let kept = match witness {
        Some(path) if path.exists() => {
            let text = std::fs::read(path)
                .with_context(|| format!("reading the witness {}", path.display()))?;
            let w: verify::Witness = serde_json::from_slice(&text).with_context(|| {
                format!(
                    "{} is not a witness (a report's `last_checkpoint`)",
                    path.display()
                )
            })?;
            Some(w)
        }
        _ => None,
    };
    let report = match &kept {
        Some(w) => verify::verify_against(db, public_key, w).await?,
        None => verify::verify(db, public_key).await?,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !report.ok {
        return Ok(ExitCode::FAILURE);
    }
    if let (Some(path), Some(last)) = (witness, &report.last_checkpoint) {
        write_private(path, &serde_json::to_vec_pretty(last)?)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `bytes` to `path` through a 0600 temporary file renamed over it: the witness is
/// never half written, and never readable by others even for a moment.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    private_file(&tmp)?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn private_file(path: &std::path::Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private (0600)", path.display()))?;
    }
    Ok(())
}
