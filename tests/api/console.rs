//! The staff console over HTTP (issue 17 item 3): each role gets its pages and actions, the
//! actions go through the same checks as `/admin` and leave records naming the person, and
//! what a role may not do is neither offered nor possible by forcing the POST.

use credgate::domain::SubjectType;
use serde_json::{Value, json};

use crate::signin::{Browser, Site, sign_in, site};

async fn text(r: reqwest::Response) -> String {
    r.text().await.unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn alert(s: &Site) -> String {
    credgate::audit::alerts::insert(&s.app.state.db, "test_rule", None, "a test alert", &[])
        .await
        .unwrap();
    credgate::audit::alerts::list(&s.app.state.db, false)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.rule == "test_rule")
        .unwrap()
        .id
}

async fn record_of(s: &Site, r: &reqwest::Response) -> credgate::audit::AuditRecord {
    s.app
        .record(r.headers()["x-audit-id"].to_str().unwrap())
        .await
}

#[tokio::test]
async fn an_officer_searches_opens_exports_and_verifies_the_log() {
    let s = site().await;
    let b = sign_in(&s.app, &s.idp, "officer").await;
    // Some traffic to find: a public look-up (an `allow` record that is not a staff action).
    let r = s
        .app
        .http
        .get(format!("{}/", s.app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let dash = b.get("/console/").await;
    assert_eq!(dash.status(), 200);
    let html = text(dash).await;
    assert!(html.contains("<svg") && html.contains("Requests by decision"));
    assert!(html.contains("Verify chain"));
    // Each writer's chain has its row, named by its writer id (this gateway writes one).
    let writer = s.app.state.audit.writer_id().to_string();
    // minijinja escapes `/` in HTML too.
    let escaped = writer.replace('/', "&#x2f;");
    assert!(
        html.contains(&format!("<code>{escaped}</code>")),
        "the dashboard names the writer {writer}"
    );

    let page = b.get("/console/audit?decision=").await;
    assert_eq!(page.status(), 200);
    let rec = record_of(&s, &page).await;
    assert_eq!(
        rec.actor.as_deref(),
        Some("staff:officer"),
        "the view is audited"
    );
    let html = text(page).await;
    for label in [
        "Organisation",
        "Client",
        "Subject",
        "Decision",
        "From",
        "To",
        "Search",
    ] {
        assert!(html.contains(&format!(">{label}<")), "{label}");
    }
    let first = html
        .split("/console/audit/records/")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .expect("a record row")
        .to_string();
    let detail = b.get(&format!("/console/audit/records/{first}")).await;
    assert_eq!(detail.status(), 200);
    assert!(text(detail).await.contains("prev_hash"));
    // A staff action's record is not the officer's to read (only the auditor's).
    let staff_seq = record_of(&s, &b.get("/console/").await).await.seq;
    let r = b.get(&format!("/console/audit/records/{staff_seq}")).await;
    assert_eq!(r.status(), 404);

    let csv = b
        .get("/console/audit/export?decision=allow&format=csv")
        .await;
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let body = text(csv).await;
    assert!(body.lines().count() >= 2, "{body}");
    assert!(body.lines().skip(1).all(|l| l.contains("allow")), "{body}");
    let nd = b.get("/console/audit/export?format=ndjson").await;
    let line: Value = serde_json::from_str(text(nd).await.lines().next().unwrap()).unwrap();
    assert!(line["id"].is_string());

    let v = b.post("/console/audit/verify", &[]).await;
    assert_eq!(v.status(), 200);
    assert!(text(v).await.contains("Chain intact"));
}

#[tokio::test]
async fn an_officer_acknowledges_an_alert_and_an_auditor_cannot() {
    let s = site().await;
    let id = alert(&s).await;
    let auditor = sign_in(&s.app, &s.idp, "auditor").await;
    let html = text(auditor.get("/console/alerts").await).await;
    assert!(html.contains("a test alert"));
    assert!(
        !html.contains(">Acknowledge<"),
        "not offered to the auditor"
    );
    // The sections nav offers only what the auditor may use.
    for other in [
        "Lockdowns",
        "Clients",
        "Objections",
        "Complaints",
        "Reports",
    ] {
        assert!(!html.contains(&format!(">{other}<")), "{other} offered");
    }
    assert!(html.contains(">Audit log<") && html.contains(">Alerts<"));
    let forced = auditor
        .post(&format!("/console/alerts/{id}/ack"), &[])
        .await;
    assert_eq!(forced.status(), 403, "refused when forced");
    assert!(
        credgate::audit::alerts::is_open(&s.app.state.db, &id)
            .await
            .unwrap()
    );

    let officer = sign_in(&s.app, &s.idp, "officer").await;
    let html = text(officer.get("/console/alerts").await).await;
    assert!(html.contains(">Acknowledge<"));
    // Without the form's token: nothing.
    let r = officer
        .http
        .post(format!("{}/console/alerts/{id}/ack", officer.base))
        .header("cookie", format!("cg_session={}", officer.session))
        .form(&[("csrf", "00")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = officer
        .post(&format!("/console/alerts/{id}/ack"), &[])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/console/alerts");
    assert_eq!(
        record_of(&s, &r).await.actor.as_deref(),
        Some("staff:officer")
    );
    assert!(
        !credgate::audit::alerts::is_open(&s.app.state.db, &id)
            .await
            .unwrap()
    );
    let list = credgate::audit::alerts::list(&s.app.state.db, true)
        .await
        .unwrap();
    let acked = list.iter().find(|a| a.id == id).unwrap();
    assert_eq!(acked.acked_by.as_deref(), Some("staff:officer"));
}

#[tokio::test]
async fn lockdowns_are_the_officers_and_clients_the_administrators() {
    let s = site().await;
    let (bank, secret) = s.app.add_client("financial_institution").await;
    let handler = sign_in(&s.app, &s.idp, "handler").await;
    assert_eq!(handler.get("/console/lockdowns").await.status(), 403);
    let forced = handler
        .post(
            "/console/lockdowns",
            &[("client_id", &bank), ("reason", "x")],
        )
        .await;
    assert_eq!(forced.status(), 403);

    let officer = sign_in(&s.app, &s.idp, "officer").await;
    let r = officer
        .post(
            "/console/lockdowns",
            &[("client_id", &bank), ("reason", "suspicious")],
        )
        .await;
    assert_eq!(r.status(), 303);
    let html = text(officer.get("/console/lockdowns").await).await;
    assert!(html.contains(&bank) && html.contains("suspicious"));
    let id = credgate::storage::lockdowns::list_active(&s.app.state.db)
        .await
        .unwrap()[0]
        .id
        .clone();
    // Both or neither of client and org: refused as /admin refuses it.
    let bad = officer
        .post("/console/lockdowns", &[("reason", "no target")])
        .await;
    assert_eq!(bad.status(), 400);
    assert_eq!(
        officer
            .post(&format!("/console/lockdowns/{id}/lift"), &[])
            .await
            .status(),
        303
    );
    assert!(
        credgate::storage::lockdowns::list_active(&s.app.state.db)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(officer.get("/console/clients").await.status(), 403);
    let forced = officer
        .post(&format!("/console/clients/{bank}/disable"), &[])
        .await;
    assert_eq!(forced.status(), 403);

    assert_eq!(s.app.token_for(&bank, &secret).await.status(), 200);
    let admin = sign_in(&s.app, &s.idp, "admin").await;
    let html = text(admin.get("/console/clients").await).await;
    assert!(html.contains(&bank) && !html.contains("secret"));
    let r = admin
        .post(&format!("/console/clients/{bank}/disable"), &[])
        .await;
    assert_eq!(r.status(), 303);
    assert_ne!(
        s.app.token_for(&bank, &secret).await.status(),
        200,
        "disabled: no token"
    );
    assert!(
        text(admin.get("/console/clients").await)
            .await
            .contains(">Enable<")
    );
    assert_eq!(
        admin
            .post(&format!("/console/clients/{bank}/enable"), &[])
            .await
            .status(),
        303
    );
    // The admin does not read the log (separation of duties).
    assert_eq!(admin.get("/console/audit").await.status(), 403);
}

/// A subject files an objection (over the API); a handler sees it in the queue with its
/// deadline, is offered only the moves the machine allows, and cannot force another.
#[tokio::test]
async fn a_handler_works_an_objection_through_the_machine_only() {
    let s = site().await;
    let uscc = s.app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let token = s.app.subject_token(&uscc, SubjectType::Legal);
    let filed: Value = s
        .app
        .http
        .post(format!("{}/subject/objections", s.app.url))
        .bearer_auth(&token)
        .json(
            &json!({"store": "power", "dataset": "entity", "record_ref": uscc,
                      "field": "registered_capital", "reason": "changed in 2025",
                      "requested_correction": "50000000"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = filed["id"].as_str().expect("filed").to_string();
    let officer = sign_in(&s.app, &s.idp, "officer").await;
    assert_eq!(officer.get("/console/objections").await.status(), 403);
    let forced = officer
        .post(
            &format!("/console/objections/{id}/move"),
            &[("to", "accepted")],
        )
        .await;
    assert_eq!(forced.status(), 403);

    let b = sign_in(&s.app, &s.idp, "handler").await;
    let html = text(b.get("/console/objections").await).await;
    assert!(html.contains(&id) && html.contains("Submitted"));
    let page = b.get(&format!("/console/objections/{id}")).await;
    let html = text(page).await;
    assert!(html.contains("Move to Accepted") && html.contains("Move to Rejected"));
    assert!(
        !html.contains("Move to Closed"),
        "not offered from submitted"
    );
    let forced = b
        .post(
            &format!("/console/objections/{id}/move"),
            &[("to", "closed")],
        )
        .await;
    assert_eq!(forced.status(), 409, "the machine refuses it");
    s.app.state.clock.advance_days(30);
    assert_eq!(
        b.get("/console/objections").await.status(),
        303,
        "a month idle: signed out"
    );
    let b = sign_in(&s.app, &s.idp, "handler").await;
    let html = text(b.get("/console/objections").await).await;
    assert!(html.contains("Overdue"), "past its deadline");
    let r = b
        .post(
            &format!("/console/objections/{id}/move"),
            &[("to", "rejected"), ("note", "the record is right")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        record_of(&s, &r).await.actor.as_deref(),
        Some("staff:handler")
    );
    let html = text(b.get(&format!("/console/objections/{id}")).await).await;
    assert!(html.contains("Rejected") && html.contains("the record is right"));
    assert!(!html.contains("Move to"), "an end state offers nothing");
}

#[tokio::test]
async fn a_reports_contact_is_opened_only_by_its_own_recorded_action() {
    let s = site().await;
    let filed: Value = s
        .app
        .http
        .post(format!("{}/public/reports", s.app.url))
        .json(
            &json!({"about": "ACME", "category": "fraud", "description": "books cooked",
                      "reporter_contact": "whistle@example.org"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = filed["id"].as_str().unwrap().to_string();
    let b = sign_in(&s.app, &s.idp, "handler").await;
    let list = text(b.get("/console/reports").await).await;
    assert!(list.contains(&id) && !list.contains("whistle@"));
    let page = text(b.get(&format!("/console/reports/{id}")).await).await;
    assert!(!page.contains("whistle@") && page.contains("Open sealed contact"));
    let opened = b.post(&format!("/console/reports/{id}/contact"), &[]).await;
    assert_eq!(opened.status(), 200);
    let rec = record_of(&s, &opened).await;
    assert_eq!(rec.actor.as_deref(), Some("staff:handler"));
    assert!(rec.path.ends_with("/contact") && rec.method == "POST");
    assert!(text(opened).await.contains("whistle@example.org"));
    let r = b
        .post(
            &format!("/console/reports/{id}/move"),
            &[("to", "investigating")],
        )
        .await;
    assert_eq!(r.status(), 303);
}

#[tokio::test]
async fn the_console_speaks_chinese_with_the_same_pages() {
    let s = site().await;
    let b: Browser = sign_in(&s.app, &s.idp, "officer").await;
    let r = b
        .http
        .get(format!("{}/console/audit", b.base))
        .header("cookie", format!("cg_session={}; lang=zh-CN", b.session))
        .send()
        .await
        .unwrap();
    let html = text(r).await;
    assert!(html.contains("审计日志") && html.contains("验证审计链") && !html.contains("??"));
    assert!(!html.contains(">Search<"), "no English label left");
}

/// A subject's request (`/admin/requests` queue): accepted, then completed with an answer,
/// through the console; an end state offers nothing more; an officer cannot move it.
#[tokio::test]
async fn a_handler_completes_a_subjects_request() {
    let s = site().await;
    let uscc = s.app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let token = s.app.subject_token(&uscc, SubjectType::Legal);
    let res = s
        .app
        .http
        .post(format!("{}/subject/requests", s.app.url))
        .bearer_auth(&token)
        .json(
            &json!({"kind": "correction", "store": "power", "dataset": "entity",
                      "record_ref": uscc, "reason": "the address moved"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let filed: Value = res.json().await.unwrap();
    let id = filed["id"].as_str().unwrap().to_string();
    let officer = sign_in(&s.app, &s.idp, "officer").await;
    let forced = officer
        .post(
            &format!("/console/requests/{id}/move"),
            &[("to", "accepted")],
        )
        .await;
    assert_eq!(forced.status(), 403);
    let b = sign_in(&s.app, &s.idp, "handler").await;
    assert!(text(b.get("/console/requests").await).await.contains(&id));
    let html = text(b.get(&format!("/console/requests/{id}")).await).await;
    assert!(html.contains("Move to Accepted") && !html.contains("Move to Completed"));
    let path = format!("/console/requests/{id}/move");
    assert_eq!(b.post(&path, &[("to", "accepted")]).await.status(), 303);
    let done = b
        .post(
            &path,
            &[("to", "completed"), ("answer", "corrected at the store")],
        )
        .await;
    assert_eq!(done.status(), 303);
    let html = text(b.get(&format!("/console/requests/{id}")).await).await;
    assert!(html.contains("Completed") && html.contains("corrected at the store"));
    assert!(!html.contains("Move to"));
}
