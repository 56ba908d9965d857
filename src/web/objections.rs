//! The objection endpoints: subjects file, follow and withdraw their objections; handlers list
//! them and move them through the state machine in `crate::workflows::objections`.

use axum::{
    Extension, Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::Response,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    AppState, AttachChange as _, Error,
    extract::{Handler, Subject},
    routes::{self as r, AuditKind, Group, audited},
};
use crate::{
    audit::AuditSlot,
    workflows::objections::{self, Actor, MACHINE, Submission, TransitionRequest},
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
    Subject(subject): Subject,
    Extension(slot): Extension<AuditSlot>,
    body: Result<Json<Submission>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Error> {
    let Json(mut req) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    objections::check_submission(&state, &subject.id, &mut req)?;
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

async fn subject_list(
    State(state): State<AppState>,
    Subject(subject): Subject,
) -> Result<Json<Value>, Error> {
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
    Subject(subject): Subject,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let o = objections::own(&state.db, &subject.id, &id).await?;
    let mut v = o.view(state.clock.now());
    v["history"] = json!(crate::workflows::events::for_subject(
        objections::history(&state.db, &o.id).await?
    ));
    Ok(Json(v))
}

async fn withdraw(
    State(state): State<AppState>,
    Subject(subject): Subject,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let o = objections::own(&state.db, &subject.id, &id).await?;
    let req = TransitionRequest {
        to: "withdrawn".into(),
        note: None,
        correction: None,
    };
    let actor = (Actor::Subject, "subject".to_string());
    let (after, _, change) = objections::decide(&state, o, req, actor)?;
    Ok(change.attach(Json(after.view(state.clock.now()))))
}

/// `?status=&overdue=` of the handlers' queues.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    pub overdue: Option<bool>,
}

pub type QueryResult = Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>;

/// The query, parsed (a malformed one is 400).
pub fn list_query(q: QueryResult) -> Result<ListQuery, Error> {
    Ok(q.map_err(|e| Error::BadRequest(e.body_text()))?.0)
}

async fn admin_list(
    State(state): State<AppState>,
    _: Handler,
    q: QueryResult,
) -> Result<Json<Value>, Error> {
    let q = list_query(q)?;
    let status = q.status.as_deref().map(|s| MACHINE.parse(s)).transpose()?;
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
    _: Handler,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let o = objections::get(&state.db, &id)
        .await?
        .ok_or_else(|| Error::NotFound("no such objection".into()))?;
    let mut v = o.view(state.clock.now());
    v["subject"] = json!(o.subject_id);
    v["history"] = json!(objections::history(&state.db, &o.id).await?);
    Ok(Json(v))
}

async fn admin_transition(
    State(state): State<AppState>,
    Handler(who): Handler,
    Path(id): Path<String>,
    body: Result<Json<TransitionRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Error> {
    let Json(req) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    let o = objections::get(&state.db, &id)
        .await?
        .ok_or_else(|| Error::NotFound("no such objection".into()))?;
    let actor = (Actor::Handler, who.client_id);
    let (after, step, change) = objections::decide(&state, o, req, actor)?;
    let mut v = after.view(state.clock.now());
    let mut steps = objections::history(&state.db, &after.id).await?;
    steps.push(step);
    v["history"] = json!(steps);
    Ok(change.attach(Json(v)))
}
