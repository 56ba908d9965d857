//! Consent: the subject grants, lists and revokes their own; an institution reading a natural
//! person's T3 data needs a live one for its own org and its declared purpose.

use credgate::{
    domain::SubjectType,
    storage::{consents, now_micros},
};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

fn in_days(d: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::days(d))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn grant(app: &TestApp, subject_token: &str, body: Value) -> reqwest::Response {
    app.http
        .post(format!("{}/subject/consents", app.url))
        .bearer_auth(subject_token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn read_person(
    app: &TestApp,
    token: &str,
    id: &str,
    purpose: &str,
    consent: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .http
        .get(format!("{}/v1/stores/power/persons/{id}", app.url))
        .bearer_auth(token)
        .header("X-Purpose", purpose);
    if let Some(c) = consent {
        req = req.header("X-Consent", c);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_bank_reads_a_persons_records_only_with_a_live_consent_for_its_org_and_purpose() {
    let app = TestApp::spawn().await;
    let people = app.sample().persons;
    let id = people[1]["id_number"].as_str().unwrap();
    let other_id = people[3]["id_number"].as_str().unwrap();
    let person = app.subject_token(id, SubjectType::Natural);
    let bank = app
        .token_in("financial_institution", "demo-bank", None)
        .await;

    let body = assert_problem(read_person(&app, &bank, id, "lending", None).await, 403).await;
    assert_eq!(body["rule"], "consent-required");

    let res = grant(
        &app,
        &person,
        json!({"grantee_org": "demo-bank", "purpose": "lending", "expires_at": in_days(30),
               "separate": true}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let c: Value = res.json().await.unwrap();
    assert_eq!(c["status"], "active");
    assert_eq!(c["subject"], id);
    let cid = c["id"].as_str().unwrap().to_string();

    let res = read_person(&app, &bank, id, "lending", Some(&cid)).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["records"], people[1]["records"],
        "T3 records released with consent"
    );
    assert_ne!(body["id_number"], id, "the ID number stays masked (T4)");

    // Another purpose, another org, another person: the same consent does not stretch.
    let body = assert_problem(
        read_person(&app, &bank, id, "guarantee", Some(&cid)).await,
        403,
    )
    .await;
    assert_eq!(body["rule"], "consent-invalid");
    let other_bank = app
        .token_in("financial_institution", "other-bank", None)
        .await;
    assert_problem(
        read_person(&app, &other_bank, id, "lending", Some(&cid)).await,
        403,
    )
    .await;
    assert_problem(
        read_person(&app, &bank, other_id, "lending", Some(&cid)).await,
        403,
    )
    .await;
    assert_problem(
        read_person(&app, &bank, id, "lending", Some("cs_nonexistent")).await,
        403,
    )
    .await;

    // Revoked: at once.
    let res = app
        .http
        .delete(format!("{}/subject/consents/{cid}", app.url))
        .bearer_auth(&person)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let body = assert_problem(
        read_person(&app, &bank, id, "lending", Some(&cid)).await,
        403,
    )
    .await;
    assert_eq!(body["rule"], "consent-invalid");
}

#[tokio::test]
async fn an_expired_consent_is_refused() {
    let app = TestApp::spawn().await;
    let id = app.sample().persons[1]["id_number"]
        .as_str()
        .unwrap()
        .to_string();
    let bank = app
        .token_in("financial_institution", "demo-bank", None)
        .await;
    let now = now_micros();
    let mut conn = app.state.db.pool().acquire().await.unwrap();
    consents::insert_in(
        &mut conn,
        &consents::ConsentRecord {
            id: "cs_expired".into(),
            subject_id: id.clone(),
            subject_type: "natural".into(),
            grantee_org: "demo-bank".into(),
            purpose: "lending".into(),
            created_at: now - 10_000_000,
            expires_at: now - 1_000_000,
            revoked_at: None,
            scope: None,
            notice_version: None,
            notice_sha256: None,
            separate_consent: false,
            ends_with: consents::EndsWith::Expiry,
            revoked_by: None,
            receipt: None,
        },
    )
    .await
    .unwrap();
    let body = assert_problem(
        read_person(&app, &bank, &id, "lending", Some("cs_expired")).await,
        403,
    )
    .await;
    assert_eq!(body["rule"], "consent-invalid");
    let person = app.subject_token(&id, SubjectType::Natural);
    let list: Value = app
        .http
        .get(format!("{}/subject/consents", app.url))
        .bearer_auth(&person)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"][0]["status"], "expired");
}

#[tokio::test]
async fn subjects_see_and_revoke_only_their_own_consents() {
    let app = TestApp::spawn().await;
    let a = app.subject_token("11010519491231002X", SubjectType::Natural);
    let b = app.subject_token("91350100M000100Y43", SubjectType::Legal);
    let res = grant(
        &app,
        &a,
        json!({"grantee_org": "demo-bank", "purpose": "lending", "expires_at": in_days(10)}),
    )
    .await;
    let cid = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let list: Value = app
        .http
        .get(format!("{}/subject/consents", app.url))
        .bearer_auth(&b)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"], json!([]));
    let res = app
        .http
        .delete(format!("{}/subject/consents/{cid}", app.url))
        .bearer_auth(&b)
        .send()
        .await
        .unwrap();
    assert_problem(res, 404).await;
    let list: Value = app
        .http
        .get(format!("{}/subject/consents", app.url))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["items"][0]["status"], "active",
        "B's attempt changed nothing"
    );

    // Institutions have no business here.
    let (_, bank) = app.token("financial_institution").await;
    let res = app
        .http
        .get(format!("{}/subject/consents", app.url))
        .bearer_auth(&bank)
        .send()
        .await
        .unwrap();
    assert_problem(res, 401).await;
}

#[tokio::test]
async fn bad_consent_requests_are_400_with_the_reason() {
    let app = TestApp::spawn().await;
    let a = app.subject_token("11010519491231002X", SubjectType::Natural);
    for (body, needle) in [
        (
            json!({"grantee_org": "demo-bank", "purpose": "gossip", "expires_at": in_days(10)}),
            "purpose",
        ),
        (
            json!({"grantee_org": "demo-bank", "purpose": "lending", "expires_at": in_days(-1)}),
            "future",
        ),
        (
            json!({"grantee_org": "demo-bank", "purpose": "lending", "expires_at": "tomorrow"}),
            "RFC 3339",
        ),
        (
            json!({"grantee_org": "demo-bank", "purpose": "lending", "expires_at": in_days(4000)}),
            "five years",
        ),
        (
            json!({"grantee_org": "Demo Bank'; --", "purpose": "lending", "expires_at": in_days(1)}),
            "grantee_org",
        ),
        (
            json!({"grantee_org": "demo-bank", "purpose": "lending", "expires_at": in_days(1), "scope": "all"}),
            "scope",
        ),
    ] {
        let res = grant(&app, &a, body).await;
        let p = assert_problem(res, 400).await;
        assert!(p["detail"].as_str().unwrap().contains(needle), "{p}");
    }
}

/// A person's credit records are sensitive (PIPL art. 28): a bank reading them on consent needs
/// a separate consent (art. 29). A general consent, live and in scope, is 403 naming the rule;
/// a separate one out of scope is no better; a separate one in scope opens the records, in the
/// dataset door and in the profile alike.
#[tokio::test]
async fn sensitive_records_need_a_separate_consent_in_scope() {
    let app = TestApp::spawn().await;
    let people = app.sample().persons;
    let id = people[1]["id_number"].as_str().unwrap();
    let person = app.subject_token(id, SubjectType::Natural);
    let bank = app
        .token_in("financial_institution", "demo-bank", None)
        .await;
    let consent = |separate: bool, scope: Value| {
        json!({"grantee_org": "demo-bank", "purpose": "lending", "expires_at": in_days(30),
               "separate": separate, "scope": scope})
    };
    let id_of = |v: Value| v["id"].as_str().unwrap().to_string();

    let general: Value = grant(&app, &person, consent(false, json!(["person"])))
        .await
        .json()
        .await
        .unwrap();
    let general = id_of(general);
    let body = assert_problem(
        read_person(&app, &bank, id, "lending", Some(&general)).await,
        403,
    )
    .await;
    assert_eq!(body["rule"], "separate-consent-required", "{body}");
    let profile = app
        .http
        .get(format!("{}/v1/subjects/{id}/profile", app.url))
        .bearer_auth(&bank)
        .header("X-Purpose", "lending")
        .header("X-Consent", &general)
        .send()
        .await
        .unwrap();
    let body = assert_problem(profile, 403).await;
    assert!(
        body.to_string().contains("separate-consent-required"),
        "{body}"
    );

    let elsewhere: Value = grant(&app, &person, consent(true, json!(["entity"])))
        .await
        .json()
        .await
        .unwrap();
    let body = assert_problem(
        read_person(&app, &bank, id, "lending", Some(&id_of(elsewhere))).await,
        403,
    )
    .await;
    assert_eq!(body["rule"], "consent-invalid", "{body}");

    let separate: Value = grant(&app, &person, consent(true, json!(["person"])))
        .await
        .json()
        .await
        .unwrap();
    let res = read_person(&app, &bank, id, "lending", Some(&id_of(separate))).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["records"], people[1]["records"]);
}

/// One clock: the consent's expiry is judged on the gateway's clock, not the system time.
/// Moving the clock past it turns the same read into 403, and the subject's list says expired.
#[tokio::test]
async fn moving_the_clock_past_a_consents_expiry_refuses_the_read() {
    let app = TestApp::spawn().await;
    let id = app.sample().persons[1]["id_number"]
        .as_str()
        .unwrap()
        .to_string();
    let person = app.subject_token(&id, SubjectType::Natural);
    let bank = app
        .token_in("financial_institution", "demo-bank", None)
        .await;
    let c: Value = grant(
        &app,
        &person,
        json!({"grantee_org": "demo-bank", "purpose": "lending", "expires_at": in_days(2),
               "separate": true}),
    )
    .await
    .json()
    .await
    .unwrap();
    let cid = c["id"].as_str().unwrap().to_string();
    assert_eq!(
        read_person(&app, &bank, &id, "lending", Some(&cid))
            .await
            .status(),
        200
    );

    app.state.clock.advance_days(3);
    // Tokens are judged on the same clock: take fresh ones.
    let bank = app
        .token_in("financial_institution", "demo-bank", None)
        .await;
    let person = app.subject_token(&id, SubjectType::Natural);
    let body = assert_problem(
        read_person(&app, &bank, &id, "lending", Some(&cid)).await,
        403,
    )
    .await;
    assert_eq!(body["rule"], "consent-invalid");
    let list: Value = app
        .http
        .get(format!("{}/subject/consents", app.url))
        .bearer_auth(&person)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"][0]["status"], "expired", "{list}");
}
