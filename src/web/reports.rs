//! The whistleblower endpoints: anyone files a report and follows it by receipt; handlers list
//! them, open the sealed contact and move them through `crate::workflows::reports`.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use serde_json::{Value, json};

use super::objections::{QueryResult, list_query};
use super::{
    AppState, AttachChange as _, Error,
    extract::Handler,
    routes::{self as r, AuditKind, Group, audited},
};
use crate::{
    storage,
    workflows::reports::{self, Filing, MACHINE, TransitionRequest},
};

pub fn routes() -> Vec<Group> {
    vec![
        audited(
            AuditKind::Public,
            vec![
                r::post("/public/reports", file),
                r::get("/public/reports/{receipt}", follow),
            ],
        ),
        audited(
            AuditKind::Admin,
            vec![
                r::get("/admin/reports", admin_list),
                r::get("/admin/reports/{id}", admin_get),
                r::post("/admin/reports/{id}/transitions", admin_transition),
            ],
        ),
    ]
}

/// The body is parsed by hand so that no parser message can echo what the reporter sent.
async fn file(State(state): State<AppState>, body: Bytes) -> Result<Response, Error> {
    let req: Filing = serde_json::from_slice(&body).map_err(|_| {
        Error::BadRequest(
            "send JSON with about, category, description and optionally reporter_contact".into(),
        )
    })?;
    let (report, receipt) = reports::prepare(&state, req)?;
    let answer = json!({"id": report.id, "receipt": receipt, "status": report.status.as_str()});
    let change = reports::filing(report, &receipt);
    Ok(change.attach((StatusCode::CREATED, Json(answer))))
}

/// The reporter's view: status only, found by receipt.
async fn follow(
    State(state): State<AppState>,
    Path(receipt): Path<String>,
) -> Result<Json<Value>, Error> {
    Ok(Json(
        reports::by_receipt(&state.db, &receipt)
            .await?
            .follow_view(),
    ))
}

/// `?status=` as the other queues take it; `overdue` is refused, because reports run no deadline
/// (answering every report as "not overdue" would mislead a handler).
async fn admin_list(
    State(state): State<AppState>,
    _: Handler,
    q: QueryResult,
) -> Result<Json<Value>, Error> {
    let q = list_query(q)?;
    if q.overdue.is_some() {
        return Err(Error::BadRequest(
            "`overdue` does not apply: reports run no deadline".into(),
        ));
    }
    let status = q.status.as_deref().map(|s| MACHINE.parse(s)).transpose()?;
    let items: Vec<Value> = storage::reports::list_all(&state.db)
        .await?
        .iter()
        .filter(|r| status.is_none_or(|s| r.status == s))
        .map(reports::WhistleblowerReport::view)
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// Handlers only: the report with its contact opened.
async fn admin_get(
    State(state): State<AppState>,
    _: Handler,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let r = reports::get(&state.db, &id).await?;
    let mut v = r.view();
    v["reporter_contact"] = json!(r.contact(&state.report_sealer));
    v["history"] = json!(reports::history(&state.db, &r.id).await?);
    Ok(Json(v))
}

async fn admin_transition(
    State(state): State<AppState>,
    Handler(who): Handler,
    Path(id): Path<String>,
    body: Result<Json<TransitionRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Error> {
    let Json(req) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    let r = reports::get(&state.db, &id).await?;
    let (answer, change) = reports::decide(&state, &r, req, who.client_id)?;
    Ok(change.attach(Json(answer)))
}
