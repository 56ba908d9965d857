//! The complaint endpoints: subjects file and follow their complaints (with the answer);
//! handlers list them (`?status=&overdue=`), see the org's accesses, and move them through
//! `crate::workflows::complaints`.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use serde_json::{Value, json};

use super::objections::{QueryResult, list_query};
use super::{
    AppState, AttachChange as _, Error,
    extract::{Handler, Subject},
    routes::{self as r, AuditKind, Group, audited},
};
use crate::{
    storage,
    workflows::complaints::{self, MACHINE, Submission, TransitionRequest},
};

pub fn routes() -> Vec<Group> {
    vec![
        audited(
            AuditKind::Subject,
            vec![
                r::get("/subject/complaints", subject_list),
                r::post("/subject/complaints", submit),
                r::get("/subject/complaints/{id}", subject_get),
            ],
        ),
        audited(
            AuditKind::Admin,
            vec![
                r::get("/admin/complaints", admin_list),
                r::get("/admin/complaints/{id}", admin_get),
                r::post("/admin/complaints/{id}/transitions", admin_transition),
            ],
        ),
    ]
}

async fn submit(
    State(state): State<AppState>,
    Subject(subject): Subject,
    body: Result<Json<Submission>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Error> {
    let Json(req) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    let c = complaints::prepare(&state, &subject.id, req)?;
    let view = c.view(c.created_at);
    Ok(complaints::filing(c).attach((StatusCode::CREATED, Json(view))))
}

async fn subject_list(
    State(state): State<AppState>,
    Subject(subject): Subject,
) -> Result<Json<Value>, Error> {
    let now = state.clock.now();
    let items: Vec<Value> = storage::complaints::list_for_subject(&state.db, &subject.id)
        .await?
        .iter()
        .map(|c| c.view(now))
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn subject_get(
    State(state): State<AppState>,
    Subject(subject): Subject,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let c = complaints::own(&state.db, &subject.id, &id).await?;
    let mut v = c.view(state.clock.now());
    v["history"] = json!(crate::workflows::events::for_subject(
        complaints::history(&state.db, &c.id).await?
    ));
    Ok(Json(v))
}

async fn admin_list(
    State(state): State<AppState>,
    _: Handler,
    q: QueryResult,
) -> Result<Json<Value>, Error> {
    let q = list_query(q)?;
    let status = q.status.as_deref().map(|s| MACHINE.parse(s)).transpose()?;
    let now = state.clock.now();
    let items: Vec<Value> = storage::complaints::list_all(&state.db)
        .await?
        .iter()
        .filter(|c| status.is_none_or(|s| c.status == s))
        .filter(|c| q.overdue.is_none_or(|want| c.overdue(now) == want))
        .map(|c| c.admin_view(now))
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// The complaint, with the audit records of that org touching that subject.
async fn admin_get(
    State(state): State<AppState>,
    _: Handler,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let c = complaints::get(&state.db, &id).await?;
    let mut v = c.admin_view(state.clock.now());
    v["audit"] = json!(complaints::accesses(&state.db, &c).await?);
    v["history"] = json!(complaints::history(&state.db, &c.id).await?);
    Ok(Json(v))
}

async fn admin_transition(
    State(state): State<AppState>,
    Handler(who): Handler,
    Path(id): Path<String>,
    body: Result<Json<TransitionRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Error> {
    let Json(req) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    let c = complaints::get(&state.db, &id).await?;
    let (view, change) = complaints::decide(&state, c, req, who.client_id)?;
    Ok(change.attach(Json(view)))
}
