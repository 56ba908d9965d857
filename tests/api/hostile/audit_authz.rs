//! Hostile-input tests: see mod.rs. Here: exports, alerts, replicas' reloads, the authorization
//! matrix and tampering with the audit log.

use crate::helpers::TestApp;

/// Payloads a spreadsheet would run as formulas, with either separator.
const FORMULAS: &[&str] = &[
    "x;=cmd|'/C'!A0",
    "x,=cmd|'/C'!A0",
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
    let (_, bank) = app.token("financial_institution").await;
    for payload in FORMULAS {
        // A caller's own request id (the record keeps it as sent) and a path they sent: text
        // an attacker chose. (A malformed client id is no longer kept at all.)
        app.http
            .get(format!("{}/v1/stores/power/entities?page_size=1", app.url))
            .bearer_auth(&bank)
            .header("X-Purpose", "lending")
            .header("X-Request-Id", *payload)
            .send()
            .await
            .unwrap();
    }
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
    let header = csv::Reader::from_reader(csv.as_bytes())
        .headers()
        .unwrap()
        .clone();
    let col = header
        .iter()
        .position(|h| h == "caller_request_id")
        .expect("the export has the caller's request id");
    assert!(
        rows.iter().any(|r| &r[col] == "x;'=cmd|'/C'!A0"),
        "the caller's request id stays one cell"
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
    let what = format!("a {rule} alert");
    crate::helpers::wait_until(&what, std::time::Duration::from_secs(30), || async {
        !alerts_of(app, officer, rule).await.is_empty()
    })
    .await;
    alerts_of(app, officer, rule).await.pop().unwrap()
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
    // Light use: one entity read again and again, and one other. Each entity read touches two
    // subjects (the company and its legal representative): four in all.
    for _ in 0..10 {
        public_entity(&app, &uscc(0)).await;
    }
    public_entity(&app, &uscc(1)).await;
    crate::helpers::alerts_caught_up(&app, &officer).await;
    assert!(
        alerts_of(&app, &officer, "many-subjects").await.is_empty(),
        "four distinct subjects stay under the threshold of six"
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
    crate::helpers::alerts_caught_up(&app, &officer).await;
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
        assert_eq!(
            app.data(&token, "/v1/stores/power/lists/red")
                .await
                .status(),
            200
        );
    }
    app.data(&token, "/v1/stores/power/entities/91350100M000100Y99")
        .await;
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
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
    crate::helpers::alerts_caught_up(&app, &officer).await;
    let all = alerts_of(&app, &officer, "t4-outside-hours").await;
    assert_eq!(all.len(), 1, "once per client and window: {all:?}");
    assert_eq!(a["client_id"], reg_id.as_str());
    assert_eq!(a["audit_ids"], serde_json::json!([released[0]]), "{a}");
}

/// Polls `check` for up to `secs` seconds.
async fn eventually<F, Fut>(secs: u64, what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    crate::helpers::wait_until(what, std::time::Duration::from_secs(secs), check).await;
}

#[tokio::test]
async fn a_replica_whose_refresh_failed_tries_again_until_it_succeeds() {
    use sqlx::Executor;
    let app = TestApp::spawn().await;
    let other = app.sibling().await;
    let uscc = app.sample().entities[4]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
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
    let marked = || {
        other
            .state
            .marks
            .annotation("power", credgate::domain::SubjectType::Legal, &uscc)
            .is_some()
    };
    eventually(2, "the other replica marks the record", || async {
        marked()
    })
    .await;

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
    let failed = || {
        other
            .state
            .seen
            .failures(credgate::storage::signals::OBJECTIONS)
    };
    crate::helpers::wait_until(
        "the refresh failed",
        std::time::Duration::from_secs(30),
        || {
            let n = failed();
            async move { n >= 1 }
        },
    )
    .await;
    assert!(marked(), "the refresh failed, the old marks stay");
    db.execute("ALTER TABLE objections_away RENAME TO objections")
        .await
        .unwrap();
    // No new signal: only a retry can bring the replica up to date.
    eventually(
        6,
        "the other replica retries and drops the mark",
        || async { !marked() },
    )
    .await;
}

#[tokio::test]
async fn a_replica_whose_policy_files_break_at_signal_time_is_not_ready_until_they_load() {
    let app = TestApp::spawn().await;
    let own = app.dir.path().join("policies-b");
    crate::helpers::copy_dir(&app.dir.path().join("policies"), &own);
    let other = app.sibling_with(|c| c.policy_dir = own.clone()).await;
    let (_, officer) = app.token("system_admin").await;
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

// ---------------------------------------------------------------------------------------------
// Item 23: the authorization matrix.

/// Who may call a route.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum May {
    /// Institutions of exactly these roles.
    Role(&'static [&'static str]),
    /// A data subject with a subject token (about their own items).
    Subject,
}

/// Every `/admin` and `/subject` route (DESIGN.md "HTTP contract", the routers in
/// src/web/admin.rs, src/web/subject.rs and src/workflows/*.rs), one line each: method,
/// path (`{name}` is a fixture's id), who may call it, and a valid body, so that a refusal
/// comes from the authorization and not from the body. A role DESIGN.md names that arrives
/// later (auditor, system_admin) changes the `May` of its lines; the wrong roles tried are every
/// role of the loaded policy set, so a new role is tried everywhere without a line here.
fn matrix() -> Vec<(&'static str, &'static str, May, Option<serde_json::Value>)> {
    use serde_json::json;
    const OFFICER: May = May::Role(&["security_officer"]);
    const HANDLER: May = May::Role(&["objection_handler"]);
    const ADMIN: May = May::Role(&["system_admin"]);
    const READERS: May = May::Role(&["security_officer", "auditor"]);
    let transition = || Some(json!({"to": "investigating", "note": "n"}));
    vec![
        ("POST", "/admin/policies/reload", ADMIN, None),
        ("GET", "/admin/audit", READERS, None),
        ("GET", "/admin/audit/export?format=csv", READERS, None),
        ("GET", "/admin/audit/verify", READERS, None),
        (
            "POST",
            "/admin/lockdown",
            OFFICER,
            Some(json!({"org": "other-org", "reason": "x"})),
        ),
        ("GET", "/admin/lockdown", OFFICER, None),
        ("DELETE", "/admin/lockdown/{lockdown}", OFFICER, None),
        ("GET", "/admin/clients", ADMIN, None),
        ("POST", "/admin/clients/{client}/disable", ADMIN, None),
        ("GET", "/admin/alerts", READERS, None),
        ("POST", "/admin/alerts/{alert}/ack", OFFICER, None),
        ("GET", "/admin/objections", HANDLER, None),
        ("GET", "/admin/objections/{objection}", HANDLER, None),
        (
            "POST",
            "/admin/objections/{objection}/transitions",
            HANDLER,
            Some(json!({"to": "accepted", "note": "n"})),
        ),
        ("GET", "/admin/complaints", HANDLER, None),
        ("GET", "/admin/complaints/{complaint}", HANDLER, None),
        (
            "POST",
            "/admin/complaints/{complaint}/transitions",
            HANDLER,
            transition(),
        ),
        ("GET", "/admin/reports", HANDLER, None),
        ("GET", "/admin/reports/{report}", HANDLER, None),
        (
            "POST",
            "/admin/reports/{report}/transitions",
            HANDLER,
            transition(),
        ),
        ("GET", "/subject/me", May::Subject, None),
        ("GET", "/subject/consents", May::Subject, None),
        (
            "POST",
            "/subject/consents",
            May::Subject,
            Some(
                json!({"grantee_org": "demo-bank", "purpose": "lending", "expires_at": in_30_days()}),
            ),
        ),
        ("DELETE", "/subject/consents/{consent}", May::Subject, None),
        ("GET", "/subject/access-log", May::Subject, None),
        ("GET", "/subject/objections", May::Subject, None),
        (
            "POST",
            "/subject/objections",
            May::Subject,
            Some(json!({"store": "power", "dataset": "entity", "record_ref": "x", "reason": "r"})),
        ),
        ("GET", "/subject/objections/{objection}", May::Subject, None),
        (
            "POST",
            "/subject/objections/{objection}/withdraw",
            May::Subject,
            None,
        ),
        ("GET", "/subject/complaints", May::Subject, None),
        (
            "POST",
            "/subject/complaints",
            May::Subject,
            Some(
                json!({"against_org": "nosy-bank", "category": "purpose_misuse", "description": "d"}),
            ),
        ),
        ("GET", "/subject/complaints/{complaint}", May::Subject, None),
    ]
}

/// Everything a refused request could have changed, as sorted text lines.
async fn snapshot(app: &TestApp) -> Vec<String> {
    let queries = [
        "SELECT id, status FROM clients",
        "SELECT id, COALESCE(CAST(revoked_at AS TEXT), '-') FROM consents",
        "SELECT id, COALESCE(CAST(lifted_at AS TEXT), '-') FROM lockdowns",
        "SELECT id, COALESCE(CAST(acked_at AS TEXT), '-') FROM alerts",
        "SELECT id, status FROM objections",
        "SELECT id, status FROM complaints",
        "SELECT id, status FROM reports",
        "SELECT item_id, to_status FROM workflow_events",
        "SELECT id, objection_id FROM outbox",
        "SELECT topic, CAST(version AS TEXT) FROM replica_signals",
    ];
    let mut lines = Vec::new();
    for q in queries {
        let rows: Vec<(String, String)> = sqlx::query_as(q)
            .fetch_all(app.state.db.pool())
            .await
            .unwrap();
        lines.extend(rows.into_iter().map(|(a, b)| format!("{q}: {a} {b}")));
    }
    lines.sort();
    lines
}

/// The items the routes' `{name}`s refer to, filed by `company` (and `person`'s consent).
async fn fixtures(
    app: &TestApp,
    officer: &str,
    company: &str,
    person: &str,
) -> std::collections::HashMap<&'static str, String> {
    use serde_json::json;
    let post = |path: &str, token: Option<&str>, body: serde_json::Value| {
        let mut req = app.http.post(format!("{}{path}", app.url)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let path = path.to_string();
        async move {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 201, "fixture {path}");
            res.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let uscc = app.sample().entities[4]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ids = std::collections::HashMap::new();
    let objection =
        json!({"store": "power", "dataset": "entity", "record_ref": uscc, "reason": "r"});
    ids.insert(
        "objection",
        post("/subject/objections", Some(company), objection).await,
    );
    let complaint =
        json!({"against_org": "nosy-bank", "category": "purpose_misuse", "description": "d"});
    ids.insert(
        "complaint",
        post("/subject/complaints", Some(company), complaint).await,
    );
    let consent =
        json!({"grantee_org": "demo-bank", "purpose": "lending", "expires_at": in_30_days()});
    ids.insert(
        "consent",
        post("/subject/consents", Some(person), consent).await,
    );
    let report = json!({"about": "a", "category": "false_records", "description": "d"});
    ids.insert("report", post("/public/reports", None, report).await);
    let lock = json!({"org": "victim-org", "reason": "fixture"});
    ids.insert(
        "lockdown",
        post("/admin/lockdown", Some(officer), lock).await,
    );
    ids.insert("client", app.add_client("regulator").await.0);
    credgate::audit::alerts::insert(&app.state.db, "fixture", None, "d", &[])
        .await
        .unwrap();
    let alert: String = sqlx::query_scalar("SELECT id FROM alerts WHERE rule = 'fixture'")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap();
    ids.insert("alert", alert);
    ids
}

/// Who calls, in the matrix.
#[derive(Clone, Debug)]
enum Caller {
    Nobody,
    /// The subject who filed the fixtures.
    Owner,
    /// Another data subject.
    OtherSubject,
    /// An active client of this role.
    Role(String),
    /// A client of this role, disabled after its token was issued.
    Disabled(&'static str),
}

/// What `caller` must get from a route `may` calls (`None`: allowed, not part of the matrix).
fn expected(may: May, path: &str, caller: &Caller) -> Option<u16> {
    match (may, caller) {
        (_, Caller::Nobody) => Some(401),
        (May::Role(_), Caller::Owner | Caller::OtherSubject) => Some(401),
        (May::Role(r), Caller::Role(role)) => (!r.contains(&role.as_str())).then_some(403),
        (May::Role(r), Caller::Disabled(role)) => r.contains(role).then_some(401),
        (May::Subject, Caller::Owner) => None,
        // Another subject's item is as absent as a missing one.
        (May::Subject, Caller::OtherSubject) => path.contains('{').then_some(404),
        (May::Subject, _) => Some(401),
    }
}

/// A client of `role`, with a token issued before anything happens to it.
async fn client_with_token(app: &TestApp, role: &str) -> Option<(String, String)> {
    let (record, secret) =
        credgate::cli::add_client(&app.state.db, "Matrix", "test-org", role, None)
            .await
            .ok()?;
    let res = app.token_for(&record.id, &secret).await;
    if res.status() != 200 {
        return None;
    }
    let body: serde_json::Value = res.json().await.unwrap();
    Some((record.id, body["access_token"].as_str()?.to_string()))
}

#[tokio::test]
async fn every_admin_and_subject_route_refuses_every_wrong_caller_changes_nothing_and_records_it() {
    use credgate::domain::SubjectType;
    let app = TestApp::spawn_with(|c| {
        // The refusals are the point here: keep the alert rules out of the state compared.
        c.alerts.denials = usize::MAX;
        c.rate_limits.per_client_per_minute = 100_000;
    })
    .await;
    let (_, officer) = app.token("security_officer").await;
    let (_, admin) = app.token("system_admin").await;
    let company_id = app.sample().entities[4]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let company = app.subject_token(&company_id, SubjectType::Legal);
    let person_id = app.sample().persons[1]["id_number"]
        .as_str()
        .unwrap()
        .to_string();
    let person = app.subject_token(&person_id, SubjectType::Natural);
    let other = app.subject_token(
        app.sample().entities[5]["uscc"].as_str().unwrap(),
        SubjectType::Legal,
    );
    let ids = fixtures(&app, &officer, &company, &person).await;

    let mut callers: Vec<(Caller, Option<String>)> = vec![
        (Caller::Nobody, None),
        (Caller::Owner, Some(company.clone())),
        (Caller::OtherSubject, Some(other)),
    ];
    let roles: Vec<String> = app
        .state
        .policies()
        .role_names()
        .iter()
        .map(|r| r.to_string())
        .collect();
    for role in roles {
        // A role no client can hold (the anonymous `public` role) has no token to try.
        if let Some((_, token)) = client_with_token(&app, &role).await {
            callers.push((Caller::Role(role), Some(token)));
        }
    }
    for role in [
        "security_officer",
        "objection_handler",
        "system_admin",
        "auditor",
    ] {
        let (id, token) = client_with_token(&app, role).await.unwrap();
        let res = app
            .http
            .post(format!("{}/admin/clients/{id}/disable", app.url))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        callers.push((Caller::Disabled(role), Some(token)));
        // No lockdown reaches a staff role (a disabled client is how one is stopped).
        let (id, _) = client_with_token(&app, role).await.unwrap();
        let res = app
            .http
            .post(format!("{}/admin/lockdown", app.url))
            .bearer_auth(&officer)
            .json(&serde_json::json!({"client_id": id, "reason": "matrix"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 409);
    }

    let before = snapshot(&app).await;
    let mut wrong = Vec::new();
    let mut tried = 0;
    for (method, template, may, body) in matrix() {
        let mut path = template.to_string();
        for (name, id) in &ids {
            path = path.replace(&format!("{{{name}}}"), id);
        }
        for (caller, token) in &callers {
            let Some(want) = expected(may, template, caller) else {
                continue;
            };
            tried += 1;
            let mut req = app
                .http
                .request(method.parse().unwrap(), format!("{}{path}", app.url));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = &body {
                req = req.json(b);
            }
            let res = req.send().await.unwrap();
            let got = res.status().as_u16();
            let what = format!("{method} {template} by {caller:?}");
            if got != want {
                wrong.push(format!("{what}: {got}, not {want}"));
                continue;
            }
            let Some(audit_id) = res.headers().get("x-audit-id") else {
                wrong.push(format!("{what}: no X-Audit-Id"));
                continue;
            };
            let r = app.record(audit_id.to_str().unwrap()).await;
            if (r.decision.as_str(), r.status) != ("deny", want) {
                wrong.push(format!("{what}: recorded as {} {}", r.decision, r.status));
            }
        }
    }
    let who: Vec<&Caller> = callers.iter().map(|(c, _)| c).collect();
    eprintln!("authorization matrix: {tried} refusals, callers {who:?}");
    assert!(
        wrong.is_empty(),
        "{} of {tried} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(tried > 250, "the matrix ran: {tried} refusals");
    assert_eq!(snapshot(&app).await, before, "a refusal changed something");

    // The allowed caller does get through each read: the routes and fixtures are real.
    for (method, template, may, _) in matrix().into_iter().filter(|r| r.0 == "GET") {
        let mut path = template.to_string();
        for (name, id) in &ids {
            path = path.replace(&format!("{{{name}}}"), id);
        }
        let token = match may {
            May::Subject => company.clone(),
            May::Role(roles) => app.token(roles[0]).await.1,
        };
        let res = app
            .http
            .get(format!("{}{path}", app.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{method} {template} by {may:?}");
    }
}

fn in_30_days() -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::days(30))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Item 24: every tamper kind. Edit, delete, insert, reorder, tail and the consistent re-chain
// before a checkpoint are in tests/api/audit.rs.

async fn report_of(app: &TestApp) -> credgate::audit::verify::ChainVerdict {
    credgate::audit::verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap()
}

async fn against(
    app: &TestApp,
    witness: &credgate::audit::verify::Witness,
) -> credgate::audit::verify::ChainVerdict {
    credgate::audit::verify::verify_against(&app.state.db, &app.state.audit_public_key, witness)
        .await
        .unwrap()
}

async fn run(app: &TestApp, statements: &[&str]) {
    use sqlx::Executor;
    for s in statements {
        app.state
            .db
            .pool()
            .execute(sqlx::AssertSqlSafe(*s))
            .await
            .unwrap();
    }
}

/// A log with checkpoints, and the witness an officer kept from its last verification.
async fn witnessed() -> (TestApp, credgate::audit::verify::Witness) {
    let app = crate::audit::tamperable().await;
    let before = report_of(&app).await;
    assert!(before.ok, "{before:?}");
    let witness = before
        .last_checkpoint
        .clone()
        .expect("a checkpoint to keep");
    assert!(
        against(&app, &witness).await.ok,
        "an untouched log holds its witness"
    );
    (app, witness)
}

#[tokio::test]
async fn a_tail_deleted_with_its_checkpoints_is_found_against_a_kept_witness() {
    let (app, witness) = witnessed().await;
    crate::audit::unindex(&app.state.db, "seq > 7").await;
    run(
        &app,
        &[
            "DELETE FROM audit_log WHERE seq > 7",
            "DELETE FROM audit_checkpoints WHERE seq > 7",
        ],
    )
    .await;
    // The database alone shows a consistent, shorter log: this is what the witness is for.
    let r = report_of(&app).await;
    assert!(r.ok, "{r:?}");
    let r = against(&app, &witness).await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.first_bad_seq, Some(witness.seq));
    assert!(r.reason.unwrap().contains("no longer holds"));
}

#[tokio::test]
async fn checkpoints_truncated_and_the_chain_recomputed_are_found_against_a_kept_witness() {
    let app = TestApp::spawn_with(|c| c.audit.checkpoint_every = 5).await;
    let (_, token) = app.token("regulator").await;
    for _ in 0..11 {
        app.data(&token, "/v1/stores/power/lists/red").await;
    }
    let witness = report_of(&app).await.last_checkpoint.unwrap();
    match app.state.db.backend() {
        // TRUNCATE has its own statement guard: dropped with the others first.
        credgate::storage::Backend::Postgres => {
            crate::audit::drop_guards(&app.state.db).await;
            run(&app, &["TRUNCATE audit_checkpoints"]).await;
        }
        credgate::storage::Backend::Sqlite => {
            crate::audit::drop_guards(&app.state.db).await;
            run(&app, &["DELETE FROM audit_checkpoints"]).await;
        }
    }
    crate::audit::rechain_from(&app.state.db, 3, "innocent-org").await;
    let alone = report_of(&app).await;
    assert!(
        alone.ok && alone.checkpoints == 0,
        "consistent in itself: {alone:?}"
    );
    let r = against(&app, &witness).await;
    assert!(!r.ok, "{r:?}");
    assert!(r.reason.unwrap().contains("no longer holds"));
}

#[tokio::test]
async fn an_emptied_log_is_found_against_a_kept_witness() {
    let (app, witness) = witnessed().await;
    run(
        &app,
        &[
            "DELETE FROM audit_subjects",
            "DELETE FROM audit_subject_steps",
            "DELETE FROM audit_log",
            "DELETE FROM audit_checkpoints",
        ],
    )
    .await;
    let alone = report_of(&app).await;
    assert!(alone.ok && alone.records == 0, "{alone:?}");
    assert!(!against(&app, &witness).await.ok);
    // A witness this log's key did not sign proves nothing.
    let mut forged = witness.clone();
    forged.seq += 1;
    let r = against(&crate::audit::tamperable().await, &forged).await;
    assert!(r.reason.unwrap().contains("not signed"));
}

#[tokio::test]
async fn a_forged_archive_row_that_unlocks_deletion_is_found() {
    // The guards stay in place: the archive row is what they trust to permit deletes.
    let app = TestApp::spawn_with(|c| c.audit.checkpoint_every = 5).await;
    let (_, token) = app.token("regulator").await;
    for _ in 0..11 {
        app.data(&token, "/v1/stores/power/lists/red").await;
    }
    run(
        &app,
        &[
            "INSERT INTO audit_archives (upto_seq, hash, archived_at, file_name, records, writer_id, upto_chain_seq) \
             SELECT seq, hash, 0, 'none', seq, writer_id, chain_seq FROM audit_checkpoints WHERE seq = (SELECT MAX(seq) FROM audit_checkpoints)",
            "DELETE FROM audit_subjects WHERE seq <= (SELECT MAX(upto_seq) FROM audit_archives)",
            "DELETE FROM audit_subject_steps WHERE last_seq <= (SELECT MAX(upto_seq) FROM audit_archives)",
            "DELETE FROM audit_log WHERE seq <= (SELECT MAX(upto_seq) FROM audit_archives)",
        ],
    )
    .await;
    let r = report_of(&app).await;
    assert!(!r.ok, "records deleted under a forged archive row: {r:?}");
    assert!(r.reason.unwrap().contains("forged archive row"));
}

#[tokio::test]
async fn edits_to_the_subject_index_are_found() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("financial_institution").await;
    let uscc = app.sample().entities[3]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .data(&token, &format!("/v1/stores/power/entities/{uscc}"))
        .await;
    let read = app
        .record(res.headers()["x-audit-id"].to_str().unwrap())
        .await;
    // The company and its legal representative.
    assert_eq!(read.subjects.len(), 2, "{:?}", read.subjects);
    assert_eq!(read.subjects[0], uscc);
    let res = app.data(&token, "/v1/stores/power/lists/red").await;
    let other = app
        .record(res.headers()["x-audit-id"].to_str().unwrap())
        .await;
    // The index is written behind the path (`audit::indexer`): these edits are to its rows.
    credgate::audit::indexer::catch_up(&app.state.db)
        .await
        .unwrap();
    assert!(report_of(&app).await.ok);

    // The read hidden from the subject's access log: the step row that indexes it for the
    // subject (migration 0090) rewritten without it.
    crate::audit::drop_guards(&app.state.db).await;
    let db = &app.state.db;
    let (first, last, seqs): (i64, i64, String) = sqlx::query_as(
        "SELECT first_seq, last_seq, seqs FROM audit_subject_steps \
         WHERE subject_id = $1 AND first_seq <= $2 AND last_seq >= $2",
    )
    .bind(&uscc)
    .bind(read.seq)
    .fetch_one(db.pool())
    .await
    .unwrap();
    let all: Vec<i64> = serde_json::from_str(&seqs).unwrap();
    assert!(all.contains(&read.seq), "{seqs}");
    let rest: Vec<i64> = all.iter().copied().filter(|s| *s != read.seq).collect();
    let drop_row = |last: i64| {
        format!("DELETE FROM audit_subject_steps WHERE subject_id = '{uscc}' AND last_seq = {last}")
    };
    run(&app, &[&drop_row(last)]).await;
    if !rest.is_empty() {
        crate::audit::plant_step(db, &uscc, &read.writer_id, &rest).await;
    }
    let r = report_of(&app).await;
    assert!(!r.ok);
    assert_eq!(r.first_bad_seq, Some(read.seq));
    assert!(r.reason.unwrap().contains("subject index"));
    if let Some(&l) = rest.iter().max() {
        run(&app, &[&drop_row(l)]).await;
    }
    crate::audit::plant_step_raw(db, &uscc, &read.writer_id, (first, last), &seqs).await;
    assert!(report_of(&app).await.ok, "restored");

    // Someone else's request planted in the subject's access log: a step row of its own.
    crate::audit::plant_step(db, &uscc, &other.writer_id, &[other.seq]).await;
    let r = report_of(&app).await;
    assert!(!r.ok);
    assert_eq!(r.first_bad_seq, Some(other.seq));
    assert!(r.reason.unwrap().contains("subject index"));
    run(&app, &[&drop_row(other.seq)]).await;
    assert!(report_of(&app).await.ok, "restored");

    // The same in the rows written before migration 0090, which are still read.
    run(
        &app,
        &[&format!(
            "INSERT INTO audit_subjects (subject_id, seq) VALUES ('{uscc}', {})",
            other.seq
        )],
    )
    .await;
    let r = report_of(&app).await;
    assert!(!r.ok);
    assert_eq!(r.first_bad_seq, Some(other.seq));
}

// ---------------------------------------------------------------------------------------------
// Gaps closed after the merge: TRUNCATE and the subject index are guarded, the access log
// trusts only the records, the off-hours alert reads what was released.

/// The database error `statement` raises, as text (it must raise one).
async fn refused(app: &TestApp, statement: &str) -> String {
    use sqlx::Executor;
    match app
        .state
        .db
        .pool()
        .execute(sqlx::AssertSqlSafe(statement))
        .await
    {
        Ok(done) => panic!("`{statement}` was not refused ({done:?})"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn truncating_any_audit_table_is_refused_on_postgresql() {
    let app = TestApp::spawn_with(|c| c.audit.checkpoint_every = 1).await;
    let (_, token) = app.token("regulator").await;
    app.data(&token, "/v1/stores/power/lists/red").await;
    // SQLite has no TRUNCATE (its `DELETE FROM t` is refused by the row guards, tested
    // below and in tests/api/audit.rs): this part runs on PostgreSQL only.
    if app.state.db.backend() != credgate::storage::Backend::Postgres {
        return;
    }
    for table in [
        "audit_log",
        "audit_checkpoints",
        "audit_archives",
        "audit_subjects",
        "audit_subject_steps",
    ] {
        let e = refused(&app, &format!("TRUNCATE {table}")).await;
        assert!(e.contains("is append-only"), "TRUNCATE {table}: {e}");
    }
    assert!(report_of(&app).await.ok, "nothing was truncated");
    assert!(app.record_count().await > 0);
}

#[tokio::test]
async fn rows_of_the_subject_index_cannot_be_updated_or_deleted() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("financial_institution").await;
    let uscc = app.sample().entities[3]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .data(&token, &format!("/v1/stores/power/entities/{uscc}"))
        .await;
    let read = app
        .record(res.headers()["x-audit-id"].to_str().unwrap())
        .await;
    // A row as written before migration 0090 (the indexer writes step rows since; both are
    // read, both guarded).
    sqlx::query("INSERT INTO audit_subjects (subject_id, seq) VALUES ($1, $2)")
        .bind(&uscc)
        .bind(read.seq)
        .execute(app.state.db.pool())
        .await
        .unwrap();
    credgate::audit::indexer::catch_up(&app.state.db)
        .await
        .unwrap();
    let row = format!("seq = {} AND subject_id = '{uscc}'", read.seq);
    let e = refused(
        &app,
        &format!("UPDATE audit_subjects SET seq = seq + 1000 WHERE {row}"),
    )
    .await;
    assert!(e.contains("audit_subjects is append-only"), "{e}");
    let e = refused(&app, &format!("DELETE FROM audit_subjects WHERE {row}")).await;
    assert!(e.contains("audit_subjects is append-only"), "{e}");
    let e = refused(&app, "DELETE FROM audit_subjects").await;
    assert!(e.contains("audit_subjects is append-only"), "{e}");
    let step = format!(
        "subject_id = '{uscc}' AND first_seq <= {0} AND last_seq >= {0}",
        read.seq
    );
    for stmt in [
        format!("UPDATE audit_subject_steps SET seqs = '[1]' WHERE {step}"),
        format!("UPDATE audit_subject_steps SET last_seq = last_seq + 1000 WHERE {step}"),
        format!("DELETE FROM audit_subject_steps WHERE {step}"),
        "DELETE FROM audit_subject_steps".into(),
    ] {
        let e = refused(&app, &stmt).await;
        assert!(
            e.contains("audit_subject_steps is append-only"),
            "{stmt}: {e}"
        );
    }
    assert!(report_of(&app).await.ok, "the index is untouched");
}

#[tokio::test]
async fn a_planted_subject_index_row_does_not_show_someone_elses_request() {
    let app = TestApp::spawn().await;
    let (_, bank) = app.token("financial_institution").await;
    let (_, regulator) = app.token("regulator").await;
    let mine = app.sample().entities[3]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let theirs = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    app.data(&bank, &format!("/v1/stores/power/entities/{mine}"))
        .await;
    let res = app
        .data(&regulator, &format!("/v1/stores/power/entities/{theirs}"))
        .await;
    let other = app
        .record(res.headers()["x-audit-id"].to_str().unwrap())
        .await;
    assert!(!other.subjects.contains(&mine), "{:?}", other.subjects);
    crate::audit::drop_guards(&app.state.db).await;
    run(
        &app,
        &[&format!(
            "INSERT INTO audit_subjects (subject_id, seq) VALUES ('{mine}', {})",
            other.seq
        )],
    )
    .await;
    // And as a step row (migration 0090), what the indexer writes now.
    crate::audit::plant_step(&app.state.db, &mine, &other.writer_id, &[other.seq]).await;
    let subject = app.subject_token(&mine, credgate::domain::SubjectType::Legal);
    let log: serde_json::Value = app
        .http
        .get(format!("{}/subject/access-log", app.url))
        .bearer_auth(&subject)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let roles: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["financial_institution"],
        "only the read the records name: {log}"
    );
}

/// Reads the fake store's document about `uscc`; answers the read's audit id.
async fn doc_read(app: &TestApp, token: &str, uscc: &str) -> String {
    let res = app
        .data(token, &format!("/v1/stores/fake/doc/{uscc}"))
        .await;
    assert_eq!(res.status(), 200);
    res.headers()["x-audit-id"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn no_off_hours_alert_when_the_answer_carried_no_t4_field() {
    let app = TestApp::spawn_with(|c| {
        c.alerts.work_start_hour = 0;
        c.alerts.work_end_hour = 0;
    })
    .await;
    let (reg_id, secret) = app.add_client("regulator").await;
    let token: serde_json::Value = app.token_for(&reg_id, &secret).await.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap().to_string();
    let (_, officer) = app.token("security_officer").await;
    const USCC: &str = "91350100M000100Y43";
    // The catalog's entity dataset has T4 fields; this answer has none of them.
    *app.fake.doc.lock().unwrap() = serde_json::json!({"uscc": USCC, "name": "测试"});
    for _ in 0..3 {
        doc_read(&app, &token, USCC).await;
    }
    // Then the store answers a T4 field (the revenue), released clear to the regulator.
    *app.fake.doc.lock().unwrap() =
        serde_json::json!({"uscc": USCC, "name": "测试", "annual_revenue": 1_000_000});
    let t4 = doc_read(&app, &token, USCC).await;
    // The analyzer judges in commit order: had any earlier read raised the alert, the one
    // alert of the window would cite it.
    let a = first_alert(&app, &officer, "t4-outside-hours").await;
    assert_eq!(a["audit_ids"], serde_json::json!([t4]), "{a}");
    assert_eq!(alerts_of(&app, &officer, "t4-outside-hours").await.len(), 1);
}
