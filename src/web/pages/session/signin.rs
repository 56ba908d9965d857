//! `/signin/{kind}`, its callback and `/signout`.
//!
//! Starting is a plain GET link that answers with a redirect to the provider (a form could not:
//! the pages' CSP says `form-action 'self'`, and Chromium applies it to a form's redirects).
//! What the callback needs travels sealed (AES-256-GCM, a key of its own) in a short-lived
//! `cg_signin` cookie, which binds the sign-in to the browser that started it (so a code and
//! state captured or planted from elsewhere finish nothing). Nothing is stored until the
//! callback: anyone may start a sign-in (it is a link), and a row per start let a flood from
//! many addresses fill the table and lock every person out. A replayed callback finds its code
//! spent at the provider (RFC 6749 4.1.2: a code is good once).

use axum::{
    Extension,
    extract::{Query, State},
    response::{IntoResponse, Response},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::{
    Kind, SESSION_COOKIE, SIGNIN_COOKIE, client, cookie_name, cookie_value, hash, random_token,
    set_cookie,
};
use crate::{
    audit::AuditSlot,
    auth::oidc::{OidcError, Verified},
    config::{IdentityProviderConfig, IdentityProviderKind},
    storage::sessions::{self, Session},
    web::{
        AppState,
        pages::{Lang, cookie, over_tls, page},
    },
};

/// How long a sign-in may take between leaving for the provider and coming back.
const SIGNIN_TTL_US: i64 = 600 * 1_000_000;
/// What the sealed state is bound to (the AEAD's associated data): it opens as nothing else.
const SEALED_AS: &str = "cg_signin v1";
/// A sealed sign-in is well under 2 kB (`next_path` is at most 512 bytes); anything longer in
/// the cookie is not one the gateway wrote.
const MAX_SEALED: usize = 3072;

/// A sign-in under way, as `/signin/{kind}` started it: sealed into the flow cookie.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Signin {
    kind: String,
    issuer: String,
    audience: String,
    state: String,
    nonce: String,
    verifier: String,
    redirect_uri: String,
    next_path: String,
    created_at: i64,
}

#[derive(Deserialize)]
pub struct Start {
    next: Option<String>,
}

pub async fn start_staff(s: State<AppState>, h: HeaderMap, q: Query<Start>) -> Response {
    start(s.0, h, q.0, Kind::Staff).await
}

pub async fn start_subject(s: State<AppState>, h: HeaderMap, q: Query<Start>) -> Response {
    start(s.0, h, q.0, Kind::Subject).await
}

/// The provider people of `kind` sign in at: the first configured one of that kind found by
/// discovery (a `jwks_file` provider has no endpoints to send a browser to).
fn provider(state: &AppState, kind: Kind) -> Option<IdentityProviderConfig> {
    let want = match kind {
        Kind::Staff => IdentityProviderKind::Staff,
        Kind::Subject => IdentityProviderKind::Subject,
    };
    state
        .config
        .identity_providers
        .iter()
        .find(|p| p.kind == want && p.static_jwks().is_none())
        .cloned()
}

/// Where the reader goes after signing in: a path inside their own area, or its first page.
/// Anything else (another site, `//host`, a backslash, the other area) is ignored, so that
/// the link can never become an open redirect.
pub fn safe_next(kind: Kind, next: Option<&str>) -> String {
    let home = kind.home();
    next.filter(|n| n.len() <= 512)
        .filter(|n| n.starts_with(home) || *n == home.trim_end_matches('/'))
        .filter(|n| !n.contains("//") && !n.contains('\\') && !n.chars().any(char::is_control))
        .filter(|n| {
            // No dot segments, raw or encoded, and no encoded slashes: the browser would
            // resolve them out of the area.
            let lower = n.to_ascii_lowercase();
            !n.split(['/', '?']).any(|seg| seg == ".." || seg == ".")
                && !["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e))
        })
        .unwrap_or(home)
        .to_owned()
}

/// The callback URL the provider sends the browser back to: under `[sessions] public_url`,
/// or this request's `Host` (checked to be a plain host name or address and port).
fn redirect_uri(state: &AppState, headers: &HeaderMap, kind: Kind) -> Option<String> {
    let path = format!("/signin/{}/callback", kind.as_str());
    let base = state.config.sessions.public_url.trim_end_matches('/');
    if !base.is_empty() {
        return Some(format!("{base}{path}"));
    }
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let plain = |b: u8| b.is_ascii_alphanumeric() || b".-:[]".contains(&b);
    if host.is_empty() || host.len() > 255 || !host.bytes().all(plain) {
        return None;
    }
    let scheme = if over_tls(state) { "https" } else { "http" };
    Some(format!("{scheme}://{host}{path}"))
}

/// Stores the sign-in under way and sends the browser to the provider.
async fn start(state: AppState, headers: HeaderMap, q: Start, kind: Kind) -> Response {
    let lang = Lang::choose(&headers);
    let Some(p) = provider(&state, kind) else {
        return failed(lang, StatusCode::NOT_FOUND, "signin.failed.no_provider");
    };
    let Some(redirect_uri) = redirect_uri(&state, &headers, kind) else {
        return failed(lang, StatusCode::BAD_REQUEST, "signin.failed.start");
    };
    let endpoints = match client::endpoints(&state, &p.issuer).await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(issuer = %p.issuer, error = %e, "identity provider unreachable for sign-in");
            return failed(
                lang,
                StatusCode::SERVICE_UNAVAILABLE,
                "signin.failed.provider",
            );
        }
    };
    let flow = Signin {
        kind: kind.as_str().into(),
        issuer: p.issuer.clone(),
        audience: p.audience.clone(),
        state: random_token(),
        nonce: random_token(),
        verifier: random_token(),
        redirect_uri,
        next_path: safe_next(kind, q.next.as_deref()),
        created_at: state.clock.now(),
    };
    let cookie = seal(&state, &flow);
    let location = authorize_url(&endpoints.authorization, &flow);
    let tls = over_tls(&state);
    redirect(
        &location,
        set_cookie(tls, SIGNIN_COOKIE, &cookie, Some(600)),
    )
}

/// The sign-in, sealed for its cookie.
fn seal(state: &AppState, flow: &Signin) -> String {
    let plain = serde_json::to_string(flow).expect("a sign-in serialises");
    state.signin_sealer.seal_token(SEALED_AS, &plain)
}

/// The sign-in the request's flow cookie carries, if the gateway sealed it (a forged, altered
/// or foreign value opens as nothing).
fn unseal(state: &AppState, headers: &HeaderMap) -> Option<Signin> {
    let name = cookie_name(over_tls(state), SIGNIN_COOKIE);
    let sealed = cookie(headers, &name).filter(|v| v.len() <= MAX_SEALED)?;
    let plain = state.signin_sealer.open_token(SEALED_AS, &sealed)?;
    serde_json::from_str(&plain).ok()
}

/// The provider's authorization endpoint with the request: code flow, PKCE S256 (the
/// challenge is the SHA-256 of the stored verifier), `state` and `nonce`.
fn authorize_url(endpoint: &str, flow: &Signin) -> String {
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        flow.verifier.as_bytes(),
    ));
    let query = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", flow.audience.as_str()),
        ("redirect_uri", flow.redirect_uri.as_str()),
        ("scope", "openid profile"),
        ("state", flow.state.as_str()),
        ("nonce", flow.nonce.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ])
    .unwrap_or_default();
    let sep = if endpoint.contains('?') { '&' } else { '?' };
    format!("{endpoint}{sep}{query}")
}

fn redirect(location: &str, cookie: Option<HeaderValue>) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    let h = res.headers_mut();
    if let Ok(loc) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, loc);
    }
    if let Some(c) = cookie {
        h.append(header::SET_COOKIE, c);
    }
    res
}

/// A sign-in that did not finish: a page that says so in the reader's language (never why in
/// the provider's or the token's terms) and offers to start again.
fn failed(lang: Lang, status: StatusCode, message: &str) -> Response {
    page(
        lang,
        status,
        "console/signin_failed.html",
        "/signin",
        context! { message, status => status.as_u16() },
    )
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// The audit layer's slot of this request (absent only outside audited routes).
type Slot = Option<Extension<AuditSlot>>;

fn slot(s: Slot) -> AuditSlot {
    s.map(|Extension(s)| s).unwrap_or_default()
}

pub async fn callback_staff(
    s: State<AppState>,
    headers: HeaderMap,
    sl: Slot,
    q: Query<Callback>,
) -> Response {
    callback(s.0, headers, slot(sl), q.0, Kind::Staff).await
}

pub async fn callback_subject(
    s: State<AppState>,
    headers: HeaderMap,
    sl: Slot,
    q: Query<Callback>,
) -> Response {
    callback(s.0, headers, slot(sl), q.0, Kind::Subject).await
}

/// Finishes a sign-in: the flow cookie's stored sign-in (taken, whatever happens next), the
/// `state` it sent, the code exchanged with its PKCE verifier, the id token checked by the
/// provider registry (issuer, audience, signature and algorithm from the JWKS, times, acr/amr
/// per role) and its `nonce`; then a fresh session. The flow cookie is cleared on every path.
async fn callback(
    state: AppState,
    headers: HeaderMap,
    slot: AuditSlot,
    q: Callback,
    kind: Kind,
) -> Response {
    let lang = Lang::choose(&headers);
    let tls = over_tls(&state);
    let clear = set_cookie(tls, SIGNIN_COOKIE, "", None);
    let mut res = match finish(&state, &headers, &slot, q, kind).await {
        Ok((value, next)) => redirect(&next, set_cookie(tls, SESSION_COOKIE, &value, None)),
        Err((status, message)) => failed(lang, status, message),
    };
    if let Some(c) = clear {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}

type Refusal = (StatusCode, &'static str);

const BAD: Refusal = (StatusCode::BAD_REQUEST, "signin.failed.again");

async fn finish(
    state: &AppState,
    headers: &HeaderMap,
    slot: &AuditSlot,
    q: Callback,
    kind: Kind,
) -> Result<(String, String), Refusal> {
    let flow = unseal(state, headers).ok_or(BAD)?;
    let fresh = state.clock.now() - flow.created_at <= SIGNIN_TTL_US;
    let state_ok = q.state.as_deref().is_some_and(|s| same(s, &flow.state));
    if flow.kind != kind.as_str() || !fresh || !state_ok || q.error.is_some() {
        tracing::info!(
            kind = kind.as_str(),
            fresh,
            state_ok,
            "sign-in callback refused"
        );
        return Err(BAD);
    }
    let code = q
        .code
        .filter(|c| !c.is_empty() && c.len() <= 2048)
        .ok_or(BAD)?;
    let id_token = exchange(state, &flow, &code).await?;
    let verified = state.providers().verify(&id_token).await.map_err(refused)?;
    let claims = verified_payload(&id_token).ok_or(BAD)?;
    if !claims_fit(&claims, &flow) {
        tracing::info!("id token's nonce or audience does not match the sign-in");
        return Err(BAD);
    }
    let session = session_of(state, verified, &flow, kind)?;
    note(slot, &session);
    let value = random_token();
    sessions::insert_session(&state.db, &hash(&value), &session, session.created_at)
        .await
        .map_err(|_| (StatusCode::SERVICE_UNAVAILABLE, "signin.failed.provider"))?;
    Ok((value, flow.next_path))
}

async fn exchange(state: &AppState, flow: &Signin, code: &str) -> Result<String, Refusal> {
    let endpoints = client::endpoints(state, &flow.issuer).await.map_err(|e| {
        tracing::warn!(error = %e, "identity provider unreachable at callback");
        (StatusCode::SERVICE_UNAVAILABLE, "signin.failed.provider")
    })?;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", flow.redirect_uri.as_str()),
        ("client_id", flow.audience.as_str()),
        ("code_verifier", flow.verifier.as_str()),
    ];
    client::exchange(state, &flow.issuer, &endpoints.token, &form)
        .await
        .map_err(|e| {
            tracing::info!(error = %e, "authorization code not exchanged");
            BAD
        })
}

/// Why the registry refused an id token, as the reader should hear it: a missing second
/// factor or role is theirs to fix; anything else is a failed sign-in.
fn refused(e: OidcError) -> Refusal {
    tracing::info!(reason = %e, "id token refused at sign-in");
    match e {
        OidcError::Factor => (StatusCode::FORBIDDEN, "signin.failed.factor"),
        OidcError::NoRoles | OidcError::ConflictingDuties => {
            (StatusCode::FORBIDDEN, "signin.failed.role")
        }
        _ => BAD,
    }
}

/// The payload of a token whose signature the registry has just checked: read for the claims
/// the registry does not look at (`nonce`) and to confirm the audience is this sign-in's.
fn verified_payload(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

fn claims_fit(claims: &serde_json::Map<String, serde_json::Value>, flow: &Signin) -> bool {
    let nonce_ok = claims
        .get("nonce")
        .and_then(|n| n.as_str())
        .is_some_and(|n| same(n, &flow.nonce));
    let aud_ok = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => *a == flow.audience,
        Some(serde_json::Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(&flow.audience)),
        _ => false,
    };
    let iss_ok = claims.get("iss").and_then(|v| v.as_str()) == Some(flow.issuer.as_str());
    nonce_ok && aud_ok && iss_ok
}

/// The session a verified person or subject gets, if they are of the kind that signed in.
fn session_of(
    state: &AppState,
    verified: Verified,
    flow: &Signin,
    kind: Kind,
) -> Result<Session, Refusal> {
    let now = state.clock.now();
    let life = i64::try_from(kind.absolute_secs(state)).unwrap_or(86_400) * 1_000_000;
    let mut s = Session {
        kind: kind.as_str().into(),
        issuer: flow.issuer.clone(),
        who: String::new(),
        subject_type: None,
        name: None,
        org: None,
        roles: None,
        created_at: now,
        seen_at: now,
        expires_at: now + life,
    };
    match (verified, kind) {
        (Verified::Staff(p), Kind::Staff) => {
            s.who = p.id;
            s.name = Some(p.name);
            s.org = Some(p.org);
            s.roles = Some(p.roles.join(" "));
        }
        (
            Verified::Subject {
                id, subject_type, ..
            },
            Kind::Subject,
        ) => {
            s.who = id.as_str().to_owned();
            s.subject_type = Some(subject_type.as_str().to_owned());
        }
        _ => return Err(BAD),
    }
    Ok(s)
}

/// The sign-in's own record names who signed in, as the pages they then use will.
fn note(slot: &AuditSlot, s: &Session) {
    slot.update(|a| {
        if s.kind == "staff" {
            a.kind = Some("admin");
            a.actor = Some(s.who.clone());
            a.actor_org = s.org.clone();
            a.role = s.roles.clone();
        } else {
            a.kind = Some("subject");
            a.actor_subject = Some(s.who.clone());
            a.role = Some("subject".into());
        }
    });
}

/// Equality without an early exit on the first differing byte.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `POST /signout` with the form's CSRF token: the session is deleted (every replica sees it
/// gone at once) and its cookie cleared. Without a valid token nothing changes: a cross-site
/// page must not be able to sign people out.
pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    sl: Slot,
    body: axum::body::Bytes,
) -> Response {
    let field: Option<String> = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
        .ok()
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "csrf").map(|(_, v)| v));
    let lang = Lang::choose(&headers);
    if !crate::web::pages::csrf::verify(&state, &headers, field.as_deref()) {
        return failed(lang, StatusCode::FORBIDDEN, "signin.failed.csrf");
    }
    if let Some(value) = cookie_value(&state, &headers, SESSION_COOKIE) {
        let h = hash(&value);
        // Who signed out, for the record; a dead session is deleted by the look-up itself.
        if let Ok(Some(s)) = super::current(&state, &headers).await {
            note(&slot(sl), &s);
        }
        if let Err(e) = sessions::delete(&state.db, &h).await {
            tracing::error!(error = %e, "deleting a session failed");
            return failed(
                lang,
                StatusCode::SERVICE_UNAVAILABLE,
                "signin.failed.provider",
            );
        }
    }
    redirect("/", set_cookie(over_tls(&state), SESSION_COOKIE, "", None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_inside_the_readers_area() {
        let s = |n: &str| safe_next(Kind::Staff, Some(n));
        assert_eq!(s("/console/audit?page=2"), "/console/audit?page=2");
        assert_eq!(s("/console"), "/console");
        for evil in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "/console//evil.example",
            "/console/\\evil",
            "/console/../../evil",
            "/console/%2e%2e/evil",
            "/console/%2F%2Fevil",
            "/portal/",
            "/console/\r\nSet-Cookie: x=1",
            "javascript:alert(1)",
            "",
        ] {
            assert_eq!(s(evil), "/console/", "{evil:?}");
        }
        assert_eq!(safe_next(Kind::Subject, Some("/console/")), "/portal/");
        assert_eq!(safe_next(Kind::Subject, None), "/portal/");
    }
}
