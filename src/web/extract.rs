//! Who may call a handler, said by its signature: a handler that takes an `Officer` cannot run
//! for anyone else. Each extractor notes the caller in the audit slot as soon as the caller is
//! known, before any check that may refuse them, so a refused call is still attributed.
//!
//! Separation of duties (DESIGN.md, "Who uses it"): whoever administers the system does not
//! audit it. `SystemAdmin` runs clients, keys and policies; `Officer` works alerts and
//! lockdowns; `AuditReader` (officer or auditor) reads the log, and only an auditor sees the
//! records of staff actions.
//!
//! Staff are people: each staff extractor admits either a gateway client of the role (a
//! machine, with client credentials) or a person whose staff provider's token maps to the role
//! (`auth::oidc`). Which one is said by the token's issuer; a person is noted in the audit
//! record as `actor` and `actor_org`, never as a client.

use std::ops::Deref;

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, request::Parts},
};

use super::{AppState, Error};
use crate::{
    audit::AuditSlot,
    auth::{self, DataSubject, oidc::OidcError},
};

pub const SECURITY_OFFICER: &str = "security_officer";
pub const OBJECTION_HANDLER: &str = "objection_handler";
pub const SYSTEM_ADMIN: &str = "system_admin";
pub const AUDITOR: &str = "auditor";

/// The slot the audit layer put in this request; a route outside the audited groups has none,
/// and notes go nowhere.
fn slot_of(parts: &Parts) -> AuditSlot {
    parts
        .extensions
        .get::<AuditSlot>()
        .cloned()
        .unwrap_or_default()
}

/// Any active gateway client. The client is noted before its rate and lockdown are checked, so
/// that a 429 or a lockdown refusal names whom it refused.
pub async fn institution(
    state: &AppState,
    parts: &Parts,
    slot: &AuditSlot,
) -> Result<auth::Institution, Error> {
    let cert = parts.extensions.get::<super::edge::ClientCert>();
    let known =
        auth::identify_institution(state, &parts.headers, cert.map(|c| c.0.as_str())).await?;
    slot.update(|a| {
        a.client_id = Some(known.client.client_id.clone());
        a.org = Some(known.client.org.clone());
        a.role = Some(known.client.role.clone());
    });
    auth::admit(state, &known)?;
    Ok(known.client)
}

/// An active client, or a person, of one of `roles`; any other caller with a valid token is
/// 403 under `rule`.
pub async fn staff(
    state: &AppState,
    parts: &Parts,
    slot: &AuditSlot,
    roles: &[&str],
    rule: &str,
) -> Result<auth::Institution, Error> {
    if auth::is_person_token(state, &parts.headers) {
        return person(state, &parts.headers, slot, roles, rule).await;
    }
    let who = institution(state, parts, slot).await?;
    if roles.contains(&who.role.as_str()) {
        return Ok(who);
    }
    Err(not_for(roles, rule))
}

fn not_for(roles: &[&str], rule: &str) -> Error {
    let names = roles
        .iter()
        .map(|r| format!("`{r}`"))
        .collect::<Vec<_>>()
        .join(" or ");
    Error::Forbidden {
        rule: rule.into(),
        detail: format!("this endpoint is for the {names} role"),
    }
}

/// A person signed in at a staff provider. Handlers see them as an `Institution` whose
/// `client_id` is the person's id (what workflow histories and lockdowns record as "by") and
/// whose role is the first of theirs (sorted) the endpoint admits, so that a person who is
/// both officer and auditor reads the log as the auditor.
async fn person(
    state: &AppState,
    headers: &HeaderMap,
    slot: &AuditSlot,
    roles: &[&str],
    rule: &str,
) -> Result<auth::Institution, Error> {
    let who = auth::identify_person(state, headers)
        .await
        .map_err(person_refused)?;
    let role = who
        .roles
        .iter()
        .find(|r| roles.contains(&r.as_str()))
        .cloned();
    slot.update(|a| {
        a.actor = Some(who.id.clone());
        a.actor_org = Some(who.org.clone());
        a.role = Some(role.clone().unwrap_or_else(|| who.roles.join(" ")));
    });
    auth::admit_person(state, &who)?;
    let role = role.ok_or_else(|| not_for(roles, rule))?;
    Ok(auth::Institution {
        client_id: who.id,
        org: who.org,
        role,
        region: None,
    })
}

/// A provider's token that names no usable person: 401, except an authentic person the
/// provider grants no credgate role (403 `no-staff-role`) or whose only roles need a second
/// factor the sign-in did not assert (403 `second-factor-required`): they are known, and
/// refused what they asked for.
fn person_refused(e: OidcError) -> Error {
    tracing::info!(reason = %e, "staff provider token refused");
    match e {
        OidcError::NoRoles => Error::Forbidden {
            rule: "no-staff-role".into(),
            detail: "the identity provider grants this person no credgate role".into(),
        },
        OidcError::Factor => Error::Forbidden {
            rule: "second-factor-required".into(),
            detail: "this role needs a second factor at sign-in (a one-time code); sign in again with it".into(),
        },
        OidcError::ConflictingDuties => Error::Forbidden {
            rule: "separation-of-duties".into(),
            detail: "the identity provider grants this person roles that both administer and audit; ask for one".into(),
        },
        _ => Error::Unauthorized("invalid or expired token"),
    }
}

/// One extractor per rule of the roles table: the type, the roles it admits and the rule a
/// refusal names.
macro_rules! staff_extractor {
    ($(#[$doc:meta])* $name:ident, $roles:expr, $rule:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub auth::Institution);

        impl $name {
            pub const ROLES: &'static [&'static str] = $roles;
            pub const RULE: &'static str = $rule;
        }

        impl Deref for $name {
            type Target = auth::Institution;
            fn deref(&self) -> &auth::Institution {
                &self.0
            }
        }

        impl FromRequestParts<AppState> for $name {
            type Rejection = Error;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Error> {
                let slot = slot_of(parts);
                staff(state, parts, &slot, Self::ROLES, Self::RULE)
                    .await
                    .map(Self)
            }
        }
    };
}

staff_extractor!(
    /// A security officer: alerts, their acknowledgement, lockdowns.
    Officer,
    &[SECURITY_OFFICER],
    "officer-only"
);
staff_extractor!(
    /// An objection handler: the objection, complaint, request and report queues.
    Handler,
    &[OBJECTION_HANDLER],
    "handler-only"
);
staff_extractor!(
    /// A system administrator: clients, keys, policy reloads. Never the audit log.
    SystemAdmin,
    &[SYSTEM_ADMIN],
    "system-admin-only"
);
staff_extractor!(
    /// A reader of the audit log: a security officer or an auditor. Only the auditor, who
    /// changes nothing, sees the records of staff actions (`sees_staff_actions`).
    AuditReader,
    &[SECURITY_OFFICER, AUDITOR],
    "audit-reader-only"
);

impl AuditReader {
    /// Whether records of kind `admin` (staff actions, the officer's own included) are shown.
    pub fn sees_staff_actions(&self) -> bool {
        self.role == AUDITOR
    }
}

/// Any active gateway client (an institution on the data path; staff are clients too).
#[derive(Debug, Clone)]
pub struct Institution(pub auth::Institution);

impl FromRequestParts<AppState> for Institution {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let slot = slot_of(parts);
        institution(state, parts, &slot).await.map(Self)
    }
}

/// A data subject with a token from a trusted identity provider, noted as the acting subject
/// before its rate is checked.
#[derive(Debug, Clone)]
pub struct Subject(pub DataSubject);

impl FromRequestParts<AppState> for Subject {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let slot = slot_of(parts);
        let s = auth::authenticate_subject_fresh(state, &parts.headers).await?;
        auth::note_subject(state, &s, &slot)?;
        Ok(Self(s))
    }
}
