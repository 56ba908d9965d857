//! `credgate backup --out FILE` (issue 19): an online copy of the SQLite database taken while
//! the gateway serves, restored into a fresh gateway with the same key directory, where
//! `audit verify` passes and every record committed before the backup is found. On
//! PostgreSQL the command refuses and names pg_dump and PITR.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use credgate::{config::Config, web::App};

use crate::{
    cli::{config_file, text},
    helpers::{TestApp, config_text, copy_dir, dead_addr, wait_until},
};

/// The CLI, off the runtime's threads: the gateway under test runs in this process and must
/// keep serving while the command runs.
async fn credgate(args: Vec<String>) -> std::process::Output {
    crate::helpers::watchdog::arm_default();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_credgate"))
            .args(&args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Four clients asking for data until told to stop; the audit id of every 200 they received,
/// in the order received.
fn light_load(app: &TestApp, token: &str, stop: &Arc<AtomicBool>) -> Arc<Mutex<Vec<String>>> {
    let released = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..4 {
        let (http, url, token, stop, released) = (
            app.http.clone(),
            app.url.clone(),
            token.to_string(),
            stop.clone(),
            released.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let res = http
                    .get(format!("{url}/v1/stores/power/lists/red"))
                    .bearer_auth(&token)
                    .header("X-Purpose", "supervision")
                    .send()
                    .await
                    .unwrap();
                if res.status() == 200 {
                    let id = res.headers()["x-audit-id"].to_str().unwrap().to_string();
                    res.bytes().await.unwrap();
                    released.lock().unwrap().push(id);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
    released
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_into_a_gateway_that_verifies() {
    let app = TestApp::spawn().await;
    let cfg = config_file(&app);
    let out = app.dir.path().join("backups/credgate-copy.db");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let out_s = out.display().to_string();
    if app.state.config.storage_url.starts_with("postgres") {
        return postgres_is_refused(&cfg, &out).await;
    }
    let (_, token) = app.token("regulator").await;
    let stop = Arc::new(AtomicBool::new(false));
    let released = light_load(&app, &token, &stop);
    wait_until("some load", Duration::from_secs(60), || async {
        released.lock().unwrap().len() >= 20
    })
    .await;
    // Every response received before the command starts had its record committed first.
    let before: Vec<String> = released.lock().unwrap().clone();
    let o = credgate(args(&["backup", "--out", &out_s, "--config", &cfg])).await;
    let during = released.lock().unwrap().len() - before.len();
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(report["bytes"].as_u64().unwrap() > 0);
    assert!(
        report["keep_with"]
            .as_str()
            .unwrap()
            .ends_with("master.key")
    );
    wait_until("the gateway serves on", Duration::from_secs(60), || async {
        released.lock().unwrap().len() >= before.len() + during + 10
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the copy holds the audit log");
    }

    never_over_a_file(&cfg, &out).await;

    let restored = restore(&app, &out).await;
    let o = credgate(args(&["audit", "verify", "--config", &restored.cfg])).await;
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    let verified: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(verified["ok"], true, "{stdout}");
    let in_copy = crate::helpers::assert_every_release_recorded(&restored.db, &before).await;
    eprintln!(
        "backup: {} released before it, {during} while it ran, {in_copy} records in the copy",
        before.len()
    );

    // The restored gateway is the same deployment: the old token is honoured (its key is in
    // the copy, wrapped under the same master.key), and its records chain on and verify.
    let res = app
        .http
        .get(format!("{}/v1/stores/power/lists/red", restored.url))
        .bearer_auth(&token)
        .header("X-Purpose", "supervision")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-audit-id"].to_str().unwrap().to_string();
    crate::helpers::assert_every_release_recorded(&restored.db, &[id]).await;
    let o = credgate(args(&["audit", "verify", "--config", &restored.cfg])).await;
    assert!(o.status.success(), "{}{}", text(&o).0, text(&o).1);
}

/// On PostgreSQL the command names the tools that do it, and writes nothing.
async fn postgres_is_refused(cfg: &str, out: &std::path::Path) {
    let out_s = out.display().to_string();
    let o = credgate(args(&["backup", "--out", &out_s, "--config", cfg])).await;
    let (stdout, stderr) = text(&o);
    assert!(!o.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("pg_dump") && stderr.contains("PITR") && stderr.contains("master.key"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing written");
}

/// A second backup to the same name is refused and the first copy stays as it was.
async fn never_over_a_file(cfg: &str, out: &std::path::Path) {
    let out_s = out.display().to_string();
    let copy = std::fs::read(out).unwrap();
    let o = credgate(args(&["backup", "--out", &out_s, "--config", cfg])).await;
    assert!(!o.status.success());
    assert!(text(&o).1.contains("exists already"), "{}", text(&o).1);
    assert_eq!(std::fs::read(out).unwrap(), copy, "the copy is untouched");
}

struct Restored {
    url: String,
    cfg: String,
    db: credgate::storage::Db,
    _dir: tempfile::TempDir,
}

/// A fresh gateway in a directory of its own, on the copy, with a copy of the original's key
/// directory (master.key above all) and the same policies and stores.
async fn restore(app: &TestApp, copy: &std::path::Path) -> Restored {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&app.dir.path().join("keys"), &dir.path().join("keys"));
    copy_dir(
        &app.dir.path().join("policies"),
        &dir.path().join("policies"),
    );
    std::fs::copy(
        app.dir.path().join("idp.jwks.json"),
        dir.path().join("idp.jwks.json"),
    )
    .unwrap();
    let text = config_text(dir.path(), app.sample_store, dead_addr(), dead_addr()).replace(
        &format!("sqlite://{}/credgate.db", dir.path().display()),
        &format!("sqlite://{}", copy.display()),
    );
    let cfg = dir.path().join("credgate.toml");
    std::fs::write(&cfg, &text).unwrap();
    let config = Config::parse(&text, "restored").unwrap();
    let app = App::build(config)
        .await
        .expect("a gateway starts on the copy");
    let url = format!("http://{}", app.local_addr());
    let db = app.state().db.clone();
    tokio::spawn(app.run_until(std::future::pending()));
    Restored {
        url,
        cfg: cfg.display().to_string(),
        db,
        _dir: dir,
    }
}
