//! Hostile-input tests: see mod.rs. The edge: token endpoint floods, slow and idle
//! connections, rate-limit doors, 429 floods in the audit log, retired keys' tokens, file
//! modes, caching of private answers, and what `/metrics` tells about whistleblowers.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::helpers::{GatewayProcess, TestApp, dead_addr, test_postgres_url};

const PUBLIC_PATH: &str = "/public/stores/power/lists/red";

async fn public_get(app: &TestApp) -> reqwest::Response {
    app.http
        .get(format!("{}{PUBLIC_PATH}", app.url))
        .header("X-Purpose", "public_disclosure")
        .send()
        .await
        .unwrap()
}

async fn all_records(app: &TestApp) -> Vec<credgate::audit::AuditRecord> {
    credgate::audit::store::page_after(&app.state.db, 0, 1_000_000)
        .await
        .unwrap()
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One wave of the token flood: `n` parallel logins with unknown, well-formed client ids. The
/// status of each, or 0 when the gateway closed the connection (one address holds at most
/// `max_connections_per_address` connections).
async fn token_wave(http: &reqwest::Client, url: &str, wave: usize, n: usize) -> Vec<u16> {
    let tries: Vec<_> = (0..n)
        .map(|i| {
            let (http, url) = (http.clone(), url.to_string());
            tokio::spawn(async move {
                let id = format!("cg_{:032x}", wave * 1000 + i);
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_id", id.as_str()),
                    ("client_secret", "wrong"),
                ];
                http.post(&url)
                    .form(&form)
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16())
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in tries {
        codes.push(t.await.unwrap());
    }
    codes
}

/// A valid client's token, retried as the answers say: the time it took and the retries.
async fn valid_token(http: &reqwest::Client, url: &str, id: &str, secret: &str) -> (Duration, u32) {
    let started = Instant::now();
    let mut retries = 0;
    loop {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ];
        let wait = match http.post(url).form(&form).send().await {
            Ok(res) if res.status() == 200 => return (started.elapsed(), retries),
            Ok(res) if [429, 503].contains(&res.status().as_u16()) => {
                let secs: u64 = res.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                Duration::from_secs(secs)
            }
            Ok(res) => panic!("valid client refused: {}", res.status()),
            // The address's connections are at their cap: try again shortly.
            Err(_) => Duration::from_millis(100),
        };
        retries += 1;
        tokio::time::sleep(wait).await;
    }
}

/// Item 1, measured on a real process: waves of 200 parallel logins with unknown client ids
/// (each would run argon2id, 19 MiB) from one address, sustained over about 3 s, while a valid
/// client of that same address keeps asking for tokens, retrying as `Retry-After` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_flood_keeps_peak_memory_bounded_and_a_valid_client_still_gets_a_token() {
    let mut gateway = GatewayProcess::prepare(dead_addr(), dead_addr());
    if let Some(url) = test_postgres_url().await {
        gateway.on_storage(&url);
    }
    let db = credgate::storage::Db::open(&gateway.config.storage_url)
        .await
        .unwrap();
    let (client, secret) = credgate::cli::add_client(&db, "Bank", "bank", "regulator", None)
        .await
        .unwrap();
    gateway.start("error", None).await;
    let baseline = vm_hwm_kib(gateway.pid());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("{}/oauth/token", gateway.url);
    let flood = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let mut codes = std::collections::BTreeMap::new();
            for wave in 0..3 {
                let started = Instant::now();
                for code in token_wave(&http, &url, wave, 200).await {
                    *codes.entry(code).or_insert(0) += 1;
                }
                tokio::time::sleep(Duration::from_millis(1200).saturating_sub(started.elapsed()))
                    .await;
            }
            codes
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut latencies = Vec::new();
    while !flood.is_finished() {
        latencies.push(valid_token(&http, &url, &client.id, &secret).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let codes = flood.await.unwrap();
    let peak = vm_hwm_kib(gateway.pid());
    eprintln!(
        "token flood (3 waves x 200 over ~3.6 s): baseline VmHWM {} MiB, peak {} MiB; valid \
         client (latency, retries): {latencies:?}; flood answers (0 = connection closed) {codes:?}",
        baseline / 1024,
        peak / 1024
    );
    assert!(
        latencies.len() >= 2,
        "the valid client kept trying: {latencies:?}"
    );
    let worst = latencies.iter().map(|l| l.0).max().unwrap();
    assert!(worst < Duration::from_secs(4), "{latencies:?}");
    assert!(peak < 150 * 1024, "peak RSS {} MiB", peak / 1024);
    assert!(
        codes.keys().all(|c| [0, 401, 429, 503].contains(c)),
        "only refusals: {codes:?}"
    );
}

#[tokio::test]
async fn a_full_hashing_bound_answers_503_with_retry_after_in_oauth_form() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limits.token_hash_concurrency = 1;
        c.rate_limits.token_hash_wait_ms = 0;
    })
    .await;
    let tries: Vec<_> = (0..16)
        .map(|i| {
            let (http, url) = (app.http.clone(), app.url.clone());
            tokio::spawn(async move {
                http.post(format!("{url}/oauth/token"))
                    .form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", &format!("cg_unknown{i}")),
                        ("client_secret", "x"),
                    ])
                    .send()
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut busy = None;
    for t in tries {
        let res = t.await.unwrap();
        assert!([401, 503].contains(&res.status().as_u16()));
        if res.status() == 503 {
            busy = Some(res);
        }
    }
    let res = busy.expect("16 parallel hashes with one slot: some are turned away");
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
}

#[tokio::test]
async fn failed_logins_lock_the_client_id_and_not_the_others() {
    let app = TestApp::spawn_with(|c| c.rate_limits.token_failures_before_lock = 3).await;
    let (id, secret) = app.add_client("regulator").await;
    let (other, other_secret) = app.add_client("regulator").await;
    for _ in 0..3 {
        assert_eq!(app.token_for(&id, "wrong").await.status(), 401);
    }
    // Locked: even the right secret is refused, without hashing, for a while.
    let res = app.token_for(&id, &secret).await;
    assert_eq!(res.status(), 401);
    let wait: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 200 && wait <= 301, "{wait}");
    let audit_id = res.headers()["x-audit-id"].to_str().unwrap().to_string();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(
        app.record(&audit_id).await.rule.as_deref(),
        Some("client-locked")
    );
    // An unknown id is counted and locked the same way: the lock says nothing of existence.
    let nobody = format!("cg_{}", "b".repeat(32));
    for _ in 0..3 {
        app.token_for(&nobody, "wrong").await;
    }
    let res = app.token_for(&nobody, "wrong").await;
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(app.token_for(&other, &other_secret).await.status(), 200);
}

/// Reads until the peer closes (true) or `within` passes (false).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    while started.elapsed() < within {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => {}
        }
    }
    false
}

async fn short_timeouts(max_connections: usize) -> TestApp {
    TestApp::spawn_with(move |c| {
        c.limits.header_read_timeout_ms = 500;
        c.limits.body_read_timeout_ms = 500;
        c.limits.idle_timeout_ms = 700;
        c.limits.max_connections = max_connections;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_header_is_cut_off_within_the_timeout() {
    let app = short_timeouts(64).await;
    let mut s = TcpStream::connect(app.addr).unwrap();
    let started = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed = false;
    for b in head {
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        if closed_within(&mut s, Duration::from_millis(100)) {
            closed = true;
            break;
        }
    }
    assert!(closed, "still open after {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    // Normal requests still work.
    let res = app
        .http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_and_an_idle_keep_alive_are_closed() {
    let app = short_timeouts(64).await;
    let mut silent = TcpStream::connect(app.addr).unwrap();
    assert!(closed_within(&mut silent, Duration::from_millis(1500)));
    // After one answered request, the kept-alive connection is closed when nothing follows.
    let mut kept = TcpStream::connect(app.addr).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(closed_within(&mut kept, Duration::from_millis(2000)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_refused_within_the_body_timeout() {
    let app = short_timeouts(64).await;
    let mut s = TcpStream::connect(app.addr).unwrap();
    s.write_all(b"POST /public/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // One byte every 100 ms: each arrives well within any per-read timeout.
    while started.elapsed() < Duration::from_secs(3) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {
                if s.write_all(b" ").is_err() {
                    break;
                }
            }
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 4"), "{text}");
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_above_the_cap_are_closed_at_once() {
    // Four serving threads: the cap is the gateway's, not each thread's (12 connections would
    // all stay open under a cap of 4 a thread).
    let app = TestApp::spawn_with(|c| {
        c.limits.max_connections = 4;
        c.io_threads = 4;
    })
    .await;
    let mut conns: Vec<TcpStream> = (0..12)
        .map(|_| TcpStream::connect(app.addr).unwrap())
        .collect();
    let closed = std::cell::Cell::new(0);
    crate::helpers::wait_until(
        "8 of 12 closed with a cap of 4",
        Duration::from_secs(10),
        || {
            let n = conns
                .iter_mut()
                .map(|c| closed_within(c, Duration::from_millis(20)))
                .filter(|closed| *closed)
                .count();
            closed.set(n);
            async move { n >= 8 }
        },
    )
    .await;
    assert!(closed.get() >= 8);
    drop(conns);
    // Once they are gone, service resumes.
    crate::helpers::wait_until("service resumes", Duration::from_secs(10), || async {
        app.http
            .get(format!("{}/healthz", app.url))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

#[tokio::test]
async fn browsing_the_public_tier_does_not_lock_the_address_out_of_tokens() {
    let app = TestApp::spawn_with(|c| c.rate_limits.per_address_per_minute = 3).await;
    let (id, secret) = app.add_client("regulator").await;
    let mut codes = vec![];
    for _ in 0..5 {
        codes.push(public_get(&app).await.status().as_u16());
    }
    assert_eq!(codes, [200, 200, 200, 429, 429]);
    assert_eq!(app.token_for(&id, &secret).await.status(), 200);
    // Nor out of following a report.
    let res = app
        .http
        .get(format!("{}/public/reports/{}", app.url, "0".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn receipt_lookups_have_their_own_limit_and_doors_say_their_quota() {
    let app = TestApp::spawn_with(|c| c.rate_limits.receipts_per_address_per_minute = 2).await;
    let mut codes = vec![];
    let mut last = None;
    for _ in 0..3 {
        let res = app
            .http
            .get(format!("{}/public/reports/{}", app.url, "0".repeat(32)))
            .send()
            .await
            .unwrap();
        codes.push(res.status().as_u16());
        last = Some(res);
    }
    assert_eq!(codes, [404, 404, 429]);
    let last = last.unwrap();
    assert!(last.headers().contains_key("retry-after"));
    // The 429 says its policy too, and when the next request is allowed (draft -08+).
    assert_eq!(
        last.headers()["ratelimit-policy"],
        "\"report-receipt\";q=2;w=60"
    );
    let state = last.headers()["ratelimit"].to_str().unwrap();
    assert!(state.starts_with("\"report-receipt\";r=0;t="), "{state}");
    let res = public_get(&app).await;
    assert_eq!(
        res.headers()["ratelimit-policy"],
        "\"public-data\";q=120;w=60"
    );
    let state = res.headers()["ratelimit"].to_str().unwrap();
    assert!(state.starts_with("\"public-data\";r=119;t="), "{state}");
}

#[tokio::test]
async fn a_429_flood_is_one_record_and_one_summary_not_fifty() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limits.per_address_per_minute = 2;
        // A window no loaded machine can outrun: the test closes it itself, below.
        c.rate_limits.audit_summary_window_secs = 3600;
    })
    .await;
    let before = all_records(&app).await.len();
    let mut with_audit_id = 0;
    for _ in 0..52 {
        let res = public_get(&app).await;
        if res.status() == 429 && res.headers().contains_key("x-audit-id") {
            with_audit_id += 1;
        }
    }
    assert_eq!(
        with_audit_id, 1,
        "only the first 429 of the window is recorded alone"
    );
    // A refusal that is not a 429 (another door) is still recorded one by one.
    let res = app
        .http
        .get(format!("{}/public/reports/{}", app.url, "0".repeat(32)))
        .send()
        .await
        .unwrap();
    assert!(res.headers().contains_key("x-audit-id"));
    assert_eq!(res.status(), 404);
    // The window closes (here: by hand, as at shutdown): its summary is appended.
    let flood = &app.state.limits.flood;
    let due = flood.close(credgate::storage::now_micros(), true);
    assert_eq!(
        due.len(),
        1,
        "one summary for the one (address, door) window"
    );
    for record in due {
        app.state.audit.append(record).await.unwrap();
    }
    let records = all_records(&app).await;
    let s = records
        .iter()
        .find(|r| r.kind == "rate_limit_summary")
        .expect("the summary is in the log")
        .clone();
    let added = records.len() - before;
    assert_eq!(s.masked["suppressed_429"], 49);
    assert_eq!(s.client_addr, "127.0.0.1");
    assert_eq!(s.dataset.as_deref(), Some("public-data"));
    assert!(s.masked["first_us"] <= s.masked["last_us"]);
    assert_eq!((s.status, s.rule.as_deref()), (429, Some("rate-limited")));
    // 2 released, 1 first 429, 1 other denial, 1 summary.
    assert_eq!(added, 5);
    let report = credgate::audit::verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert!(report.ok);
}

/// A token signed with the gateway's own key (as a leaked key would sign) for a year.
fn forged(key: &credgate::auth::keys::Ed25519Key, client: &str, lifetime: u64) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    let claims = json!({
        "iss": "credgate", "aud": "credgate-api", "sub": client, "org": "test-org",
        "role": "regulator", "exp": now + lifetime, "iat": now, "nbf": now, "jti": "forged",
    });
    jsonwebtoken::encode(&header, &claims, &key.encoding_key()).unwrap()
}

#[tokio::test]
async fn a_correctly_signed_token_living_longer_than_the_gateway_issues_is_refused() {
    let app = TestApp::spawn().await;
    let (id, _) = app.token("regulator").await;
    let key = app.signing_key().await;
    let ttl = app.state.config.auth.token_ttl_secs;
    let ok = forged(&key, &id, ttl);
    assert_eq!(
        app.data(&ok, "/v1/stores/power/lists/red").await.status(),
        200
    );
    let year = forged(&key, &id, 365 * 86_400);
    let res = app.data(&year, "/v1/stores/power/lists/red").await;
    crate::helpers::assert_problem(res, 401).await;
}

#[tokio::test]
async fn a_cached_token_dies_with_its_retired_key() {
    use credgate::auth::keyring::KeyUse;
    let app = TestApp::spawn().await;
    let (_, token) = app.token("regulator").await;
    // Used once: verified and cached.
    assert_eq!(
        app.data(&token, "/v1/stores/power/lists/red")
            .await
            .status(),
        200
    );
    let new = app
        .state
        .keyring
        .rotate(&app.state.db, KeyUse::TokenSigning)
        .await
        .unwrap();
    // "After the token lifetime": the new generation has signed for longer than a token lives.
    let auth = &app.state.config.auth;
    let past = (auth.token_ttl_secs + auth.leeway_secs + 60) as i64 * 1_000_000;
    sqlx::query("UPDATE gateway_keys SET created_at = created_at - $1 WHERE kid = $2")
        .bind(past)
        .bind(&new.kid)
        .execute(app.state.db.pool())
        .await
        .unwrap();
    credgate::replicas::refresh_keys(&app.state).await.unwrap();
    let res = app.data(&token, "/v1/stores/power/lists/red").await;
    crate::helpers::assert_problem(res, 401).await;
    let (_, fresh) = app.token("regulator").await;
    assert_eq!(
        app.data(&fresh, "/v1/stores/power/lists/red")
            .await
            .status(),
        200
    );
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[tokio::test]
async fn the_sqlite_database_and_its_wal_and_shm_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g.db");
    let db = credgate::storage::Db::open(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    credgate::cli::add_client(&db, "Bank", "bank", "regulator", None)
        .await
        .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let p = dir.path().join(format!("g.db{suffix}"));
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

#[cfg(unix)]
#[test]
fn the_cli_creates_its_database_and_archive_directory_private() {
    crate::helpers::watchdog::arm_default();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    // `client add` checks the role against the policies, so the config names the shipped ones.
    std::fs::write(
        &cfg,
        format!(
            "storage_url = \"sqlite://cli.db\"\nkey_dir = \"keys\"\npolicy_dir = \"{}/policies\"\n",
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_credgate"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "client",
        "add",
        "--name",
        "B",
        "--org",
        "b",
        "--role",
        "regulator",
        "--config",
        &cfg,
    ]);
    assert_eq!(mode(&dir.path().join("cli.db")), 0o600);
    let out = dir.path().join("archives");
    run(&[
        "audit",
        "archive",
        "--out",
        &out.display().to_string(),
        "--config",
        &cfg,
    ]);
    assert_eq!(mode(&out), 0o700);
}

#[cfg(unix)]
#[test]
fn serve_refuses_a_master_key_others_can_read_and_says_how_to_fix_it() {
    use std::os::unix::fs::PermissionsExt;
    let gateway = GatewayProcess::prepare(dead_addr(), dead_addr());
    let key = credgate::auth::keyring::master_key_path(&gateway.config.key_dir);
    std::fs::write(&key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_credgate"))
        .args(["serve", "--config", &gateway.cfg.display().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("chmod 600 {}", key.display())),
        "{stderr}"
    );
}

#[tokio::test]
async fn answers_with_personal_or_audit_data_are_not_cached() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("regulator").await;
    let officer = app.token("security_officer").await.1;
    let subject = app.subject_token("91350100M000100Y43", credgate::domain::SubjectType::Legal);
    let bearer = |t: &str| format!("Bearer {t}");
    let checks = [
        ("/v1/stores/power/lists/red", bearer(&token)),
        ("/v1/stores/power/nowhere", bearer(&token)),
        (PUBLIC_PATH, String::new()),
        ("/subject/me", bearer(&subject)),
        ("/admin/audit", bearer(&officer)),
    ];
    for (path, auth) in checks {
        let mut req = app
            .http
            .get(format!("{}{path}", app.url))
            .header("X-Purpose", "public_disclosure");
        if !auth.is_empty() {
            req = req.header("Authorization", auth);
        }
        let res = req.send().await.unwrap();
        assert_eq!(
            res.headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{path}: {}",
            res.status()
        );
    }
}

#[tokio::test]
async fn metrics_do_not_timestamp_a_whistleblower_report() {
    let app = TestApp::spawn().await;
    let scrape = || async {
        let text = app
            .http
            .get(format!("{}/metrics", app.metrics_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with("credgate_request") && !l.contains("route=\"/metrics\""))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    public_get(&app).await;
    let res = app
        .http
        .post(format!("{}/public/reports", app.url))
        .json(&json!({"about": "x", "category": "other", "description": "y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let receipt: Value = res.json().await.unwrap();
    app.http
        .get(format!(
            "{}/public/reports/{}",
            app.url,
            receipt["receipt"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    let after = scrape().await;
    // Tests share the process's recorder, so other series move meanwhile; these never appear.
    // (`/admin/reports` series from other tests may appear; the public door's never.)
    assert!(
        after.iter().all(|l| !l.contains("/public/reports")),
        "{after:#?}"
    );
}

/// Silent connections (nothing sent) from `ip`, opened one after another.
async fn silent_from(app: &TestApp, ip: [u8; 4], n: usize) -> Vec<tokio::net::TcpStream> {
    let mut conns = Vec::new();
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(std::net::SocketAddr::from((ip, 0))).unwrap();
        conns.push(socket.connect(app.addr).await.unwrap());
    }
    conns
}

/// How many of `conns` the gateway has closed.
async fn closed_count(conns: &mut [tokio::net::TcpStream]) -> usize {
    use tokio::io::AsyncReadExt;
    let mut closed = 0;
    for c in conns {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(20), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            _ => {}
        }
    }
    closed
}

/// Sends `GET /healthz` on `conn` and reads the answer's head.
async fn answers_a_request(conn: &mut tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed instead of answering");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
}

async fn healthz(app: &TestApp) -> u16 {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    http.get(format!("{}/healthz", app.url))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holding_silent_connections_cannot_shut_others_out() {
    let app = TestApp::spawn_with(|c| {
        c.limits.max_connections = 8;
        c.limits.max_connections_per_address = 4;
    })
    .await;
    let mut held = silent_from(&app, [127, 0, 0, 2], 20).await;
    let held = tokio::sync::Mutex::new(&mut held[..]);
    crate::helpers::wait_until("16 closed", Duration::from_secs(10), || async {
        closed_count(&mut held.lock().await).await >= 16
    })
    .await;
    // Accepted after all 20: by then each had its turn at the cap.
    assert_eq!(healthz(&app).await, 200);
    assert_eq!(
        closed_count(&mut held.lock().await).await,
        16,
        "one address holds its cap, no more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_the_oldest_waiting_connection_makes_room_for_a_newcomer() {
    let app = TestApp::spawn_with(|c| c.limits.max_connections = 4).await;
    let mut held = silent_from(&app, [127, 0, 0, 2], 4).await;
    // The last one answers a request: the accept loop, which admits in order, has judged all.
    answers_a_request(&mut held[3]).await;
    assert_eq!(closed_count(&mut held).await, 0, "within the cap");
    assert_eq!(healthz(&app).await, 200);
    // The oldest silent one went, the others are still open.
    assert!(closed_count(&mut held[..1]).await == 1);
    assert_eq!(closed_count(&mut held[1..]).await, 0);
}

/// A token request from the source address `ip`.
async fn token_from(app: &TestApp, ip: [u8; 4], id: &str, secret: &str) -> reqwest::Response {
    let http = reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from(ip))
        .build()
        .unwrap();
    crate::helpers::request_token(&http, &app.url, id, secret).await
}

#[tokio::test]
async fn wrong_secrets_from_one_address_do_not_lock_the_client_out_from_another() {
    let app = TestApp::spawn().await;
    let (id, secret) = app.add_client("regulator").await;
    let attacker = [127, 0, 0, 2];
    for _ in 0..10 {
        assert_eq!(token_from(&app, attacker, &id, "wrong").await.status(), 401);
    }
    // The attacker's own (id, address) pair is locked, even with the right secret...
    let res = token_from(&app, attacker, &id, &secret).await;
    assert_eq!(res.status(), 401);
    assert!(res.headers().contains_key("retry-after"));
    // ...the client, from its own address, is not.
    assert_eq!(
        token_from(&app, [127, 0, 0, 1], &id, &secret)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_60_kb_client_id_is_invalid_client_and_takes_no_room() {
    let app = TestApp::spawn().await;
    let logins = &app.state.limits.logins;
    let huge = format!("cg_{}", "a".repeat(60_000));
    let res = app.token_for(&huge, "wrong").await;
    assert_eq!(res.status(), 401);
    let audit_id = res.headers()["x-audit-id"].to_str().unwrap().to_string();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(logins.len(), 0, "a malformed id is not counted");
    let record = app.record(&audit_id).await;
    assert_eq!(record.client_id.as_deref().map(str::len), Some(64));
    // A well-formed unknown id gets the same answer, and is counted (per pair and per id).
    let res = app
        .token_for(&format!("cg_{}", "a".repeat(32)), "wrong")
        .await;
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(logins.len(), 2);
}
