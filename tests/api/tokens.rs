//! Every way a gateway token can be wrong is a 401 problem, and the store is never contacted.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use credgate::auth::keys::Ed25519Key;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, wait_until};

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims(client_id: &str) -> Value {
    json!({
        "iss": "credgate", "aud": "credgate-api", "sub": client_id, "org": "test-org",
        "role": "regulator", "exp": now() + 600, "iat": now(), "nbf": now(), "jti": "t-1",
    })
}

fn sign(key: &Ed25519Key, kid: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(kid.to_string());
    jsonwebtoken::encode(&h, claims, &key.encoding_key()).unwrap()
}

async fn refused(app: &TestApp, token: &str) {
    let before = app.fake.hits();
    let res = app
        .data(token, "/v1/stores/fake/entities/91350100M000100Y43")
        .await;
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let body = assert_problem(res, 401).await;
    assert!(!body.to_string().contains(token), "the token is not echoed");
    assert_eq!(app.fake.hits(), before, "the store was not contacted");
}

#[tokio::test]
async fn a_valid_token_passes_and_the_same_claims_signed_right_pass_too() {
    let app = TestApp::spawn().await;
    let (id, token) = app.token("regulator").await;
    let res = app
        .data(&token, "/v1/stores/fake/entities/91350100M000100Y43")
        .await;
    assert_eq!(res.status(), 200);
    // Our hand-made tokens are accepted when correct, so each refusal below is for its flaw.
    let key = app.signing_key().await;
    let res = app
        .data(
            &sign(&key, &key.kid, &claims(&id)),
            "/v1/stores/fake/entities/91350100M000100Y43",
        )
        .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn missing_and_garbage_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let res = app
        .http
        .get(format!(
            "{}/v1/stores/fake/entities/91350100M000100Y43",
            app.url
        ))
        .header("X-Purpose", "lending")
        .send()
        .await
        .unwrap();
    assert_problem(res, 401).await;
    refused(&app, "garbage").await;
    refused(&app, "a.b.c").await;
    let res = app
        .http
        .get(format!(
            "{}/v1/stores/fake/entities/91350100M000100Y43",
            app.url
        ))
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .header("X-Purpose", "lending")
        .send()
        .await
        .unwrap();
    assert_problem(res, 401).await;
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let (id, _) = app.token("regulator").await;
    let key = app.signing_key().await;
    let mut c = claims(&id);
    c["exp"] = json!(now() - 120);
    c["iat"] = json!(now() - 1000);
    c["nbf"] = json!(now() - 1000);
    refused(&app, &sign(&key, &key.kid, &c)).await;
    let mut c = claims(&id);
    c["nbf"] = json!(now() + 600);
    refused(&app, &sign(&key, &key.kid, &c)).await;
}

#[tokio::test]
async fn wrong_audience_and_issuer_are_refused() {
    let app = TestApp::spawn().await;
    let (id, _) = app.token("regulator").await;
    let key = app.signing_key().await;
    let mut c = claims(&id);
    c["aud"] = json!("some-other-api");
    refused(&app, &sign(&key, &key.kid, &c)).await;
    let mut c = claims(&id);
    c["iss"] = json!("evil-issuer");
    refused(&app, &sign(&key, &key.kid, &c)).await;
    let mut c = claims(&id);
    c.as_object_mut().unwrap().remove("exp");
    refused(&app, &sign(&key, &key.kid, &c)).await;
}

#[tokio::test]
async fn alg_none_and_hmac_with_the_public_key_are_refused() {
    let app = TestApp::spawn().await;
    let (id, _) = app.token("regulator").await;
    let key = app.signing_key().await;
    let body = URL_SAFE_NO_PAD.encode(claims(&id).to_string());
    for alg in ["none", "None", "NONE"] {
        let head =
            URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT", "kid": key.kid}).to_string());
        refused(&app, &format!("{head}.{body}.")).await;
    }
    // HS256 keyed with the public key, raw and as published in the JWKS.
    let x = URL_SAFE_NO_PAD.encode(&key.public);
    for secret in [key.public.clone(), x.into_bytes()] {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(key.kid.clone());
        let hmac = EncodingKey::from_secret(&secret).unwrap();
        let t = jsonwebtoken::encode(&h, &claims(&id), &hmac).unwrap();
        refused(&app, &t).await;
    }
}

#[tokio::test]
async fn another_key_with_our_kid_and_a_tampered_payload_are_refused() {
    let app = TestApp::spawn().await;
    let (id, token) = app.token("financial_institution").await;
    let key = app.signing_key().await;
    let impostor = Ed25519Key::generate().unwrap();
    refused(&app, &sign(&impostor, &key.kid, &claims(&id))).await;
    refused(&app, &sign(&impostor, &impostor.kid, &claims(&id))).await;

    // The real token verified and cached first: the forgery below carries its signature, the
    // cache's key, and must still go to the signature check.
    let path = "/v1/stores/fake/entities/91350100M000100Y43";
    assert_eq!(app.data(&token, path).await.status(), 200, "now cached");
    let parts: Vec<&str> = token.split('.').collect();
    let mut c: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    c["role"] = json!("regulator");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(c.to_string()),
        parts[2]
    );
    refused(&app, &forged).await;
    assert_eq!(
        app.data(&token, path).await.status(),
        200,
        "the real one still passes"
    );
}

#[tokio::test]
async fn a_client_disabled_through_the_gateway_is_refused_on_its_next_request() {
    let app = TestApp::spawn().await;
    let (id, token) = app.token("regulator").await;
    let (_, officer) = app.token("system_admin").await;
    let path = "/v1/stores/fake/entities/91350100M000100Y43";
    assert_eq!(app.data(&token, path).await.status(), 200, "now cached");
    let res = app
        .http
        .post(format!("{}/admin/clients/{id}/disable", app.url))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    refused(&app, &token).await;
    // Only system administrators disable clients, and only ids that exist.
    let (_, regulator) = app.token("regulator").await;
    let res = app
        .http
        .post(format!("{}/admin/clients/{id}/disable", app.url))
        .bearer_auth(&regulator)
        .send()
        .await
        .unwrap();
    assert_problem(res, 403).await;
    let res = app
        .http
        .post(format!("{}/admin/clients/cg_nosuch/disable", app.url))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap();
    assert_problem(res, 404).await;
    let res = app
        .http
        .post(format!(
            "{}/admin/clients/x'%20OR%20'1'='1/disable",
            app.url
        ))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap();
    assert_problem(res, 404).await;
}

/// Changes made outside this process (the CLI, another replica, or SQL by hand) reach the
/// status cache through the `clients` signal, which triggers bump: within a second.
#[tokio::test]
async fn a_client_disabled_or_locked_down_by_hand_in_sql_is_refused_within_a_second() {
    let app = TestApp::spawn().await;
    let (id, token) = app.token("regulator").await;
    let (other_id, other) = app.token("regulator").await;
    let path = "/v1/stores/fake/entities/91350100M000100Y43";
    assert_eq!(app.data(&token, path).await.status(), 200, "now cached");
    assert_eq!(app.data(&other, path).await.status(), 200, "now cached");
    sqlx::query("UPDATE clients SET status = 'disabled' WHERE id = $1")
        .bind(&id)
        .execute(app.state.db.pool())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO lockdowns (id, client_id, reason, created_by, created_at) \
         VALUES ('ld_by_hand', $1, 'by hand', 'dba', 0)",
    )
    .bind(&other_id)
    .execute(app.state.db.pool())
    .await
    .unwrap();
    wait_until(
        "refused (401 and 403) within a second",
        std::time::Duration::from_secs(1),
        || async {
            app.data(&token, path).await.status() == 401
                && app.data(&other, path).await.status() == 403
        },
    )
    .await;
    refused(&app, &token).await;
}

#[tokio::test]
async fn a_token_for_a_client_that_never_existed_is_refused() {
    let app = TestApp::spawn().await;
    let key = app.signing_key().await;
    refused(&app, &sign(&key, &key.kid, &claims("cg_ghost"))).await;
}

#[tokio::test]
async fn subject_tokens_do_not_open_the_data_path() {
    let app = TestApp::spawn().await;
    let t = app.subject_token("91350100M000100Y43", credgate::domain::SubjectType::Legal);
    refused(&app, &t).await;
}

/// On the gateway's clock, not the wall's: the test moves the clock past `exp` instead of
/// sleeping across the second boundary of a 1 s token (which raced on a loaded machine).
#[tokio::test]
async fn a_token_verified_once_still_expires_on_time() {
    let app = TestApp::spawn_with(|c| {
        c.auth.token_ttl_secs = 60;
        c.auth.leeway_secs = 0;
    })
    .await;
    let (_, token) = app.token("regulator").await;
    let path = "/v1/stores/fake/entities/91350100M000100Y43";
    assert_eq!(
        app.data(&token, path).await.status(),
        200,
        "verified and cached"
    );
    assert_eq!(
        app.data(&token, path).await.status(),
        200,
        "served from the cache"
    );
    app.state.clock.advance_days(1);
    refused(&app, &token).await;
}

/// The first verification of a token (not the cache) also reads the gateway's clock: a token
/// never presented before is refused once that clock is past its `exp`. Failed before the
/// clock was injected: the library checked `exp` against the system time.
#[tokio::test]
async fn a_token_first_presented_after_its_expiry_on_the_gateways_clock_is_refused() {
    let app = TestApp::spawn_with(|c| {
        c.auth.token_ttl_secs = 60;
        c.auth.leeway_secs = 0;
    })
    .await;
    let (_, token) = app.token("regulator").await;
    app.state.clock.advance_days(1);
    refused(&app, &token).await;
    // Tokens issued now carry the clock's time and pass.
    let (_, fresh) = app.token("regulator").await;
    let path = "/v1/stores/fake/entities/91350100M000100Y43";
    assert_eq!(app.data(&fresh, path).await.status(), 200);
}
