//! Complaints: filed by a subject, worked by a handler who sees the org's audit records touching
//! that subject, and upheld with a lockdown that stops the org at once.

use credgate::domain::SubjectType;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

#[tokio::test]
async fn a_complaint_shows_the_orgs_accesses_and_can_end_in_a_lockdown() {
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

    let step = |to: &'static str, lockdown: bool| {
        app.http
            .post(format!("{url}/admin/complaints/{id}/transitions"))
            .bearer_auth(&handler)
            .json(&json!({"to": to, "note": "reviewed", "lockdown": lockdown}))
            .send()
    };
    assert_problem(step("upheld", false).await.unwrap(), 409).await;
    assert_problem(step("investigating", true).await.unwrap(), 409).await;
    assert_eq!(step("investigating", false).await.unwrap().status(), 200);
    let res = step("upheld", true).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap()["lockdown"]["org"],
        "nosy-bank"
    );
    let body = assert_problem(
        app.data(&nosy, &format!("/v1/stores/power/entities/{uscc}"))
            .await,
        403,
    )
    .await;
    assert_eq!(body["rule"], "lockdown");
    assert_eq!(step("closed", false).await.unwrap().status(), 200);
    assert_problem(step("investigating", false).await.unwrap(), 409).await;

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
