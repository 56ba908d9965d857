//! Several gateways on one database: keys shared and rotated, changes in force on every replica
//! within a second, one audit chain from concurrent writers, each objection delivered once.
//! The in-process tests run on both backends; the two-process kill -9 test needs PostgreSQL
//! (`CREDGATE_TEST_PG`, which CI sets).

use std::{
    process::Command,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use credgate::{domain::SubjectType, sample_store, storage::Db};
use serde_json::{Value, json};

use crate::helpers::{GatewayProcess, TestApp, assert_problem, config_text, dead_addr, wait_until};

/// Polls `check` until it holds, failing after a second: the promise to operators is that a
/// change on one replica is in force on every replica within one second.
async fn within_a_second<F, Fut>(what: &str, check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_until(what, Duration::from_secs(1), check).await
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// Files an objection as `subject` and returns its id.
async fn file_objection(app: &TestApp, subject: &str, body: Value) -> String {
    let res = app
        .http
        .post(format!("{}/subject/objections", app.url))
        .bearer_auth(subject)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let o: Value = res.json().await.unwrap();
    o["id"].as_str().unwrap().to_string()
}

async fn accept(app: &TestApp, handler: &str, id: &str) {
    let res = app
        .http
        .post(format!("{}/admin/objections/{id}/transitions", app.url))
        .bearer_auth(handler)
        .json(&json!({"to": "accepted", "note": "accepted"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// `POST /admin/policies/reload` on `app` by a system administrator, which must succeed.
async fn reload(app: &TestApp, admin: &str) -> reqwest::Response {
    let res = app
        .http
        .post(format!("{}/admin/policies/reload", app.url))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res
}

/// A config file for the CLI on the test app's storage and key directory.
fn cli_config(app: &TestApp) -> String {
    let path = app.dir.path().join("cli-replicas.toml");
    let t = config_text(app.dir.path(), app.sample_store, dead_addr(), dead_addr()).replace(
        &format!(
            "storage_url = \"sqlite://{}/credgate.db\"",
            app.dir.path().display()
        ),
        &format!("storage_url = \"{}\"", app.state.config.storage_url),
    );
    std::fs::write(&path, t).unwrap();
    path.display().to_string()
}

async fn jwks_kids(http: &reqwest::Client, url: &str) -> Vec<String> {
    let jwks: Value = http
        .get(format!("{url}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_rotated_key_signs_on_every_replica_and_older_tokens_stay_valid() {
    let app = TestApp::spawn().await;
    let other = app.sibling().await;
    let (id, secret) = app.add_client("regulator").await;
    let path = "/v1/stores/power/entities?page_size=1";
    let before: Value = app.token_for(&id, &secret).await.json().await.unwrap();
    let before = before["access_token"].as_str().unwrap().to_string();
    let old_kid = kid_of(&before);
    assert_eq!(
        jwks_kids(&app.http, &other.url).await,
        vec![old_kid.clone()]
    );

    let out = Command::new(env!("CARGO_BIN_EXE_credgate"))
        .args(["keys", "rotate", "--config", &cli_config(&app)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(printed.contains("generation 2"), "{printed}");

    // Both replicas sign with the new key within a second; the rotation went through storage.
    let new_kid = Arc::new(Mutex::new(String::new()));
    for url in [&app.url, &other.url] {
        within_a_second("a replica signs with the rotated key", || {
            let (http, url, id, secret) =
                (app.http.clone(), url.clone(), id.clone(), secret.clone());
            let (old_kid, new_kid) = (old_kid.clone(), new_kid.clone());
            async move {
                let res = http
                    .post(format!("{url}/oauth/token"))
                    .form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", id.as_str()),
                        ("client_secret", secret.as_str()),
                    ])
                    .send()
                    .await
                    .unwrap();
                let t: Value = res.json().await.unwrap();
                let kid = kid_of(t["access_token"].as_str().unwrap());
                let rotated = kid != old_kid;
                if rotated {
                    *new_kid.lock().unwrap() = kid;
                }
                rotated
            }
        })
        .await;
    }
    let new_kid = new_kid.lock().unwrap().clone();
    assert!(printed.contains(&new_kid), "the CLI names the new kid");
    let mut kids = jwks_kids(&app.http, &other.url).await;
    kids.sort();
    let mut want = vec![old_kid.clone(), new_kid.clone()];
    want.sort();
    assert_eq!(kids, want, "the JWKS publishes both while old tokens live");

    // The token signed before the rotation works on both, and so does a new one from either.
    let after: Value = app.token_for(&id, &secret).await.json().await.unwrap();
    let after = after["access_token"].as_str().unwrap().to_string();
    for token in [&before, &after] {
        for url in [&app.url, &other.url] {
            let res = app
                .http
                .get(format!("{url}{path}"))
                .bearer_auth(token)
                .header("X-Purpose", "supervision")
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{url}");
        }
    }

    // Keys are stored wrapped: `keys list` shows ids and generations, never material.
    let list = Command::new(env!("CARGO_BIN_EXE_credgate"))
        .args(["keys", "list", "--config", &cli_config(&app)])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        listed.contains(&old_kid) && listed.contains(&new_kid),
        "{listed}"
    );
    let rows: Vec<String> = sqlx::query_scalar("SELECT wrapped FROM gateway_keys")
        .fetch_all(app.state.db.pool())
        .await
        .unwrap();
    assert!(rows.iter().all(|w| !listed.contains(w.as_str())));
}

#[tokio::test]
async fn a_token_naming_an_unknown_kid_is_refused_on_every_replica() {
    let app = TestApp::spawn().await;
    let other = app.sibling().await;
    let (_, token) = app.token("regulator").await;
    // Same claims, signed by a key that no replica holds, with a kid no replica knows.
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(&token)
        .unwrap()
        .claims;
    let stranger = credgate::auth::keys::Ed25519Key::generate().unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(stranger.kid.clone());
    let forged = jsonwebtoken::encode(&header, &claims, &stranger.encoding_key()).unwrap();
    for url in [&app.url, &other.url] {
        let res = app
            .http
            .get(format!("{url}/v1/stores/power/entities?page_size=1"))
            .bearer_auth(&forged)
            .header("X-Purpose", "supervision")
            .send()
            .await
            .unwrap();
        assert_problem(res, 401).await;
    }
}

#[tokio::test]
async fn a_policy_reload_on_one_replica_is_in_force_on_the_other_within_a_second() {
    let app = TestApp::spawn().await;
    let other = app.sibling().await;
    let (_, officer) = app.token("system_admin").await;
    let uscc = app.sample().entities[2]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let public = |url: String| {
        let http = app.http.clone();
        let uscc = uscc.clone();
        async move {
            let v: Value = http
                .get(format!("{url}/public/stores/power/entities/{uscc}"))
                .header("X-Purpose", "public_disclosure")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v
        }
    };
    let full = public(other.url.clone()).await["established"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(full.len() > 7, "a whole date before: {full}");

    // Both replicas read the same policy directory (one deployment); the reload is made on one.
    let catalog = app.dir.path().join("policies/catalog.toml");
    let text = std::fs::read_to_string(&catalog).unwrap();
    std::fs::write(
        &catalog,
        text.replacen(
            "established = \"entity_basic\"",
            "established = \"rating_detail\"",
            1,
        ),
    )
    .unwrap();
    let res = reload(&app, &officer).await;
    let reloaded: Value = res.json().await.unwrap();
    let digest = reloaded["digest"].as_str().unwrap().to_string();

    let took = within_a_second("the other replica enforces the reloaded set", || {
        let fut = public(other.url.clone());
        async move { fut.await["established"].as_str().unwrap().len() == 7 }
    })
    .await;
    eprintln!("policy reload reached the other replica in {took:?}");
    let ready: Value = app
        .http
        .get(format!("{}/readyz", other.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["policy_digest"], digest.as_str());
}

#[tokio::test]
async fn a_replica_whose_policy_files_differ_keeps_its_set_reports_not_ready_and_raises_an_alert() {
    let app = TestApp::spawn().await;
    // This replica has its own copy of the policy files, which nobody updates at first.
    let own = app.dir.path().join("policies-b");
    crate::helpers::copy_dir(&app.dir.path().join("policies"), &own);
    let other = app.sibling_with(|c| c.policy_dir = own.clone()).await;
    let (_, officer) = app.token("security_officer").await;
    let (_, admin) = app.token("system_admin").await;
    let catalog = app.dir.path().join("policies/catalog.toml");
    let changed = std::fs::read_to_string(&catalog).unwrap().replacen(
        "established = \"entity_basic\"",
        "established = \"rating_detail\"",
        1,
    );
    std::fs::write(&catalog, &changed).unwrap();
    reload(&app, &admin).await;

    let readyz = |url: String| {
        let http = app.http.clone();
        async move { http.get(format!("{url}/readyz")).send().await.unwrap() }
    };
    within_a_second("the diverged replica reports not ready", || {
        let fut = readyz(other.url.clone());
        async move { fut.await.status() == 503 }
    })
    .await;
    let body = assert_problem(readyz(other.url.clone()).await, 503).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("policy files differ"),
        "{body}"
    );
    // The alert is recorded before the replica reports not ready; later polls add none: wait
    // until the replica has tried (and failed) twice more.
    let tries = || {
        other
            .state
            .seen
            .failures(credgate::storage::signals::POLICIES)
    };
    let first = tries();
    wait_until(
        "two more tries of the diverged replica",
        Duration::from_secs(30),
        || {
            let n = tries();
            async move { n >= first + 2 }
        },
    )
    .await;
    let alerts: Value = app
        .http
        .get(format!("{}/admin/alerts", app.url))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let divergence: Vec<&Value> = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == "policy-divergence")
        .collect();
    assert_eq!(divergence.len(), 1, "one alert, not one per poll: {alerts}");

    // The file arrives on that replica's machine: it catches up by itself, at its next retry
    // (the wait between retries doubles up to `MAX_RETRY`).
    std::fs::write(own.join("catalog.toml"), &changed).unwrap();
    wait_until(
        "the replica catches up once its files match",
        credgate::replicas::MAX_RETRY + Duration::from_secs(1),
        || {
            let fut = readyz(other.url.clone());
            async move { fut.await.status() == 200 }
        },
    )
    .await;
}

#[tokio::test]
async fn an_objection_filed_on_one_replica_marks_answers_on_the_other_within_a_second() {
    let app = TestApp::spawn().await;
    let other = app.sibling().await;
    let uscc = app.sample().entities[4]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, bank) = app.token("regulator").await;
    let read = |url: String| {
        let http = app.http.clone();
        let (bank, uscc) = (bank.clone(), uscc.clone());
        async move {
            http.get(format!("{url}/v1/stores/power/entities/{uscc}"))
                .bearer_auth(&bank)
                .header("X-Purpose", "supervision")
                .send()
                .await
                .unwrap()
        }
    };
    assert!(
        read(other.url.clone())
            .await
            .headers()
            .get("x-objection")
            .is_none()
    );
    let subject = app.subject_token(&uscc, SubjectType::Legal);
    file_objection(
        &app,
        &subject,
        json!({"store": "power", "dataset": "entity", "record_ref": uscc, "reason": "吊销记录有误"}),
    )
    .await;
    let took = within_a_second("the other replica marks the contested record", || {
        let fut = read(other.url.clone());
        async move {
            let res = fut.await;
            res.headers()
                .get("x-objection")
                .is_some_and(|v| v == "pending")
        }
    })
    .await;
    eprintln!("objection mark reached the other replica in {took:?}");
    let body: Value = read(other.url.clone()).await.json().await.unwrap();
    assert_eq!(body["_objections"][0]["status"], "submitted");
}

#[tokio::test]
async fn with_a_deliverer_on_every_replica_each_objection_goes_out_once() {
    let app = TestApp::spawn_with(|c| {
        c.workflows.poll_ms = 20;
        c.subject_limits.max_open_objections_per_record = 6;
    })
    .await;
    let _b = app.sibling().await;
    let _c = app.sibling().await;
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let subject = app.subject_token(&uscc, SubjectType::Legal);
    let (_, handler) = app.token("objection_handler").await;
    let n = 6;
    let mut ids = Vec::new();
    let fields = [
        "name",
        "sector",
        "region",
        "established",
        "registered_capital",
        "address",
    ];
    for field in fields.iter().take(n) {
        let body = json!({"store": "fake", "dataset": "entity", "record_ref": uscc,
                          "field": field, "reason": "有误"});
        ids.push(file_objection(&app, &subject, body).await);
    }
    for id in &ids {
        accept(&app, &handler, id).await;
    }
    // Once every delivery is recorded as done, no deliverer can take one again (a delivery is
    // only attempted under a claim, and a done one is never claimed): then count.
    wait_until(
        "every delivery recorded as done",
        Duration::from_secs(30),
        || async {
            let left: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
                    .fetch_one(app.state.db.pool())
                    .await
                    .unwrap();
            left == 0 && app.fake.deliveries.load(Ordering::SeqCst) >= n
        },
    )
    .await;
    assert_eq!(
        app.fake.deliveries.load(Ordering::SeqCst),
        n,
        "one delivery per objection, not one per replica"
    );
    assert_eq!(app.fake.tickets.lock().unwrap().len(), n);
}

/// Each replica writes its own chain (its own writer id), so neither waits on the other's head;
/// every record is stored and both chains verify, each with its own checkpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_writing_at_once_keep_a_verifiable_chain_each() {
    let app = TestApp::spawn_with(|c| c.audit.checkpoint_every = 16).await;
    let other = app.sibling().await;
    let (_, token) = app.token("regulator").await;
    let urls = [app.url.clone(), other.url.clone()];
    let mut workers = Vec::new();
    for w in 0..8 {
        let http = app.http.clone();
        let token = token.clone();
        let url = urls[w % 2].clone();
        workers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..25 {
                let res = http
                    .get(format!("{url}/v1/stores/power/entities?page_size=1"))
                    .bearer_auth(&token)
                    .header("X-Purpose", "supervision")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                ids.push(res.headers()["x-audit-id"].to_str().unwrap().to_string());
            }
            ids
        }));
    }
    let mut released = Vec::new();
    for w in workers {
        released.extend(w.await.unwrap());
    }
    assert_eq!(released.len(), 200);
    for id in &released {
        app.record(id).await;
    }
    let report = credgate::audit::verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    let mut chains: Vec<&str> = report.chains.iter().map(|c| c.writer_id.as_str()).collect();
    chains.sort();
    let mut writers = [app.state.audit.writer_id(), other.state.audit.writer_id()];
    writers.sort();
    assert_eq!(chains, writers, "{report:?}");
    assert!(
        report.chains.iter().all(|c| c.signed_through.is_some()),
        "{report:?}"
    );
    assert!(report.checkpoints >= 6, "{report:?}");
}

/// The acceptance test: two `credgate serve` processes on one PostgreSQL database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_on_postgres_share_every_change_and_survive_a_kill_9() {
    let Some(url) = crate::helpers::require_postgres(
        "two_gateway_processes_on_postgres_share_every_change_and_survive_a_kill_9",
    )
    .await
    else {
        return;
    };
    let store_addr = crate::helpers::sample_store_with(60).await;

    let mut a = GatewayProcess::prepare(store_addr, dead_addr());
    a.on_storage(&url);
    let mut b = a.replica();
    // Each replica names its chain in its own config file (stable across its restarts).
    let text = std::fs::read_to_string(&a.cfg).unwrap();
    for (gw, id) in [(&mut a, "replica-a"), (&mut b, "replica-b")] {
        let cfg = gw.dir.path().join(format!("{id}.toml"));
        std::fs::write(&cfg, format!("{text}\n[audit]\nwriter_id = \"{id}\"\n")).unwrap();
        gw.cfg = cfg;
    }
    let db = Db::open(&url).await.unwrap();
    a.start("error", None).await;
    b.start("error", None).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let add = |role: &'static str, org: &'static str| {
        let db = db.clone();
        async move {
            credgate::cli::add_client(&db, "Institution", org, role, None)
                .await
                .unwrap()
        }
    };
    let token_from = |url: String, id: String, secret: String| {
        let http = http.clone();
        async move {
            let v: Value = http
                .post(format!("{url}/oauth/token"))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", &id),
                    ("client_secret", &secret),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["access_token"].as_str().unwrap().to_string()
        }
    };
    // Tokens from one replica are accepted by the other: the keys are shared.
    let (loader, s) = add("regulator", "regulator").await;
    let load_token = token_from(a.url.clone(), loader.id.clone(), s).await;
    let (officer, s) = add("security_officer", "csa").await;
    let officer = token_from(b.url.clone(), officer.id.clone(), s).await;
    let (victim, s) = add("regulator", "other-regulator").await;
    let victim_token = token_from(a.url.clone(), victim.id.clone(), s).await;
    let (admin, s) = add("system_admin", "csa").await;
    let admin = token_from(b.url.clone(), admin.id.clone(), s).await;
    let (bank, s) = add("financial_institution", "demo-bank").await;
    let bank_token = token_from(b.url.clone(), bank.id.clone(), s).await;

    let usccs: Vec<String> = sample_store::data::generate(42, 60)
        .entities
        .iter()
        .map(|e| e["uscc"].as_str().unwrap().to_string())
        .collect();
    let person = sample_store::data::generate(42, 60).persons[1]["id_number"]
        .as_str()
        .unwrap()
        .to_string();

    // Concurrent load through both replicas; every released response's audit id is kept.
    let released = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (http, token, released, stop) = (
            http.clone(),
            load_token.clone(),
            released.clone(),
            stop.clone(),
        );
        let url = if w % 2 == 0 {
            a.url.clone()
        } else {
            b.url.clone()
        };
        let usccs = usccs.clone();
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let res = http
                    .get(format!(
                        "{url}/v1/stores/power/entities/{}",
                        usccs[i % usccs.len()]
                    ))
                    .bearer_auth(&token)
                    .header("X-Purpose", "supervision")
                    .send()
                    .await;
                // Requests to the killed replica fail without a response; nothing was released.
                if let Ok(res) = res
                    && let Some(id) = res.headers().get("x-audit-id")
                {
                    let id = id.to_str().unwrap().to_string();
                    if res.bytes().await.is_ok() {
                        released.lock().unwrap().push(id);
                    }
                }
            }
        }));
    }
    wait_until("the load is under way", Duration::from_secs(60), || async {
        released.lock().unwrap().len() >= 50
    })
    .await;

    // A client disabled through one replica is refused by the other.
    let read_on = |url: String, token: String, path: String, consent: Option<String>| {
        let http = http.clone();
        async move {
            let mut req = http.get(format!("{url}{path}")).bearer_auth(token).header(
                "X-Purpose",
                if consent.is_some() {
                    "lending"
                } else {
                    "supervision"
                },
            );
            if let Some(c) = consent {
                req = req.header("X-Consent", c);
            }
            req.send().await.unwrap().status().as_u16()
        }
    };
    let entity = format!("/v1/stores/power/entities/{}", usccs[0]);
    assert_eq!(
        read_on(b.url.clone(), victim_token.clone(), entity.clone(), None).await,
        200
    );
    let res = http
        .post(format!("{}/admin/clients/{}/disable", a.url, victim.id))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    within_a_second("the other replica refuses the disabled client", || {
        read_on(b.url.clone(), victim_token.clone(), entity.clone(), None).map_status(401)
    })
    .await;

    // A consent revoked through one replica is refused by the other.
    let subject = credgate::auth::subject::mint_demo_token(
        a.config.demo_identity_provider.as_ref().unwrap(),
        &credgate::domain::SubjectId::parse(SubjectType::Natural, &person).unwrap(),
        600,
    )
    .unwrap();
    let expires = (time::OffsetDateTime::now_utc() + time::Duration::days(30))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let granted: Value = http
        .post(format!("{}/subject/consents", b.url))
        .bearer_auth(&subject)
        .json(&json!({"grantee_org": "demo-bank", "purpose": "lending", "expires_at": expires, "separate": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let consent = granted["id"].as_str().unwrap().to_string();
    let person_path = format!("/v1/stores/power/persons/{person}");
    assert_eq!(
        read_on(
            a.url.clone(),
            bank_token.clone(),
            person_path.clone(),
            Some(consent.clone())
        )
        .await,
        200
    );
    let res = http
        .delete(format!("{}/subject/consents/{consent}", b.url))
        .bearer_auth(&subject)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    within_a_second("the other replica refuses the revoked consent", || {
        read_on(
            a.url.clone(),
            bank_token.clone(),
            person_path.clone(),
            Some(consent.clone()),
        )
        .map_status(403)
    })
    .await;

    // kill -9 one replica mid-load; the other keeps serving and writing the same chain.
    let before_kill = released.lock().unwrap().len();
    a.kill();
    wait_until(
        "the surviving replica keeps serving",
        Duration::from_secs(60),
        || async { released.lock().unwrap().len() >= before_kill + 50 },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let mut released = released.lock().unwrap().clone();
    assert!(
        released.len() > before_kill,
        "the surviving replica kept serving"
    );
    // The killed replica restarts and continues its own chain from its stored head.
    a.start("error", None).await;
    for uscc in usccs.iter().take(20) {
        let res = http
            .get(format!("{}/v1/stores/power/entities/{uscc}", a.url))
            .bearer_auth(&load_token)
            .header("X-Purpose", "supervision")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        released.push(res.headers()["x-audit-id"].to_str().unwrap().to_string());
    }

    let stored = crate::helpers::assert_every_release_recorded(&db, &released).await;
    let verified: Value = http
        .get(format!("{}/admin/audit/verify", b.url))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verified["ok"], true, "{verified}");
    let chains: Vec<&str> = verified["chains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["writer_id"].as_str().unwrap())
        .collect();
    assert_eq!(chains, ["replica-a", "replica-b"], "{verified}");
    eprintln!(
        "two replicas on PostgreSQL: {} responses released, {} records, chain ok",
        released.len(),
        stored
    );
}

/// `fut.map_status(n)`: the request's status is `n`.
trait MapStatus {
    fn map_status(self, want: u16) -> impl std::future::Future<Output = bool>;
}

impl<F: std::future::Future<Output = u16>> MapStatus for F {
    async fn map_status(self, want: u16) -> bool {
        self.await == want
    }
}

/// Another replica claimed the delivery and died holding the claim. Time is the gateway's clock:
/// the claim holds until the test moves the clock past it, so no sleep races the lapse, and the
/// claim is only written while no attempt of the gateway's own is in flight (it would clear the
/// claim when it records its outcome).
#[tokio::test]
async fn a_delivery_claimed_by_a_replica_that_died_waits_for_the_claim_to_lapse_then_goes_out() {
    let app = TestApp::spawn_with(|c| c.workflows.poll_ms = 20).await;
    app.fake.objections_down.store(true, Ordering::SeqCst);
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let subject = app.subject_token(&uscc, SubjectType::Legal);
    let (_, handler) = app.token("objection_handler").await;
    let body = json!({"store": "fake", "dataset": "entity", "record_ref": uscc, "reason": "有误"});
    let id = file_objection(&app, &subject, body).await;
    accept(&app, &handler, &id).await;
    // A replica that died holding the claim for 30 days more (on the gateway's clock), written
    // only between the gateway's own attempts (once one failed, and while none holds a claim).
    let held_until = app.state.clock.now() + 30 * 86_400 * 1_000_000;
    wait_until(
        "a failed attempt, then the claim",
        Duration::from_secs(30),
        || async {
            sqlx::query(
                "UPDATE outbox SET claimed_by = 'replica-that-died', claimed_until = $1, \
             next_attempt_at = 0 WHERE attempts > 0 AND claimed_until IS NULL",
            )
            .bind(held_until)
            .execute(app.state.db.pool())
            .await
            .unwrap()
            .rows_affected()
                == 1
        },
    )
    .await;
    let attempts_before = app.fake.deliveries.load(Ordering::SeqCst);
    app.fake.objections_down.store(false, Ordering::SeqCst);
    // Evidence that the outbox task ran a pass while the claim held: the same pass's deadline
    // watch raises the objection's overdue alert once the clock is past its decision deadline
    // (20 days), still short of the claim's lapse.
    app.state.clock.advance_days(21);
    let (_, officer) = app.token("security_officer").await;
    wait_until(
        "a pass of the outbox task",
        Duration::from_secs(30),
        || async { overdue_alerts(&app, &officer, &id).await > 0 },
    )
    .await;
    assert_eq!(
        app.fake.deliveries.load(Ordering::SeqCst),
        attempts_before,
        "nobody touches a delivery while another replica's claim holds"
    );
    app.state.clock.advance_days(10);
    wait_until(
        "the lapsed claim was taken over",
        Duration::from_secs(30),
        || async {
            let o = credgate::workflows::objections::get(&app.state.db, &id)
                .await
                .unwrap()
                .unwrap();
            o.status == credgate::workflows::objections::Status::Forwarded
        },
    )
    .await;
    assert_eq!(app.fake.tickets.lock().unwrap().len(), 1);
}

/// How many overdue alerts name objection `id`.
async fn overdue_alerts(app: &TestApp, officer: &str, id: &str) -> usize {
    let alerts: Value = app
        .http
        .get(format!("{}/admin/alerts", app.url))
        .bearer_auth(officer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == "objection-overdue" && a["detail"].as_str().unwrap().contains(id))
        .count()
}

#[tokio::test]
async fn a_lockdown_set_on_one_replica_holds_on_the_other_within_a_second_and_lifts_likewise() {
    let app = TestApp::spawn().await;
    let other = app.sibling().await;
    let (id, token) = app.token("regulator").await;
    let (_, officer) = app.token("security_officer").await;
    let status_on = |url: String| {
        let (http, token) = (app.http.clone(), token.clone());
        async move {
            http.get(format!("{url}/v1/stores/power/lists/red"))
                .bearer_auth(&token)
                .header("X-Purpose", "supervision")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        status_on(other.url.clone()).await,
        200,
        "cached as active there"
    );
    let res = app
        .http
        .post(format!("{}/admin/lockdown", app.url))
        .bearer_auth(&officer)
        .json(&json!({"client_id": id, "reason": "scraping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let lockdown: Value = res.json().await.unwrap();
    assert_eq!(
        status_on(app.url.clone()).await,
        403,
        "at once where it was set"
    );
    within_a_second("the other replica refuses the locked-down client", || {
        status_on(other.url.clone()).map_status(403)
    })
    .await;
    let res = app
        .http
        .delete(format!(
            "{}/admin/lockdown/{}",
            other.url,
            lockdown["id"].as_str().unwrap()
        ))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    within_a_second("the first replica serves the client again", || {
        status_on(app.url.clone()).map_status(200)
    })
    .await;
}

#[tokio::test]
async fn an_overdue_objection_is_alerted_once_however_many_replicas_watch() {
    let app = TestApp::spawn_with(|c| c.workflows.poll_ms = 20).await;
    let others = [app.sibling().await, app.sibling().await];
    let uscc = app.sample().entities[3]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let subject = app.subject_token(&uscc, SubjectType::Legal);
    let body = json!({"store": "power", "dataset": "entity", "record_ref": uscc, "reason": "有误"});
    let id = file_objection(&app, &subject, body).await;
    // Past the acceptance deadline on every replica's clock: all three watchers see it.
    app.state.clock.advance_days(6);
    for o in &others {
        o.state.clock.advance_days(6);
    }
    let (_, officer) = app.token("security_officer").await;
    wait_until("an overdue alert", Duration::from_secs(30), || async {
        overdue_alerts(&app, &officer, &id).await > 0
    })
    .await;
    // Evidence that the watchers ran further passes: a second objection, overdue later, gets
    // its alert; by then the first has had those passes to be alerted again.
    let uscc2 = app.sample().entities[5]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let subject2 = app.subject_token(&uscc2, SubjectType::Legal);
    let body =
        json!({"store": "power", "dataset": "entity", "record_ref": uscc2, "reason": "有误"});
    let later = file_objection(&app, &subject2, body).await;
    app.state.clock.advance_days(6);
    for o in &others {
        o.state.clock.advance_days(6);
    }
    let (_, officer) = app.token("security_officer").await;
    wait_until(
        "the later objection's alert",
        Duration::from_secs(30),
        || async { overdue_alerts(&app, &officer, &later).await > 0 },
    )
    .await;
    assert_eq!(
        overdue_alerts(&app, &officer, &id).await,
        1,
        "one alert, not one per replica"
    );
    assert_eq!(overdue_alerts(&app, &officer, &later).await, 1);
}
