//! Who is signed in to a page: OpenID Connect sign-in (authorization code with PKCE, `state`
//! and `nonce`) against the configured `[[identity_providers]]`, and a server-side session
//! behind an HttpOnly cookie, with an idle timeout, an absolute lifetime and sign-out.
//!
//! The cookie holds 256 random bits; the database holds only their SHA-256 (`storage::
//! sessions`), so every replica sees the same sessions and a copy of the database opens none.
//! A session is made only by a finished sign-in, always with a fresh value: a cookie the
//! gateway did not issue (fixation) names no row and opens nothing.
//!
//! The two extractors are what the console and the portal take in their handlers' signatures:
//! a `StaffPage` only for a staff session, a `SubjectPage` only for a subject's. No session (or
//! a dead one) is sent to sign in; a session of the other kind gets a 403 page.

mod client;
mod signin;

use axum::{
    extract::FromRequestParts,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use ring::rand::SecureRandom as _;

use super::super::{
    AppState, Error,
    routes::{AuditKind, Group, audited, get, post},
};
use crate::{
    audit::AuditSlot,
    auth::{self, DataSubject, oidc::StaffPerson},
    domain::{SubjectId, SubjectType},
    storage::sessions,
};

/// The routes of signing in and out. Audited as public requests until the person is known;
/// a finished sign-in turns its own record into an `admin` (staff) or `subject` one.
pub fn routes() -> Vec<Group> {
    vec![audited(
        AuditKind::Public,
        vec![
            get("/signin/staff", signin::start_staff),
            get("/signin/subject", signin::start_subject),
            get("/signin/staff/callback", signin::callback_staff),
            get("/signin/subject/callback", signin::callback_subject),
            post("/signout", signin::sign_out),
        ],
    )]
}

/// The two kinds of people who sign in, and where each belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Staff,
    Subject,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Staff => "staff",
            Self::Subject => "subject",
        }
    }

    /// The area a session of this kind may use, and its first page.
    pub fn home(self) -> &'static str {
        match self {
            Self::Staff => "/console/",
            Self::Subject => "/portal/",
        }
    }

    fn idle_secs(self, state: &AppState) -> u64 {
        match self {
            Self::Staff => state.config.sessions.staff_idle_secs,
            Self::Subject => state.config.sessions.subject_idle_secs,
        }
    }

    fn absolute_secs(self, state: &AppState) -> u64 {
        match self {
            Self::Staff => state.config.sessions.staff_absolute_secs,
            Self::Subject => state.config.sessions.subject_absolute_secs,
        }
    }
}

const SESSION_COOKIE: &str = "cg_session";
const SIGNIN_COOKIE: &str = "cg_signin";

/// A cookie's name: `__Host-` under TLS, so that no sibling host or path can set or shadow it.
fn cookie_name(tls: bool, base: &str) -> String {
    if tls {
        format!("__Host-{base}")
    } else {
        base.to_owned()
    }
}

/// `Set-Cookie` for `value` (empty: delete it). HttpOnly, SameSite=Lax (the sign-in's cookie
/// must come back with the provider's top-level redirect, which Strict would drop), Path=/,
/// Secure under TLS.
fn set_cookie(tls: bool, base: &str, value: &str, max_age: Option<u64>) -> Option<HeaderValue> {
    let secure = if tls { "; Secure" } else { "" };
    let age = match (value.is_empty(), max_age) {
        (true, _) => "; Max-Age=0".to_owned(),
        (false, Some(s)) => format!("; Max-Age={s}"),
        (false, None) => String::new(),
    };
    let name = cookie_name(tls, base);
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax{secure}{age}"
    ))
    .ok()
}

/// 256 random bits, base64url: cookie values, `state`, `nonce`, the PKCE verifier (43
/// characters, within RFC 7636's 43..=128).
fn random_token() -> String {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .expect("the OS random source works");
    URL_SAFE_NO_PAD.encode(raw)
}

/// What the database keys a cookie by.
fn hash(value: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        value.as_bytes(),
    ))
}

/// The cookie's value if it has the shape of one the gateway issues (anything else is not
/// even looked up).
fn cookie_value(state: &AppState, headers: &HeaderMap, base: &str) -> Option<String> {
    super::cookie(headers, &cookie_name(super::over_tls(state), base)).filter(|v| {
        v.len() == 43
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// What a form's CSRF token is bound to when the request carries a session cookie of the
/// issued shape: its SHA-256, the key the database holds the session under. No look-up: a dead
/// or unknown cookie binds as well as a live one, and a token is good only beside it.
pub(super) fn csrf_binding(state: &AppState, headers: &HeaderMap) -> Option<String> {
    cookie_value(state, headers, SESSION_COOKIE).map(|v| hash(&v))
}

/// The live session behind the request's cookie, marked seen now (the core clock, so tests
/// move time instead of sleeping).
async fn current(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<sessions::Session>, Error> {
    let Some(value) = cookie_value(state, headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let idle = |kind: &str| {
        let k = if kind == "staff" {
            Kind::Staff
        } else {
            Kind::Subject
        };
        i64::try_from(k.idle_secs(state)).unwrap_or(i64::MAX / 2_000_000) * 1_000_000
    };
    Ok(sessions::touch(&state.db, &hash(&value), state.clock.now(), idle).await?)
}

/// The slot the audit layer put in this request (none outside audited routes).
fn slot_of(parts: &Parts) -> AuditSlot {
    parts
        .extensions
        .get::<AuditSlot>()
        .cloned()
        .unwrap_or_default()
}

/// No live session: to the sign-in of `kind`, coming back to this page afterwards; the dead
/// cookie, if any, is removed.
fn to_signin(state: &AppState, kind: Kind, parts: &Parts) -> Response {
    // Back to a page, never to a form's action (a GET there would answer 405).
    let here = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|_| parts.method == http::Method::GET)
        .unwrap_or(kind.home());
    let query = serde_urlencoded::to_string([("next", here)]).unwrap_or_default();
    let mut res = StatusCode::SEE_OTHER.into_response();
    let h = res.headers_mut();
    if let Ok(loc) = HeaderValue::from_str(&format!("/signin/{}?{query}", kind.as_str())) {
        h.insert(header::LOCATION, loc);
    }
    if super::cookie(
        &parts.headers,
        &cookie_name(super::over_tls(state), SESSION_COOKIE),
    )
    .is_some()
        && let Some(c) = set_cookie(super::over_tls(state), SESSION_COOKIE, "", None)
    {
        h.append(header::SET_COOKIE, c);
    }
    res
}

/// A session of the other kind: refused, as a 403 page naming the rule.
fn wrong_kind(kind: Kind) -> Response {
    Error::Forbidden {
        rule: format!("{}-session-only", kind.as_str()),
        detail: format!("this page is for a {} sign-in", kind.as_str()),
    }
    .into_response()
}

/// A data subject signed in through a subject provider. Refused (a redirect to sign-in, or a
/// 403 page) for a staff session or none. Noted in the audit record as the acting subject,
/// and charged to the subject's rate, as a subject's token is on `/subject/*`.
pub struct SubjectPage {
    pub subject: DataSubject,
}

impl FromRequestParts<AppState> for SubjectPage {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let s = match current(state, &parts.headers).await {
            Err(e) => return Err(e.into_response()),
            Ok(None) => return Err(to_signin(state, Kind::Subject, parts)),
            Ok(Some(s)) if s.kind != Kind::Subject.as_str() => {
                return Err(wrong_kind(Kind::Subject));
            }
            Ok(Some(s)) => s,
        };
        let ty: Option<SubjectType> = s.subject_type.as_deref().and_then(|t| t.parse().ok());
        let id = ty.and_then(|t| SubjectId::parse(t, &s.who).ok());
        let Some(id) = id else {
            // Written by sign-in from a verified id; unreadable means tampered storage.
            return Err(Error::Unauthorized("session unusable; sign in again").into_response());
        };
        let subject = DataSubject {
            id,
            issuer: s.issuer,
        };
        auth::note_subject(state, &subject, &slot_of(parts))
            .map_err(|e| Error::from(e).into_response())?;
        Ok(Self { subject })
    }
}

/// A person signed in through a staff provider, with the credgate roles the role map gave at
/// sign-in. Noted in the audit record as `actor` and `actor_org` (exactly as a staff token on
/// `/admin` is) and charged to the person's rate.
pub struct StaffPage {
    pub actor: String,
    pub org: String,
    pub name: String,
    pub roles: Vec<String>,
    /// The provider that signed them in.
    pub issuer: String,
}

impl StaffPage {
    pub fn has(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

impl FromRequestParts<AppState> for StaffPage {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let s = match current(state, &parts.headers).await {
            Err(e) => return Err(e.into_response()),
            Ok(None) => return Err(to_signin(state, Kind::Staff, parts)),
            Ok(Some(s)) if s.kind != Kind::Staff.as_str() => return Err(wrong_kind(Kind::Staff)),
            Ok(Some(s)) => s,
        };
        let page = Self {
            actor: s.who,
            org: s.org.unwrap_or_default(),
            name: s.name.unwrap_or_default(),
            roles: s
                .roles
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            issuer: s.issuer,
        };
        slot_of(parts).update(|a| {
            a.actor = Some(page.actor.clone());
            a.actor_org = Some(page.org.clone());
            a.role = Some(page.roles.join(" "));
        });
        let person = StaffPerson {
            id: page.actor.clone(),
            name: page.name.clone(),
            org: page.org.clone(),
            roles: page.roles.clone(),
            acr: None,
            amr: Vec::new(),
            issuer: page.issuer.clone(),
        };
        auth::admit_person(state, &person).map_err(|e| Error::from(e).into_response())?;
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_httponly_lax_and_host_bound_under_tls() {
        let plain = set_cookie(false, SESSION_COOKIE, "v", None).unwrap();
        assert_eq!(plain, "cg_session=v; Path=/; HttpOnly; SameSite=Lax");
        let tls = set_cookie(true, SESSION_COOKIE, "v", Some(600)).unwrap();
        assert_eq!(
            tls,
            "__Host-cg_session=v; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=600"
        );
        let gone = set_cookie(true, SIGNIN_COOKIE, "", Some(600)).unwrap();
        assert!(gone.to_str().unwrap().ends_with("Max-Age=0"));
    }

    #[test]
    fn random_tokens_are_distinct_and_pkce_sized() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_ne!(hash(&a), a);
    }
}
