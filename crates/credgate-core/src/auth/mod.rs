//! Who is calling: institutions with gateway-issued tokens, data subjects with tokens from a
//! trusted identity provider. Everything here fails closed: any doubt is a 401.

pub mod keyring;
pub mod keys;
pub mod limiter;
pub mod oidc;
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
    services::Core,
    storage::{StorageError, clients::ClientStatus},
};

/// Why a caller was not let in. The web layer maps each to its problem (`web::error`).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No valid credentials: a 401, with a reason safe to show.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A valid client whose client id or organisation is locked down.
    #[error("this client or its organisation is locked down")]
    LockedDown,
    /// Over its rate: the seconds until a retry may succeed.
    #[error("rate limit reached; retry in {0} s")]
    RateLimited(u64),
    #[error("storage unavailable")]
    Storage(#[from] StorageError),
}

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
pub fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(AuthError::Unauthorized("no bearer token"))?
        .to_str()
        .map_err(|_| AuthError::Unauthorized("malformed Authorization header"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(AuthError::Unauthorized("malformed Authorization header"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Unauthorized("expected a Bearer token"));
    }
    Ok(token.trim())
}

/// A client that holds a valid token and is still active, before the checks that refuse a
/// known caller (rate, lockdown): known first, so that those refusals name who was refused.
#[derive(Debug, Clone)]
pub struct Identified {
    pub client: Institution,
    locked: bool,
}

/// The token checked and its client looked up; nothing here is charged to the client yet.
///
/// The client's status comes from the status cache (see `status`): a change made through this
/// replica holds from the next request, one made anywhere else within a quarter second.
///
/// `presented` is the SHA-256 thumbprint of the client certificate this connection presented
/// (RFC 8705). A token issued over mutual TLS is bound to its certificate (`cnf`) and refused
/// over any other connection: a stolen token is useless without the institution's key. The
/// check reads the verified claims, so it costs nothing for an unbound token.
pub async fn identify_institution(
    state: &Core,
    headers: &HeaderMap,
    presented: Option<&str>,
) -> Result<Identified, AuthError> {
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
        AuthError::Unauthorized("invalid or expired token")
    })?;
    if let Some(bound) = &claims.cnf
        && presented != Some(bound.x5t_s256.as_str())
    {
        return Err(AuthError::Unauthorized(
            "the token is bound to a client certificate this connection did not present",
        ));
    }
    let (client, locked) = state
        .client_status
        .get(&state.db, &claims.sub)
        .await
        .map_err(AuthError::Storage)?
        .ok_or(AuthError::Unauthorized("invalid or expired token"))?;
    if client.status != ClientStatus::Active {
        tracing::info!(client_id = %client.id, "token of a disabled client refused");
        return Err(AuthError::Unauthorized("client is disabled"));
    }
    Ok(Identified {
        client: Institution {
            client_id: client.id,
            org: client.org,
            role: client.role,
            region: client.region,
        },
        locked,
    })
}

/// The staff roles (DESIGN.md's roles table): no lockdown reaches them, so that a lockdown can
/// never lock out the officer who would lift it; `/admin/lockdown` refuses to name them.
pub const STAFF_ROLES: [&str; 4] = [
    "security_officer",
    "objection_handler",
    "system_admin",
    "auditor",
];

/// Whether `role` is one of the staff roles.
pub fn is_staff_role(role: &str) -> bool {
    STAFF_ROLES.contains(&role)
}

/// Charges one request to the client's rate, then refuses a locked-down client (never a staff
/// role's: a lockdown row that names one, however it got there, does not apply).
pub fn admit(state: &Core, who: &Identified) -> Result<(), AuthError> {
    let c = &who.client;
    state
        .limits
        .check_client(&c.client_id)
        .map_err(AuthError::RateLimited)?;
    if who.locked && !is_staff_role(&c.role) {
        tracing::warn!(client_id = %c.client_id, org = %c.org, "request of a locked-down client refused");
        return Err(AuthError::LockedDown);
    }
    Ok(())
}

/// A valid data-subject token from one of the configured identity providers, waiting for a key
/// refresh when the token names a key not yet fetched.
pub async fn authenticate_subject_fresh(
    state: &Core,
    headers: &HeaderMap,
) -> Result<DataSubject, AuthError> {
    let token = bearer(headers)?;
    as_subject(state.providers().verify(token).await)
}

/// Only a subject provider's token names a data subject: a staff person's is refused here as
/// a subject's is on `/admin`.
fn as_subject(verified: Result<oidc::Verified, oidc::OidcError>) -> Result<DataSubject, AuthError> {
    match verified {
        Ok(oidc::Verified::Subject { id, issuer, .. }) => Ok(DataSubject { id, issuer }),
        Ok(oidc::Verified::Staff(p)) => {
            tracing::info!(issuer = %p.issuer, "staff token refused where a data subject's is needed");
            Err(AuthError::Unauthorized("not a data subject's token"))
        }
        Err(e) => {
            tracing::info!(reason = %e, "subject token refused");
            Err(AuthError::Unauthorized("invalid or expired token"))
        }
    }
}

/// Notes the acting subject in the audit record, then charges its rate.
pub fn note_subject(
    state: &Core,
    s: &DataSubject,
    slot: &crate::audit::AuditSlot,
) -> Result<(), AuthError> {
    slot.update(|a| {
        a.actor_subject = Some(s.id.as_str().to_string());
        a.role = Some("subject".into());
    });
    state
        .subjects
        .check_rate(&s.id)
        .map_err(AuthError::RateLimited)
}

/// Whether the bearer token claims a configured identity provider as its issuer: a person's
/// token, checked by the providers, rather than a gateway client's.
pub fn is_person_token(state: &Core, headers: &HeaderMap) -> bool {
    bearer(headers).is_ok_and(|t| state.providers().claims_issuer(t))
}

/// A staff provider's person, with the roles the provider grants them (after the role map and
/// the factor requirements). `Err` says why not, for the web layer to answer 401 or 403.
pub async fn identify_person(
    state: &Core,
    headers: &HeaderMap,
) -> Result<oidc::StaffPerson, oidc::OidcError> {
    let token = bearer(headers).map_err(|_| oidc::OidcError::Malformed)?;
    match state.providers().verify(token).await? {
        oidc::Verified::Staff(p) => Ok(p),
        oidc::Verified::Subject { .. } => Err(oidc::OidcError::Claim("kind".into())),
    }
}

/// Charges one request to a person's rate, as a client's is charged to the client.
pub fn admit_person(state: &Core, person: &oidc::StaffPerson) -> Result<(), AuthError> {
    state
        .limits
        .check_person(&person.issuer, &person.id)
        .map_err(AuthError::RateLimited)
}
