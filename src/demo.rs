//! `credgate demo`: the sample store and the gateway together on the embedded default, with one
//! client per shipped role, and the lines to try printed. It also writes the config it runs
//! with and `demo.json`, so that scripts (and our tests) can drive it.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};

use crate::{
    auth::{keys::create_private_dir, secrets, subject::create_demo_provider},
    config::Config,
    sample_store::{SampleStore, SampleStoreArgs},
    web::App,
};

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Directory for the demo's config, keys and database (the database is fresh each run).
    #[arg(long, default_value = "credgate-demo")]
    pub dir: PathBuf,
    /// Where the gateway listens (IP:PORT; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the sample store listens (IP:PORT; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub store_listen: SocketAddr,
    /// Where the demo OpenID Connect provider listens (loopback; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8082")]
    pub idp_listen: SocketAddr,
    #[command(flatten)]
    pub edge: crate::demo_tls::DemoTlsArgs, // edge: `--tls` (src/demo_tls.rs)
}

/// The demo provider's clients: the staff console and the subject portal. Each one's client_id
/// is the audience of the access tokens it gets, and so of its `[[identity_providers]]` entry.
const CONSOLE_CLIENT: &str = "credgate-console";
const PORTAL_CLIENT: &str = "credgate-portal";

/// The institutions the demo registers: (role, org, name, purpose shown in the examples).
const DEMO_CLIENTS: &[(&str, &str, &str)] = &[
    (
        "regulator",
        "nea",
        "National Energy Administration, supervision department",
    ),
    (
        "government_agency",
        "procurement-center",
        "Public procurement center",
    ),
    (
        "financial_institution",
        "demo-bank",
        "Demo Bank, credit department",
    ),
    ("credit_agency", "demo-rating", "Demo Credit Rating Co."),
    (
        "security_officer",
        "credgate-ops",
        "Gateway security office",
    ),
    (
        "objection_handler",
        "credgate-ops",
        "Objection handling desk",
    ),
    // Separation of duties: whoever administers the gateway does not audit it.
    (
        "system_admin",
        "credgate-ops",
        "Gateway system administration",
    ),
    ("auditor", "credgate-audit", "Internal audit"),
];

/// The demo provider as a staff provider (console) and a subject provider (portal). Level-3
/// administrators sign in with two factors: `system_admin` (and the other staff roles, since
/// every demo staff user has a one-time code) needs the two-factor `acr` and `otp` in `amr`.
fn idp_config(idp: &str) -> String {
    let acr = credgate_demo_idp::ACR_TWO_FACTOR;
    format!(
        r#"
# People sign in at the demo OpenID Connect provider: staff for the console, data subjects for
# the portal. One issuer; the audience (the app's client_id) says which kind a token is.
[[identity_providers]]
issuer = "{idp}"
kind = "staff"
audience = "{CONSOLE_CLIENT}"
roles_claim = "groups"
role_map = {{ security_officer = "security_officer", objection_handler = "objection_handler", system_admin = "system_admin", auditor = "auditor" }}
require_acr = {{ system_admin = ["{acr}"], security_officer = ["{acr}"], auditor = ["{acr}"], objection_handler = ["{acr}"] }}
require_amr = {{ system_admin = ["otp"], security_officer = ["otp"], auditor = ["otp"], objection_handler = ["otp"] }}

[[identity_providers]]
issuer = "{idp}"
kind = "subject"
audience = "{PORTAL_CLIENT}"
"#
    )
}

/// `issuer` is the gateway's public URL: the `iss` of its tokens and the `issuer` of its RFC
/// 8414 metadata are both this one setting (RFC 9068 section 4).
fn demo_config(
    (listen, issuer): (SocketAddr, &str),
    store: SocketAddr,
    store_token: &str,
    idp: &str,
) -> String {
    format!(
        r#"# Written by `credgate demo`. Relative paths are relative to this file.
listen = "{listen}"
storage_url = "sqlite://credgate.db"
key_dir = "keys"
policy_dir = "{policy_dir}"

[auth]
issuer = "{issuer}"
audience = "credgate-api"
token_ttl_secs = 900

# Data-subject tokens from the demo identity provider are trusted by this config only.
[[identity_providers]]
issuer = "credgate-demo-idp"
audience = "credgate"
jwks_file = "keys/demo-idp.jwks.json"

[demo_identity_provider]
issuer = "credgate-demo-idp"
audience = "credgate"
key_file = "keys/demo-idp.ed25519.p8"
{idp_providers}
[[stores]]
name = "power"
upstream = "http://{store}"
connect_timeout_ms = 1000
response_timeout_ms = 5000
max_response_bytes = 4194304
credential = {{ header = "Authorization", value = "Bearer {store_token}" }}

[[stores.routes]]
method = "GET"
path = "/entities"
dataset = "entity_list"
query = ["sector", "region", "page", "page_size"]

[[stores.routes]]
method = "GET"
path = "/entities/{{uscc}}"
dataset = "entity"
query = []
subject_path = "uscc"
subject_type = "legal"
profile = true

[[stores.routes]]
method = "GET"
path = "/persons/{{id_number}}"
dataset = "person"
query = []
subject_path = "id_number"
subject_type = "natural"
profile = true

[[stores.routes]]
method = "GET"
path = "/lists/red"
dataset = "red_list"
query = ["page", "page_size"]

[[stores.routes]]
method = "GET"
path = "/lists/black"
dataset = "black_list"
query = ["page", "page_size"]
"#,
        policy_dir = shipped_policy_dir().display(),
        idp_providers = idp_config(idp),
    )
}

/// The shipped `policies/`: beside the working directory when run from a checkout, else the
/// copy compiled into the source tree's location.
fn shipped_policy_dir() -> PathBuf {
    let local = PathBuf::from("policies");
    let dir = if local.join("purposes.toml").exists() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
    };
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

// About 80 lines: the demo's start in the order a reader follows it (store, provider, gateway,
// clients, demo.json, guide, serve), each step one call.
pub async fn run(
    args: DemoArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let dir = &args.dir;
    prepare_dir(dir)?;

    let store_token = secrets::generate_secret();
    let store = SampleStore::bind(&SampleStoreArgs {
        listen: args.store_listen,
        seed: 42,
        entities: 200,
        token: Some(store_token.clone()),
    })
    .await
    .with_context(|| format!("starting the sample store on {}", args.store_listen))?;
    let store_addr = store.local_addr();
    let idp = credgate_demo_idp::DemoIdp::start(credgate_demo_idp::Options {
        listen: args.idp_listen,
        audience: CONSOLE_CLIENT.into(),
        ..Default::default()
    })
    .await
    .with_context(|| format!("starting the demo identity provider on {}", args.idp_listen))?;

    let config_path = dir.join("credgate.toml");
    let edge = crate::demo_tls::prepare(dir, args.listen, &args.edge)?; // edge: TLS files
    let scheme = edge.scheme(); // edge: https with --tls
    let (app, gateway_url) = build_gateway((args.listen, scheme), &config_path, |listen, url| {
        edge.config(demo_config(
            (listen, url),
            store_addr,
            &store_token,
            idp.issuer(),
        )) // edge
    })
    .await?;
    // The pages' sign-in callbacks (src/web/pages/session). The earlier placeholders
    // (`/console/callback`, `/portal/callback`) stay registered until tests/api/demo.rs moves
    // to these; nothing is served there.
    for (client, path) in [
        (CONSOLE_CLIENT, "/console/callback"),
        (PORTAL_CLIENT, "/portal/callback"),
        (CONSOLE_CLIENT, "/signin/staff/callback"),
        (PORTAL_CLIENT, "/signin/subject/callback"),
    ] {
        idp.register_client(client, &format!("{gateway_url}{path}"));
    }

    let policies = app.state().policies();
    let clients = register_clients(&app, &policies).await?;
    let demo = demo_json(
        &Urls {
            gateway: &gateway_url,
            store: store_addr,
            config: &config_path,
        },
        &idp,
        clients,
        &policies,
    );
    let demo = edge.annotate(demo, app.metrics_addr()); // edge: ca_file, metrics_url
    write_private(
        &dir.join("demo.json"),
        &serde_json::to_string_pretty(&demo)?,
    )?;

    // Absolute, so the printed lines work from any terminal, not only the one that ran the demo.
    let config_path = config_path.canonicalize().unwrap_or(config_path);
    print_guide(&demo, &config_path);

    serve_until(store, app, shutdown).await;
    drop(idp);
    Ok(())
}

/// Writes the config (`text` of the address and the public URL, which is the token issuer) and
/// builds the gateway. The issuer must be known before the gateway is built, so port 0 is
/// replaced by a port free now; another process may take it before the gateway binds it, and
/// then another port is tried (three in all), rather than running under a wrong URL.
async fn build_gateway(
    (listen, scheme): (SocketAddr, &str),
    config_path: &Path,
    text: impl Fn(SocketAddr, &str) -> String,
) -> anyhow::Result<(App, String)> {
    let mut attempt = 0;
    loop {
        let concrete = concrete_port(listen)?;
        let url = format!("{scheme}://{concrete}");
        write_private(config_path, &text(concrete, &url))?;
        match App::build(Config::load(Some(config_path))?).await {
            Ok(app) => return Ok((app, url)),
            Err(e) if listen.port() == 0 && attempt < 2 && address_in_use(&e) => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

fn address_in_use(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
    })
}

/// `listen` with port 0 replaced by a port free now.
fn concrete_port(listen: SocketAddr) -> anyhow::Result<SocketAddr> {
    if listen.port() != 0 {
        return Ok(listen);
    }
    let probe = std::net::TcpListener::bind(listen)
        .with_context(|| format!("finding a free port on {}", listen.ip()))?;
    Ok(probe.local_addr()?)
}

/// A fresh demo directory: private keys directory, no stale database, the static subject
/// provider's key (for `credgate token subject`).
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    create_private_dir(&dir.join("keys"))?;
    for stale in ["credgate.db", "credgate.db-wal", "credgate.db-shm"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    create_demo_provider(
        &dir.join("keys/demo-idp.ed25519.p8"),
        &dir.join("keys/demo-idp.jwks.json"),
    )?;
    Ok(())
}

/// One client per demo role, with the purposes its role may declare, for `demo.json`.
async fn register_clients(
    app: &App,
    policies: &crate::policy::PolicySet,
) -> anyhow::Result<Vec<Value>> {
    let mut clients = Vec::new();
    for (role, org, name) in DEMO_CLIENTS {
        let (record, secret) =
            crate::cli::add_client(&app.state().db, name, org, role, None).await?;
        let purposes = policies
            .role(role)
            .map(|r| r.purposes.clone())
            .unwrap_or_default();
        clients.push(json!({
            "role": role, "org": org, "name": name,
            "client_id": record.id, "client_secret": secret, "purposes": purposes,
        }));
    }
    Ok(clients)
}

/// Runs the store and the gateway until `shutdown`, then stops both and waits for them.
async fn serve_until(
    store: SampleStore,
    app: App,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let store_stop = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.changed().await;
        }
    };
    let gateway_stop = {
        let mut rx = stop_rx;
        async move {
            let _ = rx.changed().await;
        }
    };
    let store_task = tokio::spawn(store.run_until(store_stop));
    let gateway_task = tokio::spawn(app.run_until(gateway_stop));
    shutdown.await;
    let _ = stop_tx.send(true);
    let _ = store_task.await;
    let _ = gateway_task.await;
}

/// Where the demo's parts listen, and its config file, for `demo.json`.
struct Urls<'a> {
    gateway: &'a str,
    store: SocketAddr,
    config: &'a Path,
}

/// `demo.json`: what outside tooling reads (DESIGN.md, "Command line"): URLs, clients with
/// their one-time secrets, demo users, sample ids.
fn demo_json(
    urls: &Urls<'_>,
    idp: &credgate_demo_idp::DemoIdp,
    clients: Vec<Value>,
    policies: &crate::policy::PolicySet,
) -> Value {
    let data = crate::sample_store::data::generate(42, 200);
    let usccs: Vec<&str> = data
        .entities
        .iter()
        .take(3)
        .filter_map(|e| e["uscc"].as_str())
        .collect();
    let persons: Vec<&str> = data
        .persons
        .iter()
        .take(2)
        .filter_map(|p| p["id_number"].as_str())
        .collect();
    json!({
        "gateway_url": urls.gateway,
        "idp_url": idp.issuer(),
        "console_url": format!("{}/console/", urls.gateway),
        "portal_url": format!("{}/portal/", urls.gateway),
        "public_url": format!("{}/", urls.gateway),
        "users": idp.users(),
        "store_url": format!("http://{}", urls.store),
        "config": urls.config.canonicalize().unwrap_or(urls.config.to_path_buf()),
        "clients": clients,
        "public_purposes": policies.role(crate::auth::PUBLIC_ROLE).map(|r| r.purposes.clone()).unwrap_or_default(),
        "subject_token_hint": format!(
            "credgate token subject --config {} --id <USCC> [--type legal]  (or --id <ID number> --type natural)",
            urls.config.display()
        ),
        "samples": {"usccs": usccs, "id_numbers": persons},
    })
}

// Long on purpose: the printed guide, one statement per line a newcomer reads, in reading order.
fn print_guide(demo: &Value, config_path: &Path) {
    let url = demo["gateway_url"].as_str().unwrap_or_default();
    let client = |role: &str| {
        demo["clients"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["role"] == role))
            .cloned()
            .unwrap_or_default()
    };
    let uscc = demo["samples"]["usccs"][0].as_str().unwrap_or_default();
    let person = demo["samples"]["id_numbers"][1]
        .as_str()
        .unwrap_or_default();
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "credgate".into());
    let token_line = |var: &str, c: &Value| {
        format!(
            "{var}=$(curl -s {url}/oauth/token -d grant_type=client_credentials -d client_id={} -d client_secret={} | sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/')",
            c["client_id"].as_str().unwrap_or_default(),
            c["client_secret"].as_str().unwrap_or_default()
        )
    };
    let bad_uscc = {
        let last = if uscc.ends_with('0') { '1' } else { '0' };
        format!("{}{last}", &uscc[..uscc.len().saturating_sub(1)])
    };
    let expires = (time::OffsetDateTime::now_utc() + time::Duration::days(30))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let config = config_path.display();
    println!(
        r#"credgate demo is running (Ctrl-C stops it).
  gateway:      {url}
  sample store: {store} (it wants credgate's credential: go through the gateway)
  config:       {config}   clients and secrets: {dir}/demo.json

As Demo Bank (a financial institution, clearance T3) declaring the purpose "lending": the
entity comes back masked (ID number and phone partial, revenue, customers and prices removed).

  {bank_token}
  curl -s {url}/v1/stores/power/entities/{uscc} -H "Authorization: Bearer $TOKEN" -H "X-Purpose: lending"
  curl -s "{url}/v1/stores/power/entities?sector=coal&page_size=2" -H "Authorization: Bearer $TOKEN" -H "X-Purpose: lending"
  curl -s {url}/v1/subjects/{uscc}/profile -H "Authorization: Bearer $TOKEN" -H "X-Purpose: lending"

A person's records need the person's separate consent (PIPL art. 29). Without it, 403; the person grants it; then 200:

  curl -s {url}/v1/stores/power/persons/{person} -H "Authorization: Bearer $TOKEN" -H "X-Purpose: lending"
  PERSON=$({exe} token subject --config {config} --id {person} --type natural)
  CONSENT=$(curl -s {url}/subject/consents -H "Authorization: Bearer $PERSON" -H "Content-Type: application/json" -d '{{"grantee_org":"demo-bank","purpose":"lending","expires_at":"{expires}","separate":true}}' | sed -E 's/.*"id":"([^"]+)".*/\1/')
  curl -s {url}/v1/stores/power/persons/{person} -H "Authorization: Bearer $TOKEN" -H "X-Purpose: lending" -H "X-Consent: $CONSENT"

The regulator (T4) sees the whole record; the public (no token) sees the public tier only:

  {regulator_token}
  curl -s {url}/v1/stores/power/entities/{uscc} -H "Authorization: Bearer $REGULATOR" -H "X-Purpose: supervision"
  curl -s {url}/public/stores/power/entities/{uscc} -H "X-Purpose: public_disclosure"

What the gateway refuses (401 no token, 400 no purpose, 400 bad USCC check character, 404 no
route, 403 a purpose the role may not declare, 403 a role that sees no credit data):

  curl -s {url}/v1/stores/power/entities/{uscc} -H "X-Purpose: lending"
  curl -s {url}/v1/stores/power/entities/{uscc} -H "Authorization: Bearer $TOKEN"
  curl -s {url}/v1/stores/power/entities/{bad_uscc} -H "Authorization: Bearer $TOKEN" -H "X-Purpose: lending"
  curl -s {url}/v1/stores/power/admin/dump -H "Authorization: Bearer $TOKEN" -H "X-Purpose: lending"
  curl -s {url}/v1/stores/power/entities/{uscc} -H "Authorization: Bearer $TOKEN" -H "X-Purpose: supervision"
  {officer_token}
  curl -s {url}/v1/stores/power/entities/{uscc} -H "Authorization: Bearer $OFFICER" -H "X-Purpose: security_audit"

As the company itself (a data subject, with a token from the demo identity provider):

  SUBJECT=$({exe} token subject --config {config} --id {uscc})
  curl -s {url}/subject/me -H "Authorization: Bearer $SUBJECT"
  curl -s {url}/subject/access-log -H "Authorization: Bearer $SUBJECT"

The company contests its registered capital; from now on every reader sees the mark
(X-Objection: pending and an _objections entry) until the objection is closed:

  curl -s {url}/subject/objections -H "Authorization: Bearer $SUBJECT" -H "Content-Type: application/json" -d '{{"store":"power","dataset":"entity","record_ref":"{uscc}","field":"registered_capital","reason":"registered capital changed in 2025"}}'
  curl -s -i {url}/v1/stores/power/entities/{uscc} -H "Authorization: Bearer $TOKEN" -H "X-Purpose: lending"

Every request above is in the audit log; the security officer searches and verifies it:

  curl -s "{url}/admin/audit?limit=3" -H "Authorization: Bearer $OFFICER"
  curl -s {url}/admin/audit/verify -H "Authorization: Bearer $OFFICER"

Staff are people, not shared secrets: they sign in at the demo identity provider ({idp})
with a password and a one-time code (users, passwords and TOTP secrets are under "users" in
demo.json), through the console ({console}); data subjects through the portal ({portal}). A
staff sign-in's access token works on /admin like the clients' below, and the audit record
names the person (actor) and their organisation (actor_org).

Duties are separate: the system administrator manages clients and policies but cannot read
the log (403); the auditor reads all of it, staff actions included, and changes nothing:

  {admin_token}
  curl -s {url}/admin/clients -H "Authorization: Bearer $ADMIN"
  curl -s "{url}/admin/audit?limit=3" -H "Authorization: Bearer $ADMIN"
  {auditor_token}
  curl -s "{url}/admin/audit?limit=3" -H "Authorization: Bearer $AUDITOR"

"#,
        idp = demo["idp_url"].as_str().unwrap_or_default(),
        console = demo["console_url"].as_str().unwrap_or_default(),
        portal = demo["portal_url"].as_str().unwrap_or_default(),
        store = demo["store_url"].as_str().unwrap_or_default(),
        dir = config_path
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        bank_token = token_line("TOKEN", &client("financial_institution")),
        regulator_token = token_line("REGULATOR", &client("regulator")),
        officer_token = token_line("OFFICER", &client("security_officer")),
        admin_token = token_line("ADMIN", &client("system_admin")),
        auditor_token = token_line("AUDITOR", &client("auditor")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_taken_address_makes_the_demo_try_another_port() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = std::net::TcpListener::bind(taken.local_addr().unwrap()).unwrap_err();
        let e = anyhow::Error::new(err).context("binding (listen)");
        assert!(address_in_use(&e));
        assert!(!address_in_use(&anyhow::anyhow!(
            "tls.cert_file: no such file"
        )));
        let port = concrete_port("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(port.port(), 0);
        let fixed: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(concrete_port(fixed).unwrap(), fixed);
    }
}
