//! `POST /oauth/token` (RFC 6749 section 4.4, client credentials) and the public JWKS.
//! Errors here follow RFC 6749 section 5.2, not RFC 9457: OAuth clients parse `error`.

use axum::{
    Json,
    body::Bytes,
    extract::{FromRequest, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::json;

use super::{
    AppState,
    routes::{self as r, AuditKind, Group, Unaudited, audited, unaudited},
};
use crate::{
    auth::{keys::JwkSet, secrets},
    storage::clients::{self, ClientStatus},
    web::limits::{LoginKey, LoginRefusal},
};

pub fn routes() -> Vec<Group> {
    vec![
        audited(AuditKind::Token, vec![r::post("/oauth/token", token)]),
        unaudited(
            Unaudited::Jwks,
            vec![r::get("/.well-known/jwks.json", jwks)],
        ),
        unaudited(
            Unaudited::Discovery,
            vec![
                r::get("/.well-known/oauth-authorization-server", metadata),
                r::get("/openapi.json", super::openapi::openapi),
            ],
        ),
    ]
}

/// RFC 8414 authorization server metadata, so that an OAuth client library finds the token
/// endpoint from one URL. `issuer` is `auth.issuer` verbatim, as in every token's `iss`. The
/// endpoints' base URL is `auth.issuer` when that is an http(s) URL (set it to the public URL,
/// as the demo does, and behind a load balancer); otherwise this connection's scheme and a
/// well-formed `Host`. A malformed `Host` is refused rather than echoed into URLs a client will
/// call.
async fn metadata(State(state): State<AppState>, req: Request) -> Response {
    let issuer = state.config.auth.issuer.as_str();
    let trimmed = issuer.trim_end_matches('/');
    let base = if trimmed.starts_with("https://") || trimmed.starts_with("http://") {
        trimmed.to_owned()
    } else {
        let scheme = if req.extensions().get::<super::edge::Https>().is_some() {
            "https"
        } else {
            "http"
        };
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| well_formed_host(h));
        let Some(host) = host else {
            return super::Error::BadRequest("missing or malformed Host header".into())
                .into_response();
        };
        format!("{scheme}://{host}")
    };
    let mut methods = vec!["client_secret_basic", "client_secret_post"];
    let mutual = state
        .config
        .tls
        .as_ref()
        .is_some_and(|t| t.client_ca_file.is_some());
    if mutual {
        methods.push("tls_client_auth");
    }
    // `issuer` is the setting itself, byte for byte, as every token's `iss` (RFC 8414 section
    // 3.3, RFC 9068 section 4): a client comparing them never sees two values.
    let mut doc = json!({
        "issuer": issuer,
        "token_endpoint": format!("{base}/oauth/token"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": methods,
        "service_documentation": format!("{base}/openapi.json"),
    });
    if mutual {
        doc["tls_client_certificate_bound_access_tokens"] = json!(true);
    }
    let mut res = Json(doc).into_response();
    // Derived from the request's Host: a shared cache must not hand it to another host's client.
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    res
}

/// `name[:port]` or `[v6][:port]`: letters, digits, dots, dashes, colons and brackets only.
fn well_formed_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// The token endpoint's answer when its audit record could not be committed: an OAuth error
/// body like its others (OAuth clients parse `error`, not problem+json), and no token.
pub(super) fn audit_unavailable() -> Response {
    OAuthError::TemporarilyUnavailable.respond("the audit log cannot be written; try again later")
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

/// A client that proved its credentials at the token endpoint (RFC 6749 section 2.3.1), noted in
/// the audit slot; the rejection is the RFC 6749 answer itself, since OAuth clients parse it.
struct LoggedIn(clients::ClientRecord);

impl FromRequest<AppState> for LoggedIn {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let slot = req
            .extensions()
            .get::<crate::audit::AuditSlot>()
            .cloned()
            .unwrap_or_default();
        let ip = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0.ip());
        let cert = req.extensions().get::<super::edge::ClientCert>().cloned();
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let presented = credentials(&headers, &body).map_err(|(e, why)| e.respond(why))?;
        let client_id = presented.client_id().to_owned();
        // The id the caller claims, failed logins included (one credgate never issues, only
        // its start: a record keeps the shape of the request, not arbitrary bulk); never the
        // secret, not even one a caller percent-encoded into the id of a Basic pair.
        let claimed = if well_formed_client_id(&client_id) {
            client_id.clone()
        } else {
            claimed_start(&client_id)
        };
        slot.update(|a| a.client_id = Some(claimed));
        let outcome = match presented {
            Presented::Secret(_, secret) => authenticate(state, &client_id, ip, secret).await,
            Presented::Certificate(_) => by_certificate(state, &client_id, ip, cert).await,
        };
        let client = outcome.map_err(|(rule, res)| {
            slot.update(|a| a.rule = Some(rule.into()));
            res
        })?;
        slot.update(|a| {
            a.org = Some(client.org.clone());
            a.role = Some(client.role.clone());
        });
        Ok(Self(client))
    }
}

/// The client id and secret of a well-formed client-credentials request, or its RFC 6749 error.
fn credentials(headers: &HeaderMap, body: &[u8]) -> Result<Presented, (OAuthError, &'static str)> {
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
        return Err((
            OAuthError::InvalidRequest,
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) else {
        return Err((OAuthError::InvalidRequest, "the form body is malformed"));
    };
    // RFC 6749 section 3.2: parameters must not repeat.
    let mut seen = std::collections::HashSet::new();
    if !pairs.iter().all(|(k, _)| seen.insert(k.as_str())) {
        return Err((OAuthError::InvalidRequest, "a parameter is repeated"));
    }
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    match param("grant_type").as_deref() {
        None => return Err((OAuthError::InvalidRequest, "grant_type is required")),
        Some("client_credentials") => {}
        Some(_) => {
            return Err((
                OAuthError::UnsupportedGrantType,
                "only client_credentials is supported",
            ));
        }
    }
    let basic = basic_credentials(headers).map_err(|e| (e, "malformed client authentication"))?;
    match (basic, param("client_id"), param("client_secret")) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err((
            OAuthError::InvalidRequest,
            "use one client authentication method, not two",
        )),
        (Some((id, secret)), None, None) | (None, Some(id), Some(secret)) => {
            Ok(Presented::Secret(id, secret))
        }
        // RFC 8705 section 2: `client_id` alone; the certificate is the credential.
        (None, Some(id), None) => Ok(Presented::Certificate(id)),
        _ => Err((OAuthError::InvalidClient, "client authentication failed")),
    }
}

/// How a token request authenticates its client, read from its form alone: a secret
/// (`client_secret_basic` or `client_secret_post`), or `client_id` with no secret
/// (`tls_client_auth`, RFC 8705 section 2.1). Only the method the client was registered with
/// succeeds; any other is `invalid_client` ("unsupported authentication method", RFC 6749
/// section 5.2), so a certificate never stands in for a secret nor a secret for a certificate.
enum Presented {
    Secret(String, String),
    Certificate(String),
}

impl Presented {
    fn client_id(&self) -> &str {
        match self {
            Self::Secret(id, _) | Self::Certificate(id) => id,
        }
    }
}

/// The address's bucket was charged by `limits::limit`: a 429 there is a problem document, not
/// an OAuth error, since nothing was judged.
/// Over a connection that presented a client certificate the token is bound to it (RFC 8705).
async fn token(
    State(state): State<AppState>,
    cert: Option<axum::Extension<super::edge::ClientCert>>,
    LoggedIn(client): LoggedIn,
) -> Response {
    let x5t = cert.as_ref().map(|c| c.0.0.as_str());
    let Ok(access_token) = state.tokens.issue_bound(&client, x5t) else {
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

/// How much of an id credgate never issued the audit record keeps.
const CLAIMED_ID_MAX: usize = 64;

/// What the audit record keeps of an id credgate never issued. Only what still looks like an
/// id (`cg_` and hex digits: a typo, a truncated paste) is kept, at most `CLAIMED_ID_MAX`
/// characters and nothing from the first colon on (`id%3Asecret:` in a Basic header decodes
/// to an id holding the secret). Anything else is recorded as `(malformed)`: a client that
/// swaps its id and secret would otherwise write its valid secret into an append-only log
/// that officers read.
fn claimed_start(id: &str) -> String {
    let start = id.split(':').next().unwrap_or_default();
    let id_like = start
        .strip_prefix("cg_")
        .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if id_like {
        start.chars().take(CLAIMED_ID_MAX).collect()
    } else {
        "(malformed)".to_owned()
    }
}

/// An id no client can have (`generate_client_id` makes UUIDv4s, whose version digit is 4):
/// looked up in place of a malformed id, so that its answer takes the unknown id's path.
const NEVER_ISSUED_ID: &str = "cg_00000000000000000000000000000000";

/// Whether `id` has the form `secrets::generate_client_id` gives: `cg_` and 32 lowercase hex
/// digits. Anything else cannot be a client, and is neither stored nor counted.
fn well_formed_client_id(id: &str) -> bool {
    id.strip_prefix("cg_").is_some_and(|hex| {
        hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// Checks the client's secret under the token endpoint's bounds: a locked (id, address) pair is
/// refused without hashing, the hash waits briefly for one of few slots or is answered 503, and
/// an unknown or malformed id is hashed against a dummy like a known one, so neither the answer
/// nor its timing tells them apart. On refusal: the audit rule and the answer.
async fn authenticate(
    state: &AppState,
    client_id: &str,
    ip: IpAddr,
    secret: String,
) -> Result<clients::ClientRecord, (&'static str, Response)> {
    // A malformed id is checked before anything else: it is never hashed into the failure
    // table, and it is looked up as an id that cannot exist.
    let key = well_formed_client_id(client_id).then(|| LoginKey::new(client_id, ip));
    let lookup = if key.is_some() {
        client_id
    } else {
        NEVER_ISSUED_ID
    };
    let permit = admit(state, key.as_ref()).await?;
    let found = match clients::get_with_secret(&state.db, lookup).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "token endpoint: storage failure");
            let res = OAuthError::TemporarilyUnavailable.respond("try again later");
            return Err(("storage", res));
        }
    };
    // A `tls_client_auth` client has no secret: its marker is hashed against like a missing
    // one, and refused whatever verifies.
    let by_secret = found
        .as_ref()
        .is_none_or(|(c, _)| c.tls_thumbprint.is_none());
    let hash = found.as_ref().map(|(_, h)| h.clone());
    // argon2 is deliberately slow: keep it off the async workers. The permit goes with it.
    let valid = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        secrets::verify_secret(hash.as_deref(), &secret)
    })
    .await
    .unwrap_or(false)
        && by_secret;
    judge(state, client_id, key.as_ref(), found.map(|(c, _)| c), valid)
}

/// RFC 8705 section 2.1 `tls_client_auth`: the client registered with the thumbprint of the
/// certificate this connection presented (verified against `client_ca_file` in the handshake).
/// No hash and no lock: a guess needs a certificate the CA signed and its private key, and a
/// lock would let whoever guesses ids lock the institution out. Failures still count toward the
/// id's alert. A malformed id is looked up as one never issued, as on the secret path.
async fn by_certificate(
    state: &AppState,
    client_id: &str,
    ip: IpAddr,
    cert: Option<super::edge::ClientCert>,
) -> Result<clients::ClientRecord, (&'static str, Response)> {
    let key = well_formed_client_id(client_id).then(|| LoginKey::new(client_id, ip));
    let lookup = if key.is_some() {
        client_id
    } else {
        NEVER_ISSUED_ID
    };
    let found = match clients::get(&state.db, lookup).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "token endpoint: storage failure");
            let res = OAuthError::TemporarilyUnavailable.respond("try again later");
            return Err(("storage", res));
        }
    };
    // Thumbprints are digests of certificates sent in the clear in TLS 1.2: not secrets, so a
    // plain comparison leaks nothing worth a constant-time one.
    let valid = match (&found, &cert) {
        (Some(c), Some(presented)) => c.tls_thumbprint.as_deref() == Some(presented.0.as_str()),
        _ => false,
    };
    judge(state, client_id, key.as_ref(), found, valid)
}

/// A slot among the few argon2 checks that may run at once, unless this id and address are
/// locked after failures.
async fn admit(
    state: &AppState,
    key: Option<&LoginKey>,
) -> Result<tokio::sync::OwnedSemaphorePermit, (&'static str, Response)> {
    match state.limits.logins.admit(key).await {
        Ok(permit) => Ok(permit),
        Err(LoginRefusal::Busy) => {
            let mut res = OAuthError::TemporarilyUnavailable
                .respond("the token endpoint is busy; retry after the given seconds");
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Err(("token-busy", res))
        }
        Err(LoginRefusal::Locked(secs)) => {
            tracing::info!("token refused: client id locked after failed logins");
            let mut res = OAuthError::InvalidClient
                .respond("too many failed attempts for this client; try again later");
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            Err(("client-locked", res))
        }
    }
}

// The refusal carries its ready answer; it is built once per refused login, off the hot path.
#[allow(clippy::result_large_err)]
/// The outcome of a checked secret: the client, or the refusal; failures count toward the
/// lock of this id and address.
fn judge(
    state: &AppState,
    client_id: &str,
    key: Option<&LoginKey>,
    client: Option<clients::ClientRecord>,
    valid: bool,
) -> Result<clients::ClientRecord, (&'static str, Response)> {
    match client {
        // A role reserved for the public or a data subject is never a client's (a row edited
        // by hand): no token, as for a disabled client.
        Some(client) if valid && state.policies().reserved(&client.role).is_some() => {
            tracing::warn!(client_id = %client.id, role = %client.role, "token refused: role reserved, never a client's");
            let res = OAuthError::InvalidClient.respond("client authentication failed");
            Err(("reserved-role", res))
        }
        Some(client) if valid && client.status == ClientStatus::Active => {
            if let Some(key) = key {
                state.limits.logins.succeeded(key);
            }
            Ok(client)
        }
        Some(client) if valid => {
            tracing::info!(client_id = %client.id, "token refused: client disabled");
            let res = OAuthError::InvalidClient.respond("client authentication failed");
            Err(("client-disabled", res))
        }
        _ => {
            if let Some(key) = key
                && state.limits.logins.failed(key)
            {
                metrics::counter!("credgate_client_id_failure_alerts_total").increment(1);
                tracing::warn!(
                    client_id,
                    "many failed logins for one client id, from any address"
                );
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ids_of_the_form_credgate_issues_are_well_formed() {
        for _ in 0..100 {
            assert!(well_formed_client_id(&secrets::generate_client_id()));
        }
        for bad in [
            "",
            "cg_",
            "cg_nobody",
            "CG_0123456789abcdef0123456789abcdef",
            "cg_0123456789ABCDEF0123456789abcdef",
            "cg_0123456789abcdef0123456789abcdef0",
            "cg_0123456789abcdef0123456789abcde",
            " cg_0123456789abcdef0123456789abcdef",
            "cg_0123456789abcdef0123456789abcdeg",
        ] {
            assert!(!well_formed_client_id(bad), "{bad:?}");
        }
        assert!(!well_formed_client_id(&format!(
            "cg_{}",
            "a".repeat(60_000)
        )));
    }

    #[test]
    fn a_claimed_id_keeps_nothing_from_its_first_colon_on() {
        assert_eq!(claimed_start("cg_abc:secret"), "cg_abc");
        assert_eq!(claimed_start(":secret"), "(malformed)");
        assert_eq!(claimed_start(&"a".repeat(100)), "(malformed)");
        assert_eq!(
            claimed_start(&format!("cg_{}", "a".repeat(100))).len(),
            CLAIMED_ID_MAX
        );
        // A secret sent in the id's place keeps nothing of itself.
        let secret = crate::auth::secrets::generate_secret();
        assert_eq!(claimed_start(&secret), "(malformed)");
    }

    #[test]
    fn the_id_looked_up_for_a_malformed_one_is_well_formed_and_never_issued() {
        assert!(well_formed_client_id(NEVER_ISSUED_ID));
        // A UUIDv4 in simple form has its version digit, 4, at index 12.
        assert_ne!(NEVER_ISSUED_ID.as_bytes()[3 + 12], b'4');
    }
}
