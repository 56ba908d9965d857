//! Data-subject endpoints. Every one acts on the token's own subject only: another subject's
//! item answers 404, exactly as a missing one does.

use axum::{
    Extension, Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    AppState, AttachChange as _, Error,
    routes::{self as r, AuditKind, Group, audited},
};
use crate::{
    audit::{AuditSlot, ChangeError, Deferred, Refused, store as audit_store},
    auth,
    config::is_name,
    domain::SubjectId,
    storage::{
        consents::{self, ConsentRecord},
        now_micros,
    },
};

pub fn routes() -> Vec<Group> {
    vec![audited(
        AuditKind::Subject,
        vec![
            r::get("/subject/me", me),
            r::get("/subject/consents", list_consents),
            r::post("/subject/consents", grant_consent),
            r::delete("/subject/consents/{id}", revoke_consent),
            r::get("/subject/access-log", access_log),
        ],
    )]
}

/// Who the gateway takes the caller to be: lets a subject check their token before filing.
async fn me(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
) -> Result<Json<Value>, Error> {
    let subject = auth::authenticate_subject_audited(&state, &headers, &slot)?;
    Ok(Json(json!({
        "subject": subject.id.as_str(),
        "subject_type": subject.id.subject_type(),
        "issuer": subject.issuer,
    })))
}

/// Longest consent a subject may grant in one go.
const MAX_CONSENT_SECS: i64 = 5 * 366 * 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantRequest {
    grantee_org: String,
    purpose: String,
    /// RFC 3339.
    expires_at: String,
}

async fn grant_consent(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    body: Result<Json<GrantRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Error> {
    let subject = auth::authenticate_subject_audited(&state, &headers, &slot)?;
    let Json(req) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    if !is_name(&req.grantee_org) {
        return Err(Error::BadRequest("grantee_org is not an org id".into()));
    }
    if state.policies().purpose(&req.purpose).is_none() {
        return Err(Error::BadRequest(format!(
            "unknown purpose `{}`",
            req.purpose
        )));
    }
    let expires = time::OffsetDateTime::parse(
        &req.expires_at,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|_| Error::BadRequest("expires_at must be an RFC 3339 time".into()))?;
    let now = now_micros();
    let expires_at = (expires.unix_timestamp_nanos() / 1000) as i64;
    if expires_at <= now {
        return Err(Error::BadRequest("expires_at must be in the future".into()));
    }
    if expires_at - now > MAX_CONSENT_SECS * 1_000_000 {
        return Err(Error::BadRequest(
            "a consent may last at most five years".into(),
        ));
    }
    let record = ConsentRecord {
        id: format!("cs_{}", uuid::Uuid::new_v4().simple()),
        subject_id: subject.id.as_str().into(),
        subject_type: subject.id.subject_type().as_str().into(),
        grantee_org: req.grantee_org,
        purpose: req.purpose,
        created_at: now,
        expires_at,
        revoked_at: None,
    };
    let view = record.view(now);
    let record = std::sync::Arc::new(record);
    let change = Deferred::new(move |conn| {
        let record = record.clone();
        Box::pin(async move { Ok(consents::insert_in(conn, &record).await?) })
    });
    Ok(change.attach((StatusCode::CREATED, Json(view))))
}

async fn list_consents(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
) -> Result<Json<Value>, Error> {
    let subject = auth::authenticate_subject_audited(&state, &headers, &slot)?;
    let now = now_micros();
    let items: Vec<_> = consents::list_for_subject(&state.db, &subject.id)
        .await?
        .iter()
        .map(|c| c.view(now))
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn revoke_consent(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let subject = auth::authenticate_subject_audited(&state, &headers, &slot)?;
    let owned = consents::get(&state.db, &id)
        .await?
        .is_some_and(|c| c.is_for(&subject.id));
    if !owned {
        return Err(Error::NotFound("no such consent".into()));
    }
    // Revoked in the record's transaction, still the subject's own there.
    let change = Deferred::new(move |conn| {
        let (subject, id) = (subject.id.clone(), id.clone());
        Box::pin(async move {
            match consents::revoke_in(conn, &subject, &id).await? {
                true => Ok(()),
                false => Err(ChangeError::Refused(Refused::NotFound(
                    "no such consent".into(),
                ))),
            }
        })
    });
    Ok(change.attach(StatusCode::NO_CONTENT))
}

/// Whether a record that names this subject's id string was about this subject, type included.
/// Records name subjects by id alone; only an id valid as both a USCC and a resident ID number
/// is ambiguous, and for such an id a record counts only when its dataset is declared to be
/// about this type of subject. Fail closed: an ambiguous record (a profile, a dataset of no
/// declared type) is shown to neither, rather than to the wrong one.
fn is_about(
    subject: &SubjectId,
    record: &crate::audit::AuditRecord,
    policies: &crate::policy::PolicySet,
) -> bool {
    if !subject.is_ambiguous() {
        return true;
    }
    // The record names the id; its dataset's declared type completes who it is about.
    record
        .dataset
        .as_deref()
        .and_then(|d| policies.dataset(d))
        .and_then(|d| d.subject_type)
        .is_some_and(|kind| subject.is(subject.as_str(), kind))
}

/// Who accessed my records: institutions' and the public's requests that touched this subject,
/// allowed or denied. Only the caller's own.
async fn access_log(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
) -> Result<Json<Value>, Error> {
    let subject = auth::authenticate_subject_audited(&state, &headers, &slot)?;
    let policies = state.policies();
    let records = audit_store::access_log(&state.db, subject.id.as_str(), 500, &policies).await?;
    let items: Vec<Value> = records
        .iter()
        .filter(|r| is_about(&subject.id, r, &policies))
        .map(|r| {
            json!({
                "time": crate::storage::micros_to_rfc3339(r.time_us),
                "org": r.org, "role": r.role, "purpose": r.purpose,
                "legal_basis": r.purpose.as_deref().and_then(|p| policies.purpose(p)).map(|p| p.legal_basis.code()),
                "store": r.store, "dataset": r.dataset, "decision": r.decision,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}
