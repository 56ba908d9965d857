//! What the audit shipping tests share (`shipping`: a real rsyslogd; `shipping_rev1`: listeners
//! in the test): the `[audit.ship]` config of a test app or of a real gateway process, the
//! requests that make records, a listener that keeps every byte, the log's public key, the tail
//! cut an attacker makes, and `audit verify --sink-file`. One copy, so a fix to any of them
//! (the indexer race of `cut_tail`) reaches every test.

use std::{
    path::Path,
    process::Output,
    sync::{Arc, Mutex},
    time::Duration,
};

use credgate::{config::ShipConfig, storage::Db};
use serde_json::Value;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::helpers::{self, GatewayProcess, TestApp};

/// `prefix-` and 12 hex digits: sinks are labels in the one metrics registry of the test
/// binary, so each test names its own.
pub(crate) fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// `[audit.ship]` to 127.0.0.1:`port` over plain TCP, as sink `sink`.
pub(crate) fn ship_to(port: u16, sink: &str) -> ShipConfig {
    ShipConfig {
        address: format!("127.0.0.1:{port}"),
        tls: false,
        ca_file: None,
        sink: sink.into(),
        facility: "local0".into(),
        max_message_bytes: 64 * 1024,
    }
}

/// A test app shipping its chain per `config` under the writer id `w-SINK` (`[audit.ship]`
/// needs an explicit one), with a checkpoint every `checkpoint_every` records when given.
pub(crate) async fn shipping_app(config: ShipConfig, checkpoint_every: Option<i64>) -> TestApp {
    TestApp::spawn_with(move |c| {
        if let Some(n) = checkpoint_every {
            c.audit.checkpoint_every = n;
        }
        c.audit.writer_id = Some(format!("w-{}", config.sink));
        c.audit.ship = Some(config);
    })
    .await
}

/// One data request to the gateway at `url`, answered 200: one audit record.
async fn data_request(http: &reqwest::Client, url: &str, token: &str) {
    let res = http
        .get(format!("{url}/v1/stores/power/lists/red"))
        .bearer_auth(token)
        .header("X-Purpose", "supervision")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// `n` data requests at once, each answered 200.
pub(crate) async fn parallel_requests(app: &TestApp, token: &str, n: usize) {
    futures_util::future::join_all((0..n).map(|_| data_request(&app.http, &app.url, token))).await;
}

/// `n` data requests one after another, each answered 200 (a batch of one record each).
pub(crate) async fn sequential_requests(app: &TestApp, token: &str, n: usize) {
    for _ in 0..n {
        data_request(&app.http, &app.url, token).await;
    }
}

/// A real gateway process (`GatewayProcess`) whose config file ships its chain, on a store of
/// its own and the run's backend, with its database open beside it.
pub(crate) struct ShippingProcess {
    pub gateway: GatewayProcess,
    pub db: Db,
    pub http: reqwest::Client,
    /// The config file as `prepare` wrote it, before any `[audit]` section.
    base: String,
}

impl ShippingProcess {
    /// Prepared (not started) in front of a sample store of `entities`; its database opened
    /// and migrated, so a test can register clients or tamper before the first start.
    pub async fn prepare(entities: usize) -> Self {
        let store = helpers::sample_store_with(entities).await;
        let mut gateway = GatewayProcess::prepare(store, helpers::dead_addr());
        let base = std::fs::read_to_string(&gateway.cfg).unwrap();
        if let Some(url) = helpers::test_postgres_url().await {
            gateway.on_storage(&url);
        }
        let db = Db::open(&gateway.config.storage_url).await.unwrap();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        Self {
            gateway,
            db,
            http,
            base,
        }
    }

    /// Writes the config's `[audit]` section (`audit`: its lines, `writer_id = ...` first) and
    /// `[audit.ship]` to 127.0.0.1:`port` as `sink`, replacing any earlier ones; read at the
    /// next start.
    pub fn ship(&self, audit: &str, port: u16, sink: &str) {
        let text = format!(
            "{}\n[audit]\n{audit}\n\n[audit.ship]\naddress = \"127.0.0.1:{port}\"\n\
             sink = \"{sink}\"\n",
            self.base
        );
        std::fs::write(&self.gateway.cfg, text).unwrap();
    }

    /// A regulator client registered in the database: (id, secret).
    pub async fn regulator(&self) -> (String, String) {
        let (client, secret) =
            credgate::cli::add_client(&self.db, "Regulator", "nea", "regulator", None)
                .await
                .unwrap();
        (client.id, secret)
    }

    /// A token for `client` from the running process.
    pub async fn token(&self, (id, secret): &(String, String)) -> String {
        crate::helpers::access_token(&self.http, &self.gateway.url, id, secret).await
    }

    /// `n` data requests to the running process, one after another, each answered 200.
    pub async fn requests(&self, token: &str, n: usize) {
        for _ in 0..n {
            data_request(&self.http, &self.gateway.url, token).await;
        }
    }

    /// The running process's `/readyz` body.
    pub async fn readyz(&self) -> Value {
        self.http
            .get(format!("{}/readyz", self.gateway.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Every byte a listener in the test received, in order.
pub(crate) type Captured = Arc<Mutex<Vec<u8>>>;

/// The captured bytes as text (lossy).
pub(crate) fn captured_text(got: &Captured) -> String {
    String::from_utf8_lossy(&got.lock().unwrap()).to_string()
}

/// A sink on a port of its own that keeps every byte it receives; `chatty` makes it also send
/// bytes to the gateway without pause (a receiver that talks, or anyone in the path of plain
/// TCP).
pub(crate) async fn capturing_sink(chatty: bool) -> (u16, Captured) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (port, capture(l, chatty))
}

/// Keeps every byte of every connection accepted on `l` (see `capturing_sink`).
pub(crate) fn capture(l: TcpListener, chatty: bool) -> Captured {
    let got = Captured::default();
    let g = got.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let g = g.clone();
            if !chatty {
                // Unsplit: the write side stays open (no FIN) while the sink reads.
                tokio::spawn(keep(s, g));
                continue;
            }
            let (r, mut w) = s.into_split();
            tokio::spawn(async move {
                while w.write_all(b"x").await.is_ok() {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            });
            tokio::spawn(keep(r, g));
        }
    });
    got
}

/// Appends what `r` reads to `got` until it ends or fails.
pub(crate) async fn keep(mut r: impl AsyncRead + Unpin, got: Captured) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        got.lock().unwrap().extend_from_slice(&buf[..n]);
    }
}

/// This log's audit public key: what checkpoint lines in a sink file must be signed with.
pub(crate) async fn audit_public_key(app: &TestApp) -> Vec<u8> {
    credgate::auth::keyring::Keyring::open(&app.state.config.key_dir)
        .unwrap()
        .gateway_keys(&app.state.db)
        .await
        .unwrap()
        .audit_signing
        .public
        .to_vec()
}

/// What someone who can write the database does to hide `writer`'s tail past place `after`:
/// its records, their subject index rows and the checkpoints over them deleted, the guards
/// dropped first. The subject index is caught up before: the running gateway's indexer writes
/// rows behind the commits, and a step of it between the DELETEs of the index rows and of the
/// records left rows naming a deleted record (seen on PostgreSQL: verify then failed with "the
/// subject index names record 13, which the log does not hold", not the verdict under test).
/// Once the chain's progress is at its head, a step that read an older one loses its update.
pub(crate) async fn cut_tail(db: &Db, writer: &str, after: i64) {
    credgate::audit::indexer::catch_up(db).await.unwrap();
    crate::audit::drop_guards(db).await;
    crate::audit::unindex(
        db,
        &format!("writer_id = '{writer}' AND chain_seq > {after}"),
    )
    .await;
    for stmt in [
        format!(
            "DELETE FROM audit_checkpoints WHERE writer_id = '{writer}' AND chain_seq > {after}"
        ),
        format!("DELETE FROM audit_log WHERE writer_id = '{writer}' AND chain_seq > {after}"),
    ] {
        sqlx::Executor::execute(db.pool(), sqlx::AssertSqlSafe(stmt))
            .await
            .unwrap();
    }
}

/// `credgate audit verify --sink-file FILE --config CFG`, run as a real process.
pub(crate) fn verify_with_sink_file(sink_file: &Path, cfg: &str) -> Output {
    let file = sink_file.display().to_string();
    crate::cli::credgate(&["audit", "verify", "--sink-file", &file, "--config", cfg])
}
