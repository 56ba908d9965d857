//! The relying party's back channel to an OpenID Connect provider: its endpoints (from the
//! discovery document, whose `issuer` must be exactly the configured one) and the exchange of
//! an authorization code for tokens. Plain HTTP only, like the key fetcher of
//! `credgate_core::auth::oidc` (loopback providers: the demo and the tests); an `https://`
//! provider is refused with a clear error until a TLS-capable client is wired in here.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use credgate_core::auth::oidc::{Fetch as _, HyperFetch};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::Deserialize;

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

/// The provider's endpoints, from cache or discovery.
pub async fn endpoints(issuer: &str) -> Result<Endpoints, String> {
    if let Some((e, at)) = CACHE.lock().expect("cache lock").get(issuer)
        && at.elapsed() < CACHE_FOR
    {
        return Ok(e.clone());
    }
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let body = HyperFetch::new(TIMEOUT).get(&url, MAX_BYTES).await?;
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
/// the provider's `id_token`. Any answer but a 200 with one is an error; its body is not
/// repeated (it is the provider's text, and may echo what was sent).
pub async fn exchange(token_endpoint: &str, form: &[(&str, &str)]) -> Result<String, String> {
    let uri: http::Uri = token_endpoint.parse().map_err(|_| "bad token endpoint")?;
    if uri.scheme_str() != Some("http") {
        return Err("this relying party speaks plain HTTP to providers only".into());
    }
    let body = serde_urlencoded::to_string(form).map_err(|e| e.to_string())?;
    let req = http::Request::post(uri)
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(TIMEOUT));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let call = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_BYTES)
            .collect()
            .await
            .map_err(|_| "token answer unreadable or too large".to_string())?
            .to_bytes();
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
    };
    tokio::time::timeout(TIMEOUT, call)
        .await
        .map_err(|_| "token endpoint did not answer in time".to_string())?
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
