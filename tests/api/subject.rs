use credgate::{auth::keys::Ed25519Key, domain::SubjectType};
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

async fn me(app: &TestApp, token: &str) -> reqwest::Response {
    app.http
        .get(format!("{}/subject/me", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_trusted_providers_token_identifies_the_subject() {
    let app = TestApp::spawn().await;
    let t = app.subject_token("91350100M000100Y43", SubjectType::Legal);
    let res = me(&app, &t).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["subject"], "91350100M000100Y43");
    assert_eq!(body["subject_type"], "legal");

    let t = app.subject_token("11010519491231002x", SubjectType::Natural);
    let body: Value = me(&app, &t).await.json().await.unwrap();
    assert_eq!(body["subject"], "11010519491231002X", "normalised");
    assert_eq!(body["subject_type"], "natural");
}

fn forge(key: &Ed25519Key, claims: Value) -> String {
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&h, &claims, &key.encoding_key()).unwrap()
}

#[tokio::test]
async fn untrusted_wrong_audience_expired_and_invalid_id_subject_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let idp = Ed25519Key::load(&app.dir.path().join("keys/idp.p8")).unwrap();
    let now = jsonwebtoken::get_current_timestamp();
    let good = json!({"iss": "test-idp", "aud": "credgate", "sub": "91350100M000100Y43",
                      "subject_type": "legal", "exp": now + 600});
    assert_eq!(me(&app, &forge(&idp, good.clone())).await.status(), 200);

    let stranger = Ed25519Key::generate().unwrap();
    let mut with_our_kid = Header::new(Algorithm::EdDSA);
    with_our_kid.kid = Some(idp.kid.clone());
    let t = jsonwebtoken::encode(&with_our_kid, &good, &stranger.encoding_key()).unwrap();
    assert_problem(me(&app, &t).await, 401).await;

    let mut c = good.clone();
    c["aud"] = json!("credgate-api");
    assert_problem(me(&app, &forge(&idp, c)).await, 401).await;
    let mut c = good.clone();
    c["iss"] = json!("other-idp");
    assert_problem(me(&app, &forge(&idp, c)).await, 401).await;
    let mut c = good.clone();
    c["exp"] = json!(now - 600);
    assert_problem(me(&app, &forge(&idp, c)).await, 401).await;
    let mut c = good.clone();
    c["sub"] = json!("91350100M000100Y44");
    assert_problem(me(&app, &forge(&idp, c)).await, 401).await;
    let mut c = good;
    c["subject_type"] = json!("natural");
    assert_problem(me(&app, &forge(&idp, c)).await, 401).await;
}

#[tokio::test]
async fn an_institution_token_is_not_a_subject_token() {
    let app = TestApp::spawn().await;
    let (_, token) = app.token("regulator").await;
    assert_problem(me(&app, &token).await, 401).await;
}

/// An id holding a NUL (or another byte PostgreSQL cannot store) names nothing: the answer is
/// a client error, never the 503 of a database that is down.
#[tokio::test]
async fn an_item_id_with_a_nul_is_a_client_error_not_an_outage() {
    let app = TestApp::spawn().await;
    let t = app.subject_token("91350100M000100Y43", SubjectType::Legal);
    for path in [
        "/subject/objections/ob_1%00",
        "/subject/requests/rq_1%00",
        "/subject/complaints/cp_1%00",
    ] {
        let res = app
            .http
            .get(format!("{}{path}", app.url))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        assert!(matches!(status, 400 | 404), "{path}: {status}");
    }
    let res = app
        .http
        .delete(format!("{}/subject/consents/cs_1%00", app.url))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert!(
        matches!(res.status().as_u16(), 400 | 404),
        "{}",
        res.status()
    );
}
