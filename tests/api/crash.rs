//! A real gateway process under concurrent load is killed with SIGKILL, or stopped with SIGTERM. Every response that was
//! released carried an audit id; every such record must be in the log, and the chain verifies.

use std::{
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use credgate::{sample_store, storage::Db};

use crate::helpers::{GatewayProcess, dead_addr, wait_until};

/// Responses released before the process is stopped: enough for the check to mean something.
const UNDER_LOAD: usize = 100;

/// A gateway process with a client registered, and what the load needs: its URL, a token and
/// the entities the sample store holds.
struct Loaded {
    gateway: GatewayProcess,
    token: String,
    usccs: Vec<String>,
}

async fn start_for_load(log: Option<&std::path::Path>) -> Loaded {
    let store_addr = crate::helpers::sample_store_with(60).await;
    let mut gateway = GatewayProcess::prepare(store_addr, dead_addr());
    // A replica's chain is named by its writer id, stable across restarts.
    let mut text = std::fs::read_to_string(&gateway.cfg).unwrap();
    text.push_str("\n[audit]\nwriter_id = \"crash-replica\"\n");
    std::fs::write(&gateway.cfg, text).unwrap();
    // On PostgreSQL too, under CREDGATE_TEST_PG.
    if let Some(url) = crate::helpers::test_postgres_url().await {
        gateway.on_storage(&url);
    }
    let db = Db::open(&gateway.config.storage_url).await.unwrap();
    let (client, secret) =
        credgate::cli::add_client(&db, "Bank", "bank", "financial_institution", None)
            .await
            .unwrap();
    // With a log file, the shutdown summary (info, from the web layer) is kept.
    let rust_log = if log.is_some() {
        "error,credgate::web=info"
    } else {
        "error"
    };
    gateway.start(rust_log, log).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let token: serde_json::Value = http
        .post(format!("{}/oauth/token", gateway.url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &client.id),
            ("client_secret", &secret),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_string();
    let usccs: Vec<String> = sample_store::data::generate(42, 60)
        .entities
        .iter()
        .map(|e| e["uscc"].as_str().unwrap().to_string())
        .collect();
    Loaded {
        gateway,
        token,
        usccs,
    }
}

/// Starts 16 clients doing data requests until the gateway stops answering. Each audit id of a
/// response whose body reached the client goes into the returned list.
fn start_load(l: &Loaded) -> (Arc<Mutex<Vec<String>>>, Vec<tokio::task::JoinHandle<()>>) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let released = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for w in 0..16 {
        let (http, url, token, released, usccs) = (
            http.clone(),
            l.gateway.url.clone(),
            l.token.clone(),
            released.clone(),
            l.usccs.clone(),
        );
        workers.push(tokio::spawn(async move {
            for i in 0..2000 {
                let res = http
                    .get(format!(
                        "{url}/v1/stores/power/entities/{}",
                        usccs[(w * 7 + i) % usccs.len()]
                    ))
                    .bearer_auth(&token)
                    .header("X-Purpose", "lending")
                    .send()
                    .await;
                let Ok(res) = res else { return };
                if res.status() == 200 {
                    let id = res.headers()["x-audit-id"].to_str().unwrap().to_string();
                    // Released means the body reached us.
                    if res.bytes().await.is_ok() {
                        released.lock().unwrap().push(id);
                    }
                }
            }
        }));
    }
    (released, workers)
}

/// Every released response has its record and every chain verifies; returns the record count.
async fn assert_log_complete(config: &credgate::config::Config, released: &[String]) -> i64 {
    assert!(
        released.len() > 50,
        "load was too light to mean anything: {}",
        released.len()
    );
    let db = Db::open(&config.storage_url).await.unwrap();
    crate::helpers::assert_every_release_recorded(&db, released).await;
    let key = credgate::auth::keyring::Keyring::open(&config.key_dir)
        .unwrap()
        .gateway_keys(&db)
        .await
        .unwrap()
        .audit_signing;
    let report = credgate::audit::verify::verify(&db, &key.public)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    // One process wrote it all, through restarts: one chain, its own.
    let chains: Vec<&str> = report.chains.iter().map(|c| c.writer_id.as_str()).collect();
    assert_eq!(chains, ["crash-replica"], "{report:?}");
    report.records as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_record_of_a_released_response() {
    let mut loaded = start_for_load(None).await;
    let (released, workers) = start_load(&loaded);
    wait_until("the load is under way", Duration::from_secs(60), || async {
        released.lock().unwrap().len() >= UNDER_LOAD
    })
    .await;
    loaded.gateway.kill(); // SIGKILL
    for w in workers {
        w.await.unwrap();
    }
    let mut all = released.lock().unwrap().clone();
    let before_restart = all.len();
    // Restarted with the same writer id, it continues its chain from the stored head, under
    // load again, and is killed again.
    loaded.gateway.start("error", None).await;
    let (released, workers) = start_load(&loaded);
    wait_until(
        "the restarted gateway is under load",
        Duration::from_secs(60),
        || async { released.lock().unwrap().len() >= UNDER_LOAD },
    )
    .await;
    loaded.gateway.kill();
    for w in workers {
        w.await.unwrap();
    }
    all.extend(released.lock().unwrap().iter().cloned());
    let records = assert_log_complete(&loaded.gateway.config, &all).await;
    eprintln!(
        "kill -9 twice: {} responses released ({before_restart} before the restart), {records} records, chain ok",
        all.len(),
    );
}

/// SIGTERM under load: the gateway stops accepting, finishes what is in flight, commits the
/// audit queue, stops its tasks and exits 0; every response released before or during the
/// drain has its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_and_every_release_is_recorded() {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("gateway.log");
    let mut loaded = start_for_load(Some(&log)).await;
    let (released, workers) = start_load(&loaded);
    wait_until("the load is under way", Duration::from_secs(60), || async {
        released.lock().unwrap().len() >= UNDER_LOAD
    })
    .await;
    let in_flight_before = released.lock().unwrap().len();
    let status = loaded.gateway.terminate(Duration::from_secs(40)).await;
    assert!(
        status.success(),
        "SIGTERM must end the process with 0: {status:?}"
    );
    for w in workers {
        w.await.unwrap();
    }
    let released = released.lock().unwrap().clone();
    let records = assert_log_complete(&loaded.gateway.config, &released).await;
    // The process went the whole ordered way, not merely out of `serve`.
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("audit queue committed, tasks stopped"),
        "no orderly shutdown in the log: {log}"
    );
    eprintln!(
        "SIGTERM: {} responses released ({in_flight_before} before the signal), {records} records, chain ok, exit 0",
        released.len(),
    );
}

#[tokio::test]
async fn sighup_reloads_the_policy_set_of_a_running_gateway() {
    let store_addr = crate::helpers::sample_store_with(10).await;
    let mut gateway = GatewayProcess::prepare(store_addr, dead_addr());
    gateway.start("error", None).await;
    let url = gateway.url.clone();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let uscc = sample_store::data::generate(42, 10).entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let get = || {
        http.get(format!("{url}/public/stores/power/entities/{uscc}"))
            .header("X-Purpose", "public_disclosure")
            .send()
    };
    let before: serde_json::Value = get().await.unwrap().json().await.unwrap();
    assert!(before.get("sector").is_some());

    let catalog = gateway.dir.path().join("policies/catalog.toml");
    let t = std::fs::read_to_string(&catalog).unwrap();
    std::fs::write(
        &catalog,
        t.replacen(
            "sector = \"entity_basic\"",
            "sector = \"classification_grade\"",
            1,
        ),
    )
    .unwrap();
    Command::new("kill")
        .args(["-HUP", &gateway.pid().to_string()])
        .status()
        .unwrap();
    wait_until(
        "the reloaded set hides the sector from the public",
        Duration::from_secs(30),
        || async {
            let after: serde_json::Value = get().await.unwrap().json().await.unwrap();
            after.get("sector").is_none()
        },
    )
    .await;
    gateway.kill();
    // The host's reload is a staff action: it left its record, committed with the change.
    let db = Db::open(&gateway.config.storage_url).await.unwrap();
    let records = credgate::audit::store::page_after(&db, 0, 1000)
        .await
        .unwrap();
    let reloads: Vec<_> = records
        .iter()
        .filter(|r| r.method == "SIGHUP" && r.path != "/admin/identity-providers/reload")
        .collect();
    assert_eq!(reloads.len(), 1, "{reloads:?}");
    let r = reloads[0];
    assert_eq!(
        (
            r.kind.as_str(),
            r.path.as_str(),
            r.status,
            r.decision.as_str()
        ),
        ("admin", "/admin/policies/reload", 200, "allow")
    );
    assert_eq!(r.client_id.as_deref(), Some("host-signal"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_objection_is_delivered_after_the_store_returns_and_the_gateway_restarts() {
    use crate::helpers::{FakeStore, fake_router, serve};
    use std::sync::atomic::Ordering;
    let fake = FakeStore::default();
    fake.objections_down.store(true, Ordering::SeqCst);
    let fake_addr = serve(fake_router(fake.clone())).await;
    let mut gateway = GatewayProcess::prepare(dead_addr(), fake_addr);
    let config = gateway.config.clone();
    let db = Db::open(&config.storage_url).await.unwrap();
    let (handler, secret) =
        credgate::cli::add_client(&db, "Desk", "ops", "objection_handler", None)
            .await
            .unwrap();
    let uscc = "91350100M000100Y43";
    let subject = credgate::auth::subject::mint_demo_token(
        config.demo_identity_provider.as_ref().unwrap(),
        &credgate::domain::SubjectId::parse(credgate::domain::SubjectType::Legal, uscc).unwrap(),
        600,
    )
    .unwrap();

    gateway.start("error", None).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = gateway.url.clone();
    let token: serde_json::Value = http
        .post(format!("{url}/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &handler.id),
            ("client_secret", &secret),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_string();
    let o: serde_json::Value = http.post(format!("{url}/subject/objections")).bearer_auth(&subject)
        .json(&serde_json::json!({"store": "fake", "dataset": "entity", "record_ref": uscc, "reason": "wrong"}))
        .send().await.unwrap().json().await.unwrap();
    let id = o["id"].as_str().unwrap().to_string();
    let res = http
        .post(format!("{url}/admin/objections/{id}/transitions"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"to": "accepted"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    wait_until("a delivery attempt", Duration::from_secs(30), || async {
        fake.deliveries.load(Ordering::SeqCst) > 0
    })
    .await;
    gateway.kill(); // SIGKILL, mid-retry

    fake.objections_down.store(false, Ordering::SeqCst);
    gateway.start("error", None).await;
    // A restart binds a new port.
    let url = gateway.url.clone();
    let ticket = std::sync::Mutex::new(serde_json::Value::Null);
    wait_until(
        "delivered after the restart",
        Duration::from_secs(30),
        || async {
            let o: serde_json::Value = http
                .get(format!("{url}/admin/objections/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            *ticket.lock().unwrap() = o["store_ticket"].clone();
            o["status"] == "forwarded"
        },
    )
    .await;
    gateway.kill();
    assert_eq!(*ticket.lock().unwrap(), "FT-1");
    assert_eq!(fake.tickets.lock().unwrap().len(), 1);
}
