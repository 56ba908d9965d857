//! Separation of duties (DESIGN.md, "Who uses it"): every staff route answers each kind of
//! caller as the roles table says, only the auditor sees records of staff actions, and a
//! refused call is attributed to its caller.

use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};
use credgate::domain::SubjectType;

const OFFICER: &str = "security_officer";
const AUDITOR: &str = "auditor";
const ADMIN: &str = "system_admin";
const HANDLER: &str = "objection_handler";
const BANK: &str = "financial_institution";
const SUBJECT: &str = "subject";
const NOBODY: &str = "no token";

/// Every kind of caller the table distinguishes.
const CALLERS: [&str; 7] = [OFFICER, AUDITOR, ADMIN, HANDLER, BANK, SUBJECT, NOBODY];

struct Callers {
    tokens: Vec<(&'static str, Option<String>)>,
}

impl Callers {
    async fn new(app: &TestApp) -> Self {
        let mut tokens = Vec::new();
        for who in CALLERS {
            let token = match who {
                NOBODY => None,
                SUBJECT => {
                    let uscc = app.sample().entities[0]["uscc"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    Some(app.subject_token(&uscc, SubjectType::Legal))
                }
                role => Some(app.token(role).await.1),
            };
            tokens.push((who, token));
        }
        Self { tokens }
    }
}

async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = app
        .http
        .request(method.parse().unwrap(), format!("{}{}", app.url, path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.unwrap()
}

/// One row of the roles table: the route, who may call it, and what they get. Everyone else
/// with a gateway token gets 403, a subject token or no token 401.
struct Row {
    method: &'static str,
    path: String,
    allowed: &'static [&'static str],
    ok: u16,
    body: Option<Value>,
}

fn row(method: &'static str, path: &str, allowed: &'static [&'static str], ok: u16) -> Row {
    Row {
        method,
        path: path.to_string(),
        allowed,
        ok,
        body: None,
    }
}

const READERS: &[&str] = &[OFFICER, AUDITOR];

/// The DESIGN.md table, route by route. An unknown id answers 404 to an allowed caller: the
/// role check passed, and nothing else was touched.
async fn table(app: &TestApp) -> Vec<Row> {
    let (victim, _) = app.add_client(BANK).await;
    let lock = json!({"org": "nobody-org", "reason": "roles test"});
    vec![
        row("GET", "/admin/audit", READERS, 200),
        row("GET", "/admin/audit/export?format=csv", READERS, 200),
        row("GET", "/admin/audit/export?format=ndjson", READERS, 200),
        row("GET", "/admin/audit/verify", READERS, 200),
        row("GET", "/admin/alerts", READERS, 200),
        row("POST", "/admin/alerts/al_nosuch/ack", &[OFFICER], 404),
        Row {
            body: Some(lock),
            ..row("POST", "/admin/lockdown", &[OFFICER], 201)
        },
        row("GET", "/admin/lockdown", &[OFFICER], 200),
        row("DELETE", "/admin/lockdown/ld_nosuch", &[OFFICER], 404),
        row("GET", "/admin/clients", &[ADMIN], 200),
        row(
            "POST",
            &format!("/admin/clients/{victim}/disable"),
            &[ADMIN],
            200,
        ),
        row(
            "POST",
            &format!("/admin/clients/{victim}/enable"),
            &[ADMIN],
            200,
        ),
        row("POST", "/admin/policies/reload", &[ADMIN], 200),
        row("GET", "/admin/objections", &[HANDLER], 200),
        row("GET", "/admin/complaints", &[HANDLER], 200),
        row("GET", "/admin/reports", &[HANDLER], 200),
    ]
}

fn expected(r: &Row, who: &str) -> u16 {
    if r.allowed.contains(&who) {
        r.ok
    } else if who == SUBJECT || who == NOBODY {
        401
    } else {
        403
    }
}

#[tokio::test]
async fn every_staff_route_answers_each_caller_as_the_roles_table_says() {
    let app = TestApp::spawn().await;
    let callers = Callers::new(&app).await;
    let mut wrong = Vec::new();
    for r in table(&app).await {
        for (who, token) in &callers.tokens {
            let res = call(&app, r.method, &r.path, token.as_deref(), r.body.as_ref()).await;
            let got = res.status().as_u16();
            let want = expected(&r, who);
            if got != want {
                wrong.push(format!(
                    "{} {} as {who}: {got}, want {want}",
                    r.method, r.path
                ));
                continue;
            }
            if got == 403 {
                let p = assert_problem(res, 403).await;
                assert!(
                    p["detail"].as_str().unwrap().contains(r.allowed[0]),
                    "a refusal names who may call: {p}"
                );
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The kinds of the records a reader gets from search and from both export formats.
async fn kinds_seen(app: &TestApp, token: &str) -> [Vec<String>; 3] {
    let search = app.audit(token, "limit=1000").await;
    let search = search["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_string())
        .collect();
    let ndjson = call(
        app,
        "GET",
        "/admin/audit/export?format=ndjson",
        Some(token),
        None,
    )
    .await;
    assert_eq!(ndjson.status(), 200);
    let ndjson = ndjson
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let csv = call(
        app,
        "GET",
        "/admin/audit/export?format=csv",
        Some(token),
        None,
    )
    .await;
    assert_eq!(csv.status(), 200);
    let text = csv.text().await.unwrap();
    let mut rows = csv::Reader::from_reader(text.as_bytes());
    let at = rows
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "kind")
        .unwrap();
    let csv = rows.records().map(|r| r.unwrap()[at].to_string()).collect();
    [search, ndjson, csv]
}

#[tokio::test]
async fn only_the_auditor_sees_records_of_staff_actions() {
    let app = TestApp::spawn().await;
    let (_, officer) = app.token(OFFICER).await;
    let (_, auditor) = app.token(AUDITOR).await;
    let (_, bank) = app.token(BANK).await;
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .data(&bank, &format!("/v1/stores/power/entities/{uscc}"))
        .await;
    assert_eq!(res.status(), 200);
    // Staff actions: the officer's own work and reads.
    let lock = json!({"org": "nobody-org", "reason": "roles test"});
    let res = call(&app, "POST", "/admin/lockdown", Some(&officer), Some(&lock)).await;
    assert_eq!(res.status(), 201);
    let res = call(&app, "GET", "/admin/alerts", Some(&officer), None).await;
    assert_eq!(res.status(), 200);

    for (form, kinds) in ["search", "ndjson", "csv"]
        .iter()
        .zip(kinds_seen(&app, &officer).await)
    {
        assert!(kinds.iter().any(|k| k == "data"), "{form}: {kinds:?}");
        assert!(
            kinds.iter().all(|k| k != "admin"),
            "an officer's {form} shows no staff action: {kinds:?}"
        );
    }
    for (form, kinds) in ["search", "ndjson", "csv"]
        .iter()
        .zip(kinds_seen(&app, &auditor).await)
    {
        assert!(kinds.iter().any(|k| k == "data"), "{form}: {kinds:?}");
        assert!(
            kinds.iter().any(|k| k == "admin"),
            "the auditor's {form} shows staff actions: {kinds:?}"
        );
    }
    // Filters cannot lift the rule: asking for the officer's own org still hides its acts.
    let mine = app.audit(&officer, "org=test-org&limit=1000").await;
    assert!(
        mine["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["kind"] != "admin"),
        "{mine}"
    );
}

#[tokio::test]
async fn a_refused_staff_call_is_recorded_under_its_caller() {
    let app = TestApp::spawn().await;
    let (admin_id, admin) = app.token(ADMIN).await;
    let res = call(&app, "GET", "/admin/audit", Some(&admin), None).await;
    assert_eq!(res.status(), 403);
    let audit_id = res.headers()["x-audit-id"].to_str().unwrap().to_string();
    let r = app.record(&audit_id).await;
    assert_eq!(r.client_id.as_deref(), Some(admin_id.as_str()));
    assert_eq!(r.role.as_deref(), Some(ADMIN));
    assert_eq!(r.org.as_deref(), Some("test-org"));
    assert_eq!(r.decision, "deny");
    assert_eq!(r.rule.as_deref(), Some("audit-reader-only"));

    let (auditor_id, auditor) = app.token(AUDITOR).await;
    let res = call(&app, "POST", "/admin/policies/reload", Some(&auditor), None).await;
    assert_eq!(res.status(), 403);
    let r = app
        .record(res.headers()["x-audit-id"].to_str().unwrap())
        .await;
    assert_eq!(r.client_id.as_deref(), Some(auditor_id.as_str()));
    assert_eq!(r.rule.as_deref(), Some("system-admin-only"));
}

/// A locked-down client is refused after its token was checked: the refusal names it (before
/// extractors, the lockdown refusal was recorded with no client at all).
#[tokio::test]
async fn a_lockdown_refusal_is_recorded_under_the_locked_client() {
    let app = TestApp::spawn().await;
    let (_, officer) = app.token(OFFICER).await;
    let (bank_id, bank) = app.token(BANK).await;
    let lock = json!({"client_id": bank_id, "reason": "roles test"});
    let res = call(&app, "POST", "/admin/lockdown", Some(&officer), Some(&lock)).await;
    assert_eq!(res.status(), 201);
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .data(&bank, &format!("/v1/stores/power/entities/{uscc}"))
        .await;
    assert_eq!(res.status(), 403);
    let r = app
        .record(res.headers()["x-audit-id"].to_str().unwrap())
        .await;
    assert_eq!(r.client_id.as_deref(), Some(bank_id.as_str()));
    assert_eq!(r.role.as_deref(), Some(BANK));
    assert_eq!(r.rule.as_deref(), Some("lockdown"));
}

#[tokio::test]
async fn lockdowns_and_clients_are_listed_without_secrets() {
    let app = TestApp::spawn().await;
    let (_, officer) = app.token(OFFICER).await;
    let (_, admin) = app.token(ADMIN).await;
    let (bank_id, bank_secret) = app.add_client(BANK).await;
    let lock = json!({"client_id": bank_id, "reason": "roles test"});
    let res = call(&app, "POST", "/admin/lockdown", Some(&officer), Some(&lock)).await;
    assert_eq!(res.status(), 201);
    let made: Value = res.json().await.unwrap();

    let res = call(&app, "GET", "/admin/lockdown", Some(&officer), None).await;
    assert_eq!(res.status(), 200);
    let listed: Value = res.json().await.unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["id"], made["id"]);
    assert_eq!(items[0]["client_id"], bank_id.as_str());
    let id = made["id"].as_str().unwrap();
    let res = call(
        &app,
        "DELETE",
        &format!("/admin/lockdown/{id}"),
        Some(&officer),
        None,
    )
    .await;
    assert_eq!(res.status(), 204);
    let res = call(&app, "GET", "/admin/lockdown", Some(&officer), None).await;
    let listed: Value = res.json().await.unwrap();
    assert_eq!(
        listed["items"],
        json!([]),
        "a lifted lockdown is not in force"
    );

    let res = call(&app, "GET", "/admin/clients", Some(&admin), None).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(!text.contains(&bank_secret), "no secret: {text}");
    assert!(!text.contains("argon2"), "no hash: {text}");
    assert!(!text.to_lowercase().contains("secret"), "{text}");
    let listed: Value = serde_json::from_str(&text).unwrap();
    let bank = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == bank_id.as_str())
        .unwrap();
    assert_eq!(bank["role"], BANK);
    assert_eq!(bank["status"], "active");
}
