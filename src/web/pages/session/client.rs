//! The relying party's back channel to an OpenID Connect provider: its endpoints (from the
//! discovery document, whose `issuer` must be exactly the configured one) and the exchange of
//! an authorization code for tokens. Spoken through the same client as the bearer-token key
//! fetcher of `credgate_core::auth::oidc` (`HyperFetch`): plain HTTP for loopback providers
//! (the demo and the tests), HTTPS verified against the provider's own `ca_file` alone (no
//! system roots, no switch to turn verification off) for every other.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
    time::{Duration, Instant},
};

use credgate_core::auth::oidc::{Fetch as _, HyperFetch};
use serde::Deserialize;

use crate::web::AppState;

const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BYTES: usize = 64 * 1024;
/// Endpoints rarely move; a changed document is picked up within this.
const CACHE_FOR: Duration = Duration::from_secs(300);

/// Where a provider signs people in and exchanges codes.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub authorization: String,
    pub token: String,
}

static CACHE: LazyLock<Mutex<HashMap<String, (Endpoints, Instant)>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The client for the configured provider `issuer`: with its `ca_file` if it has one (then it
/// also speaks HTTPS, verified against that CA), else plain HTTP only. Built per use, so a
/// reloaded config or a renewed CA file is read at once; sign-ins are rare enough.
fn client_for(state: &AppState, issuer: &str) -> Result<HyperFetch, String> {
    let ca = state
        .config
        .identity_providers
        .iter()
        .find(|p| p.issuer == issuer)
        .ok_or_else(|| format!("`{issuer}` is not a configured provider"))?
        .ca_file
        .clone();
    match ca {
        Some(ca) => HyperFetch::with_ca(TIMEOUT, &ca),
        None => Ok(HyperFetch::new(TIMEOUT)),
    }
}

/// The provider's endpoints, from cache or discovery.
pub async fn endpoints(state: &AppState, issuer: &str) -> Result<Endpoints, String> {
    if let Some((e, at)) = CACHE.lock().expect("cache lock").get(issuer)
        && at.elapsed() < CACHE_FOR
    {
        return Ok(e.clone());
    }
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let body = client_for(state, issuer)?.get(&url, MAX_BYTES).await?;
    let e = parse_discovery(&body, issuer)?;
    CACHE
        .lock()
        .expect("cache lock")
        .insert(issuer.to_string(), (e.clone(), Instant::now()));
    Ok(e)
}

/// The endpoints of a discovery document that names exactly `issuer` (OpenID Connect
/// Discovery 1.0 section 4.3), each an absolute URL no weaker than the issuer's scheme.
fn parse_discovery(body: &[u8], issuer: &str) -> Result<Endpoints, String> {
    #[derive(Deserialize)]
    struct Doc {
        issuer: String,
        authorization_endpoint: String,
        token_endpoint: String,
    }
    let d: Doc = serde_json::from_slice(body).map_err(|e| format!("discovery unreadable: {e}"))?;
    if d.issuer != issuer {
        return Err(format!("discovery names issuer `{}`", d.issuer));
    }
    for url in [&d.authorization_endpoint, &d.token_endpoint] {
        let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
        let ok = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => issuer.starts_with("http://"),
            _ => false,
        };
        if !ok || uri.host().is_none() || url.contains('#') {
            return Err(format!("endpoint `{url}` not acceptable"));
        }
    }
    Ok(Endpoints {
        authorization: d.authorization_endpoint,
        token: d.token_endpoint,
    })
}

/// RFC 6749 section 4.1.3 with RFC 7636's `code_verifier`, as a public client (no secret):
/// the provider's `id_token`, asked of `issuer`'s token endpoint through its own client. Any
/// answer but a 200 with one is an error; its body is not repeated (it is the provider's
/// text, and may echo what was sent).
pub async fn exchange(
    state: &AppState,
    issuer: &str,
    token_endpoint: &str,
    form: &[(&str, &str)],
) -> Result<String, String> {
    let body = serde_urlencoded::to_string(form).map_err(|e| e.to_string())?;
    let (status, bytes) = client_for(state, issuer)?
        .post_form(token_endpoint, body, MAX_BYTES)
        .await?;
    if status != http::StatusCode::OK {
        let error = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(format!("token endpoint answered {status} {error}"));
    }
    #[derive(Deserialize)]
    struct Answer {
        id_token: String,
    }
    serde_json::from_slice::<Answer>(&bytes)
        .map(|a| a.id_token)
        .map_err(|_| "token answer has no id_token".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_must_name_the_issuer_and_not_downgrade() {
        let doc = |iss: &str, a: &str, t: &str| {
            serde_json::json!({"issuer": iss, "authorization_endpoint": a, "token_endpoint": t})
                .to_string()
        };
        let ok = parse_discovery(
            doc("https://idp", "https://idp/a", "https://idp/t").as_bytes(),
            "https://idp",
        );
        assert_eq!(ok.unwrap().token, "https://idp/t");
        for (iss, a, t) in [
            ("https://evil", "https://idp/a", "https://idp/t"),
            ("https://idp", "http://idp/a", "https://idp/t"),
            ("https://idp", "https://idp/a", "http://idp/t"),
            ("https://idp", "javascript:alert(1)", "https://idp/t"),
            ("https://idp", "/relative", "https://idp/t"),
            ("https://idp", "https://idp/a#frag", "https://idp/t"),
        ] {
            let r = parse_discovery(doc(iss, a, t).as_bytes(), "https://idp");
            assert!(r.is_err(), "{iss} {a} {t}");
        }
    }
}
