//! The objection endpoints: subjects file, follow and withdraw their objections; handlers list
//! them and move them through the state machine in `crate::workflows::objections`.

use axum::{
    Extension, Json,
    extract::{Path, Query, State},
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
    audit::AuditSlot,
    auth::{self, Institution},
    domain::SubjectId,
    storage::micros_to_rfc3339,
    workflows::objections::{self, Actor, Move, Objection, Status, Submission},
};

pub fn routes() -> Vec<Group> {
    vec![
        audited(
            AuditKind::Subject,
            vec![
                r::get("/subject/objections", subject_list),
                r::post("/subject/objections", submit),
                r::get("/subject/objections/{id}", subject_get),
                r::post("/subject/objections/{id}/withdraw", withdraw),
            ],
        ),
        audited(
            AuditKind::Admin,
            vec![
                r::get("/admin/objections", admin_list),
                r::get("/admin/objections/{id}", admin_get),
                r::post("/admin/objections/{id}/transitions", admin_transition),
            ],
        ),
    ]
}

async fn submit(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    body: Result<Json<Submission>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Error> {
    let subject = auth::authenticate_subject_audited(&state, &headers, &slot)?;
    let Json(req) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    objections::check_submission(&state, &subject.id, &req)?;
    slot.update(|a| {
        a.store = Some(req.store.clone());
        a.dataset = Some(req.dataset.clone());
        a.subjects = vec![subject.id.as_str().into()];
    });
    let o = objections::prepare(&state, &subject.id, req);
    // Viewed as of its filing, as it was created.
    let view = o.view(o.created_at);
    let change = objections::filing(&state, o);
    Ok(change.attach((StatusCode::CREATED, Json(view))))
}

/// The subject's own objection, or 404 (another subject's id answers exactly like a missing
/// one). Own means the same id and the same type.
async fn own(state: &AppState, subject: &SubjectId, id: &str) -> Result<Objection, Error> {
    match objections::get(&state.db, id).await? {
        Some(o) if subject.is_named(&o.subject_id, &o.subject_type) => Ok(o),
        _ => Err(Error::NotFound("no such objection".into())),
    }
}

async fn subject_list(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
) -> Result<Json<Value>, Error> {
    let subject = auth::authenticate_subject_audited(&state, &headers, &slot)?;
    let now = state.clock.now();
    let items: Vec<Value> = objections::list_for_subject(&state.db, &subject.id)
        .await?
        .iter()
        .map(|o| o.view(now))
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn subject_get(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let subject = auth::authenticate_subject_audited(&state, &headers, &slot)?;
    let o = own(&state, &subject.id, &id).await?;
    let mut v = o.view(state.clock.now());
    v["history"] = json!(objections::history(&state.db, &o.id).await?);
    Ok(Json(v))
}

async fn withdraw(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let subject = auth::authenticate_subject_audited(&state, &headers, &slot)?;
    let o = own(&state, &subject.id, &id).await?;
    if !o.status.may_go(Status::Withdrawn, Actor::Subject) {
        return Err(Error::Conflict(format!(
            "an objection that is {} cannot be withdrawn",
            o.status.as_str()
        )));
    }
    let now = state.clock.now();
    let view = objections::moved(&o, Status::Withdrawn, Move::default()).view(now);
    let actor = (Actor::Subject, "subject".to_string());
    let change =
        objections::deferred_transition(&state, o, Status::Withdrawn, actor, (None, None), now);
    Ok(change.attach(Json(view)))
}

pub const OBJECTION_HANDLER: &str = "objection_handler";

pub async fn handler(
    state: &AppState,
    headers: &HeaderMap,
    slot: &AuditSlot,
) -> Result<Institution, Error> {
    super::admin::require_role(state, headers, slot, OBJECTION_HANDLER, "handler-only").await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    overdue: Option<bool>,
}

async fn admin_list(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Error> {
    handler(&state, &headers, &slot).await?;
    let Query(q) = q.map_err(|e| Error::BadRequest(e.body_text()))?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            Status::parse(s).ok_or_else(|| Error::BadRequest(format!("unknown status `{s}`")))?,
        ),
    };
    let now = state.clock.now();
    let items: Vec<Value> = objections::list_all(&state.db)
        .await?
        .into_iter()
        .filter(|o| status.is_none_or(|s| o.status == s))
        .filter(|o| q.overdue.is_none_or(|want| o.overdue(now) == want))
        .map(|o| {
            let mut v = o.view(now);
            v["subject"] = json!(o.subject_id);
            v
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn admin_get(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    handler(&state, &headers, &slot).await?;
    let o = objections::get(&state.db, &id)
        .await?
        .ok_or_else(|| Error::NotFound("no such objection".into()))?;
    let mut v = o.view(state.clock.now());
    v["subject"] = json!(o.subject_id);
    v["history"] = json!(objections::history(&state.db, &o.id).await?);
    Ok(Json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionRequest {
    to: String,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    correction: Option<String>,
}

async fn admin_transition(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<TransitionRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Error> {
    let who = handler(&state, &headers, &slot).await?;
    let Json(req) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    let to = Status::parse(&req.to)
        .ok_or_else(|| Error::BadRequest(format!("unknown status `{}`", req.to)))?;
    if req
        .note
        .as_deref()
        .is_some_and(|n| n.chars().count() > 2000)
    {
        return Err(Error::BadRequest("note is at most 2000 characters".into()));
    }
    if to == Status::Rejected && req.note.as_deref().is_none_or(|n| n.trim().is_empty()) {
        return Err(Error::BadRequest(
            "a rejection needs a note with the reason".into(),
        ));
    }
    let o = objections::get(&state.db, &id)
        .await?
        .ok_or_else(|| Error::NotFound("no such objection".into()))?;
    if !o.status.may_go(to, Actor::Handler) {
        return Err(Error::Conflict(format!(
            "an objection that is {} cannot become {}",
            o.status.as_str(),
            to.as_str()
        )));
    }
    let now = state.clock.now();
    let m = Move {
        note: req.note.as_deref(),
        correction: req.correction.as_deref(),
        ticket: None,
    };
    let mut v = objections::moved(&o, to, m).view(now);
    let mut steps = objections::history(&state.db, &o.id).await?;
    steps.push(
        json!({"at": micros_to_rfc3339(now), "by": who.client_id, "from": o.status,
                      "to": to, "note": req.note}),
    );
    v["history"] = json!(steps);
    let actor = (Actor::Handler, who.client_id);
    let change =
        objections::deferred_transition(&state, o, to, actor, (req.note, req.correction), now);
    Ok(change.attach(Json(v)))
}
