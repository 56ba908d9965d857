//! Complaints: filed by a subject, worked by a handler who sees the org's audit records touching
//! that subject; upholding one proposes a lockdown to the security officer, never locks.

use credgate::domain::SubjectType;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

#[tokio::test]
async fn a_complaint_shows_the_orgs_accesses_and_upholding_it_proposes_a_lockdown() {
    let app = TestApp::spawn().await;
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let me = app.subject_token(&uscc, SubjectType::Legal);
    let nosy = app
        .token_in("financial_institution", "nosy-bank", None)
        .await;
    for _ in 0..2 {
        app.data(&nosy, &format!("/v1/stores/power/entities/{uscc}"))
            .await;
    }
    let (_, handler) = app.token("objection_handler").await;
    let url = &app.url;

    let res = app.http.post(format!("{url}/subject/complaints")).bearer_auth(&me)
        .json(&json!({"against_org": "nosy-bank", "category": "purpose_misuse", "description": "他们没有业务往来却查询了我们"}))
        .send().await.unwrap();
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let c: Value = app
        .http
        .get(format!("{url}/admin/complaints/{id}"))
        .bearer_auth(&handler)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c["subject"], uscc.as_str());
    let audit = c["audit"].as_array().unwrap();
    assert_eq!(audit.len(), 2, "the org's two reads of this subject: {c}");
    assert!(
        audit
            .iter()
            .all(|a| a["purpose"] == "lending" && a["dataset"] == "entity")
    );

    let step = |to: &'static str, lockdown: Option<bool>| {
        let mut body = json!({"to": to, "note": "reviewed"});
        if let Some(l) = lockdown {
            body["lockdown"] = json!(l);
        }
        app.http
            .post(format!("{url}/admin/complaints/{id}/transitions"))
            .bearer_auth(&handler)
            .json(&body)
            .send()
    };
    assert_problem(step("upheld", None).await.unwrap(), 409).await;
    assert_eq!(step("investigating", None).await.unwrap().status(), 200);
    // A handler may not lock anything: the field is refused, naming it.
    let body = assert_problem(step("upheld", Some(true)).await.unwrap(), 400).await;
    assert!(
        body["detail"].as_str().unwrap().contains("lockdown"),
        "{body}"
    );
    let res = step("upheld", None).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.json::<Value>().await.unwrap().get("lockdown").is_none());
    // The org still reads; the officer is asked to decide.
    let res = app
        .data(&nosy, &format!("/v1/stores/power/entities/{uscc}"))
        .await;
    assert_eq!(res.status(), 200);
    let (_, officer) = app.token("security_officer").await;
    let alerts: Value = app
        .http
        .get(format!("{url}/admin/alerts"))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let proposed = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "complaint-upheld")
        .unwrap_or_else(|| panic!("no lockdown proposal: {alerts}"));
    assert!(proposed["detail"].as_str().unwrap().contains("nosy-bank"));
    assert_eq!(step("closed", None).await.unwrap().status(), 200);
    assert_problem(step("investigating", None).await.unwrap(), 409).await;

    let mine: Value = app
        .http
        .get(format!("{url}/subject/complaints/{id}"))
        .bearer_auth(&me)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["status"], "closed");
    assert_eq!(mine["outcome"], "upheld");
    assert_eq!(mine["history"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn complaints_are_the_subjects_own_and_the_queue_is_the_handlers() {
    let app = TestApp::spawn().await;
    let me = app.subject_token("91350100M000100Y43", SubjectType::Legal);
    let other = app.subject_token("11010519491231002X", SubjectType::Natural);
    let url = &app.url;
    let res = app
        .http
        .post(format!("{url}/subject/complaints"))
        .bearer_auth(&me)
        .json(&json!({"against_org": "bank-a", "category": "data_leak", "description": "x"}))
        .send()
        .await
        .unwrap();
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_problem(
        app.http
            .get(format!("{url}/subject/complaints/{id}"))
            .bearer_auth(&other)
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    let list: Value = app
        .http
        .get(format!("{url}/subject/complaints"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"], json!([]));
    for bad in [
        json!({"against_org": "Bank A", "category": "data_leak", "description": "x"}),
        json!({"against_org": "bank-a", "category": "gossip", "description": "x"}),
        json!({"against_org": "bank-a", "category": "data_leak", "description": " "}),
    ] {
        assert_problem(
            app.http
                .post(format!("{url}/subject/complaints"))
                .bearer_auth(&me)
                .json(&bad)
                .send()
                .await
                .unwrap(),
            400,
        )
        .await;
    }
    let (_, bank) = app.token("financial_institution").await;
    assert_problem(
        app.http
            .get(format!("{url}/subject/complaints"))
            .bearer_auth(&bank)
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    assert_problem(
        app.http
            .get(format!("{url}/admin/complaints"))
            .bearer_auth(&bank)
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
    assert_problem(
        app.http
            .get(format!("{url}/admin/complaints/{id}"))
            .bearer_auth(&bank)
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
}

async fn get_json(app: &TestApp, path: &str, token: &str) -> Value {
    let res = app
        .http
        .get(format!("{}{path}", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.unwrap()
}

fn at(v: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        v.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

/// Issue 15 item 8: a complaint is due within the regulation's 30 days, listed and alerted when
/// overdue, dismissed only with a reason, and answered in words the subject can read.
#[tokio::test]
async fn a_complaint_has_a_deadline_an_overdue_alert_a_reasoned_dismissal_and_an_answer() {
    let app = TestApp::spawn_with(|c| c.workflows.poll_ms = 50).await;
    let me = app.subject_token("91350100M000100Y43", SubjectType::Legal);
    let (_, handler) = app.token("objection_handler").await;
    let url = app.url.clone();
    let file = |description: &'static str| {
        app.http
            .post(format!("{url}/subject/complaints"))
            .bearer_auth(&me)
            .json(
                &json!({"against_org": "bank-a", "category": "other", "description": description}),
            )
            .send()
    };
    let res = file("查询了我们的记录").await.unwrap();
    assert_eq!(res.status(), 201);
    let c: Value = res.json().await.unwrap();
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!((at(&c["due_at"]) - at(&c["created_at"])).whole_days(), 30);
    assert_eq!(c["overdue"], false);

    let list = |q: &str, handler: &str| {
        let (app, handler, path) = (&app, handler.to_string(), format!("/admin/complaints?{q}"));
        async move { get_json(app, &path, &handler).await }
    };
    assert_eq!(list("overdue=true", &handler).await["items"], json!([]));
    app.state.clock.advance_days(31);
    // Gateway tokens expire on the gateway's clock: a handler token for the new day.
    let (_, handler) = app.token("objection_handler").await;
    let overdue = list("overdue=true", &handler).await;
    assert_eq!(overdue["items"][0]["id"], id.as_str(), "{overdue}");
    assert_eq!(
        list("status=submitted&overdue=false", &handler).await["items"],
        json!([])
    );
    assert_problem(
        app.http
            .get(format!("{url}/admin/complaints?status=lost"))
            .bearer_auth(&handler)
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;

    let (_, officer) = app.token("security_officer").await;
    let mut alerted = false;
    for _ in 0..100 {
        let alerts = get_json(&app, "/admin/alerts", &officer).await;
        alerted = alerts["items"].as_array().unwrap().iter().any(|a| {
            a["rule"] == "complaint-overdue" && a["detail"].as_str().unwrap().contains(&id)
        });
        if alerted {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(alerted, "an overdue complaint raises an alert");

    let step = |id: String, body: Value| {
        app.http
            .post(format!("{url}/admin/complaints/{id}/transitions"))
            .bearer_auth(&handler)
            .json(&body)
            .send()
    };
    // An answer before the decision, and a dismissal without a reason, are refused.
    let early = step(id.clone(), json!({"to": "investigating", "answer": "soon"}));
    assert_problem(early.await.unwrap(), 400).await;
    let ok = step(id.clone(), json!({"to": "investigating"}));
    assert_eq!(ok.await.unwrap().status(), 200);
    for bare in [
        json!({"to": "dismissed"}),
        json!({"to": "dismissed", "note": "  "}),
    ] {
        assert_problem(step(id.clone(), bare).await.unwrap(), 400).await;
    }
    let long = json!({"to": "dismissed", "note": "r", "answer": "a".repeat(4001)});
    assert_problem(step(id.clone(), long).await.unwrap(), 400).await;
    let why = "bank-a 与贵司有授信业务，查询有合法依据";
    let res = step(id.clone(), json!({"to": "dismissed", "note": why}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mine = get_json(&app, &format!("/subject/complaints/{id}"), &me).await;
    assert_eq!(
        (&mine["status"], &mine["outcome"], &mine["answer"]),
        (&json!("dismissed"), &json!("dismissed"), &json!(why))
    );
    assert_eq!(mine["overdue"], false, "decided: no longer overdue");

    // Upheld with an answer of its own: the subject reads that, not the internal note.
    let other: Value = file("second").await.unwrap().json().await.unwrap();
    let other = other["id"].as_str().unwrap().to_string();
    assert_eq!(
        step(other.clone(), json!({"to": "investigating"}))
            .await
            .unwrap()
            .status(),
        200
    );
    let upheld =
        json!({"to": "upheld", "note": "internal: client cg_x", "answer": "已责令停止查询"});
    assert_eq!(step(other.clone(), upheld).await.unwrap().status(), 200);
    let mine = get_json(&app, &format!("/subject/complaints/{other}"), &me).await;
    assert_eq!(mine["answer"], "已责令停止查询");
    let body = assert_problem(
        step(other, json!({"to": "investigating"})).await.unwrap(),
        409,
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .ends_with("allowed next states: closed"),
        "{body}"
    );
}

/// Hostile text in a complaint: control characters, bidirectional overrides and oversize are
/// refused before anything is filed.
#[tokio::test]
async fn hostile_complaint_text_is_refused() {
    let app = TestApp::spawn().await;
    let me = app.subject_token("91350100M000100Y43", SubjectType::Legal);
    for description in [
        "a\u{0}b".to_string(),
        "\u{1b}[2Jcleared".into(),
        "evil\u{202e}txt.exe".into(),
        "长".repeat(4001),
    ] {
        let res = app
            .http
            .post(format!("{}/subject/complaints", app.url))
            .bearer_auth(&me)
            .json(
                &json!({"against_org": "bank-a", "category": "other", "description": description}),
            )
            .send()
            .await
            .unwrap();
        assert_problem(res, 400).await;
    }
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM complaints")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn no_lockdown_can_reach_a_staff_role() {
    let app = TestApp::spawn().await;
    let (_, officer) = app.token("security_officer").await;
    let (handler_id, _) = app
        .add_client_in("objection_handler", "staff-org", None)
        .await;
    let lock = |body: Value| {
        app.http
            .post(format!("{}/admin/lockdown", app.url))
            .bearer_auth(&officer)
            .json(&body)
            .send()
    };
    let why = |v: &Value| v["detail"].as_str().unwrap().to_string();
    let body = assert_problem(
        lock(json!({"org": "staff-org", "reason": "x"}))
            .await
            .unwrap(),
        409,
    )
    .await;
    assert!(why(&body).contains("staff"), "{body}");
    let body = assert_problem(
        lock(json!({"client_id": handler_id, "reason": "x"}))
            .await
            .unwrap(),
        409,
    )
    .await;
    assert!(why(&body).contains("staff"), "{body}");
    // The officer's own org (test-org) holds staff clients too.
    assert_problem(
        lock(json!({"org": "test-org", "reason": "x"}))
            .await
            .unwrap(),
        409,
    )
    .await;
    let res = lock(json!({"org": "some-bank", "reason": "x"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}
