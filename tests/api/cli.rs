//! The command line, run as a real process beside a running gateway on the same storage.

use std::process::{Command, Output};

use serde_json::Value;

use crate::helpers::{TestApp, config_text, dead_addr};

pub(crate) fn credgate(args: &[&str]) -> Output {
    crate::helpers::watchdog::arm_default();
    Command::new(env!("CARGO_BIN_EXE_credgate"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

pub(crate) fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

/// A CLI run's exit status, stdout and stderr, for an assertion's message: when the expected
/// text is missing, the failure then shows why the process ended as it did (a usage error, a
/// storage error, another verdict) instead of an empty or partial stdout alone.
pub(crate) fn explain(o: &Output) -> String {
    let (stdout, stderr) = text(o);
    format!(
        "\n--- credgate {} ---\nstdout:\n{stdout}\nstderr:\n{stderr}",
        o.status
    )
}

/// Writes a config file for the test app's storage and returns its path.
pub(crate) fn config_file(app: &TestApp) -> String {
    let path = app.dir.path().join("cli.toml");
    let t = config_text(app.dir.path(), app.sample_store, dead_addr(), dead_addr());
    // The same storage as the running gateway, whichever backend the tests use.
    let sqlite_line = format!(
        "storage_url = \"sqlite://{}/credgate.db\"",
        app.dir.path().display()
    );
    let t = t.replace(
        &sqlite_line,
        &format!("storage_url = \"{}\"", app.state.config.storage_url),
    );
    std::fs::write(&path, t).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn clients_added_and_disabled_by_the_cli_take_effect_on_the_running_gateway() {
    let app = TestApp::spawn().await;
    let cfg = config_file(&app);
    let out = credgate(&[
        "client",
        "add",
        "--name",
        "某某银行",
        "--org",
        "bank-a",
        "--role",
        "regulator",
        "--json",
        "--config",
        &cfg,
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = added["client_id"].as_str().unwrap();
    let secret = added["client_secret"].as_str().unwrap();

    let res = app.token_for(id, secret).await;
    assert_eq!(res.status(), 200, "the running gateway sees the new client");
    let token: Value = res.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap();
    let path = "/v1/stores/power/entities?page_size=1";
    assert_eq!(app.data(token, path).await.status(), 200);

    let list = credgate(&["client", "list", "--json", "--config", &cfg]);
    let (stdout, _) = text(&list);
    assert!(stdout.contains(id) && stdout.contains("某某银行"));
    assert!(
        !stdout.contains(secret) && !stdout.contains("argon2"),
        "no secret or hash listed"
    );

    let out = credgate(&["client", "disable", id, "--config", &cfg]);
    assert!(out.status.success(), "{:?}", text(&out));
    // Another process's change reaches the gateway's status cache through the replica signal.
    crate::helpers::wait_until(
        "refused within a second of `client disable`",
        std::time::Duration::from_secs(1),
        || async { app.data(token, path).await.status() == 401 },
    )
    .await;
    let list: Value =
        serde_json::from_slice(&credgate(&["client", "list", "--json", "--config", &cfg]).stdout)
            .unwrap();
    let me = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap()
        .clone();
    assert_eq!(me["status"], "disabled");

    let out = credgate(&["client", "enable", id, "--config", &cfg]);
    assert!(out.status.success(), "{:?}", text(&out));
    // Its tokens are served again once the signal reaches the status cache.
    crate::helpers::wait_until(
        "served within a second of `client enable`",
        std::time::Duration::from_secs(1),
        || async { app.data(token, path).await.status() == 200 },
    )
    .await;
    assert_eq!(app.token_for(id, secret).await.status(), 200);
    let out = credgate(&["client", "enable", "cg_nosuch", "--config", &cfg]);
    assert!(!out.status.success());

    let out = credgate(&["client", "disable", "cg_nosuch", "--config", &cfg]);
    assert!(!out.status.success());
    let (_, err) = text(&out);
    assert!(err.contains("no client with id cg_nosuch"), "{err}");
}

#[tokio::test]
async fn the_text_form_of_client_add_prints_the_secret_once_and_the_db_keeps_only_a_hash() {
    let app = TestApp::spawn().await;
    let cfg = config_file(&app);
    let out = credgate(&[
        "client",
        "add",
        "--name",
        "Bank",
        "--org",
        "bank-b",
        "--role",
        "financial_institution",
        "--config",
        &cfg,
    ]);
    let (stdout, _) = text(&out);
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("client_secret:"))
        .unwrap()
        .trim()
        .to_string();
    assert!(secret.len() >= 40);
    // Every stored column of every client, whichever backend; and on SQLite the raw files too.
    let rows = sqlx::query("SELECT id, name, org, role, secret_hash, status FROM clients")
        .fetch_all(app.state.db.pool())
        .await
        .unwrap();
    for r in &rows {
        use sqlx::Row;
        for col in ["id", "name", "org", "role", "secret_hash", "status"] {
            let v: String = r.try_get(col).unwrap();
            assert!(!v.contains(&secret), "secret stored in clear in {col}");
        }
        assert!(
            r.try_get::<String, _>("secret_hash")
                .unwrap()
                .starts_with("$argon2id$")
        );
    }
    if app.state.db.backend() == credgate::storage::Backend::Sqlite {
        let db = std::fs::read(app.dir.path().join("credgate.db")).unwrap();
        let wal = std::fs::read(app.dir.path().join("credgate.db-wal")).unwrap_or_default();
        for bytes in [db, wal] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "secret stored in clear"
            );
        }
    }
}

#[test]
fn bad_client_fields_are_refused_with_the_flag_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!("storage_url = \"sqlite://{}/x.db\"\n", dir.path().display()),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    let out = credgate(&[
        "client",
        "add",
        "--name",
        "x",
        "--org",
        "Bad Org",
        "--role",
        "regulator",
        "--config",
        &cfg,
    ]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("--org"));
    let out = credgate(&[
        "client",
        "add",
        "--name",
        "x",
        "--org",
        "o",
        "--role",
        "regulator",
        "--region",
        "beijing",
        "--config",
        &cfg,
    ]);
    assert!(text(&out).1.contains("--region"));
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\n\n[auth]\ntoken_ttl = 5\n").unwrap();
    let out = credgate(&["serve", "--config", &cfg.display().to_string()]);
    assert!(!out.status.success());
    let (_, err) = text(&out);
    assert!(err.contains("token_ttl") && err.contains("line 4"), "{err}");

    std::fs::write(&cfg, "[auth]\ntoken_ttl_secs = 0\n").unwrap();
    let out = credgate(&["migrate", "--config", &cfg.display().to_string()]);
    assert!(
        text(&out).1.contains("auth.token_ttl_secs"),
        "{:?}",
        text(&out)
    );

    let out = Command::new(env!("CARGO_BIN_EXE_credgate"))
        .args(["migrate", "--config", &cfg.display().to_string()])
        .env("CREDGATE_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert!(text(&out).1.contains("CREDGATE_LISTEN"), "{:?}", text(&out));

    let out = credgate(&["serve", "--config", "/nonexistent/credgate.toml"]);
    assert!(text(&out).1.contains("/nonexistent/credgate.toml"));
}

#[tokio::test]
async fn token_subject_mints_only_with_the_demo_provider() {
    let app = TestApp::spawn().await;
    let cfg = config_file(&app);
    let out = credgate(&[
        "token",
        "subject",
        "--id",
        "11010519491231002X",
        "--type",
        "natural",
        "--config",
        &cfg,
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let (stdout, _) = text(&out);
    let token = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "prints just the token");
    assert_eq!(token.split('.').count(), 3);
    let res = app
        .http
        .get(format!("{}/subject/me", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let out = credgate(&[
        "token",
        "subject",
        "--id",
        "11010519491231002Y",
        "--type",
        "natural",
        "--config",
        &cfg,
    ]);
    assert!(!out.status.success());
    let (_, err) = text(&out);
    assert!(err.contains("--id is not a valid natural id"), "{err}");

    let plain = app.dir.path().join("plain.toml");
    std::fs::write(&plain, "").unwrap();
    let out = credgate(&[
        "token",
        "subject",
        "--id",
        "91350100M000100Y43",
        "--config",
        &plain.display().to_string(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("demo_identity_provider"));
}

#[test]
fn policy_check_accepts_the_shipped_set_and_names_file_and_line_of_a_bad_one() {
    let out = credgate(&[
        "policy",
        "check",
        concat!(env!("CARGO_MANIFEST_DIR"), "/policies"),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("purposes.toml"),
        "[purposes.ok]\nlegal_basis = \"consent\"\n\n[purposes.ok2]\nlegal_basis = \"x\"\n",
    )
    .unwrap();
    let out = credgate(&["policy", "check", &dir.path().display().to_string()]);
    assert!(!out.status.success());
    let (_, err) = text(&out);
    assert!(err.contains("purposes.toml:4"), "{err}");
}

#[test]
fn policy_test_runs_the_shipped_cases_and_fails_on_a_wrong_expectation() {
    let out = credgate(&[
        "policy",
        "test",
        concat!(env!("CARGO_MANIFEST_DIR"), "/policies"),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    crate::helpers::copy_dir(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/policies")),
        dir.path(),
    );
    let cases = dir.path().join("tests/shipped.toml");
    let text_ = std::fs::read_to_string(&cases).unwrap();
    // Claim the public may read persons: the runner must say no.
    std::fs::write(
        &cases,
        text_.replacen(
            "expect = \"deny:dataset-not-allowed\"",
            "expect = \"allow\"",
            1,
        ),
    )
    .unwrap();
    let out = credgate(&["policy", "test", &dir.path().display().to_string()]);
    assert!(!out.status.success());
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("FAIL") && stdout.contains("1 failed"),
        "{stdout}"
    );
}

#[tokio::test]
async fn audit_verify_export_and_archive_work_offline_beside_the_running_gateway() {
    let app = TestApp::spawn().await;
    let cfg = config_file(&app);
    let (_, token) = app.token("regulator").await;
    for _ in 0..3 {
        app.data(&token, "/v1/stores/power/lists/red").await;
    }
    let out = credgate(&["audit", "verify", "--config", &cfg]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], true);
    let n = report["records"].as_u64().unwrap() as usize;
    assert_eq!(n, app.record_count().await);

    let out = credgate(&["audit", "export", "--format", "ndjson", "--config", &cfg]);
    assert_eq!(text(&out).0.lines().count(), n);
    let out = credgate(&["audit", "export", "--format", "csv", "--config", &cfg]);
    assert_eq!(text(&out).0.lines().count(), n + 1);
    let out = credgate(&["audit", "export", "--format", "xml", "--config", &cfg]);
    assert!(!out.status.success());
    let (_, err) = text(&out);
    assert!(err.contains("--format") && err.contains("xml"), "{err}");

    let dir = app.dir.path().join("arch").display().to_string();
    let out = credgate(&["audit", "archive", "--out", &dir, "--config", &cfg]);
    assert!(out.status.success());
    assert!(
        text(&out).0.contains("nothing is older"),
        "fresh records stay"
    );
}

#[tokio::test]
async fn storage_and_listen_flags_override_the_config_file() {
    let app = TestApp::spawn().await;
    // A config whose own storage is elsewhere: --storage points the CLI at the running gateway's.
    let other = app.dir.path().join("other.toml");
    std::fs::write(
        &other,
        format!(
            "storage_url = \"sqlite://{}/elsewhere.db\"\n",
            app.dir.path().display()
        ),
    )
    .unwrap();
    let out = credgate(&[
        "client",
        "add",
        "--name",
        "Flagged",
        "--org",
        "flag-org",
        "--role",
        "regulator",
        "--json",
        "--config",
        &other.display().to_string(),
        "--storage",
        &app.state.config.storage_url,
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        credgate::storage::clients::get(&app.state.db, &id)
            .await
            .unwrap()
            .is_some()
    );
    let out = credgate(&["client", "list", "--storage", "mysql://nope"]);
    assert!(!out.status.success() && text(&out).1.contains("storage_url"));
    let out = credgate(&["serve", "--listen", "not-an-address"]);
    assert!(!out.status.success() && text(&out).1.contains("--listen"));
}

#[tokio::test]
async fn audit_verify_keeps_a_witness_and_finds_the_tail_deleted_with_its_checkpoints() {
    let app = TestApp::spawn_with(|c| c.audit.checkpoint_every = 2).await;
    let cfg = config_file(&app);
    let (_, token) = app.token("regulator").await;
    for _ in 0..6 {
        app.data(&token, "/v1/stores/power/lists/red").await;
    }
    let witness = app.dir.path().join("witness.json");
    let path = witness.display().to_string();
    let out = credgate(&["audit", "verify", "--witness", &path, "--config", &cfg]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "no witness yet: {stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let kept: Value = serde_json::from_slice(&std::fs::read(&witness).unwrap()).unwrap();
    assert_eq!(
        kept, report["last_checkpoint"],
        "the witness is the last checkpoint"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&witness).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let seq = kept["seq"].as_i64().unwrap();
    // With the witness and an untouched log, it verifies again (and keeps the newer one).
    let out = credgate(&["audit", "verify", "--witness", &path, "--config", &cfg]);
    assert!(out.status.success(), "{:?}", text(&out));

    // The tail and its checkpoints deleted: consistent in itself, not with the witness. (The
    // subject index is complete first: it is written behind the path, `audit::indexer`, and
    // this test's blocking CLI runs hold up the in-process indexer.)
    credgate::audit::indexer::catch_up(&app.state.db)
        .await
        .unwrap();
    crate::audit::drop_guards(&app.state.db).await;
    use sqlx::Executor;
    let kept: Value = serde_json::from_slice(&std::fs::read(&witness).unwrap()).unwrap();
    let seq = kept["seq"].as_i64().unwrap().max(seq);
    let cut = seq - 3;
    crate::audit::unindex(&app.state.db, &format!("seq > {cut}")).await;
    for table in ["audit_log", "audit_checkpoints"] {
        app.state
            .db
            .pool()
            .execute(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE seq > {cut}"
            )))
            .await
            .unwrap();
    }
    let out = credgate(&["audit", "verify", "--config", &cfg]);
    assert!(
        out.status.success(),
        "alone, the database looks whole: {:?}",
        text(&out)
    );
    let out = credgate(&["audit", "verify", "--witness", &path, "--config", &cfg]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["first_bad_seq"], seq, "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("checkpoint at record {seq}")),
        "{report}"
    );
    let after: Value = serde_json::from_slice(&std::fs::read(&witness).unwrap()).unwrap();
    assert_eq!(
        after["seq"], seq,
        "a failed verification keeps the old witness"
    );
}

/// Runs `credgate client add` with `role` and `region` on the config `cfg`.
fn add_with(cfg: &str, role: &str, region: Option<&str>) -> Output {
    let mut args = vec![
        "client", "add", "--name", "Bank", "--org", "bank-r", "--role", role, "--json", "--config",
        cfg,
    ];
    if let Some(r) = region {
        args.extend(["--region", r]);
    }
    credgate(&args)
}

/// `client add` registers only what the policies can serve: a role they define and do not
/// reserve, with a region exactly when the role is regionally scoped; policies that do not
/// load register nothing (fail closed).
#[tokio::test]
async fn client_add_checks_the_role_and_region_against_the_policies() {
    let app = TestApp::spawn().await;
    let cfg = config_file(&app);
    let before = credgate::storage::clients::list(&app.state.db)
        .await
        .unwrap()
        .len();
    let out = add_with(&cfg, "no_such_role", None);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("--role") && err.contains("no_such_role") && err.contains("regulator"),
        "names the flag and the roles allowed: {err}"
    );
    let out = add_with(&cfg, "public", None);
    assert!(!out.status.success() && text(&out).1.contains("reserved"));
    let out = add_with(&cfg, "regional_regulator", None);
    let (_, err) = text(&out);
    assert!(!out.status.success() && err.contains("--region"), "{err}");
    let out = add_with(&cfg, "regulator", Some("110000"));
    let (_, err) = text(&out);
    assert!(!out.status.success() && err.contains("--region"), "{err}");
    let out = add_with(&cfg, "regional_regulator", Some("110000"));
    assert!(out.status.success(), "{:?}", text(&out));
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(added["region"], "110000");
    // Policies that do not load: nothing is registered, and the error says where they are.
    let broken = app.dir.path().join("broken.toml");
    let t = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("policy_dir = \"{}/policies\"", app.dir.path().display()),
        &format!("policy_dir = \"{}/nowhere\"", app.dir.path().display()),
    );
    assert!(t.contains("/nowhere\""));
    std::fs::write(&broken, t).unwrap();
    let out = add_with(&broken.display().to_string(), "regulator", None);
    let (_, err) = text(&out);
    assert!(!out.status.success() && err.contains("nowhere"), "{err}");
    let after = credgate::storage::clients::list(&app.state.db)
        .await
        .unwrap()
        .len();
    assert_eq!(after, before + 1, "only the valid client was registered");
}

/// `client rotate-secret`: the new secret is printed once, the old one stops working at once,
/// the client keeps its id and its status.
#[tokio::test]
async fn rotate_secret_prints_a_new_secret_and_the_old_one_stops_working() {
    let app = TestApp::spawn().await;
    let cfg = config_file(&app);
    let out = add_with(&cfg, "regulator", None);
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = added["client_id"].as_str().unwrap();
    let old = added["client_secret"].as_str().unwrap();
    assert_eq!(app.token_for(id, old).await.status(), 200);
    let out = credgate(&["client", "rotate-secret", id, "--json", "--config", &cfg]);
    assert!(out.status.success(), "{:?}", text(&out));
    let rotated: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rotated["client_id"], id);
    let new = rotated["client_secret"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(app.token_for(id, old).await.status(), 401);
    assert_eq!(app.token_for(id, new).await.status(), 200);
    // The text form, once more: the secret on its own line, said to be shown once.
    let out = credgate(&["client", "rotate-secret", id, "--config", &cfg]);
    let (stdout, _) = text(&out);
    assert!(
        out.status.success() && stdout.contains("shown only this once"),
        "{stdout}"
    );
    assert_eq!(app.token_for(id, new).await.status(), 401);
    let out = credgate(&["client", "rotate-secret", "cg_nosuch", "--config", &cfg]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("no client with id cg_nosuch"));
}

#[tokio::test]
async fn policy_check_with_config_checks_the_directory_the_config_names() {
    let app = TestApp::spawn().await;
    let cfg = config_file(&app);
    let out = credgate(&["policy", "check", "--config", &cfg]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("{}/policies", app.dir.path().display())),
        "{stdout}"
    );
    std::fs::write(
        app.dir.path().join("policies/purposes.toml"),
        "[purposes.ok]\nlegal_basis = \"x\"\n",
    )
    .unwrap();
    let out = credgate(&["policy", "check", "--config", &cfg]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("purposes.toml"), "{:?}", text(&out));
    // A directory and a config at once is ambiguous.
    let out = credgate(&["policy", "check", "policies", "--config", &cfg]);
    assert!(!out.status.success());
}

/// Every flag and argument of every subcommand says what it is, and a flag with a fixed set
/// of values lists them in `--help` (checked on the real binary's help output).
#[test]
fn every_flag_has_help_and_fixed_values_are_listed() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, clap::Command)>) {
        out.push((path.clone(), cmd.clone()));
        for sub in cmd.get_subcommands() {
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            walk(sub, p, out);
        }
    }
    let mut all = vec![];
    walk(&credgate::cli::Cli::command(), vec![], &mut all);
    assert!(all.len() > 20, "{}", all.len());
    let mut missing = vec![];
    for (path, cmd) in &all {
        for arg in cmd.get_arguments() {
            let name = arg.get_id().as_str();
            if matches!(name, "help" | "version") {
                continue;
            }
            if arg.get_help().is_none() {
                missing.push(format!("{} {name}", path.join(" ")));
            }
            let fixed = !arg.get_possible_values().is_empty() && arg.get_action().takes_values();
            if fixed {
                let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
                args.push("--help");
                let help = text(&credgate(&args)).0;
                assert!(
                    help.contains("possible values"),
                    "{} {name}: {help}",
                    path.join(" ")
                );
            }
        }
    }
    assert!(missing.is_empty(), "flags without help: {missing:#?}");
}

/// Every time the CLI prints is RFC 3339 (UTC), beside any microsecond count it keeps.
#[tokio::test]
async fn times_in_cli_output_are_rfc3339() {
    let app = TestApp::spawn().await;
    let cfg = config_file(&app);
    let (_, token) = app.token("regulator").await;
    app.data(&token, "/v1/stores/power/lists/red").await;
    let is_rfc3339 = |v: &Value| {
        v.as_str().is_some_and(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
                && s.ends_with('Z')
        })
    };
    let list: Value =
        serde_json::from_slice(&credgate(&["client", "list", "--json", "--config", &cfg]).stdout)
            .unwrap();
    let first = &list.as_array().unwrap()[0];
    assert!(is_rfc3339(&first["created_at"]), "{first}");
    let listed = text(&credgate(&["client", "list", "--config", &cfg])).0;
    let line = listed.lines().next().unwrap();
    assert!(
        line.split_whitespace().any(|w| is_rfc3339(&Value::from(w))),
        "{line}"
    );
    let export = text(&credgate(&["audit", "export", "--config", &cfg])).0;
    let record: Value = serde_json::from_str(export.lines().next().unwrap()).unwrap();
    assert!(is_rfc3339(&record["time"]), "{record}");
    let verify: Value =
        serde_json::from_str(&text(&credgate(&["audit", "verify", "--config", &cfg])).0).unwrap();
    if verify.get("last_checkpoint").is_some_and(|c| !c.is_null()) {
        assert!(is_rfc3339(&verify["last_checkpoint"]["time"]), "{verify}");
    }
}

/// `credgate audit export | head -1` and `credgate client list | head -1`: the reader goes
/// away, and the command ends quietly (no panic, no error line).
#[tokio::test]
async fn a_closed_pipe_ends_the_output_quietly() {
    use std::io::{BufRead, BufReader};
    let app = TestApp::spawn().await;
    let cfg = config_file(&app);
    let (_, token) = app.token("regulator").await;
    // Well over a pipe's buffer (64 KiB) of records, so the writer meets the closed pipe.
    for _ in 0..160 {
        app.data(&token, "/v1/stores/power/lists/red").await;
    }
    for _ in 0..120 {
        credgate::cli::add_client(&app.state.db, &"n".repeat(190), "o", "regulator", None)
            .await
            .unwrap();
    }
    for args in [
        vec!["audit", "export", "--config", &cfg],
        vec!["client", "list", "--config", &cfg],
        vec!["client", "list", "--json", "--config", &cfg],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_credgate"))
            .args(&args)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("error") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
    }
}

/// `serve` checks the config and the policies before it creates anything: a bad policy
/// directory leaves no database file and no key directory behind.
#[test]
fn serve_with_bad_policies_creates_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/purposes.toml"),
        "[purposes.ok]\nlegal_basis = \"x\"\n",
    )
    .unwrap();
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nmetrics_listen = \"off\"\nstorage_url = \"sqlite://{d}/gw.db\"\nkey_dir = \"{d}/keys\"\npolicy_dir = \"{d}/policies\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let out = credgate(&["serve", "--config", &cfg.display().to_string()]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("purposes.toml"), "{:?}", text(&out));
    assert!(!dir.path().join("gw.db").exists(), "no database file");
    assert!(!dir.path().join("keys").exists(), "no key directory");
}

/// `client add --tls-cert FILE` / `--tls-thumbprint`: a client without a secret, registered by
/// its certificate's thumbprint (RFC 8705 tls_client_auth); a bad file or thumbprint, both
/// flags at once, and rotating the secret it does not have are refused.
#[tokio::test]
async fn client_add_registers_a_tls_client_by_certificate_or_thumbprint() {
    let app = TestApp::spawn().await;
    let cfg = config_file(&app);
    let ca = credgate::demo_tls::Ca::new("cli CA").unwrap();
    let cert = ca.client("cert-bank").unwrap();
    let pem = app.dir.path().join("client.pem");
    std::fs::write(&pem, &cert.cert_pem).unwrap();
    let der = app.dir.path().join("client.der");
    std::fs::write(&der, &cert.der).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &cert.der);
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, digest);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    let add = |extra: &[&str]| {
        let mut args = vec!["client", "add", "--name", "Cert bank", "--org", "cert-bank"];
        args.extend_from_slice(&["--role", "regulator", "--json", "--config", &cfg]);
        args.extend_from_slice(extra);
        credgate(&args)
    };
    let out = add(&["--tls-cert", pem.to_str().unwrap()]);
    assert!(out.status.success(), "{}", explain(&out));
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(added["tls_thumbprint"], b64.as_str());
    assert_eq!(added["token_endpoint_auth_method"], "tls_client_auth");
    assert!(added.get("client_secret").is_none(), "{added}");
    let id = added["client_id"].as_str().unwrap().to_string();
    let stored = credgate::storage::clients::get(&app.state.db, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.tls_thumbprint.as_deref(), Some(b64.as_str()));
    // The same certificate again (DER, hex with colons): one certificate, one client.
    for again in [
        vec!["--tls-cert", der.to_str().unwrap()],
        vec!["--tls-thumbprint", &hex.join(":")],
    ] {
        let out = add(&again);
        assert!(!out.status.success(), "{again:?}: {}", explain(&out));
        assert!(
            text(&out).1.contains("already registered"),
            "{again:?}: refused as a second client of one certificate: {}",
            explain(&out)
        );
    }
    let other = ca.client("other").unwrap();
    let d = ring::digest::digest(&ring::digest::SHA256, &other.der);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let out = add(&["--tls-thumbprint", &hex]);
    assert!(out.status.success(), "{}", explain(&out));
    let junk = app.dir.path().join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let both = format!("--tls-thumbprint={b64}");
    for bad in [
        vec!["--tls-thumbprint", "abc"],
        vec!["--tls-thumbprint", &"z".repeat(64)],
        vec!["--tls-cert", junk.to_str().unwrap()],
        vec!["--tls-cert", "/nonexistent/cert.pem"],
        // `=`: a base64url thumbprint starts with `-` one time in 64, and clap reads a
        // separate `-C6f...` as a flag ("unexpected argument '-C' found", seen in a run).
        vec!["--tls-cert", pem.to_str().unwrap(), &both],
    ] {
        let out = add(&bad);
        assert!(!out.status.success(), "{bad:?}: {}", explain(&out));
        assert!(
            text(&out).1.contains("--tls-"),
            "{bad:?}: {}",
            explain(&out)
        );
    }
    let out = credgate(&["client", "rotate-secret", &id, "--config", &cfg]);
    assert!(!out.status.success(), "{}", explain(&out));
    assert!(
        text(&out).1.contains("tls_client_auth"),
        "{}",
        explain(&out)
    );
}

/// A base64url thumbprint that starts with `-` (one in 64) is a value given as a separate
/// argument, not a flag: clap once refused it with "unexpected argument".
#[tokio::test]
async fn client_add_takes_a_thumbprint_that_starts_with_a_hyphen() {
    let app = TestApp::spawn().await;
    let cfg = config_file(&app);
    let thumbprint = format!("-{}", "A".repeat(42));
    let out = credgate(&[
        "client",
        "add",
        "--name",
        "Hyphen bank",
        "--org",
        "hyphen-bank",
        "--role",
        "regulator",
        "--json",
        "--config",
        &cfg,
        "--tls-thumbprint",
        &thumbprint,
    ]);
    assert!(out.status.success(), "{}", explain(&out));
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(added["tls_thumbprint"], thumbprint.as_str());
    let id = added["client_id"].as_str().unwrap();
    let stored = credgate::storage::clients::get(&app.state.db, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.tls_thumbprint.as_deref(), Some(thumbprint.as_str()));
}
