//! Who is calling: institutions with gateway-issued tokens, data subjects with tokens from a
//! trusted identity provider. Everything here fails closed: any doubt is a 401.

pub mod keyring;
pub mod keys;
pub mod limiter;
mod principal;
pub mod sealer;
pub mod secrets;
pub mod status;
pub mod subject;
pub mod tokens;

use http::HeaderMap;

pub use principal::{PUBLIC_ROLE, Principal};
use serde::Serialize;

use crate::{
    domain::SubjectId,
    http::{AppState, Error},
    storage::clients::ClientStatus,
};

/// An authenticated institution (machine client), as of this request.
#[derive(Debug, Clone, Serialize)]
pub struct Institution {
    pub client_id: String,
    pub org: String,
    pub role: String,
    pub region: Option<String>,
}

/// An authenticated data subject: a company or person, about their own records only.
#[derive(Debug, Clone, Serialize)]
pub struct DataSubject {
    pub id: SubjectId,
    pub issuer: String,
}

/// The bearer token of an `Authorization` header, or a 401.
pub fn bearer(headers: &HeaderMap) -> Result<&str, Error> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(Error::Unauthorized("no bearer token"))?
        .to_str()
        .map_err(|_| Error::Unauthorized("malformed Authorization header"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(Error::Unauthorized("malformed Authorization header"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Error::Unauthorized("expected a Bearer token"));
    }
    Ok(token.trim())
}

/// Phase 1 of a data request: a valid gateway token whose client is still active.
///
/// The client's status comes from the status cache (see `status`): a change made through this
/// replica holds from the next request, one made anywhere else within a quarter second.
pub async fn authenticate_institution(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Institution, Error> {
    let token = bearer(headers)?;
    let mut verified = state.tokens.verify(token);
    // A kid we do not know may be a rotation another replica made a moment ago: reread the
    // keys (at most once a second) and try once more.
    if matches!(verified, Err(tokens::TokenError::UnknownKey)) && state.tokens.may_force_refresh() {
        if let Err(e) = crate::replicas::refresh_keys(state).await {
            tracing::warn!(error = %e, "rereading the signing keys failed");
        }
        verified = state.tokens.verify(token);
    }
    let claims = verified.map_err(|e| {
        tracing::info!(reason = %e, "gateway token refused");
        Error::Unauthorized("invalid or expired token")
    })?;
    let (client, locked) = state
        .client_status
        .get(&state.db, &claims.sub)
        .await
        .map_err(Error::storage)?
        .ok_or(Error::Unauthorized("invalid or expired token"))?;
    if client.status != ClientStatus::Active {
        tracing::info!(client_id = %client.id, "token of a disabled client refused");
        return Err(Error::Unauthorized("client is disabled"));
    }
    state.limits.check_client(&client.id)?;
    if locked {
        tracing::warn!(client_id = %client.id, org = %client.org, "request of a locked-down client refused");
        return Err(Error::Forbidden {
            rule: "lockdown".into(),
            detail: "this client or its organisation is locked down by a security officer".into(),
        });
    }
    Ok(Institution {
        client_id: client.id,
        org: client.org,
        role: client.role,
        region: client.region,
    })
}

/// A valid data-subject token from one of the configured identity providers.
pub fn authenticate_subject(state: &AppState, headers: &HeaderMap) -> Result<DataSubject, Error> {
    let token = bearer(headers)?;
    state.subjects.verify(token).map_err(|e| {
        tracing::info!(reason = %e, "subject token refused");
        Error::Unauthorized("invalid or expired token")
    })
}

/// The same, noting the acting subject in the audit record.
pub fn authenticate_subject_audited(
    state: &AppState,
    headers: &HeaderMap,
    slot: &crate::audit::AuditSlot,
) -> Result<DataSubject, Error> {
    let s = authenticate_subject(state, headers)?;
    slot.update(|a| {
        a.actor_subject = Some(s.id.as_str().to_string());
        a.role = Some("subject".into());
    });
    state
        .subjects
        .check_rate(&s.id)
        .map_err(Error::RateLimited)?;
    Ok(s)
}
