//! `POST /oauth/token` (RFC 6749 section 4.4, client credentials) and the public JWKS.
//! Errors here follow RFC 6749 section 5.2, not RFC 9457: OAuth clients parse `error`.

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::json;

use super::AppState;
use crate::{
    auth::{keys::JwkSet, secrets},
    http::limits::LoginRefusal,
    storage::clients::{self, ClientStatus},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/.well-known/jwks.json", get(jwks))
}

/// RFC 6749 section 5.2 error codes we use.
#[derive(Debug, Clone, Copy)]
enum OAuthError {
    InvalidRequest,
    InvalidClient,
    UnsupportedGrantType,
    /// Not an RFC 6749 code: our storage failed and no token can be vouched for.
    TemporarilyUnavailable,
}

impl OAuthError {
    fn respond(self, description: &str) -> Response {
        let (status, code) = match self {
            Self::InvalidRequest => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::InvalidClient => (StatusCode::UNAUTHORIZED, "invalid_client"),
            Self::UnsupportedGrantType => (StatusCode::BAD_REQUEST, "unsupported_grant_type"),
            Self::TemporarilyUnavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable")
            }
        };
        let mut res = (
            status,
            Json(json!({"error": code, "error_description": description})),
        )
            .into_response();
        no_store(res.headers_mut());
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"credgate\""),
            );
        }
        res
    }
}

fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// Client credentials from HTTP Basic (RFC 6749 section 2.3.1), if present.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| OAuthError::InvalidClient)?;
    let Some((scheme, b64)) = value.split_once(' ') else {
        return Err(OAuthError::InvalidClient);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::InvalidClient);
    }
    let decoded = STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(OAuthError::InvalidClient)?;
    let (id, secret) = decoded.split_once(':').ok_or(OAuthError::InvalidClient)?;
    let unescape = |s: &str| serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={s}"));
    match (unescape(id), unescape(secret)) {
        (Ok(mut i), Ok(mut s)) if i.len() == 1 && s.len() == 1 => {
            Ok(Some((i.remove(0).1, s.remove(0).1)))
        }
        _ => Err(OAuthError::InvalidClient),
    }
}

async fn token(
    State(state): State<AppState>,
    slot: Option<axum::Extension<crate::audit::AuditSlot>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The address's bucket was charged by `limits::limit`: a 429 there is a problem document,
    // not an OAuth error, since nothing was judged.
    let slot = slot.map(|s| s.0).unwrap_or_default();
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
        .unwrap_or(false);
    if !form_type {
        return OAuthError::InvalidRequest
            .respond("the body must be application/x-www-form-urlencoded");
    }
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return OAuthError::InvalidRequest.respond("the form body is malformed");
    };
    // RFC 6749 section 3.2: parameters must not repeat.
    let mut seen = std::collections::HashSet::new();
    if !pairs.iter().all(|(k, _)| seen.insert(k.as_str())) {
        return OAuthError::InvalidRequest.respond("a parameter is repeated");
    }
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };

    match param("grant_type").as_deref() {
        None => return OAuthError::InvalidRequest.respond("grant_type is required"),
        Some("client_credentials") => {}
        Some(_) => {
            return OAuthError::UnsupportedGrantType
                .respond("only client_credentials is supported");
        }
    }
    let basic = match basic_credentials(&headers) {
        Ok(b) => b,
        Err(e) => return e.respond("malformed client authentication"),
    };
    let (client_id, secret) = match (basic, param("client_id"), param("client_secret")) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return OAuthError::InvalidRequest
                .respond("use one client authentication method, not two");
        }
        (Some(creds), None, None) => creds,
        (None, Some(id), Some(secret)) => (id, secret),
        _ => return OAuthError::InvalidClient.respond("client authentication failed"),
    };

    // The id the caller claims, failed logins included; never the secret.
    slot.update(|a| a.client_id = Some(client_id.clone()));
    let client = match authenticate(&state, &client_id, secret).await {
        Ok(client) => client,
        Err((rule, res)) => {
            slot.update(|a| a.rule = Some(rule.into()));
            return res;
        }
    };
    slot.update(|a| {
        a.org = Some(client.org.clone());
        a.role = Some(client.role.clone());
    });
    let Ok(access_token) = state.tokens.issue(&client) else {
        tracing::error!("token signing failed");
        return OAuthError::TemporarilyUnavailable.respond("try again later");
    };
    tracing::info!(client_id = %client.id, org = %client.org, role = %client.role, "token issued");
    let mut res = Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": state.tokens.ttl_secs(),
    }))
    .into_response();
    no_store(res.headers_mut());
    res
}

/// Checks the client's secret under the token endpoint's bounds: a locked id is refused
/// without hashing, the hash waits briefly for one of few slots or is answered 503, and an
/// unknown id is hashed against a dummy like a known one, so timing does not tell them apart.
/// On refusal: the audit rule and the answer.
async fn authenticate(
    state: &AppState,
    client_id: &str,
    secret: String,
) -> Result<clients::ClientRecord, (&'static str, Response)> {
    let permit = match state.limits.logins.admit(client_id).await {
        Ok(permit) => permit,
        Err(LoginRefusal::Busy) => {
            let mut res = OAuthError::TemporarilyUnavailable
                .respond("the token endpoint is busy; retry after the given seconds");
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Err(("token-busy", res));
        }
        Err(LoginRefusal::Locked(secs)) => {
            tracing::info!("token refused: client id locked after failed logins");
            let mut res = OAuthError::InvalidClient
                .respond("too many failed attempts for this client; try again later");
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return Err(("client-locked", res));
        }
    };
    let found = match clients::get_with_secret(&state.db, client_id).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "token endpoint: storage failure");
            let res = OAuthError::TemporarilyUnavailable.respond("try again later");
            return Err(("storage", res));
        }
    };
    let hash = found.as_ref().map(|(_, h)| h.clone());
    // argon2 is deliberately slow: keep it off the async workers. The permit goes with it.
    let valid = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        secrets::verify_secret(hash.as_deref(), &secret)
    })
    .await
    .unwrap_or(false);
    match found {
        Some((client, _)) if valid && client.status == ClientStatus::Active => {
            state.limits.logins.succeeded(client_id);
            Ok(client)
        }
        Some((client, _)) if valid => {
            tracing::info!(client_id = %client.id, "token refused: client disabled");
            let res = OAuthError::InvalidClient.respond("client authentication failed");
            Err(("client-disabled", res))
        }
        _ => {
            state.limits.logins.failed(client_id);
            tracing::info!("token refused: bad client credentials");
            let res = OAuthError::InvalidClient.respond("client authentication failed");
            Err(("invalid-client", res))
        }
    }
}

async fn jwks(State(state): State<AppState>) -> Response {
    let set = JwkSet {
        keys: state.tokens.public_jwks(),
    };
    let mut res = Json(set).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    res
}
