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
    http::{App, AppState},
    sample_store::{self, SampleStoreArgs},
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
    pub async fn sibling_with(&self, tweak: impl FnOnce(&mut Config)) -> Sibling {
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
        let state = app.state().clone();
        tokio::spawn(app.run_until(std::future::pending()));
        TestApp {
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
        self.http
            .post(format!("{}/oauth/token", self.url))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", id),
                ("client_secret", secret),
            ])
            .send()
            .await
            .unwrap()
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
                credgate::auth::keyring::Purpose::TokenSigning,
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
    pub url: String,
    port: u16,
    /// Flags after `serve --config FILE`.
    args: Vec<String>,
    child: Option<std::process::Child>,
}

impl GatewayProcess {
    /// Another process of the same deployment: same config file, keys and policies, its own
    /// port (`serve --listen`), on the same storage.
    pub fn replica(&self) -> Self {
        let port = dead_addr().port();
        let mut args = self.args.clone();
        args.extend(["--listen".into(), format!("127.0.0.1:{port}")]);
        Self {
            dir: self.dir.clone(),
            cfg: self.cfg.clone(),
            config: self.config.clone(),
            url: format!("http://127.0.0.1:{port}"),
            port,
            args,
            child: None,
        }
    }

    /// Runs on this storage (`serve --storage URL`) instead of the config file's.
    pub fn on_storage(&mut self, url: &str) {
        self.args.extend(["--storage".into(), url.into()]);
        self.config.storage_url = url.into();
    }

    pub fn prepare(sample: SocketAddr, fake: SocketAddr) -> Self {
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
        let port = dead_addr().port();
        let text = config_text(dir.path(), sample, fake, dead_addr()).replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        let cfg = dir.path().join("credgate.toml");
        std::fs::write(&cfg, text).unwrap();
        let config = Config::load(Some(&cfg)).unwrap();
        Self {
            dir: std::sync::Arc::new(dir),
            cfg,
            config,
            url: format!("http://127.0.0.1:{port}"),
            port,
            args: Vec::new(),
            child: None,
        }
    }

    /// Starts (or restarts) the process and waits until it is ready. `log`: where stderr goes.
    pub async fn start(&mut self, rust_log: &str, log: Option<&std::path::Path>) {
        let stderr = match log {
            Some(p) => std::process::Stdio::from(std::fs::File::create(p).unwrap()),
            None => std::process::Stdio::null(),
        };
        self.child = Some(
            std::process::Command::new(env!("CARGO_BIN_EXE_credgate"))
                .args(["serve", "--config", &self.cfg.display().to_string()])
                .args(&self.args)
                .env("RUST_LOG", rust_log)
                .stdout(std::process::Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap(),
        );
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let started = std::time::Instant::now();
        while http
            .get(format!("http://127.0.0.1:{}/readyz", self.port))
            .send()
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the gateway did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// With `CREDGATE_TEST_PG=postgres://user@host:port`, each test gets a fresh PostgreSQL database
/// instead of a SQLite file (the storage layer is one code path for both).
pub async fn test_postgres_url() -> Option<String> {
    use sqlx::Connection;
    let base = std::env::var("CREDGATE_TEST_PG").ok()?;
    sqlx::any::install_default_drivers();
    let name = format!("credgate_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::AnyConnection::connect(&format!("{base}/postgres"))
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    Some(format!("{base}/{name}"))
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
