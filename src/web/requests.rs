//! The subject-request endpoints: subjects ask for repair, correction, restriction or deletion
//! of their records and follow the request; handlers list them (`?status=&overdue=`) and move
//! them through `crate::workflows::requests`.

use axum::{
    Extension, Json,
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
    audit::AuditSlot,
    storage,
    workflows::requests::{self, MACHINE, Submission, TransitionRequest},
};

pub fn routes() -> Vec<Group> {
    vec![
        audited(
            AuditKind::Subject,
            vec![
                r::get("/subject/requests", subject_list),
                r::post("/subject/requests", submit),
                r::get("/subject/requests/{id}", subject_get),
            ],
        ),
        audited(
            AuditKind::Admin,
            vec![
                r::get("/admin/requests", admin_list),
                r::get("/admin/requests/{id}", admin_get),
                r::post("/admin/requests/{id}/transitions", admin_transition),
            ],
        ),
    ]
}

async fn submit(
    State(state): State<AppState>,
    Subject(subject): Subject,
    Extension(slot): Extension<AuditSlot>,
    body: Result<Json<Submission>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Error> {
    let Json(req) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    let r = requests::prepare(&state, &subject.id, req)?;
    slot.update(|a| {
        a.store = Some(r.store.clone());
        a.dataset = Some(r.dataset.clone());
        a.subjects = vec![subject.id.as_str().into()];
    });
    let view = r.view(r.created_at);
    Ok(requests::filing(&state, r).attach((StatusCode::CREATED, Json(view))))
}

async fn subject_list(
    State(state): State<AppState>,
    Subject(subject): Subject,
) -> Result<Json<Value>, Error> {
    let now = state.clock.now();
    let items: Vec<Value> = storage::requests::list_for_subject(&state.db, &subject.id)
        .await?
        .iter()
        .map(|r| r.view(now))
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn subject_get(
    State(state): State<AppState>,
    Subject(subject): Subject,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let r = requests::own(&state.db, &subject.id, &id).await?;
    let mut v = r.view(state.clock.now());
    v["history"] = json!(crate::workflows::events::for_subject(
        requests::history(&state.db, &r.id).await?
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
    let items: Vec<Value> = storage::requests::list_all(&state.db)
        .await?
        .iter()
        .filter(|r| status.is_none_or(|s| r.status == s))
        .filter(|r| q.overdue.is_none_or(|want| r.overdue(now) == want))
        .map(|r| r.admin_view(now))
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn admin_get(
    State(state): State<AppState>,
    _: Handler,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let r = requests::get(&state.db, &id).await?;
    let mut v = r.admin_view(state.clock.now());
    v["history"] = json!(requests::history(&state.db, &r.id).await?);
    Ok(Json(v))
}

async fn admin_transition(
    State(state): State<AppState>,
    Handler(who): Handler,
    Path(id): Path<String>,
    body: Result<Json<TransitionRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Error> {
    let Json(req) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    let r = requests::get(&state.db, &id).await?;
    let (after, change) = requests::decide(&state, r, req, who.client_id)?;
    Ok(change.attach(Json(after.admin_view(state.clock.now()))))
}
