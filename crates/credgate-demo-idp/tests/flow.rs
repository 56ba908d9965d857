//! The demo provider over real HTTP on loopback, as a browser and an OAuth client use it.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use credgate_demo_idp::{DemoIdp, Options, totp};
use reqwest::{Client, StatusCode, redirect::Policy};
use serde_json::Value;

const CLIENT: &str = "credgate";
const REDIRECT: &str = "http://127.0.0.1:9/callback";

struct Flow {
    idp: DemoIdp,
    http: Client,
    verifier: String,
}

async fn start() -> Flow {
    let idp = DemoIdp::start(Options::default()).await.unwrap();
    idp.register_client(CLIENT, REDIRECT);
    let http = Client::builder().redirect(Policy::none()).build().unwrap();
    Flow {
        idp,
        http,
        verifier: "v".repeat(20) + "-verifier.~_0123456789abcdef",
    }
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ))
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

fn password(f: &Flow, user: &str) -> String {
    f.idp
        .users()
        .into_iter()
        .find(|u| u.username == user)
        .unwrap()
        .password
}

fn secret(f: &Flow, user: &str) -> Vec<u8> {
    let u = f
        .idp
        .users()
        .into_iter()
        .find(|u| u.username == user)
        .unwrap();
    totp::base32_decode(&u.totp_secret.unwrap()).unwrap()
}

impl Flow {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.idp.issuer())
    }

    async fn authorize(&self, method: &str, redirect: &str) -> reqwest::Response {
        let query = [
            ("response_type", "code"),
            ("client_id", CLIENT),
            ("redirect_uri", redirect),
            ("code_challenge", &challenge(&self.verifier)),
            ("code_challenge_method", method),
            ("state", "st&ate"),
        ];
        self.http
            .get(self.url("/authorize"))
            .query(&query)
            .send()
            .await
            .unwrap()
    }

    /// The login page's flow handle.
    async fn begin(&self) -> String {
        let resp = self.authorize("S256", REDIRECT).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let html = resp.text().await.unwrap();
        for label in [
            ">Username</label>",
            ">Password</label>",
            ">Sign in</button>",
        ] {
            assert!(html.contains(label), "{label} missing from {html}");
        }
        assert!(!html.contains("<script"), "no script on the login page");
        hidden(&html, "flow")
    }

    async fn login(&self, flow: &str, user: &str, pass: &str) -> reqwest::Response {
        let form = [("flow", flow), ("username", user), ("password", pass)];
        self.http
            .post(self.url("/login"))
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    async fn otp(&self, step: &str, code: &str) -> reqwest::Response {
        let form = [("step", step), ("otp", code)];
        self.http
            .post(self.url("/login/otp"))
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    async fn token(&self, code: &str, verifier: &str, redirect: &str) -> reqwest::Response {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("client_id", CLIENT),
            ("code_verifier", verifier),
        ];
        self.http
            .post(self.url("/token"))
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    /// Signs a user without a second factor in; the code from the redirect.
    async fn code_for(&self, user: &str) -> String {
        let flow = self.begin().await;
        let resp = self.login(&flow, user, &password(self, user)).await;
        code_of(resp)
    }
}

fn code_of(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(REDIRECT), "{location}");
    assert!(
        location.ends_with("&state=st%26ate"),
        "state kept: {location}"
    );
    let code = location.split("code=").nth(1).unwrap();
    code.split('&').next().unwrap().to_string()
}

/// The claims of a token, after checking its signature against the provider's JWKS with an
/// independent JWT library.
async fn verified(f: &Flow, token: &str, aud: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet = f
        .http
        .get(f.url("/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_audience(&[aud]);
    v.set_issuer(&[f.idp.issuer()]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .unwrap()
        .claims
}

#[tokio::test]
async fn staff_sign_in_with_password_and_one_time_code() {
    let f = start().await;
    let meta: Value = f
        .http
        .get(f.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["issuer"], f.idp.issuer());
    assert_eq!(
        meta["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    let flow = f.begin().await;
    let resp = f.login(&flow, "officer", &password(&f, "officer")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    assert!(html.contains(">One-time code</label>"), "{html}");
    let step = hidden(&html, "step");
    let resp = f.otp(&step, &totp::code_now(&secret(&f, "officer"))).await;
    let code = code_of(resp);
    let resp = f.token(&code, &f.verifier, REDIRECT).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    let id = verified(&f, body["id_token"].as_str().unwrap(), CLIENT).await;
    let access = verified(&f, body["access_token"].as_str().unwrap(), "credgate").await;
    for c in [&id, &access] {
        assert_eq!(c["groups"], serde_json::json!(["security_officer"]));
        assert_eq!(c["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
        assert_eq!(c["acr"], credgate_demo_idp::ACR_TWO_FACTOR);
        assert_eq!(c["org"], "credgate-ops");
    }
    // Two algorithms: the id token ES256, the access token EdDSA.
    let alg = |t: &str| jsonwebtoken::decode_header(t).unwrap().alg;
    assert_eq!(
        alg(body["id_token"].as_str().unwrap()),
        jsonwebtoken::Algorithm::ES256
    );
    assert_eq!(
        alg(body["access_token"].as_str().unwrap()),
        jsonwebtoken::Algorithm::EdDSA
    );
}

#[tokio::test]
async fn subject_signs_in_with_a_password_only() {
    let f = start().await;
    let users = f.idp.users();
    let company = users.iter().find(|u| u.username == "company1").unwrap();
    let code = f.code_for("company1").await;
    let body: Value = f
        .token(&code, &f.verifier, REDIRECT)
        .await
        .json()
        .await
        .unwrap();
    let c = verified(&f, body["access_token"].as_str().unwrap(), "credgate").await;
    assert_eq!(c["sub"].as_str(), company.subject_id.as_deref());
    assert_eq!(c["subject_type"], "legal");
    assert_eq!(c["amr"], serde_json::json!(["pwd"]));
    assert_eq!(c["acr"], credgate_demo_idp::ACR_PASSWORD);
    assert!(users.iter().any(|u| u.subject_type == Some("natural")));
    let staff_roles: Vec<_> = users.iter().filter_map(|u| u.role.as_deref()).collect();
    assert_eq!(
        staff_roles,
        [
            "security_officer",
            "objection_handler",
            "system_admin",
            "auditor"
        ]
    );
}

#[tokio::test]
async fn pkce_mismatch_and_plain_are_refused() {
    let f = start().await;
    let code = f.code_for("person1").await;
    let wrong = "w".repeat(43);
    let resp = f.token(&code, &wrong, REDIRECT).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    // The code died with the failed attempt: the right verifier is now too late.
    let resp = f.token(&code, &f.verifier, REDIRECT).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = f.authorize("plain", REDIRECT).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains("plain is not accepted"));
}

#[tokio::test]
async fn a_code_works_once() {
    let f = start().await;
    let code = f.code_for("person1").await;
    assert_eq!(
        f.token(&code, &f.verifier, REDIRECT).await.status(),
        StatusCode::OK
    );
    let resp = f.token(&code, &f.verifier, REDIRECT).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn wrong_password_shows_the_form_again_and_gives_no_code() {
    let f = start().await;
    let flow = f.begin().await;
    let resp = f.login(&flow, "company1", "not-the-password").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("Wrong username or password")
    );
    let resp = f.login(&flow, "nobody", "x").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Still usable with the right password, until too many attempts.
    code_of(f.login(&flow, "company1", &password(&f, "company1")).await);
    let flow = f.begin().await;
    for _ in 0..5 {
        f.login(&flow, "company1", "wrong").await;
    }
    let resp = f.login(&flow, "company1", &password(&f, "company1")).await;
    assert_ne!(
        resp.status(),
        StatusCode::SEE_OTHER,
        "locked after five attempts"
    );
}

#[tokio::test]
async fn staff_need_a_right_unused_one_time_code() {
    let f = start().await;
    let step = |html: String| hidden(&html, "step");
    let flow = f.begin().await;
    let html = f
        .login(&flow, "admin", &password(&f, "admin"))
        .await
        .text()
        .await
        .unwrap();
    let s = step(html);
    // Missing, malformed and wrong codes.
    for code in ["", "12345", "abcdef"] {
        assert_eq!(
            f.otp(&s, code).await.status(),
            StatusCode::UNAUTHORIZED,
            "{code:?}"
        );
    }
    let right = totp::code_now(&secret(&f, "admin"));
    let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 1) % 1_000_000);
    assert_eq!(f.otp(&s, &wrong).await.status(), StatusCode::UNAUTHORIZED);
    code_of(f.otp(&s, &right).await);
    // The same code again, in a new sign-in, is refused (a code works once).
    let flow = f.begin().await;
    let html = f
        .login(&flow, "admin", &password(&f, "admin"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        f.otp(&step(html), &right).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // No skipping the step: the password alone never yields a redirect.
    let flow = f.begin().await;
    let resp = f.login(&flow, "auditor", &password(&f, "auditor")).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn redirect_uri_must_match_exactly() {
    let f = start().await;
    for other in [
        "http://127.0.0.1:9/callback/",
        "http://127.0.0.1:9/callback?x=1",
        "http://evil.example/callback",
    ] {
        let resp = f.authorize("S256", other).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{other}");
        assert!(resp.headers().get("location").is_none());
    }
    let code = f.code_for("person2").await;
    let resp = f
        .token(&code, &f.verifier, "http://127.0.0.1:9/callback/")
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn rotation_keeps_the_previous_keys_published() {
    let f = start().await;
    let old = f.idp.kid(credgate_demo_idp::Alg::ES256).unwrap();
    let resp = f.http.post(f.url("/rotate")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let new = f.idp.kid(credgate_demo_idp::Alg::ES256).unwrap();
    assert_ne!(old, new);
    let jwks: Value = f
        .http
        .get(f.url("/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 4);
    assert!(kids.contains(&old.as_str()) && kids.contains(&new.as_str()));
}
