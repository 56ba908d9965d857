//! A signed double-submit token for every form, public ones included. The cookie holds a random
//! nonce; the form's hidden field holds HMAC(nonce) under a key derived from the gateway's
//! keyring (the same on every replica). A cross-site page can neither read the cookie nor
//! compute the HMAC, so it cannot send a matching pair.
//!
//! With a session cookie the HMAC also covers the session's stored hash, so a pair someone
//! fetched for themselves (from a public page, without the victim's session) and planted as a
//! cookie (plain HTTP, a sibling host) does not work beside the victim's session. Forms without
//! a session (the public report) are signed over the nonce alone, as before.

use http::{HeaderMap, HeaderValue};
use ring::{hmac, rand::SecureRandom as _};

use crate::web::AppState;

const COOKIE: &str = "csrf";
const HOST_COOKIE: &str = "__Host-csrf";

fn cookie_name(state: &AppState) -> &'static str {
    if super::over_tls(state) {
        HOST_COOKIE
    } else {
        COOKIE
    }
}

/// A key of its own for CSRF, derived from the pseudonym key with a fixed label, so that a
/// token can never be replayed as a pseudonym or the reverse.
fn key(state: &AppState) -> hmac::Key {
    let derived = hmac::sign(&state.pseudonym_key, b"credgate/pages/csrf/v1");
    hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
}

fn well_formed(nonce: &str) -> bool {
    nonce.len() == 32 && nonce.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What the hidden field signs: the nonce, and the session's hash when there is a session.
/// The nonce is always 32 hex digits, so the two parts cannot be shifted into each other.
fn message(nonce: &str, session: Option<&str>) -> String {
    match session {
        Some(h) => format!("{nonce}|session|{h}"),
        None => nonce.to_owned(),
    }
}

/// The reader's CSRF nonce: the one in their cookie, or a new one to set; and the session the
/// token is bound to, if any.
pub struct Csrf {
    nonce: String,
    fresh: bool,
    session: Option<String>,
}

impl Csrf {
    pub fn of(state: &AppState, headers: &HeaderMap) -> Self {
        let session = super::session::csrf_binding(state, headers);
        match super::cookie(headers, cookie_name(state)).filter(|n| well_formed(n)) {
            Some(nonce) => Self {
                nonce,
                fresh: false,
                session,
            },
            None => {
                let mut raw = [0u8; 16];
                ring::rand::SystemRandom::new()
                    .fill(&mut raw)
                    .expect("the OS random source works");
                Self {
                    nonce: hex::encode(raw),
                    fresh: true,
                    session,
                }
            }
        }
    }

    /// The hidden field's value.
    pub fn token(&self, state: &AppState) -> String {
        let msg = message(&self.nonce, self.session.as_deref());
        hex::encode(hmac::sign(&key(state), msg.as_bytes()).as_ref())
    }

    /// The `Set-Cookie` for a nonce the reader does not have yet.
    pub fn set_cookie(&self, state: &AppState) -> Option<HeaderValue> {
        if !self.fresh {
            return None;
        }
        let secure = if super::over_tls(state) {
            "; Secure"
        } else {
            ""
        };
        HeaderValue::from_str(&format!(
            "{}={}; Path=/; SameSite=Lax; HttpOnly{secure}",
            cookie_name(state),
            self.nonce
        ))
        .ok()
    }
}

/// Whether a POST carries a cookie nonce and the field that signs it (with the session of
/// this request, if it carries one). Compared in constant time by `hmac::verify`.
pub fn verify(state: &AppState, headers: &HeaderMap, field: Option<&str>) -> bool {
    // A second layer for plain HTTP, where a planted non-`__Host-` cookie could pair with a
    // token fetched for it: a browser that says the form came from another site is refused.
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v != "same-origin" && v != "none")
    {
        return false;
    }
    let Some(nonce) = super::cookie(headers, cookie_name(state)).filter(|n| well_formed(n)) else {
        return false;
    };
    let Some(tag) = field.and_then(|f| hex::decode(f).ok()) else {
        return false;
    };
    let session = super::session::csrf_binding(state, headers);
    let msg = message(&nonce, session.as_deref());
    hmac::verify(&key(state), msg.as_bytes(), &tag).is_ok()
}
