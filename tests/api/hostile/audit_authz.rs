//! Hostile-input tests: see mod.rs. Here: exports, alerts, replicas' reloads, the authorization
//! matrix and tampering with the audit log.

use crate::helpers::TestApp;

/// Payloads a spreadsheet would run as formulas, with either separator.
const FORMULAS: &[&str] = &[
    "x;=cmd|'/C calc'!A0",
    "x,=cmd|'/C calc'!A0",
    "=HYPERLINK(\"http://evil\")",
    "a; +1+2",
    "b,\"@SUM(1)",
    "-2+3",
];

/// Reads `raw` as a spreadsheet would under `sep`: once honouring quotes (what Excel and
/// LibreOffice do), once splitting every line on `sep` blindly. No cell may start a formula.
fn assert_no_formula_cell(raw: &str, what: &str) {
    for sep in [b',', b';'] {
        let mut r = csv::ReaderBuilder::new()
            .delimiter(sep)
            .has_headers(false)
            .flexible(true)
            .from_reader(raw.as_bytes());
        let mut cells: Vec<String> = Vec::new();
        for rec in r.records() {
            cells.extend(rec.unwrap().iter().map(str::to_string));
        }
        for line in raw.lines() {
            cells.extend(line.split(sep as char).map(str::to_string));
        }
        for cell in &cells {
            let start = cell.trim_start_matches([' ', '"']);
            assert!(
                !start.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{what}: under `{}` the cell {cell:?} is a formula",
                sep as char
            );
        }
    }
}

#[tokio::test]
async fn csv_exports_carry_no_formula_under_either_separator() {
    let app = TestApp::spawn().await;
    for payload in FORMULAS {
        // A client id an attacker chose (a failed login records it) and a path they sent.
        app.token_for(payload, "x").await;
    }
    let (_, bank) = app.token("financial_institution").await;
    app.data(&bank, "/v1/stores/power/a;=1+2;@x,-3").await;
    let (_, officer) = app.token("security_officer").await;
    let csv = app
        .http
        .get(format!("{}/admin/audit/export?format=csv", app.url))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.contains("cmd|"), "the payloads are in the export");
    assert_no_formula_cell(&csv, "GET /admin/audit/export");
    // Officers still read the value: one quoted cell, defused, under `,`.
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(csv.as_bytes())
        .records()
        .map(|r| r.unwrap())
        .collect();
    assert!(
        rows.iter().any(|r| &r[5] == "x;'=cmd|'/C calc'!A0"),
        "the client id stays one cell"
    );

    let cfg = crate::cli::config_file(&app);
    let out = crate::cli::credgate(&["audit", "export", "--format", "csv", "--config", &cfg]);
    let (stdout, stderr) = crate::cli::text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("cmd|"));
    assert_no_formula_cell(&stdout, "credgate audit export");
}

/// The alerts of `rule`, open or acknowledged.
async fn alerts_of(app: &TestApp, officer: &str, rule: &str) -> Vec<serde_json::Value> {
    let body: serde_json::Value = app
        .http
        .get(format!("{}/admin/alerts?status=all", app.url))
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
        .filter(|a| a["rule"] == rule)
        .cloned()
        .collect()
}

/// Polls until an alert of `rule` exists, for up to six seconds.
async fn first_alert(app: &TestApp, officer: &str, rule: &str) -> serde_json::Value {
    for _ in 0..60 {
        if let Some(a) = alerts_of(app, officer, rule).await.pop() {
            return a;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no {rule} alert");
}

async fn public_entity(app: &TestApp, uscc: &str) -> reqwest::Response {
    let res = app
        .http
        .get(format!("{}/public/stores/power/entities/{uscc}", app.url))
        .header("X-Purpose", "public_disclosure")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res
}

#[tokio::test]
async fn an_address_harvesting_the_public_tier_is_alerted_and_light_use_is_not() {
    let app = TestApp::spawn_with(|c| {
        c.alerts.scrape_subjects = 6;
        c.alerts.work_start_hour = 0;
        c.alerts.work_end_hour = 24;
        c.alerts.work_days = (1..=7).collect();
    })
    .await;
    let (_, officer) = app.token("security_officer").await;
    let data = app.sample();
    let uscc = |i: usize| data.entities[i]["uscc"].as_str().unwrap().to_string();
    // Light use: one entity read again and again, and a few others.
    for _ in 0..10 {
        public_entity(&app, &uscc(0)).await;
    }
    for i in 1..5 {
        public_entity(&app, &uscc(i)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert!(
        alerts_of(&app, &officer, "many-subjects").await.is_empty(),
        "five distinct subjects stay under the threshold of six"
    );
    // Harvesting: ten more entities from the same address.
    let mut harvested = Vec::new();
    for i in 5..15 {
        let res = public_entity(&app, &uscc(i)).await;
        harvested.push(res.headers()["x-audit-id"].to_str().unwrap().to_string());
    }
    let a = first_alert(&app, &officer, "many-subjects").await;
    assert_eq!(a["client_id"], serde_json::Value::Null, "{a}");
    assert!(a["detail"].as_str().unwrap().contains("127.0.0.1"), "{a}");
    let cited: Vec<String> = serde_json::from_value(a["audit_ids"].clone()).unwrap();
    assert!(cited.contains(&harvested[0]), "{a}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        alerts_of(&app, &officer, "many-subjects").await.len(),
        1,
        "one alert per address and window"
    );
}

#[tokio::test]
async fn the_off_hours_alert_fires_once_on_t4_released_and_never_without_it() {
    // Working hours that never come: every request is off hours.
    let app = TestApp::spawn_with(|c| {
        c.alerts.work_start_hour = 0;
        c.alerts.work_end_hour = 0;
    })
    .await;
    let (reg_id, secret) = app.add_client("regulator").await;
    let token: serde_json::Value = app.token_for(&reg_id, &secret).await.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap().to_string();
    let (_, officer) = app.token("security_officer").await;
    // A T4-cleared role, off hours, but nothing of T4 released: a list with no T4 field, a
    // record that does not exist, a denied purpose.
    for _ in 0..3 {
        assert_eq!(app.data(&token, "/v1/stores/power/lists/red").await.status(), 200);
    }
    app.data(&token, "/v1/stores/power/entities/91350100M000100Y99").await;
    let uscc = app.sample().entities[0]["uscc"].as_str().unwrap().to_string();
    let denied = app
        .http
        .get(format!("{}/v1/stores/power/entities/{uscc}", app.url))
        .bearer_auth(&token)
        .header("X-Purpose", "marketing")
        .send()
        .await
        .unwrap();
    assert!(denied.status().is_client_error());
    // Then T4 released clear (an entity's revenue), three times.
    let mut released = Vec::new();
    for _ in 0..3 {
        let res = app
            .data(&token, &format!("/v1/stores/power/entities/{uscc}"))
            .await;
        assert_eq!(res.status(), 200);
        released.push(res.headers()["x-audit-id"].to_str().unwrap().to_string());
    }
    let a = first_alert(&app, &officer, "t4-outside-hours").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let all = alerts_of(&app, &officer, "t4-outside-hours").await;
    assert_eq!(all.len(), 1, "once per client and window: {all:?}");
    assert_eq!(a["client_id"], reg_id.as_str());
    assert_eq!(a["audit_ids"], serde_json::json!([released[0]]), "{a}");
}

/// Polls `check` for up to `secs` seconds.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !check().await {
        assert!(std::time::Instant::now() < until, "not within {secs} s: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_replica_whose_refresh_failed_tries_again_until_it_succeeds() {
    use sqlx::Executor;
    let app = TestApp::spawn().await;
    let other = app.sibling().await;
    let uscc = app.sample().entities[4]["uscc"].as_str().unwrap().to_string();
    let subject = app.subject_token(&uscc, credgate::domain::SubjectType::Legal);
    let res = app
        .http
        .post(format!("{}/subject/objections", app.url))
        .bearer_auth(&subject)
        .json(&serde_json::json!({"store": "power", "dataset": "entity", "record_ref": uscc, "reason": "有误"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let id = res.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let marked = || other.state.marks.annotation("power", &uscc).is_some();
    eventually(2, "the other replica marks the record", || async { marked() }).await;

    // The objection is withdrawn behind the replicas' backs, and when the change is signalled
    // the marks cannot be read (the table is away): every replica's refresh fails.
    let db = app.state.db.pool();
    sqlx::query("UPDATE objections SET status = 'withdrawn' WHERE id = $1")
        .bind(&id)
        .execute(db)
        .await
        .unwrap();
    db.execute("ALTER TABLE objections RENAME TO objections_away")
        .await
        .unwrap();
    credgate::storage::signals::bump(db, credgate::storage::signals::OBJECTIONS, None)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert!(marked(), "the refresh failed, the old marks stay");
    db.execute("ALTER TABLE objections_away RENAME TO objections")
        .await
        .unwrap();
    // No new signal: only a retry can bring the replica up to date.
    eventually(6, "the other replica retries and drops the mark", || async {
        !marked()
    })
    .await;
}

#[tokio::test]
async fn a_replica_whose_policy_files_break_at_signal_time_is_not_ready_until_they_load() {
    let app = TestApp::spawn().await;
    let own = app.dir.path().join("policies-b");
    crate::helpers::copy_dir(&app.dir.path().join("policies"), &own);
    let other = app.sibling_with(|c| c.policy_dir = own.clone()).await;
    let (_, officer) = app.token("security_officer").await;
    let good = std::fs::read_to_string(own.join("roles.toml")).unwrap();
    std::fs::write(own.join("roles.toml"), "[roles.broken\n").unwrap();
    let res = app
        .http
        .post(format!("{}/admin/policies/reload", app.url))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let status = |url: String| {
        let http = app.http.clone();
        async move {
            http.get(format!("{url}/readyz"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    eventually(2, "the replica reports the divergence", || {
        let f = status(other.url.clone());
        async move { f.await == 503 }
    })
    .await;
    std::fs::write(own.join("roles.toml"), good).unwrap();
    eventually(6, "the replica loads the files once they are whole", || {
        let f = status(other.url.clone());
        async move { f.await == 200 }
    })
    .await;
}
