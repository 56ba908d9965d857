//! Hostile-input tests: see mod.rs. Workflows and mutations: a change whose audit record cannot
//! be written does not happen (issue 13, item 14), objection flooding (item 5), identifiers that
//! carry their type (item 11) and the sealed contact's length (item 22).

use credgate::domain::SubjectType;
use serde_json::{Value, json};
use sqlx::Executor;

use crate::helpers::{TestApp, assert_problem};

fn in_days(d: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::days(d))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = app.http.request(method, format!("{}{path}", app.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> reqwest::Response {
    send(app, reqwest::Method::POST, path, Some(token), Some(body)).await
}

async fn created(res: reqwest::Response) -> Value {
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    body
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
        .fetch_one(app.state.db.pool())
        .await
        .unwrap()
}

/// Every piece of state a mutation can leave behind, counted.
async fn fingerprint(app: &TestApp) -> Vec<i64> {
    let mut out = Vec::new();
    for sql in [
        "SELECT COUNT(*) FROM consents",
        "SELECT COUNT(*) FROM consents WHERE revoked_at IS NOT NULL",
        "SELECT COUNT(*) FROM objections",
        "SELECT COUNT(*) FROM objections WHERE status <> 'submitted'",
        "SELECT COUNT(*) FROM workflow_events",
        "SELECT COUNT(*) FROM outbox",
        "SELECT COUNT(*) FROM complaints",
        "SELECT COUNT(*) FROM complaints WHERE status <> 'submitted'",
        "SELECT COUNT(*) FROM reports",
        "SELECT COUNT(*) FROM reports WHERE status <> 'received'",
        "SELECT COUNT(*) FROM requests",
        "SELECT COUNT(*) FROM requests WHERE status <> 'submitted'",
        "SELECT COUNT(*) FROM lockdowns",
        "SELECT COUNT(*) FROM lockdowns WHERE lifted_at IS NOT NULL",
        "SELECT COUNT(*) FROM clients WHERE status = 'disabled'",
        "SELECT COUNT(*) FROM alerts WHERE acked_at IS NOT NULL",
        "SELECT version FROM replica_signals WHERE topic = 'policies'",
    ] {
        out.push(count(app, sql).await);
    }
    out
}

async fn break_log(app: &TestApp) {
    app.state
        .db
        .pool()
        .execute("ALTER TABLE audit_log RENAME TO audit_log_gone")
        .await
        .unwrap();
}

async fn mend_log(app: &TestApp) {
    app.state
        .db
        .pool()
        .execute("ALTER TABLE audit_log_gone RENAME TO audit_log")
        .await
        .unwrap();
}

async fn assert_unavailable(res: reqwest::Response, what: &str) {
    assert!(res.headers().get("x-audit-id").is_none(), "{what}");
    let body = assert_problem(res, 503).await;
    assert_eq!(
        body["type"], "urn:credgate:problem:audit-unavailable",
        "{what}: {body}"
    );
}

struct World {
    app: TestApp,
    subject: String,
    officer: String,
    handler: String,
    consent: String,
    objection: String,
    withdrawable: String,
    complaint: String,
    request: String,
    report: String,
    lockdown: String,
    victim: String,
    /// A client disabled before the log breaks, for `enable`.
    disabled: String,
}

async fn world() -> World {
    let app = TestApp::spawn_with(|c| c.workflows.poll_ms = 60_000).await;
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let subject = app.subject_token(&uscc, SubjectType::Legal);
    let (_, officer) = app.token("security_officer").await;
    let (_, handler) = app.token("objection_handler").await;
    let (victim, _) = app.add_client("bank").await;
    let consent = created(
        post(
            &app,
            "/subject/consents",
            &subject,
            json!({"grantee_org": "bank-a", "purpose": "lending", "expires_at": in_days(30)}),
        )
        .await,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut objections = Vec::new();
    for store in ["power", "fake"] {
        let o = post(
            &app,
            "/subject/objections",
            &subject,
            json!({"store": store, "dataset": "entity", "record_ref": uscc, "reason": "wrong"}),
        )
        .await;
        objections.push(created(o).await["id"].as_str().unwrap().to_string());
    }
    let complaint = created(
        post(
            &app,
            "/subject/complaints",
            &subject,
            json!({"against_org": "bank-a", "category": "other", "description": "why"}),
        )
        .await,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let request = created(
        post(
            &app,
            "/subject/requests",
            &subject,
            json!({"kind": "repair", "store": "power", "dataset": "entity", "record_ref": uscc,
                   "reason": "repaired"}),
        )
        .await,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let report = created(
        send(
            &app,
            reqwest::Method::POST,
            "/public/reports",
            None,
            Some(json!({"about": "x", "category": "other", "description": "y"})),
        )
        .await,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let lockdown = created(
        post(
            &app,
            "/admin/lockdown",
            &officer,
            json!({"org": "org-under-watch", "reason": "test"}),
        )
        .await,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    sqlx::query(
        "INSERT INTO alerts (id, rule, client_id, detail, audit_ids, created_at) \
         VALUES ('al_test', 'volume', NULL, 'test', '[]', 1)",
    )
    .execute(app.state.db.pool())
    .await
    .unwrap();
    let (disabled, _) = app.add_client("bank").await;
    sqlx::query("UPDATE clients SET status = 'disabled' WHERE id = $1")
        .bind(&disabled)
        .execute(app.state.db.pool())
        .await
        .unwrap();
    World {
        app,
        subject,
        officer,
        handler,
        consent,
        objection: objections[0].clone(),
        withdrawable: objections[1].clone(),
        complaint,
        request,
        report,
        lockdown,
        victim,
        disabled,
    }
}

/// Item 14: every mutation, tried while the log cannot be written, answers 503 and leaves no
/// trace once the log is back; the chain stays whole.
#[tokio::test]
async fn a_mutation_whose_record_cannot_be_written_does_not_happen() {
    let w = world().await;
    let app = &w.app;
    let (uscc, s, o, h) = (
        app.sample().entities[0]["uscc"]
            .as_str()
            .unwrap()
            .to_string(),
        w.subject.as_str(),
        w.officer.as_str(),
        w.handler.as_str(),
    );
    // Clients and policies are the system administrator's (separation of duties).
    let admin = app.token("system_admin").await.1;
    let a = admin.as_str();
    let before = fingerprint(app).await;
    let answer = public_entity(app, &uscc).await;
    hide_founding_date_from_the_public(app);
    break_log(app).await;
    let del = reqwest::Method::DELETE;
    let tries: Vec<(&str, reqwest::Response)> = vec![
        ("consent grant", post(app, "/subject/consents", s,
            json!({"grantee_org": "bank-b", "purpose": "lending", "expires_at": in_days(30)})).await),
        ("consent revoke", send(app, del.clone(), &format!("/subject/consents/{}", w.consent), Some(s), None).await),
        ("objection", post(app, "/subject/objections", s,
            json!({"store": "power", "dataset": "entity", "record_ref": uscc, "reason": "again"})).await),
        ("withdraw", post(app, &format!("/subject/objections/{}/withdraw", w.withdrawable), s, json!({})).await),
        ("objection transition", post(app, &format!("/admin/objections/{}/transitions", w.objection), h,
            json!({"to": "accepted"})).await),
        ("complaint", post(app, "/subject/complaints", s,
            json!({"against_org": "bank-a", "category": "other", "description": "again"})).await),
        ("complaint transition", post(app, &format!("/admin/complaints/{}/transitions", w.complaint), h,
            json!({"to": "investigating"})).await),
        ("request", post(app, "/subject/requests", s,
            json!({"kind": "deletion", "store": "power", "dataset": "entity", "record_ref": uscc, "reason": "again"})).await),
        ("request transition", post(app, &format!("/admin/requests/{}/transitions", w.request), h,
            json!({"to": "accepted"})).await),
        ("report", send(app, reqwest::Method::POST, "/public/reports", None,
            Some(json!({"about": "x", "category": "other", "description": "z"}))).await),
        ("report transition", post(app, &format!("/admin/reports/{}/transitions", w.report), h,
            json!({"to": "investigating"})).await),
        ("lockdown", post(app, "/admin/lockdown", o, json!({"org": "bank-a", "reason": "x"})).await),
        ("lockdown lift", send(app, del, &format!("/admin/lockdown/{}", w.lockdown), Some(o), None).await),
        ("client disable", post(app, &format!("/admin/clients/{}/disable", w.victim), a, json!({})).await),
        ("alert ack", post(app, "/admin/alerts/al_test/ack", o, json!({})).await),
        ("policy reload", post(app, "/admin/policies/reload", a, json!({})).await),
        ("client enable", post(app, &format!("/admin/clients/{}/enable", w.disabled), a, json!({})).await),
    ];
    for (what, res) in tries {
        assert_unavailable(res, what).await;
    }
    mend_log(app).await;
    assert_eq!(fingerprint(app).await, before, "no trace of any change");
    assert_eq!(
        public_entity(app, &uscc).await,
        answer,
        "the old policy set still serves"
    );
    let report = credgate::audit::verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    // Writable again: the same change goes through, recorded.
    let res = post(
        app,
        "/admin/lockdown",
        o,
        json!({"org": "bank-a", "reason": "x"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    assert!(res.headers().get("x-audit-id").is_some());
    let res = post(app, "/admin/policies/reload", a, json!({})).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-audit-id").is_some());
    let now = public_entity(app, &uscc).await;
    assert_eq!(now["established"].as_str().unwrap().len(), 7, "{now}");
}

/// Item 14: the state is checked again inside the change's transaction. Of concurrent moves of
/// one objection exactly one wins; every loser is 409 and recorded, and one delivery is queued.
#[tokio::test]
async fn concurrent_transitions_one_wins_every_answer_is_recorded() {
    let w = world().await;
    let app = &w.app;
    let path = format!("/admin/objections/{}/transitions", w.objection);
    let answers = futures_util::future::join_all(
        (0..8).map(|_| post(app, &path, &w.handler, json!({"to": "accepted"}))),
    )
    .await;
    let mut ok = 0;
    for res in answers {
        let audit_id = res.headers().get("x-audit-id").cloned();
        assert!(audit_id.is_some(), "every answer is recorded");
        match res.status().as_u16() {
            200 => ok += 1,
            409 => {
                let rec = app.record(audit_id.unwrap().to_str().unwrap()).await;
                assert_eq!((rec.status, rec.decision.as_str()), (409, "deny"));
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(count(app, "SELECT COUNT(*) FROM outbox").await, 1);
    let report = credgate::audit::verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert!(
        report.ok,
        "refused changes left the chain whole: {report:?}"
    );
}

/// Issue 14 item 5: every workflow moves through the one guarded move. Of concurrent moves of
/// one complaint, request or report exactly one wins; every loser is 409 and recorded, and the
/// history has one step more.
#[tokio::test]
async fn concurrent_moves_of_every_workflow_one_wins() {
    let w = world().await;
    let app = &w.app;
    for (kind, id, to) in [
        ("complaints", &w.complaint, "investigating"),
        ("requests", &w.request, "accepted"),
        ("reports", &w.report, "investigating"),
    ] {
        let path = format!("/admin/{kind}/{id}/transitions");
        let answers = futures_util::future::join_all(
            (0..8).map(|_| post(app, &path, &w.handler, json!({"to": to}))),
        )
        .await;
        let mut by = std::collections::BTreeMap::<u16, usize>::new();
        for res in answers {
            assert!(
                res.headers().get("x-audit-id").is_some(),
                "{kind}: recorded"
            );
            *by.entry(res.status().as_u16()).or_default() += 1;
        }
        assert_eq!(by, [(200, 1), (409, 7)].into_iter().collect(), "{kind}");
        let steps = count(
            app,
            &format!("SELECT COUNT(*) FROM workflow_events WHERE item_id = '{id}'"),
        )
        .await;
        assert_eq!(steps, 2, "{kind}: filed and one move");
    }
    let report = credgate::audit::verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
}

/// Item 5: a burst of 300 objections from one subject is cut by the per-subject rate limit and
/// the caps on open objections; the record's answer stays small.
#[tokio::test]
async fn an_objection_flood_is_capped_and_answers_stay_small() {
    // 300 parallel connections from one address: above the per-address connection cap.
    let app = TestApp::spawn_with(|c| c.limits.max_connections_per_address = 1024).await;
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let s = app.subject_token(&uscc, SubjectType::Legal);
    let (_, regulator) = app.token("regulator").await;
    let read = format!("/v1/stores/power/entities/{uscc}");
    let size_before = app
        .data(&regulator, &read)
        .await
        .bytes()
        .await
        .unwrap()
        .len();
    let body = json!({"store": "power", "dataset": "entity", "record_ref": uscc,
                      "field": "registered_capital", "reason": "flood"});
    let answers = futures_util::future::join_all(
        (0..300).map(|_| post(&app, "/subject/objections", &s, body.clone())),
    )
    .await;
    let mut by = std::collections::BTreeMap::<u16, usize>::new();
    for res in answers {
        if res.status() == 429 {
            assert!(res.headers().get("retry-after").is_some());
        }
        *by.entry(res.status().as_u16()).or_default() += 1;
    }
    assert!(by.get(&201).copied().unwrap_or(0) <= 3, "{by:?}");
    assert!(
        by.get(&429).copied().unwrap_or(0) > 0,
        "rate limited: {by:?}"
    );
    assert!(by.get(&409).copied().unwrap_or(0) > 0, "capped: {by:?}");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM objections").await, 3);
    let size_after = app
        .data(&regulator, &read)
        .await
        .bytes()
        .await
        .unwrap()
        .len();
    assert!(
        size_after < size_before + 1024,
        "{size_before} -> {size_after}"
    );
}

/// Item 5: open objections are capped per subject across records too.
#[tokio::test]
async fn open_objections_are_capped_per_subject() {
    let app = TestApp::spawn_with(|c| c.subject_limits.max_open_objections_per_subject = 4).await;
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let s = app.subject_token(&uscc, SubjectType::Legal);
    let file = |store: &'static str| {
        post(
            &app,
            "/subject/objections",
            &s,
            json!({"store": store, "dataset": "entity", "record_ref": uscc, "reason": "x"}),
        )
    };
    for _ in 0..3 {
        assert_eq!(file("power").await.status(), 201);
    }
    let body = assert_problem(file("power").await, 409).await;
    assert!(
        body["detail"].as_str().unwrap().contains("record"),
        "{body}"
    );
    assert_eq!(file("fake").await.status(), 201);
    let body = assert_problem(file("fake").await, 409).await;
    assert!(
        body["detail"].as_str().unwrap().contains("subject"),
        "{body}"
    );
}

/// Item 5: `field` must name a field of that dataset in the catalog.
#[tokio::test]
async fn an_objection_names_only_catalog_fields() {
    let app = TestApp::spawn().await;
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let s = app.subject_token(&uscc, SubjectType::Legal);
    for field in ["no_such_field", "<script>", "name.x", "id_number"] {
        let res = post(
            &app,
            "/subject/objections",
            &s,
            json!({"store": "power", "dataset": "entity", "record_ref": uscc,
                   "field": field, "reason": "x"}),
        )
        .await;
        assert_problem(res, 400).await;
    }
    let res = post(
        &app,
        "/subject/objections",
        &s,
        json!({"store": "power", "dataset": "entity", "record_ref": uscc,
               "field": "legal_representative.name", "reason": "x"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM objections").await, 1);
}

/// An 18-character string valid both as a USCC and as a resident ID number.
const TWO_FACED: &str = "110101199003071049";

/// Item 11: a company and a person whose ids are the same string see nothing of each other's
/// consents, objections or access log.
#[tokio::test]
async fn a_legal_and_a_natural_subject_with_the_same_id_are_strangers() {
    use credgate::domain::SubjectId;
    assert!(SubjectId::parse(SubjectType::Legal, TWO_FACED).is_ok());
    assert!(SubjectId::parse(SubjectType::Natural, TWO_FACED).is_ok());
    let app = TestApp::spawn().await;
    let company = app.subject_token(TWO_FACED, SubjectType::Legal);
    let person = app.subject_token(TWO_FACED, SubjectType::Natural);
    let consent = created(
        post(
            &app,
            "/subject/consents",
            &company,
            json!({"grantee_org": "bank-a", "purpose": "lending", "expires_at": in_days(30)}),
        )
        .await,
    )
    .await;
    let objection = created(
        post(
            &app,
            "/subject/objections",
            &company,
            json!({"store": "power", "dataset": "entity", "record_ref": TWO_FACED, "reason": "x"}),
        )
        .await,
    )
    .await;
    let get = |path: String| {
        let (app, person) = (&app, &person);
        async move { send(app, reqwest::Method::GET, &path, Some(person), None).await }
    };
    let list: Value = get("/subject/consents".into()).await.json().await.unwrap();
    assert_eq!(
        list["items"],
        json!([]),
        "the person sees no company consent"
    );
    let list: Value = get("/subject/objections".into())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"], json!([]));
    let oid = objection["id"].as_str().unwrap();
    assert_problem(get(format!("/subject/objections/{oid}")).await, 404).await;
    let res = post(
        &app,
        &format!(
            "/subject/objections/{}/withdraw",
            objection["id"].as_str().unwrap()
        ),
        &person,
        json!({}),
    )
    .await;
    assert_problem(res, 404).await;
    let res = send(
        &app,
        reqwest::Method::DELETE,
        &format!("/subject/consents/{}", consent["id"].as_str().unwrap()),
        Some(&person),
        None,
    )
    .await;
    assert_problem(res, 404).await;
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM consents WHERE revoked_at IS NOT NULL"
        )
        .await,
        0
    );
    // Reads of the company's records and of the person's: each sees only their own.
    let (_, regulator) = app.token("regulator").await;
    app.data(
        &regulator,
        &format!("/v1/stores/power/entities/{TWO_FACED}"),
    )
    .await;
    app.data(&regulator, &format!("/v1/stores/power/persons/{TWO_FACED}"))
        .await;
    for (token, dataset) in [(&company, "entity"), (&person, "person")] {
        let log: Value = send(
            &app,
            reqwest::Method::GET,
            "/subject/access-log",
            Some(token),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
        let seen: Vec<&str> = log["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["dataset"].as_str().unwrap())
            .collect();
        assert_eq!(seen, [dataset], "{log}");
    }
    // A person cannot contest a company's dataset under the shared string.
    let res = post(
        &app,
        "/subject/objections",
        &person,
        json!({"store": "power", "dataset": "entity", "record_ref": TWO_FACED, "reason": "x"}),
    )
    .await;
    assert_problem(res, 400).await;
}

/// Item 22: sealed contacts of very different lengths are the same size.
#[tokio::test]
async fn sealed_contacts_do_not_tell_their_length() {
    let app = TestApp::spawn().await;
    let (_, handler) = app.token("objection_handler").await;
    let mut sizes = Vec::new();
    for contact in ["a@b.cn", &"长".repeat(500)] {
        let r = created(
            send(
                &app,
                reqwest::Method::POST,
                "/public/reports",
                None,
                Some(
                    json!({"about": "x", "category": "other", "description": "y",
                        "reporter_contact": contact}),
                ),
            )
            .await,
        )
        .await;
        let id = r["id"].as_str().unwrap();
        let sealed: String = sqlx::query_scalar("SELECT contact_sealed FROM reports WHERE id = $1")
            .bind(id)
            .fetch_one(app.state.db.pool())
            .await
            .unwrap();
        sizes.push(sealed.len());
        let got: Value = send(
            &app,
            reqwest::Method::GET,
            &format!("/admin/reports/{id}"),
            Some(&handler),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(
            got["reporter_contact"], contact,
            "opened without the padding"
        );
    }
    assert_eq!(sizes[0], sizes[1]);
}

// ---- Gaps after the merge: reload and enable as mutations, exact caps across replicas ----

/// The public's answer about one entity (which the catalog change below alters).
async fn public_entity(app: &TestApp, uscc: &str) -> Value {
    let res = app
        .http
        .get(format!("{}/public/stores/power/entities/{uscc}", app.url))
        .header("X-Purpose", "public_disclosure")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Edits the policy files so that a reload would show the public only the founding month.
fn hide_founding_date_from_the_public(app: &TestApp) {
    let catalog = app.dir.path().join("policies/catalog.toml");
    let text = std::fs::read_to_string(&catalog).unwrap();
    let changed = text.replacen(
        "established = \"entity_basic\"",
        "established = \"rating_detail\"",
        1,
    );
    assert_ne!(text, changed);
    std::fs::write(&catalog, changed).unwrap();
}

async fn policy_signal(app: &TestApp) -> i64 {
    count(
        app,
        "SELECT version FROM replica_signals WHERE topic = 'policies'",
    )
    .await
}

/// A bad policy set is refused and recorded; nothing is swapped and no replica is told. A good
/// one is swapped and signalled with its record.
#[tokio::test]
async fn a_refused_reload_is_recorded_and_signals_nothing() {
    let app = TestApp::spawn().await;
    let (_, officer) = app.token("system_admin").await;
    let signal = policy_signal(&app).await;
    let roles = app.dir.path().join("policies/roles.toml");
    let good = std::fs::read_to_string(&roles).unwrap();
    std::fs::write(&roles, "this is [not toml").unwrap();
    let res = post(&app, "/admin/policies/reload", &officer, json!({})).await;
    let audit_id = res.headers().get("x-audit-id").cloned().expect("recorded");
    assert_problem(res, 422).await;
    let rec = app.record(audit_id.to_str().unwrap()).await;
    assert_eq!((rec.status, rec.decision.as_str()), (422, "deny"));
    assert_eq!(policy_signal(&app).await, signal, "no replica told");
    std::fs::write(&roles, good).unwrap();
    let res = post(&app, "/admin/policies/reload", &officer, json!({})).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-audit-id").is_some());
    assert_eq!(policy_signal(&app).await, signal + 1);
}

/// DESIGN.md's `POST /admin/clients/{id}/enable`: a disabled client gets tokens again; the role
/// is guarded like disable's, and an unknown id is 404.
#[tokio::test]
async fn a_disabled_client_is_enabled_and_gets_tokens_again() {
    let app = TestApp::spawn().await;
    let (_, officer) = app.token("system_admin").await;
    let (id, secret) = app.add_client("bank").await;
    let res = post(
        &app,
        &format!("/admin/clients/{id}/disable"),
        &officer,
        json!({}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.token_for(&id, &secret).await.status(), 401);
    let (_, bank) = app.token("financial_institution").await;
    let res = post(
        &app,
        &format!("/admin/clients/{id}/enable"),
        &bank,
        json!({}),
    )
    .await;
    assert_problem(res, 403).await;
    assert_eq!(app.token_for(&id, &secret).await.status(), 401);
    let res = post(
        &app,
        &format!("/admin/clients/{id}/enable"),
        &officer,
        json!({}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let audit_id = res.headers().get("x-audit-id").cloned().expect("recorded");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"id": id, "status": "active"}));
    let rec = app.record(audit_id.to_str().unwrap()).await;
    assert_eq!((rec.status, rec.decision.as_str()), (200, "allow"));
    assert_eq!(app.token_for(&id, &secret).await.status(), 200);
    for unknown in ["cg_0000000000000000", "..%2f"] {
        let res = post(
            &app,
            &format!("/admin/clients/{unknown}/enable"),
            &officer,
            json!({}),
        )
        .await;
        assert_problem(res, 404).await;
    }
}

/// Item 5 across replicas: concurrent filings on two gateways sharing one database never
/// overshoot the per-record cap (on PostgreSQL the counts run at READ COMMITTED).
#[tokio::test]
async fn concurrent_filings_on_two_replicas_respect_the_record_cap() {
    let app = TestApp::spawn_with(|c| {
        c.subject_limits.max_open_objections_per_record = 3;
        c.subject_limits.max_open_objections_per_subject = 100;
        c.subject_limits.per_minute = 1000;
        c.subject_limits.burst = 1000;
    })
    .await;
    let other = app.sibling().await;
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let s = app.subject_token(&uscc, SubjectType::Legal);
    let body = json!({"store": "power", "dataset": "entity", "record_ref": uscc, "reason": "race"});
    let answers = futures_util::future::join_all((0..20).map(|i| {
        let url = if i % 2 == 0 { &app.url } else { &other.url };
        app.http
            .post(format!("{url}/subject/objections"))
            .bearer_auth(&s)
            .json(&body)
            .send()
    }))
    .await;
    let mut by = std::collections::BTreeMap::<u16, usize>::new();
    for res in answers {
        *by.entry(res.unwrap().status().as_u16()).or_default() += 1;
    }
    assert_eq!(by, [(201, 3), (409, 17)].into_iter().collect(), "{by:?}");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM objections").await, 3);
}

/// Item 5, the cap's own guard: two filings' transactions overlap (the second counts while the
/// first is uncommitted). With a cap of one, exactly one is filed, on either backend.
#[tokio::test]
async fn overlapping_filings_cannot_both_pass_the_cap() {
    use credgate::{storage::Backend, workflows::objections};
    let app = TestApp::spawn().await;
    let mut caps = app.state.config.subject_limits.clone();
    caps.max_open_objections_per_record = 1;
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let objection = |n: u32| objections::Objection {
        id: format!("ob_race{n}"),
        subject_id: uscc.clone(),
        subject_type: "legal".into(),
        store: "power".into(),
        dataset: "entity".into(),
        record_ref: uscc.clone(),
        field: None,
        reason: "race".into(),
        requested_correction: None,
        status: objections::Status::Submitted,
        created_at: 1,
        accept_due_at: 2,
        decide_due_at: 3,
        store_ticket: None,
        store_finding: None,
        correction: None,
        outcome: None,
    };
    let db = app.state.db.clone();
    let backend = db.backend();
    let begin = if backend == Backend::Sqlite {
        "BEGIN IMMEDIATE"
    } else {
        "BEGIN"
    };
    let mut first = db.pool().acquire().await.unwrap();
    let mut tx1 = sqlx::Connection::begin_with(&mut *first, begin)
        .await
        .unwrap();
    objections::file_in(&mut tx1, backend, &objection(1), &caps)
        .await
        .expect("the first is within the cap");
    let second = {
        let (db, caps, o) = (db.clone(), caps.clone(), objection(2));
        tokio::spawn(async move {
            let mut conn = db.pool().acquire().await.unwrap();
            let mut tx = sqlx::Connection::begin_with(&mut *conn, begin)
                .await
                .unwrap();
            let filed = objections::file_in(&mut tx, backend, &o, &caps).await;
            match filed {
                Ok(()) => tx.commit().await.map(|_| true).unwrap(),
                Err(_) => tx.rollback().await.map(|_| false).unwrap(),
            }
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    tx1.commit().await.unwrap();
    assert!(!second.await.unwrap(), "the second filing is refused");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM objections").await, 1);
}

/// Item 11 for complaints: a complaint is its filer's, by type and id. A person whose resident
/// id spells a company's USCC neither lists, reads nor sees the company's complaint.
#[tokio::test]
async fn a_legal_and_a_natural_subject_with_the_same_id_keep_their_complaints_apart() {
    let app = TestApp::spawn().await;
    let company = app.subject_token(TWO_FACED, SubjectType::Legal);
    let person = app.subject_token(TWO_FACED, SubjectType::Natural);
    let complaint = |token: &str, description: &str| {
        let body =
            json!({"against_org": "bank-a", "category": "other", "description": description});
        let (app, token) = (&app, token.to_string());
        async move { created(post(app, "/subject/complaints", &token, body).await).await }
    };
    let theirs = complaint(&company, "the company's").await;
    let mine = complaint(&person, "the person's").await;
    let get = |path: String, token: &str| {
        let (app, token) = (&app, token.to_string());
        async move { send(app, reqwest::Method::GET, &path, Some(&token), None).await }
    };
    for (token, own, other, description) in [
        (&person, &mine, &theirs, "the person's"),
        (&company, &theirs, &mine, "the company's"),
    ] {
        let list: Value = get("/subject/complaints".into(), token)
            .await
            .json()
            .await
            .unwrap();
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{list}");
        assert_eq!(items[0]["id"], own["id"]);
        assert_eq!(items[0]["description"], description);
        let oid = other["id"].as_str().unwrap();
        assert_problem(get(format!("/subject/complaints/{oid}"), token).await, 404).await;
        let id = own["id"].as_str().unwrap();
        assert_eq!(
            get(format!("/subject/complaints/{id}"), token)
                .await
                .status(),
            200
        );
    }
    // The handler sees each complaint with its subject's type.
    let (_, handler) = app.token("objection_handler").await;
    for (c, kind) in [(&theirs, "legal"), (&mine, "natural")] {
        let path = format!("/admin/complaints/{}", c["id"].as_str().unwrap());
        let v: Value = get(path, &handler).await.json().await.unwrap();
        assert_eq!(
            (v["subject"].as_str(), v["subject_type"].as_str()),
            (Some(TWO_FACED), Some(kind))
        );
    }
}
