//! Phase 3, decide: the compiled plan for (role, purpose, dataset), then row scope, then the
//! data subject's consent where the plan needs it. Denials name the rule, never the data.

use http::HeaderMap;

use super::DataError as Error;
use crate::{
    auth::Principal,
    domain::SubjectId,
    policy::{ConsentState, Plan},
    services::Core,
    storage::consents,
};

pub async fn decide(
    state: &Core,
    who: &Principal,
    purpose: &str,
    dataset: &str,
    subject: Option<&SubjectId>,
    headers: &HeaderMap,
) -> Result<std::sync::Arc<Plan>, Error> {
    admit(state, who)?;
    let plan = state.policies().decide(who.role(), purpose, dataset)?;
    plan.check_scope(who.region())?;
    if plan.needs_consent {
        let consent = consent_for(state, who, purpose, subject, Some(dataset), headers).await?;
        plan.check_consent(consent)?;
    }
    Ok(plan)
}

/// Reads `X-Consent` and judges it against this request: the same person, the caller's own
/// org, the declared purpose, neither revoked nor expired, and a scope that covers what is read.
/// A consent that is all that but not separate is told apart: the plan decides whether that
/// is enough (PIPL art. 29).
/// Without one dataset (the profile), a scoped consent must cover every profile section of the
/// subject's type: a consent never reaches a dataset its scope leaves out.
pub async fn consent_state(
    state: &Core,
    who: &Principal,
    purpose: &str,
    subject: Option<&SubjectId>,
    headers: &HeaderMap,
) -> Result<ConsentState, Error> {
    admit(state, who)?;
    consent_for(state, who, purpose, subject, None, headers).await
}

/// A client whose role the policy reserves for the public or a data subject (written into
/// the database by hand, or left from before the policy reserved it) is served nothing: it
/// would read as the anonymous public while known, or as a subject without being one.
fn admit(state: &Core, who: &Principal) -> Result<(), Error> {
    if let Principal::Institution(i) = who {
        state.policies().client_role(&i.role)?;
    }
    Ok(())
}

async fn consent_for(
    state: &Core,
    who: &Principal,
    purpose: &str,
    subject: Option<&SubjectId>,
    dataset: Option<&str>,
    headers: &HeaderMap,
) -> Result<ConsentState, Error> {
    let Some(value) = headers.get("x-consent") else {
        return Ok(ConsentState::Absent);
    };
    let (Ok(id), Some(subject), Some(org)) = (value.to_str(), subject, who.org()) else {
        return Ok(ConsentState::Invalid);
    };
    let Some(c) = consents::get(&state.db, id).await? else {
        return Ok(ConsentState::Invalid);
    };
    let valid = c.is_for(subject)
        && c.grantee_org == org
        && c.purpose == purpose
        && c.is_live(state.clock.now())
        && c.scope.as_ref().is_none_or(|scope| {
            let covers = |d: &str| scope.iter().any(|s| s == d);
            match dataset {
                Some(d) => covers(d),
                None => state
                    .stores
                    .profile_sections(subject.subject_type())
                    .iter()
                    .all(|(_, route)| covers(&route.dataset)),
            }
        });
    Ok(if valid && c.separate_consent {
        ConsentState::Valid
    } else if valid {
        ConsentState::NotSeparate
    } else {
        ConsentState::Invalid
    })
}
