//! Audited requests per second with durable group commit, against the same requests with the
//! audit writer replaced by a no-op, in one run. Run: `cargo bench --bench audit`.
//! Load: CONNS concurrent clients over loopback for SECS seconds each, on an entity record.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use credgate::{
    audit::NOOP_ACK,
    config::Config,
    sample_store::{self, SampleStoreArgs},
    web::App,
};

const CONNS: usize = 64;
const SECS: u64 = 5;

async fn run(label: &str, noop: bool) -> f64 {
    // SAFETY: set before the app starts its tasks; read once by the audit writer's start.
    unsafe {
        if noop {
            std::env::set_var("CREDGATE_AUDIT_NOOP", NOOP_ACK);
        } else {
            std::env::remove_var("CREDGATE_AUDIT_NOOP");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store_addr = listener.local_addr().unwrap();
    let store = sample_store::router(&SampleStoreArgs {
        listen: store_addr,
        seed: 42,
        entities: 200,
        token: None,
    });
    tokio::spawn(async move { axum::serve(listener, store).await.unwrap() });
    let text = format!(
        r#"listen = "127.0.0.1:0"
storage_url = "sqlite://{dir}/bench.db"
key_dir = "{dir}/keys"
policy_dir = "{policies}"
[rate_limits]
per_client_per_minute = 100000000
[[stores]]
name = "power"
upstream = "http://{store_addr}"
[[stores.routes]]
method = "GET"
path = "/entities/{{uscc}}"
dataset = "entity"
subject_path = "uscc"
subject_type = "legal"
"#,
        dir = dir.path().display(),
        policies = concat!(env!("CARGO_MANIFEST_DIR"), "/policies"),
    );
    let config = Config::parse(&text, "bench").unwrap();
    let app = App::build(config).await.unwrap();
    let url = format!("http://{}", app.local_addr());
    let (client, secret) = credgate::cli::add_client(
        &app.state().db,
        "Bench",
        "bench",
        "financial_institution",
        None,
    )
    .await
    .unwrap();
    tokio::spawn(app.run_until(std::future::pending()));
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(CONNS)
        .build()
        .unwrap();
    let token: serde_json::Value = http
        .post(format!("{url}/oauth/token"))
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
    let uscc = sample_store::data::generate(42, 200).entities[3]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let target = format!("{url}/v1/stores/power/entities/{uscc}");
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(SECS);
    let workers: Vec<_> = (0..CONNS)
        .map(|_| {
            let (http, target, token, done) =
                (http.clone(), target.clone(), token.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let res = http
                        .get(&target)
                        .bearer_auth(&token)
                        .header("X-Purpose", "lending")
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 200);
                    res.bytes().await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let rps = done.load(Ordering::Relaxed) as f64 / SECS as f64;
    println!("{label:<36} {rps:>10.0} req/s");
    rps
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("{CONNS} connections, {SECS} s each, full pipeline on an entity record");
        let noop = run("audit writer replaced by a no-op", true).await;
        let durable = run("durable audit (SQLite, group commit)", false).await;
        println!(
            "durable / no-op: {:.3} (audit costs {:.1}% of throughput; target < 10%)",
            durable / noop,
            (1.0 - durable / noop) * 100.0
        );
    });
}
