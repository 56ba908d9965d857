//! `credgate client add | disable | enable | rotate-secret | list`: institutions (machine clients); a secret
//! is shown once and kept only as its argon2 hash.

use anyhow::bail;
use clap::Subcommand;

use super::ConfigArg;
use crate::{
    auth::secrets,
    config::is_name,
    policy::{PolicySet, RowScope},
    storage::{Db, clients, micros_to_rfc3339},
};

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Register an institution; its secret is printed once and stored only as a hash.
    Add {
        /// Display name of the institution: 1-200 characters, no control characters.
        #[arg(long)]
        name: String,
        /// Organisation id: 1-64 characters of a-z, 0-9, '-' or '_'. Lockdowns can name it.
        #[arg(long)]
        org: String,
        /// A client role the policies define (roles.toml), not one reserved for the public or
        /// a data subject; the error lists the allowed ones.
        #[arg(long)]
        role: String,
        /// Region code (6-digit administrative division, e.g. 110000): required for a role
        /// with `row_scope = "region"`, refused for any other.
        #[arg(long)]
        region: Option<String>,
        /// Register a client that authenticates with this certificate (PEM, the first
        /// CERTIFICATE block, or DER) over mutual TLS instead of a secret (RFC 8705
        /// tls_client_auth; needs `[tls] client_ca_file`). No secret is made.
        #[arg(long, value_name = "FILE", conflicts_with = "tls_thumbprint")]
        tls_cert: Option<std::path::PathBuf>,
        /// As --tls-cert, given the certificate's SHA-256 thumbprint: base64url (43
        /// characters, as `x5t#S256`) or 64 hex digits, colons allowed (`openssl x509
        /// -noout -fingerprint -sha256`).
        // A base64url thumbprint starts with `-` one time in 64: it is a value, not a flag.
        #[arg(long, value_name = "THUMBPRINT", allow_hyphen_values = true)]
        tls_thumbprint: Option<String>,
        /// Print a JSON object instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Disable a client: running gateways refuse its tokens within a second.
    Disable {
        /// Client id (cg_ and 32 hex digits), as `client list` shows it.
        id: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Enable a disabled client again (lockdowns covering it stay in force).
    Enable {
        /// Client id (cg_ and 32 hex digits), as `client list` shows it.
        id: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Give a client a new secret, printed once; the old one fails from the next token
    /// request on (tokens already issued stay valid until they expire).
    RotateSecret {
        /// Client id (cg_ and 32 hex digits), as `client list` shows it.
        id: String,
        /// Print a JSON object instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List clients (never their secrets); times are RFC 3339, UTC.
    List {
        /// Print a JSON array instead of text.
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
            tls_cert,
            tls_thumbprint,
            json,
            config,
        } => {
            let config = config.load()?;
            validate_fields(&name, &org, &role, region.as_deref())?;
            let thumbprint = match (tls_cert, tls_thumbprint) {
                (Some(file), _) => Some(thumbprint_of_file(&file)?),
                (None, Some(t)) => Some(parse_thumbprint(&t)?),
                (None, None) => None,
            };
            check_role(&config, &role, region.as_deref())?;
            let db = Db::open(&config.storage_url).await?;
            if let Some(t) = thumbprint {
                let fields = (
                    name.as_str(),
                    org.as_str(),
                    role.as_str(),
                    region.as_deref(),
                );
                return add_tls(&config, &db, fields, &t, json).await;
            }
            let (record, secret) = add_client(&db, &name, &org, &role, region.as_deref()).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "client_id": record.id, "client_secret": secret, "name": record.name,
                        "org": record.org, "role": record.role, "region": record.region,
                        "created_at": micros_to_rfc3339(record.created_at),
                    })
                );
            } else {
                print_secret(&record.id, &secret);
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
        ClientCommand::RotateSecret { id, json, config } => {
            let db = Db::open(&config.load()?.storage_url).await?;
            let secret = rotate_secret(&db, &id).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"client_id": id, "client_secret": secret})
                );
            } else {
                print_secret(&id, &secret);
            }
        }
        ClientCommand::List { json, config } => {
            let db = Db::open(&config.load()?.storage_url).await?;
            list(&db, json).await?;
        }
    }
    Ok(())
}

fn print_secret(id: &str, secret: &str) {
    println!("client_id:     {id}");
    println!("client_secret: {secret}");
    println!("(the secret is shown only this once; credgate keeps only its hash)");
}

/// `client add --tls-cert | --tls-thumbprint`: registers and prints the client, which has no
/// secret. Warns when the config has no `client_ca_file`: such a client cannot sign in there.
async fn add_tls(
    config: &crate::config::Config,
    db: &Db,
    (name, org, role, region): (&str, &str, &str, Option<&str>),
    thumbprint: &str,
    json: bool,
) -> anyhow::Result<()> {
    if config
        .tls
        .as_ref()
        .is_none_or(|t| t.client_ca_file.is_none())
    {
        eprintln!(
            "warning: this config has no [tls] client_ca_file: the client can get tokens only \
             from a gateway with mutual TLS on"
        );
    }
    let record = add_tls_client(db, name, org, role, region, thumbprint).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "client_id": record.id, "token_endpoint_auth_method": "tls_client_auth",
                "tls_thumbprint": thumbprint, "name": record.name, "org": record.org,
                "role": record.role, "region": record.region,
                "created_at": micros_to_rfc3339(record.created_at),
            })
        );
    } else {
        println!("client_id:      {}", record.id);
        println!("tls_thumbprint: {thumbprint}");
        println!("(no secret: the client authenticates with that certificate, tls_client_auth)");
    }
    Ok(())
}

/// The SHA-256 thumbprint (base64url) of the first certificate in `file`: PEM, or else DER.
fn thumbprint_of_file(file: &std::path::Path) -> anyhow::Result<String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let bytes =
        std::fs::read(file).map_err(|e| anyhow::anyhow!("--tls-cert {}: {e}", file.display()))?;
    let der = match CertificateDer::pem_slice_iter(&bytes).next() {
        Some(Ok(der)) => der.to_vec(),
        Some(Err(e)) => bail!("--tls-cert {}: not a PEM certificate: {e}", file.display()),
        // DER: an X.509 certificate is one ASN.1 SEQUENCE (0x30) with a long-form length.
        None if bytes.len() > 64 && bytes[0] == 0x30 && bytes[1] & 0x80 != 0 => bytes,
        None => bail!(
            "--tls-cert {}: no CERTIFICATE block and not DER",
            file.display()
        ),
    };
    Ok(thumbprint_of_der(&der))
}

/// RFC 8705 `x5t#S256`: base64url (unpadded) SHA-256 of the DER certificate.
pub fn thumbprint_of_der(der: &[u8]) -> String {
    use base64::Engine;
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// A thumbprint as base64url (43 characters) or hex (64 digits, colons allowed), in the form
/// the token endpoint compares: base64url of the 32 bytes.
fn parse_thumbprint(t: &str) -> anyhow::Result<String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let hex: String = t.chars().filter(|c| *c != ':').collect();
    let bytes = if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .ok()
    } else if t.len() == 43 {
        b64.decode(t).ok()
    } else {
        None
    };
    match bytes {
        Some(b) if b.len() == 32 => Ok(b64.encode(b)),
        _ => bail!(
            "--tls-thumbprint must be a SHA-256 thumbprint: 43 base64url characters or 64 hex digits"
        ),
    }
}

/// A new secret for `id`, stored as its hash only; the old one no longer verifies.
/// A `tls_client_auth` client has none to rotate, and is refused with that reason.
async fn rotate_secret(db: &Db, id: &str) -> anyhow::Result<String> {
    if let Some(c) = clients::get(db, id).await?
        && c.tls_thumbprint.is_some()
    {
        bail!(
            "client {id} authenticates with its certificate (tls_client_auth) and has no secret to rotate"
        );
    }
    let secret = secrets::generate_secret();
    let hash = {
        let secret = secret.clone();
        tokio::task::spawn_blocking(move || secrets::hash_secret(&secret)).await?
    };
    if !clients::set_secret(db, id, &hash).await? {
        bail!("no client with id {id}");
    }
    Ok(secret)
}

/// `client list`: one line per client (id, status, role, org, created, name), or JSON with
/// `created_at` in RFC 3339.
async fn list(db: &Db, json: bool) -> anyhow::Result<()> {
    let list = clients::list(db).await?;
    if json {
        let rows: Vec<serde_json::Value> = list
            .iter()
            .map(|c| {
                let mut v = serde_json::to_value(c).expect("a client record serialises");
                v["created_at"] = micros_to_rfc3339(c.created_at).into();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for c in list {
        println!(
            "{}  {:<9} {:<24} {:<20} {}  {}",
            c.id,
            format!("{:?}", c.status).to_lowercase(),
            c.role,
            c.org,
            micros_to_rfc3339(c.created_at),
            c.name
        );
    }
    Ok(())
}

/// The role must be one the policies give a client: defined, not reserved for the public or a
/// data subject, with a region exactly when it is scoped to one. Policies that do not load
/// register nothing: the role cannot be checked, and a gateway could not serve it anyway.
fn check_role(
    config: &crate::config::Config,
    role: &str,
    region: Option<&str>,
) -> anyhow::Result<()> {
    let dir = config.policy_dir.display();
    let set = PolicySet::load(&config.policy_dir).map_err(|e| {
        anyhow::anyhow!("--role cannot be checked: the policies in {dir} do not load: {e}")
    })?;
    if let Some(who) = set.reserved(role) {
        bail!(
            "--role {role} is reserved for the {} and is never a client's",
            who.who()
        );
    }
    let Some(r) = set.role(role) else {
        let allowed: Vec<&str> = set
            .role_names()
            .into_iter()
            .filter(|n| set.reserved(n).is_none())
            .collect();
        bail!(
            "--role {role} is not defined by the policies in {dir}; client roles: {}",
            allowed.join(", ")
        );
    };
    match (r.row_scope == RowScope::Region, region) {
        (true, None) => bail!(
            "--region is required: role {role} sees only its region's rows (row_scope = \"region\")"
        ),
        (false, Some(_)) => bail!(
            "--region is only for a role scoped to a region, and role {role} is not (it sees every region)"
        ),
        _ => Ok(()),
    }
}

/// The fields' own form, before anything is looked up: each error names its flag.
fn validate_fields(name: &str, org: &str, role: &str, region: Option<&str>) -> anyhow::Result<()> {
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
    validate_fields(name, org, role, region)?;
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
            tls_thumbprint: None,
        },
    )
    .await?;
    Ok((record, secret))
}

/// Validates and registers a `tls_client_auth` client (RFC 8705 section 2.1) for the
/// certificate with SHA-256 thumbprint `thumbprint` (base64url); it has no secret. A
/// certificate already registered to another client is refused (one certificate, one client).
pub async fn add_tls_client(
    db: &Db,
    name: &str,
    org: &str,
    role: &str,
    region: Option<&str>,
    thumbprint: &str,
) -> anyhow::Result<clients::ClientRecord> {
    validate_fields(name, org, role, region)?;
    let thumbprint = parse_thumbprint(thumbprint)?;
    if clients::list(db)
        .await?
        .iter()
        .any(|c| c.tls_thumbprint.as_deref() == Some(thumbprint.as_str()))
    {
        bail!("a client with this certificate is already registered");
    }
    let id = secrets::generate_client_id();
    let record = clients::insert(
        db,
        clients::NewClient {
            id: &id,
            name,
            org,
            role,
            region,
            secret_hash: clients::NO_SECRET,
            tls_thumbprint: Some(&thumbprint),
        },
    )
    .await?;
    Ok(record)
}
