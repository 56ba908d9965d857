use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use serde_json::Value;

use crate::helpers::TestApp;

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn header_of(token: &str) -> Value {
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
}

async fn oauth_error(res: reqwest::Response, status: u16, code: &str) {
    assert_eq!(res.status().as_u16(), status);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
}

#[tokio::test]
async fn client_credentials_yield_a_short_lived_eddsa_token_verifiable_by_the_jwks() {
    let app = TestApp::spawn().await;
    let (id, secret) = app.add_client("financial_institution").await;
    let res = app.token_for(&id, &secret).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let token = body["access_token"].as_str().unwrap();

    let header = header_of(token);
    assert_eq!(header["alg"], "EdDSA");
    let claims = claims_of(token);
    for k in ["iss", "aud", "sub", "org", "role", "exp", "iat", "jti"] {
        assert!(!claims[k].is_null(), "claim {k} missing: {claims}");
    }
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["role"], "financial_institution");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        900
    );

    let jwks: Value = app
        .http
        .get(format!("{}/.well-known/jwks.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kid"], header["kid"]);
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    assert!(key.get("d").is_none(), "no private part is published");
    // Verify the signature with nothing but the published key.
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&[claims["aud"].as_str().unwrap()]);
    let dk = jsonwebtoken::DecodingKey::from_ed_components(key["x"].as_str().unwrap()).unwrap();
    jsonwebtoken::decode::<Value>(token, &dk, &v).expect("the JWKS verifies the token");
}

#[tokio::test]
async fn http_basic_client_authentication_works_too() {
    let app = TestApp::spawn().await;
    let (id, secret) = app.add_client("regulator").await;
    let res = app
        .http
        .post(format!("{}/oauth/token", app.url))
        .header(
            "Authorization",
            format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))),
        )
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn bad_credentials_are_invalid_client_without_saying_which_part_was_wrong() {
    let app = TestApp::spawn().await;
    let (id, secret) = app.add_client("regulator").await;
    let wrong = app.token_for(&id, "not-the-secret").await;
    let unknown = app.token_for("cg_nobody", &secret).await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().contains_key("www-authenticate"));
    let a: Value = wrong.json().await.unwrap();
    let b: Value = unknown.json().await.unwrap();
    assert_eq!(a, b, "unknown client and wrong secret look the same");
    assert_eq!(a["error"], "invalid_client");
    assert!(!a.to_string().contains(&secret));
}

#[tokio::test]
async fn malformed_token_requests_get_rfc6749_errors() {
    let app = TestApp::spawn().await;
    let (id, secret) = app.add_client("regulator").await;
    let url = format!("{}/oauth/token", app.url);
    let res = app
        .http
        .post(&url)
        .form(&[("client_id", &id), ("client_secret", &secret)])
        .send()
        .await
        .unwrap();
    oauth_error(res, 400, "invalid_request").await;
    let res = app
        .http
        .post(&url)
        .form(&[
            ("grant_type", "password"),
            ("client_id", &id),
            ("client_secret", &secret),
        ])
        .send()
        .await
        .unwrap();
    oauth_error(res, 400, "unsupported_grant_type").await;
    let res = app
        .http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_id={id}&client_id=other&client_secret={secret}"
        ))
        .send()
        .await
        .unwrap();
    oauth_error(res, 400, "invalid_request").await;
    let res = app
        .http
        .post(&url)
        .json(&serde_json::json!({"grant_type": "client_credentials", "client_id": id, "client_secret": secret}))
        .send()
        .await
        .unwrap();
    oauth_error(res, 400, "invalid_request").await;
    let res = app
        .http
        .post(&url)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    oauth_error(res, 401, "invalid_client").await;
}

#[tokio::test]
async fn oversized_token_request_is_refused() {
    let app = TestApp::spawn().await;
    let res = app
        .http
        .post(format!("{}/oauth/token", app.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_id={}",
            "a".repeat(200_000)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
}

#[tokio::test]
async fn a_disabled_client_gets_no_token() {
    let app = TestApp::spawn().await;
    let (id, secret) = app.add_client("regulator").await;
    credgate::storage::clients::disable(&app.state.db, &id)
        .await
        .unwrap();
    oauth_error(app.token_for(&id, &secret).await, 401, "invalid_client").await;
}

#[tokio::test]
async fn the_master_key_is_private_to_its_owner_and_the_stored_keys_are_wrapped() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn().await;
    let key_dir = app.dir.path().join("keys");
    let path = credgate::auth::keyring::master_key_path(&key_dir);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The stored signing key is not in the clear: its PKCS#8 document is nowhere in the row.
    let signing = app.signing_key().await;
    let wrapped: Vec<String> = sqlx::query_scalar("SELECT wrapped FROM gateway_keys")
        .fetch_all(app.state.db.pool())
        .await
        .unwrap();
    assert_eq!(wrapped.len(), 4, "token, audit, pseudonym and report keys");
    // Searched in the decoded bytes: the base64 of a key stored at any offset not a multiple of
    // three would not contain the key's own base64 text.
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let shifted = STANDARD.encode([&[0u8][..], &signing.public].concat());
    assert!(
        !shifted.contains(&STANDARD.encode(&signing.public))
            && contains(&STANDARD.decode(&shifted).unwrap(), &signing.public),
        "the search finds a key the text search misses"
    );
    // Ed25519 PKCS#8 v1/v2 documents start with these bytes; the public key is in v2's.
    let pkcs8_prefix = [
        0x30, 0x53, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70,
    ];
    for w in &wrapped {
        let bytes = STANDARD.decode(w).expect("a wrapped key is base64");
        assert!(!contains(&bytes, &signing.public), "public key in clear");
        assert!(
            !contains(&bytes, &pkcs8_prefix),
            "a PKCS#8 document in clear"
        );
    }
    // A master key others can read is refused, not used.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = credgate::auth::keyring::Keyring::open(&key_dir)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("chmod 600"), "{err}");
}

#[tokio::test]
async fn a_replica_with_another_master_key_refuses_to_start() {
    let app = TestApp::spawn().await;
    let mut config = app.state.config.as_ref().clone();
    let other = tempfile::tempdir().unwrap();
    config.key_dir = other.path().join("keys");
    let err = credgate::web::App::build(config).await.err().unwrap();
    let text = format!("{err:#}");
    assert!(text.contains("does not open with the master key"), "{text}");
}

#[tokio::test]
async fn a_wrapped_key_moved_to_another_row_does_not_open() {
    use credgate::auth::keyring::{KeyUse, Keyring};
    let app = TestApp::spawn().await;
    let pool = app.state.db.pool();
    let keyring = Keyring::open(&app.dir.path().join("keys")).unwrap();
    assert!(keyring.load(&app.state.db, KeyUse::Pseudonym).await.is_ok());
    // Someone with write access to the database swaps the pseudonym key for the reports key.
    let reports: String =
        sqlx::query_scalar("SELECT wrapped FROM gateway_keys WHERE purpose = 'reports'")
            .fetch_one(pool)
            .await
            .unwrap();
    sqlx::query("UPDATE gateway_keys SET wrapped = $1 WHERE purpose = 'pseudonym'")
        .bind(&reports)
        .execute(pool)
        .await
        .unwrap();
    let err = keyring
        .load(&app.state.db, KeyUse::Pseudonym)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not open"), "{err}");
    // And a gateway on that database refuses to start rather than mask with a wrong key.
    let mut config = app.state.config.as_ref().clone();
    config.listen = "127.0.0.1:0".parse().unwrap();
    let err = format!(
        "{:#}",
        credgate::web::App::build(config).await.err().unwrap()
    );
    assert!(
        err.contains("does not open"),
        "refused for the wrapped key: {err}"
    );
}

/// RFC 6749 section 2.3.1 under attack: client authentication inside `Authorization: Basic`,
/// whose id and secret are form-urlencoded before they are joined by a colon. Every malformed
/// form is 401 `invalid_client` with a `Basic` challenge (never a 5xx), two methods at once are
/// 400 `invalid_request`, and no refusal writes any part of a secret into the audit log.
#[tokio::test]
async fn basic_client_authentication_refuses_every_malformed_form() {
    let app = TestApp::spawn().await;
    let (id, secret) = app.add_client("regulator").await;
    let url = format!("{}/oauth/token", app.url);
    let send = |auth: Vec<u8>, extra: &'static [(&'static str, &'static str)]| {
        let mut form = vec![("grant_type", "client_credentials")];
        form.extend_from_slice(extra);
        app.http
            .post(&url)
            .header(
                "Authorization",
                reqwest::header::HeaderValue::from_bytes(&auth).unwrap(),
            )
            .form(&form)
            .send()
    };
    let basic = |inner: &[u8]| [b"Basic ".as_slice(), STANDARD.encode(inner).as_bytes()].concat();
    // Percent-encoding every byte of both halves, as the RFC allows, changes nothing.
    let pct = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
    let ok = send(
        basic(format!("{}:{}", pct(&id), pct(&secret)).as_bytes()),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    // Two methods at once.
    let res = send(
        basic(format!("{id}:{secret}").as_bytes()),
        &[("client_secret", "x")],
    )
    .await
    .unwrap();
    oauth_error(res, 400, "invalid_request").await;
    let refused: Vec<Vec<u8>> = vec![
        basic(format!("{id}:not-the-secret").as_bytes()),
        // An empty secret, an empty id.
        basic(format!("{id}:").as_bytes()),
        basic(format!(":{secret}").as_bytes()),
        // A colon percent-encoded into the id: the pair has no separator left but the last.
        basic(format!("{id}%3A{secret}:").as_bytes()),
        basic(format!("{id}%3a{secret}:x").as_bytes()),
        // No colon at all, not base64, no credentials, another scheme.
        basic(format!("{id}{secret}").as_bytes()),
        b"Basic !!!not-base64!!!".to_vec(),
        b"Basic".to_vec(),
        b"Basic ".to_vec(),
        format!("Bearer {secret}").into_bytes(),
        // Not UTF-8: in the header itself, and inside the base64.
        b"Basic \xff\xfe\xfd".to_vec(),
        basic(&[&id.as_bytes()[..10], b":\xff\xfe", secret.as_bytes()].concat()),
        // Malformed percent-encoding.
        basic(format!("{id}:%ZZ{secret}").as_bytes()),
        // Huge: a 48 KiB secret.
        basic(format!("{id}:{}", "a".repeat(48 * 1024)).as_bytes()),
    ];
    for auth in refused {
        let shown = String::from_utf8_lossy(&auth[..auth.len().min(40)]).to_string();
        let res = send(auth, &[]).await.unwrap();
        assert_eq!(res.status(), 401, "{shown}");
        let challenge = res.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Basic "), "{shown}: {challenge}");
        oauth_error(res, 401, "invalid_client").await;
    }
    // A header larger than any server keeps is refused before the endpoint, never a 5xx.
    let huge = basic(format!("{id}:{}", "a".repeat(512 * 1024)).as_bytes());
    match send(huge, &[]).await {
        Ok(res) => assert!(res.status().is_client_error(), "{}", res.status()),
        Err(e) => assert!(e.is_request() || e.is_connect() || e.is_body(), "{e}"),
    }
    // The endpoint still works, and nothing refused left a piece of the secret in the log.
    let ok = send(basic(format!("{id}:{secret}").as_bytes()), &[])
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let records = credgate::audit::store::page_after(&app.state.db, 0, 100_000)
        .await
        .unwrap();
    assert!(records.len() >= 15);
    let log = serde_json::to_string(&records).unwrap();
    for piece in secret.as_bytes().windows(8) {
        let piece = std::str::from_utf8(piece).unwrap();
        assert!(!log.contains(piece), "a piece of the secret is in the log");
    }
}

/// A client that swaps its id and secret (or sends `Basic base64(secret:id)`) must not have its
/// still valid secret written into the append-only audit record's `client_id`, shown to
/// officers and auditors in /admin/audit and in every CSV/NDJSON export.
#[tokio::test]
async fn a_secret_sent_as_the_client_id_never_enters_the_audit_record() {
    let app = TestApp::spawn().await;
    let (id, secret) = app.add_client("financial_institution").await;
    let (_, officer) = app.token("security_officer").await;
    let swapped = app.token_for(&secret, &id).await;
    assert_eq!(swapped.status(), 401);
    let audit_id = swapped.headers()["x-audit-id"].to_str().unwrap().to_owned();
    let basic = app
        .http
        .post(format!("{}/oauth/token", app.url))
        .basic_auth(&secret, Some(&id))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    let basic_id = basic.headers()["x-audit-id"].to_str().unwrap().to_owned();
    for a in [&audit_id, &basic_id] {
        let r = app.record(a).await;
        assert!(
            !serde_json::to_string(&r).unwrap().contains(&secret),
            "the secret is in audit record {a}: client_id = {:?}",
            r.client_id
        );
    }
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
    assert!(
        !csv.contains(&secret),
        "the secret is in the officers' CSV export"
    );
}

/// RFC 8414 section 3.3 and RFC 9068 section 4: the metadata's `issuer` and every token's `iss`
/// are one setting, byte for byte (a trailing slash included), and the endpoints hang off it.
/// A token issued before a restart with the same setting still verifies after it.
#[tokio::test]
async fn the_metadata_issuer_is_the_tokens_iss_whatever_the_setting() {
    for issuer in ["https://gateway.example.test/", "credgate"] {
        let app = TestApp::spawn_with(|c| c.auth.issuer = issuer.into()).await;
        let meta: Value = app
            .http
            .get(format!(
                "{}/.well-known/oauth-authorization-server",
                app.url
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(meta["issuer"], issuer, "{meta}");
        if issuer.starts_with("https://") {
            assert_eq!(
                meta["token_endpoint"],
                "https://gateway.example.test/oauth/token"
            );
        }
        let (id, secret) = app.add_client("regulator").await;
        let body: Value = app.token_for(&id, &secret).await.json().await.unwrap();
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(claims_of(token)["iss"], meta["issuer"]);
        // A restart (a second gateway on the same storage) with the same setting takes it.
        let restarted = app.sibling().await;
        let res = app
            .http
            .get(format!(
                "{}/v1/stores/power/entities?page_size=1",
                restarted.url
            ))
            .bearer_auth(token)
            .header("X-Purpose", crate::helpers::purpose_of(token))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{issuer}");
        // One whose issuer setting changed does not: `iss` is checked.
        let moved = app
            .sibling_with(|c| c.auth.issuer = "https://elsewhere.example.test".into())
            .await;
        assert!(moved.state.tokens.verify(token).is_err());
    }
}
