//! The HTTP side: discovery, JWKS, the authorization code flow with PKCE, the token endpoint.
//!
//! Every handle a browser carries between steps (the flow, the one-time-code step, the code)
//! is random, server-side, short-lived and bounded in number; codes are single-use, removed on
//! the first attempt to redeem them whatever its outcome.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use axum::{
    Form, Json, Router,
    extract::{Query, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Alg, Shared, html, keys::random_id, totp};

const FLOW_TTL: Duration = Duration::from_secs(600);
const OTP_TTL: Duration = Duration::from_secs(300);
const CODE_TTL: Duration = Duration::from_secs(60);
const MAX_OPEN: usize = 10_000;
const MAX_ATTEMPTS: u32 = 5;

#[derive(Clone)]
struct AuthRequest {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    state: Option<String>,
    nonce: Option<String>,
}

struct Pending<T> {
    value: T,
    created: Instant,
    attempts: u32,
}

struct Grant {
    request: AuthRequest,
    username: String,
    amr: Vec<&'static str>,
}

#[derive(Default)]
pub(crate) struct Flows {
    flows: HashMap<String, Pending<AuthRequest>>,
    otp: HashMap<String, Pending<(AuthRequest, String)>>,
    codes: HashMap<String, Pending<Grant>>,
    /// The last TOTP step accepted per user: a code works once.
    last_step: HashMap<String, u64>,
}

impl Flows {
    fn prune(&mut self) {
        self.flows.retain(|_, p| p.created.elapsed() < FLOW_TTL);
        self.otp.retain(|_, p| p.created.elapsed() < OTP_TTL);
        self.codes.retain(|_, p| p.created.elapsed() < CODE_TTL);
    }
    fn full(&self) -> bool {
        self.flows.len() + self.otp.len() + self.codes.len() >= MAX_OPEN
    }
}

fn pending<T>(value: T) -> Pending<T> {
    Pending {
        value,
        created: Instant::now(),
        attempts: 0,
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize))
        .route("/login", post(login))
        .route("/login/otp", post(login_otp))
        .route("/token", post(token))
        .route("/rotate", post(rotate))
        .with_state(shared)
}

async fn discovery(State(s): State<Arc<Shared>>) -> Json<Value> {
    let algs: Vec<&str> = {
        let keys = s.keys.lock().expect("keys lock");
        keys.current.iter().map(|k| k.alg.as_str()).collect()
    };
    let i = &s.issuer;
    Json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": ["openid", "profile"],
        "claims_supported": ["sub", "name", "org", "groups", "subject_type", "acr", "amr"],
        "acr_values_supported": [crate::ACR_PASSWORD, crate::ACR_TWO_FACTOR],
    }))
}

async fn jwks(State(s): State<Arc<Shared>>) -> Json<Value> {
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    Json(s.jwks())
}

async fn rotate(State(s): State<Arc<Shared>>) -> StatusCode {
    match s.rotate() {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
}

/// Checks the request before showing any form. Errors are shown here rather than sent to
/// the redirect URI, since a wrong client or URI must not become an open redirect.
async fn authorize(State(s): State<Arc<Shared>>, Query(q): Query<AuthorizeQuery>) -> Response {
    let request = match check_authorize(&s, q) {
        Ok(r) => r,
        Err(message) => return html::error(StatusCode::BAD_REQUEST, message),
    };
    let mut flows = s.flows.lock().expect("flows lock");
    flows.prune();
    if flows.full() {
        return html::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many sign-ins in progress",
        );
    }
    let id = random_id(&s.rng, 16);
    flows.flows.insert(id.clone(), pending(request));
    html::login(StatusCode::OK, &id, None)
}

fn check_authorize(s: &Shared, q: AuthorizeQuery) -> Result<AuthRequest, &'static str> {
    if q.response_type.as_deref() != Some("code") {
        return Err("response_type must be code");
    }
    let client_id = q.client_id.ok_or("client_id missing")?;
    let redirect_uri = q.redirect_uri.ok_or("redirect_uri missing")?;
    let known = s
        .clients
        .lock()
        .expect("clients lock")
        .get(&client_id)
        .is_some_and(|uris| uris.contains(&redirect_uri));
    if !known {
        return Err("unknown client or redirect_uri not registered for it");
    }
    if q.code_challenge_method.as_deref() != Some("S256") {
        return Err("PKCE with code_challenge_method=S256 is required (plain is not accepted)");
    }
    let challenge = q.code_challenge.ok_or("code_challenge missing")?;
    let b64 = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    if challenge.len() != 43 || !challenge.bytes().all(b64) {
        return Err("code_challenge must be BASE64URL(SHA-256(verifier))");
    }
    let short = |v: &Option<String>| v.as_ref().is_none_or(|t| t.len() <= 512);
    if !short(&q.state) || !short(&q.nonce) {
        return Err("state or nonce too long");
    }
    Ok(AuthRequest {
        client_id,
        redirect_uri,
        challenge,
        state: q.state,
        nonce: q.nonce,
    })
}

#[derive(Deserialize)]
struct LoginForm {
    flow: String,
    username: String,
    password: String,
}

async fn login(State(s): State<Arc<Shared>>, Form(f): Form<LoginForm>) -> Response {
    let mut flows = s.flows.lock().expect("flows lock");
    flows.prune();
    let Some(p) = flows.flows.get_mut(&f.flow) else {
        return html::error(
            StatusCode::BAD_REQUEST,
            "this sign-in has expired; start again",
        );
    };
    let user = s
        .users
        .iter()
        .find(|u| u.username == f.username && same(&u.password, &f.password));
    let Some(user) = user else {
        p.attempts += 1;
        if p.attempts >= MAX_ATTEMPTS {
            flows.flows.remove(&f.flow);
            return html::error(StatusCode::UNAUTHORIZED, "too many attempts; start again");
        }
        return html::login(
            StatusCode::UNAUTHORIZED,
            &f.flow,
            Some("Wrong username or password."),
        );
    };
    let request = flows.flows.remove(&f.flow).expect("found above").value;
    if user.totp_secret.is_some() {
        let step = random_id(&s.rng, 16);
        flows
            .otp
            .insert(step.clone(), pending((request, user.username.clone())));
        return html::one_time_code(StatusCode::OK, &step, None);
    }
    issue_code(&s, &mut flows, request, user.username.clone(), vec!["pwd"])
}

#[derive(Deserialize)]
struct OtpForm {
    step: String,
    otp: String,
}

async fn login_otp(State(s): State<Arc<Shared>>, Form(f): Form<OtpForm>) -> Response {
    let mut flows = s.flows.lock().expect("flows lock");
    flows.prune();
    let Some(p) = flows.otp.get_mut(&f.step) else {
        return html::error(
            StatusCode::BAD_REQUEST,
            "this sign-in has expired; start again",
        );
    };
    let username = p.value.1.clone();
    let secret = s
        .users
        .iter()
        .find(|u| u.username == username)
        .and_then(|u| u.totp_secret.as_deref())
        .and_then(totp::base32_decode)
        .unwrap_or_default();
    let last = flows.last_step.get(&username).copied();
    let step = totp::matching_step(&secret, f.otp.trim(), totp::now_step())
        .filter(|s| last.is_none_or(|l| *s > l));
    let Some(step) = step else {
        let p = flows.otp.get_mut(&f.step).expect("found above");
        p.attempts += 1;
        if p.attempts >= MAX_ATTEMPTS {
            flows.otp.remove(&f.step);
            return html::error(StatusCode::UNAUTHORIZED, "too many attempts; start again");
        }
        return html::one_time_code(
            StatusCode::UNAUTHORIZED,
            &f.step,
            Some("Wrong or used one-time code."),
        );
    };
    flows.last_step.insert(username.clone(), step);
    let (request, username) = flows.otp.remove(&f.step).expect("found above").value;
    issue_code(&s, &mut flows, request, username, vec!["pwd", "otp"])
}

/// Back to the client with a fresh code (and its `state`), by a 303 so the browser GETs.
fn issue_code(
    s: &Shared,
    flows: &mut Flows,
    request: AuthRequest,
    username: String,
    amr: Vec<&'static str>,
) -> Response {
    let code = random_id(&s.rng, 24);
    let mut target = request.redirect_uri.clone();
    target.push(if target.contains('?') { '&' } else { '?' });
    target.push_str("code=");
    target.push_str(&code);
    if let Some(state) = &request.state {
        target.push_str("&state=");
        target.push_str(&form_encode(state));
    }
    flows.codes.insert(
        code,
        pending(Grant {
            request,
            username,
            amr,
        }),
    );
    Redirect::to(&target).into_response()
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    client_id: Option<String>,
    code_verifier: Option<String>,
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({ "error": error, "error_description": description });
    no_store((status, Json(body)).into_response())
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn token(State(s): State<Arc<Shared>>, Form(f): Form<TokenForm>) -> Response {
    if f.grant_type.as_deref() != Some("authorization_code") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "authorization_code only",
        );
    }
    let grant = {
        let mut flows = s.flows.lock().expect("flows lock");
        flows.prune();
        f.code.as_ref().and_then(|c| flows.codes.remove(c))
    };
    let Some(grant) = grant else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown, used or expired code",
        );
    };
    let g = grant.value;
    let client_ok = f.client_id.as_deref() == Some(&g.request.client_id);
    let uri_ok = f.redirect_uri.as_deref() == Some(&g.request.redirect_uri);
    if !client_ok || !uri_ok {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "client_id or redirect_uri does not match",
        );
    }
    if !pkce_ok(
        f.code_verifier.as_deref().unwrap_or_default(),
        &g.request.challenge,
    ) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "code_verifier does not match",
        );
    }
    let Some(user) = s.users.iter().find(|u| u.username == g.username) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "user gone");
    };
    let mut id_claims = s.claims(
        user,
        &g.request.client_id,
        &g.amr,
        g.request.nonce.as_deref(),
    );
    let tamper = s.tamper.lock().expect("tamper lock").clone();
    let forged = tamper.and_then(|f| f(&mut id_claims));
    // The access token is for the app that asked: its client_id is the audience the gateway's
    // provider entry names, which is how one issuer's staff and subject tokens stay apart.
    let access_claims = s.claims(user, &g.request.client_id, &g.amr, None);
    let body = json!({
        "access_token": s.sign(Alg::EdDSA, &access_claims),
        "id_token": forged.unwrap_or_else(|| s.sign(Alg::ES256, &id_claims)),
        "token_type": "Bearer",
        "expires_in": s.ttl,
        "scope": "openid profile",
    });
    no_store(Json(body).into_response())
}

/// RFC 7636 section 4.6, S256: the verifier is 43..=128 unreserved characters whose SHA-256,
/// base64url without padding, is the challenge.
fn pkce_ok(verifier: &str, challenge: &str) -> bool {
    let unreserved = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
    if !(43..=128).contains(&verifier.len()) || !verifier.bytes().all(unreserved) {
        return false;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    same(&URL_SAFE_NO_PAD.encode(digest), challenge)
}

/// Equality without an early exit on the first differing byte.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636 appendix B.
    #[test]
    fn pkce_s256_vector() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(pkce_ok(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_ok(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"
        ));
        assert!(!pkce_ok(
            "short",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
    }
}
