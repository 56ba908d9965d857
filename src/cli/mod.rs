//! The command line of DESIGN.md. Every subcommand that touches state takes `--config`
//! (default `./credgate.toml`) and works beside a running gateway on the same storage. One file
//! per subcommand family; this one parses, dispatches, and runs the long-lived ones (serve,
//! sample-store, demo) with their signals.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

mod audit;
mod backup;
mod client;
mod keys;
mod policy;
mod token;

pub use client::{add_client, add_tls_client};

use crate::{config::Config, storage::Db, web::App};

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
    Client(client::ClientCommand),
    /// Mint tokens for testing and the demo.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Validate policy files.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Rotate or list the gateway's keys (kept in the database, wrapped under master.key).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Verify or export the audit log (offline, beside a running gateway).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Copy the SQLite database while the gateway serves (PostgreSQL: use pg_dump or PITR).
    Backup(backup::BackupArgs),
    /// Run the synthetic credit-data store used by the demo and the tests.
    SampleStore(crate::sample_store::SampleStoreArgs),
    /// Run the sample store and the gateway together, with demo clients, and print what to try.
    Demo(crate::demo::DemoArgs),
}

impl Command {
    /// Whether this command serves network clients until stopped (and so must survive a
    /// client closing its socket), rather than printing an answer and exiting.
    pub fn is_server(&self) -> bool {
        matches!(
            self,
            Command::Serve(_) | Command::SampleStore(_) | Command::Demo(_)
        )
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            crate::telemetry::init("info");
            let mut config = args.config.load()?;
            if let Some(listen) = args.listen {
                config.listen = listen;
            }
            // Nothing is created (database file, key directory) for a gateway that could not
            // run: the policies are checked first, as the config was by `load`.
            crate::policy::PolicySet::load(&config.policy_dir).map_err(|e| {
                anyhow::anyhow!(
                    "the policies in {} do not load: {e}",
                    config.policy_dir.display()
                )
            })?;
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
        Command::Client(cmd) => client::run(cmd).await?,
        Command::Token(cmd) => token::run(cmd).await?,
        Command::Policy(cmd) => return Ok(policy::run(cmd)),
        Command::Keys(cmd) => keys::run(cmd).await?,
        Command::Audit(cmd) => return audit::run(cmd).await,
        Command::Backup(args) => backup::run(args).await?,
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
