use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, Once,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use credgate::{
    auth::keys::Ed25519Key,
    config::Config,
    sample_store::{self, SampleStoreArgs},
    web::{App, AppState},
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const STORE_TOKEN: &str = "store-credential-for-tests";

static TRACING: Once = Once::new();

fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            credgate::telemetry::init("debug,sqlx=warn,hyper=info");
        }
    });
}

pub async fn serve(router: Router) -> SocketAddr {
    watchdog::arm_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

/// The sample store (seed 42, `entities` of them) on a loopback port, expecting our credential.
pub async fn sample_store_with(entities: usize) -> SocketAddr {
    serve(sample_store::router(&SampleStoreArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        seed: 42,
        entities,
        token: Some(STORE_TOKEN.into()),
    }))
    .await
}

/// A store under the tests' control: records what reaches it and misbehaves on request.
#[derive(Clone, Default)]
pub struct FakeStore {
    pub hits: Arc<AtomicUsize>,
    pub last_headers: Arc<Mutex<Option<HeaderMap>>>,
    pub last_uri: Arc<Mutex<Option<String>>>,
    pub last_body_len: Arc<AtomicUsize>,
    /// What `/doc` answers: set by a test.
    pub doc: Arc<Mutex<Value>>,
    /// While set, `/objections` answers 503.
    pub objections_down: Arc<std::sync::atomic::AtomicBool>,
    /// Objection deliveries received, by idempotency key -> ticket.
    pub tickets: Arc<Mutex<std::collections::HashMap<String, String>>>,
    pub deliveries: Arc<AtomicUsize>,
}

impl FakeStore {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    pub fn headers(&self) -> HeaderMap {
        self.last_headers
            .lock()
            .unwrap()
            .clone()
            .expect("the store was called")
    }
    pub fn uri(&self) -> String {
        self.last_uri
            .lock()
            .unwrap()
            .clone()
            .expect("the store was called")
    }
}

async fn record(
    State(s): State<FakeStore>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    *s.last_headers.lock().unwrap() = Some(req.headers().clone());
    *s.last_uri.lock().unwrap() = Some(req.uri().to_string());
    next.run(req).await
}

pub fn fake_router(state: FakeStore) -> Router {
    let big = "x".repeat(200 * 1024);
    let big2 = big.clone();
    Router::new()
        .route(
            "/entities/{uscc}",
            get(
                |axum::extract::Path(u): axum::extract::Path<String>| async move {
                    Json(json!({"uscc": u, "name": "测试能源有限公司"}))
                },
            ),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Json(json!({"late": true}))
            }),
        )
        .route(
            "/huge",
            get(move || async move { Json(json!({"blob": big})) }),
        )
        .route(
            "/huge-chunked",
            get(move || async move {
                let chunks: Vec<Result<Bytes, std::io::Error>> = (0..50)
                    .map(|_| Ok(Bytes::from(big2[..8192].to_string())))
                    .collect();
                let stream = futures_util::stream::iter(chunks);
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    Body::from_stream(stream),
                )
            }),
        )
        .route(
            "/boom",
            get(|| async {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "panic at store.rs:42 password=hunter2",
                )
                    .into_response()
            }),
        )
        .route(
            "/html",
            get(|| async { ([(header::CONTENT_TYPE, "text/html")], "<h1>hi</h1>") }),
        )
        // JSON with a key serde_json reserves: under its raw_value feature the string would be
        // parsed as a new document, past the depth limit.
        .route(
            "/reserved-key",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"$serde_json::private::RawValue":"{\"uscc\":\"91350100M000100Y43\"}"}"#,
                )
            }),
        )
        .route("/records", get(|| async { Json(json!({"items": []})) }))
        .route(
            "/echo",
            post(|State(s): State<FakeStore>, body: Bytes| async move {
                s.last_body_len.store(body.len(), Ordering::SeqCst);
                Json(json!({"uscc": "91350100M000100Y43"}))
            }),
        )
        .route(
            "/objections",
            post(
                |State(s): State<FakeStore>, headers: HeaderMap| async move {
                    s.deliveries.fetch_add(1, Ordering::SeqCst);
                    if s.objections_down.load(Ordering::SeqCst) {
                        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
                    }
                    let key = headers["idempotency-key"].to_str().unwrap().to_string();
                    let mut t = s.tickets.lock().unwrap();
                    let n = t.len() + 1;
                    let ticket = t.entry(key).or_insert_with(|| format!("FT-{n}")).clone();
                    (StatusCode::ACCEPTED, Json(json!({"ticket_id": ticket}))).into_response()
                },
            ),
        )
        .route(
            "/doc/{uscc}",
            get(|State(s): State<FakeStore>| async move { Json(s.doc.lock().unwrap().clone()) }),
        )
        .layer(axum::middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub url: String,
    pub state: AppState,
    pub http: reqwest::Client,
    pub fake: FakeStore,
    pub sample_store: SocketAddr,
    pub dir: tempfile::TempDir,
    /// `http://ADDR` of the metrics listener (`metrics_listen`), empty when it is off.
    pub metrics_url: String,
}

pub fn config_text(
    dir: &std::path::Path,
    sample: SocketAddr,
    fake: SocketAddr,
    dead: SocketAddr,
) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
io_threads = 2
metrics_listen = "127.0.0.1:0"
storage_url = "sqlite://{dir}/credgate.db"
key_dir = "{dir}/keys"
policy_dir = "{dir}/policies"

[[identity_providers]]
issuer = "test-idp"
audience = "credgate"
jwks_file = "{dir}/idp.jwks.json"

[demo_identity_provider]
issuer = "test-idp"
audience = "credgate"
key_file = "{dir}/keys/idp.p8"

[[stores]]
name = "power"
upstream = "http://{sample}"
credential = {{ header = "Authorization", value = "Bearer {STORE_TOKEN}" }}

[[stores.routes]]
method = "GET"
path = "/entities"
dataset = "entity_list"
query = ["sector", "region", "page", "page_size"]

[[stores.routes]]
method = "GET"
path = "/entities/{{uscc}}"
dataset = "entity"
subject_path = "uscc"
subject_type = "legal"
profile = true

[[stores.routes]]
method = "GET"
path = "/persons/{{id_number}}"
dataset = "person"
subject_path = "id_number"
subject_type = "natural"
profile = true

[[stores.routes]]
method = "GET"
path = "/lists/red"
dataset = "red_list"

[[stores.routes]]
method = "GET"
path = "/lists/black"
dataset = "black_list"

[[stores]]
name = "fake"
upstream = "http://{fake}"
response_timeout_ms = 400
# Fast polling for the workflow tests.
max_response_bytes = 65536
max_request_bytes = 1024
credential = {{ header = "X-Store-Key", value = "fake-store-key" }}

[[stores.routes]]
method = "GET"
path = "/entities/{{uscc}}"
dataset = "entity"
subject_path = "uscc"
subject_type = "legal"
query = ["x"]

[[stores.routes]]
method = "GET"
path = "/records"
dataset = "entity_list"
subject_query = "uscc"
subject_type = "legal"
query = ["page", "page_size"]

[[stores.routes]]
method = "GET"
path = "/doc/{{uscc}}"
dataset = "entity"
subject_path = "uscc"
subject_type = "legal"

[[stores.routes]]
method = "GET"
path = "/slow"
dataset = "entity"

[[stores.routes]]
method = "GET"
path = "/huge"
dataset = "entity"

[[stores.routes]]
method = "GET"
path = "/huge-chunked"
dataset = "entity"

[[stores.routes]]
method = "GET"
path = "/boom"
dataset = "entity"

[[stores.routes]]
method = "GET"
path = "/html"
dataset = "entity"

[[stores.routes]]
method = "GET"
path = "/reserved-key"
dataset = "entity"

[[stores.routes]]
method = "POST"
path = "/echo"
dataset = "entity"

[[stores]]
name = "down"
upstream = "http://{dead}"
connect_timeout_ms = 500

[[stores.routes]]
method = "GET"
path = "/entities/{{uscc}}"
dataset = "entity"
subject_path = "uscc"
subject_type = "legal"
profile = true
"#,
        dir = dir.display(),
    )
}

/// Each test gets its own copy of the shipped policies, free to change them.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

/// An address nothing listens on: bound, then released.
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A second in-process gateway on a test app's storage.
pub struct Sibling {
    pub state: AppState,
    pub url: String,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns with a config adjusted by `tweak` (thresholds, checkpoints, limits).
    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        Self::spawn_in(dir, FakeStore::default(), tweak).await
    }

    /// Another gateway on the same storage, keys and stores (a restart, or a replica).
    pub async fn sibling(&self) -> Sibling {
        self.sibling_with(|_| {}).await
    }

    /// A sibling whose config is adjusted first (its own policy directory, say).
    /// Replica tests run serially (`serially`).
    pub async fn sibling_with(&self, tweak: impl FnOnce(&mut Config)) -> Sibling {
        serially().await;
        let mut config = (*self.state.config).clone();
        config.listen = "127.0.0.1:0".parse().unwrap();
        tweak(&mut config);
        let app = App::build(config).await.unwrap();
        let url = format!("http://{}", app.local_addr());
        let state = app.state().clone();
        tokio::spawn(app.run_until(std::future::pending()));
        Sibling { state, url }
    }

    async fn spawn_in(
        dir: tempfile::TempDir,
        fake: FakeStore,
        tweak: impl FnOnce(&mut Config),
    ) -> TestApp {
        watchdog::arm_default();
        let sample_store = sample_store_with(60).await;
        let fake_addr = serve(fake_router(fake.clone())).await;
        credgate::auth::subject::create_demo_provider(
            &dir.path().join("keys/idp.p8"),
            &dir.path().join("idp.jwks.json"),
        )
        .unwrap();
        copy_dir(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/policies")),
            &dir.path().join("policies"),
        );
        let text = config_text(dir.path(), sample_store, fake_addr, dead_addr());
        let mut config = Config::parse(&text, "test").unwrap();
        if let Some(url) = test_postgres_url().await {
            config.storage_url = url;
        }
        tweak(&mut config);
        config.validate().unwrap();
        let app = App::build(config).await.expect("the gateway starts");
        let addr = app.local_addr();
        let metrics_url = app
            .metrics_addr()
            .map(|a| format!("http://{a}"))
            .unwrap_or_default();
        let state = app.state().clone();
        tokio::spawn(app.run_until(std::future::pending()));
        TestApp {
            metrics_url,
            addr,
            url: format!("http://{addr}"),
            state,
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            fake,
            sample_store,
            dir,
        }
    }

    pub async fn add_client(&self, role: &str) -> (String, String) {
        self.add_client_in(role, "test-org", None).await
    }

    pub async fn add_client_in(
        &self,
        role: &str,
        org: &str,
        region: Option<&str>,
    ) -> (String, String) {
        let (record, secret) =
            credgate::cli::add_client(&self.state.db, "Test institution", org, role, region)
                .await
                .unwrap();
        (record.id, secret)
    }

    /// A token for a new client of this role, org and region.
    pub async fn token_in(&self, role: &str, org: &str, region: Option<&str>) -> String {
        let (id, secret) = self.add_client_in(role, org, region).await;
        let body: Value = self.token_for(&id, &secret).await.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    pub async fn token_for(&self, id: &str, secret: &str) -> reqwest::Response {
        request_token(&self.http, &self.url, id, secret).await
    }

    /// A new client of `role` and a fresh access token for it.
    pub async fn token(&self, role: &str) -> (String, String) {
        let (id, secret) = self.add_client(role).await;
        let res = self.token_for(&id, &secret).await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        (id, body["access_token"].as_str().unwrap().to_string())
    }

    /// GET with the token and the usual purpose of the token's role.
    pub async fn data(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{}", self.url, path))
            .bearer_auth(token)
            .header("X-Purpose", purpose_of(token))
            .send()
            .await
            .unwrap()
    }

    /// The key that signs this gateway's tokens now, out of the keyring, to forge with.
    pub async fn signing_key(&self) -> Ed25519Key {
        self.state
            .keyring
            .load(
                &self.state.db,
                credgate::auth::keyring::KeyUse::TokenSigning,
            )
            .await
            .unwrap()
            .pop()
            .unwrap()
            .ed25519()
            .unwrap()
    }

    pub fn sample(&self) -> credgate::sample_store::data::Dataset {
        credgate::sample_store::data::generate(42, 60)
    }

    pub fn subject_token(&self, id: &str, kind: credgate::domain::SubjectType) -> String {
        let demo = self.state.config.demo_identity_provider.clone().unwrap();
        let id = credgate::domain::SubjectId::parse(kind, id).unwrap();
        credgate::auth::subject::mint_demo_token(&demo, &id, 600).unwrap()
    }

    /// An officer's view of the log (newest first), with optional query.
    pub async fn audit(&self, officer: &str, query: &str) -> Value {
        let res = self
            .http
            .get(format!("{}/admin/audit?{query}", self.url))
            .bearer_auth(officer)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    /// The record with this audit id, read straight from storage.
    pub async fn record(&self, audit_id: &str) -> credgate::audit::AuditRecord {
        let all = credgate::audit::store::page_after(&self.state.db, 0, 100_000)
            .await
            .unwrap();
        all.into_iter()
            .find(|r| r.id == audit_id)
            .expect("the audit id was committed")
    }

    pub async fn record_count(&self) -> usize {
        credgate::audit::store::page_after(&self.state.db, 0, 100_000)
            .await
            .unwrap()
            .len()
    }

    /// Sends a request line exactly as given, bypassing any client-side path normalisation.
    pub async fn raw_get(&self, path: &str, token: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nX-Purpose: lending\r\nConnection: close\r\n\r\n",
            self.addr
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, text)
    }
}

/// A purpose the token's role may declare (read from the token's own `role` claim).
pub fn purpose_of(token: &str) -> &'static str {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let role = token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|c| c["role"].as_str().map(str::to_string))
        .unwrap_or_default();
    match role.as_str() {
        "regulator" | "regional_regulator" => "supervision",
        "government_agency" => "public_procurement",
        "credit_agency" => "credit_service",
        "security_officer" => "security_audit",
        "objection_handler" => "objection_handling",
        _ => "lending",
    }
}

/// Asserts an RFC 9457 problem with this status and a request id matching the header.
pub async fn assert_problem(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status().as_u16(), status, "status");
    assert_eq!(
        res.headers()[header::CONTENT_TYPE.as_str()],
        "application/problem+json"
    );
    let rid = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:credgate:problem:")
    );
    assert!(body["title"].is_string() && body["detail"].is_string());
    assert_eq!(body["request_id"], rid.as_str());
    body
}

/// A real `credgate serve` process with its own directory (a copy of the shipped policies, the
/// test identity provider) in front of the given stores. Killed when dropped.
pub struct GatewayProcess {
    /// Shared by replicas made with `replica()`: one config, key directory and policy set.
    pub dir: std::sync::Arc<tempfile::TempDir>,
    pub cfg: std::path::PathBuf,
    pub config: Config,
    /// Known once started: the process binds port 0 and reports the port it got.
    pub url: String,
    /// Flags after `serve --config FILE`.
    args: Vec<String>,
    child: Option<std::process::Child>,
}

impl GatewayProcess {
    /// Another process of the same deployment: same config file, keys and policies, its own
    /// port (port 0 too), on the same storage.
    pub fn replica(&self) -> Self {
        Self {
            dir: self.dir.clone(),
            cfg: self.cfg.clone(),
            config: self.config.clone(),
            url: String::new(),
            args: self.args.clone(),
            child: None,
        }
    }

    /// Runs on this storage (`serve --storage URL`) instead of the config file's.
    pub fn on_storage(&mut self, url: &str) {
        self.args.extend(["--storage".into(), url.into()]);
        self.config.storage_url = url.into();
    }

    pub fn prepare(sample: SocketAddr, fake: SocketAddr) -> Self {
        watchdog::arm_default();
        let dir = tempfile::tempdir().unwrap();
        copy_dir(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/policies")),
            &dir.path().join("policies"),
        );
        credgate::auth::subject::create_demo_provider(
            &dir.path().join("keys/idp.p8"),
            &dir.path().join("idp.jwks.json"),
        )
        .unwrap();
        let text = config_text(dir.path(), sample, fake, dead_addr());
        let cfg = dir.path().join("credgate.toml");
        std::fs::write(&cfg, text).unwrap();
        let config = Config::load(Some(&cfg)).unwrap();
        Self {
            dir: std::sync::Arc::new(dir),
            cfg,
            config,
            url: String::new(),
            args: Vec::new(),
            child: None,
        }
    }

    /// Starts (or restarts) the process and waits until it is ready. `log`: where stderr goes.
    /// It binds port 0 and prints `listening on ADDR`: `url` is that address, new on each
    /// start. No fixed start timeout: it waits for the line and for readiness, up to
    /// `START_BOUND`.
    /// Process tests run serially: the first start takes the lock for the rest of the test.
    pub async fn start(&mut self, rust_log: &str, log: Option<&std::path::Path>) {
        serially().await;
        let stderr = match log {
            Some(p) => std::process::Stdio::from(std::fs::File::create(p).unwrap()),
            None => std::process::Stdio::null(),
        };
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_credgate"))
            .args(["serve", "--config", &self.cfg.display().to_string()])
            .args(&self.args)
            .env("RUST_LOG", rust_log)
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let addr = listening_addr(child.stdout.take().unwrap());
        self.child = Some(child);
        let addr = tokio::time::timeout(START_BOUND, addr)
            .await
            .expect("the gateway reported its port within the start bound")
            .expect("the gateway printed `listening on ADDR` before exiting");
        self.url = format!("http://{addr}");
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let ready = format!("{}/readyz", self.url);
        wait_until("the gateway is ready", START_BOUND, || {
            let req = http.get(&ready).send();
            async move { req.await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("started").id()
    }

    /// SIGKILL: no shutdown, no flushing.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// How long a process may take to report its port and become ready: generous, since a start
/// under load was seen to pass 20 s; the wait ends as soon as it is ready.
pub const START_BOUND: Duration = Duration::from_secs(120);

/// The address from a child's first `listening on ADDR` line on stdout. The rest of its stdout
/// is drained, so the child never blocks on a full pipe.
pub fn listening_addr(
    stdout: std::process::ChildStdout,
) -> tokio::sync::oneshot::Receiver<SocketAddr> {
    use std::io::BufRead;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("listening on ")
                && let Ok(addr) = addr.trim().parse()
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr);
            }
        }
    });
    rx
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// With `CREDGATE_TEST_PG=postgres://user@host:port`, each test gets a fresh PostgreSQL database
/// instead of a SQLite file (the storage layer is one code path for both).
pub async fn test_postgres_url() -> Option<String> {
    let base = std::env::var("CREDGATE_TEST_PG").ok()?;
    Some(fresh_postgres_db(&base).await)
}

/// Where CI's PostgreSQL listens (`.ci/run`).
const CI_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432";

/// A fresh database for a test that needs PostgreSQL whatever the run's backend: the one of
/// `CREDGATE_TEST_PG`; under `CI=true` without it, one on CI's server (failing if there is
/// none); elsewhere `None`, after printing SKIPPED.
pub async fn require_postgres(test: &str) -> Option<String> {
    if let Some(url) = test_postgres_url().await {
        return Some(url);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        return Some(fresh_postgres_db(CI_POSTGRES).await);
    }
    skip_unless_ci(test, "it needs PostgreSQL (set CREDGATE_TEST_PG)");
    None
}

async fn fresh_postgres_db(base: &str) -> String {
    use sqlx::Connection;
    watchdog::arm_default();
    sqlx::any::install_default_drivers();
    let name = format!("credgate_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::AnyConnection::connect(&format!("{base}/postgres"))
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base}: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    format!("{base}/{name}")
}

/// Every audit id a client saw released must name a stored record. Returns how many records
/// the log holds.
pub async fn assert_every_release_recorded(
    db: &credgate::storage::Db,
    released: &[String],
) -> usize {
    let stored: std::collections::HashSet<String> =
        credgate::audit::store::page_after(db, 0, 1_000_000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
    let missing: Vec<&String> = released.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} released responses have no record, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    stored.len()
}

impl GatewayProcess {
    /// SIGTERM, then waits (at most `limit`, SIGKILL after) for the process to exit: its status.
    pub async fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("started");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the gateway did not exit within {limit:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Polls `check` every 20 ms until it holds; fails naming `what` once `deadline` has passed.
/// Returns how long it took. Tests wait on a condition with a generous bound instead of
/// sleeping a fixed time: a fixed sleep is too short on a loaded machine and too long on an
/// idle one.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < deadline,
            "not within {deadline:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A prerequisite the test cannot run without (PostgreSQL, curl) is missing: under `CI=true`
/// that fails the test, since CI provides them and a skip there would hide a lost test;
/// elsewhere the test prints SKIPPED and returns.
pub fn skip_unless_ci(test: &str, why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {why}, and under CI=true a missing prerequisite fails instead of skipping"
    );
    eprintln!("SKIPPED {test}: {why}");
}

/// How long any test may run before the watchdog fails it: 120 s, or
/// `CREDGATE_TEST_TIMEOUT_SECS` (a slower machine may raise it).
pub fn test_bound() -> Duration {
    static SECS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    Duration::from_secs(*SECS.get_or_init(|| {
        std::env::var("CREDGATE_TEST_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(120)
    }))
}

/// How long a serial test (processes, kill -9, replicas, the demo) may hold the serial lock:
/// two and a half times `test_bound` (300 s by default).
pub fn serial_bound() -> Duration {
    test_bound() * 5 / 2
}

/// The per-test timeout. libtest runs each test on a thread named after it; the helpers every
/// test starts with (`TestApp::spawn`, `GatewayProcess::prepare`, the stores, `serially`) arm
/// a deadline for the calling thread, and a thread-local guard disarms it when the test's
/// thread ends, passed or failed. One watchdog thread checks the deadlines each second; past
/// one it names the test on stderr and ends the test process, so CI fails instead of hanging.
/// (libtest itself only warns after 60 s; a hung test cannot be cancelled from outside its
/// thread, so the whole binary exits.)
pub mod watchdog {
    use std::{
        cell::RefCell,
        collections::BTreeMap,
        io::Write,
        sync::{Mutex, Once},
        time::{Duration, Instant},
    };

    /// Each armed test: its deadline and the bound it was given.
    static DEADLINES: Mutex<BTreeMap<String, (Instant, Duration)>> = Mutex::new(BTreeMap::new());
    static START: Once = Once::new();

    /// Dropped when the test's thread ends: the deadline goes, and the serial lock (if this
    /// test took it) is released.
    pub(super) struct Armed {
        name: String,
        pub(super) serial: Option<tokio::sync::MutexGuard<'static, ()>>,
    }

    impl Drop for Armed {
        fn drop(&mut self) {
            // Release the lock before the deadline goes: the next serial test may start.
            self.serial.take();
            deadlines().remove(&self.name);
        }
    }

    thread_local! {
        pub(super) static ARMED: RefCell<Option<Armed>> = const { RefCell::new(None) };
    }

    fn deadlines() -> std::sync::MutexGuard<'static, BTreeMap<String, (Instant, Duration)>> {
        DEADLINES.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The test running on this thread, if it is a test's thread (libtest names it after the
    /// test; every test here sits in a module, so its name has a `::`).
    fn test_name() -> Option<String> {
        std::thread::current()
            .name()
            .filter(|n| n.contains("::"))
            .map(str::to_string)
    }

    /// Fails this thread's test unless it ends within `bound` from now. The first call arms
    /// `test_bound()`; a later one moves the deadline (a serial test, once it holds the lock).
    pub fn arm(bound: Duration) {
        let Some(name) = test_name() else { return };
        START.call_once(|| {
            std::thread::Builder::new()
                .name("test-watchdog".into())
                .spawn(watch)
                .expect("the watchdog thread starts");
        });
        ARMED.with(|a| {
            let mut a = a.borrow_mut();
            if a.is_none() {
                *a = Some(Armed {
                    name: name.clone(),
                    serial: None,
                });
            }
        });
        deadlines().insert(name, (Instant::now() + bound, bound));
    }

    /// Arms `test_bound()` unless this test is armed already.
    pub fn arm_default() {
        if ARMED.with(|a| a.borrow().is_none()) {
            arm(super::test_bound());
        }
    }

    fn watch() {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = Instant::now();
            let late: Vec<(String, Duration)> = deadlines()
                .iter()
                .filter(|(_, (d, _))| *d < now)
                .map(|(n, (_, b))| (n.clone(), *b))
                .collect();
            if late.is_empty() {
                continue;
            }
            // Straight to the process's stderr: libtest captures `eprintln!` of test threads.
            let mut err = std::io::stderr();
            for (name, bound) in &late {
                let _ = writeln!(
                    err,
                    "\ntest {name} ... TIMED OUT after {bound:?} (tests/api/helpers.rs, watchdog)"
                );
            }
            let _ = err.flush();
            std::process::exit(101);
        }
    }
}

/// The lock that process, kill -9, replica and demo tests hold for their whole run, so they
/// run one at a time (they load both cores, and their start and "within a second" bounds are
/// about the gateway, not about a crowded machine). The other tests run in parallel.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Takes the serial lock for the rest of this test (released when its thread ends); waiting
/// for it does not count against the test's bound, and once held the test gets
/// `serial_bound()`. Idempotent.
pub async fn serially() {
    if holds_serial() {
        return;
    }
    watchdog::arm(Duration::from_secs(3600));
    let guard = SERIAL.lock().await;
    keep_serial(guard);
}

/// `serially` for a test without a runtime (the demo test).
pub fn serially_blocking() {
    if holds_serial() {
        return;
    }
    watchdog::arm(Duration::from_secs(3600));
    keep_serial(SERIAL.blocking_lock());
}

fn holds_serial() -> bool {
    watchdog::ARMED.with(|a| a.borrow().as_ref().is_some_and(|a| a.serial.is_some()))
}

fn keep_serial(guard: tokio::sync::MutexGuard<'static, ()>) {
    watchdog::arm(serial_bound());
    watchdog::ARMED.with(|a| {
        if let Some(a) = a.borrow_mut().as_mut() {
            a.serial = Some(guard);
        }
    });
}

/// A positive signal that the alert analyzer has judged every record committed so far, for a
/// test that then checks an alert did NOT fire: the analyzer judges records in commit order,
/// so once a fresh client's denials (sent now) have fired their alert, every earlier record has
/// had its chance. Leaves one `repeated-denials` alert, of that fresh client.
pub async fn alerts_caught_up(app: &TestApp, officer: &str) {
    let (id, token) = app.token("financial_institution").await;
    for _ in 0..app.state.config.alerts.denials {
        let res = app
            .http
            .get(format!("{}/v1/stores/power/lists/red", app.url))
            .bearer_auth(&token)
            .header("X-Purpose", "supervision")
            .send()
            .await
            .unwrap();
        assert!(res.status().is_client_error(), "a denial");
    }
    let url = format!("{}/admin/alerts", app.url);
    wait_until(
        "the alert analyzer judged every record so far",
        Duration::from_secs(30),
        || async {
            let body: Value = app
                .http
                .get(&url)
                .bearer_auth(officer)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["rule"] == "repeated-denials" && a["client_id"] == id.as_str())
        },
    )
    .await;
}

/// A client-credentials token request to the gateway at `base` (an in-process app or a
/// process), through `http` (whose settings, such as a source address, the caller chose).
pub async fn request_token(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    secret: &str,
) -> reqwest::Response {
    http.post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap()
}

/// The access token of a request that must succeed.
pub async fn access_token(http: &reqwest::Client, base: &str, id: &str, secret: &str) -> String {
    let body: serde_json::Value = request_token(http, base, id, secret)
        .await
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_string()
}
