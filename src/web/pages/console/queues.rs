//! The handlers' queues: objections, complaints and whistleblower reports, each with its
//! deadline and overdue badge, its history, and only the transitions its state machine lets a
//! handler make from where it stands (`workflows::machine`). A move goes through the same
//! `workflows::*::decide` as `/admin/.../transitions`, deferred to the audit record.
//!
//! A report's sealed contact is never shown by looking: it is opened by its own POST, which
//! the audit log records under this person's name.

use axum::{
    extract::{Path, State},
    response::{IntoResponse, Response},
};
use http::HeaderMap;
use minijinja::{Value, context};

use super::{Form, StaffPage, acting, done, require, show};
use crate::web::pages::{Lang, labels};
use crate::{
    storage,
    web::{
        AppState, AttachChange as _, Error,
        extract::OBJECTION_HANDLER,
        routes::{Route, get, post},
    },
    workflows::{
        complaints,
        objections::{self, Actor},
        reports, requests,
    },
};

pub fn routes() -> Vec<Route> {
    vec![
        get("/console/objections", objections_page),
        get("/console/objections/{id}", objection),
        post("/console/objections/{id}/move", move_objection),
        get("/console/complaints", complaints_page),
        get("/console/complaints/{id}", complaint),
        post("/console/complaints/{id}/move", move_complaint),
        get("/console/reports", reports_page),
        get("/console/reports/{id}", report),
        post("/console/reports/{id}/contact", report_contact),
        post("/console/reports/{id}/move", move_report),
        get("/console/requests", requests_page),
        get("/console/requests/{id}", request),
        post("/console/requests/{id}/move", move_request),
    ]
}

type Page = Result<Response, Error>;

fn table(
    state: &AppState,
    headers: &HeaderMap,
    who: &StaffPage,
    kind: &str,
    rows: Vec<Value>,
) -> Response {
    let here = format!("/console/{kind}");
    let ctx = context! { rows, kind, title => format!("console.nav.{kind}") };
    show(state, headers, who, "console/table.html", &here, ctx)
}

/// An item page: its fields (from the handlers' view), history and the moves offered.
struct Item<'a> {
    kind: &'a str,
    id: &'a str,
    view: serde_json::Value,
    history: Vec<serde_json::Value>,
    next: Vec<&'static str>,
    extra: Value,
}

fn item(state: &AppState, headers: &HeaderMap, who: &StaffPage, i: Item<'_>) -> Response {
    let view = labels::case(&state.policies(), Lang::choose(headers), i.view.clone());
    // A dataset or field by its catalog label, with the name staff search by beside it.
    let named = |k: &str, v: &serde_json::Value| match view[format!("{k}_label")].as_str() {
        Some(l) if Some(l) != v.as_str() => format!("{l} ({})", super::audit_text(v)),
        _ => super::audit_text(v),
    };
    let fields: Vec<(String, String)> = i
        .view
        .as_object()
        .into_iter()
        .flatten()
        // The overdue flag is the heading's badge; accesses have their own table.
        .filter(|(k, _)| !["audit", "overdue"].contains(&k.as_str()))
        // Nothing to say is not a row: a first-time reader looks for what is there.
        .filter(|(_, v)| !v.is_null() && v.as_str() != Some(""))
        .map(|(k, v)| (k.clone(), named(k, v)))
        .collect();
    let ctx = context! {
        kind => i.kind, id => i.id, fields, history => i.history, next => i.next,
        overdue => i.view["overdue"].as_bool().unwrap_or(false),
        title => format!("console.item.{}", i.kind), ..i.extra
    };
    let here = format!("/console/{}", i.kind);
    show(state, headers, who, "console/item.html", &here, ctx)
}

async fn objections_page(
    State(state): State<AppState>,
    who: StaffPage,
    headers: HeaderMap,
) -> Page {
    require(&who, &[OBJECTION_HANDLER])?;
    let (now, lang) = (state.clock.now(), Lang::choose(&headers));
    let mut all = objections::list_all(&state.db).await?;
    all.sort_by_key(|o| (!o.overdue(now), o.due_at().unwrap_or(i64::MAX)));
    let rows = all
        .iter()
        .map(|o| {
            let mut v = labels::case(&state.policies(), lang, o.view(now));
            v["subject"] = o.subject_id.clone().into();
            Value::from_serialize(v)
        })
        .collect();
    Ok(table(&state, &headers, &who, "objections", rows))
}

async fn objection(
    State(state): State<AppState>,
    who: StaffPage,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    require(&who, &[OBJECTION_HANDLER])?;
    let o = objections::get(&state.db, &id)
        .await?
        .ok_or_else(|| Error::NotFound("no such objection".into()))?;
    let mut view = o.view(state.clock.now());
    view["subject"] = o.subject_id.clone().into();
    let next = objections::MACHINE.next(o.status, Actor::Handler);
    let i = Item {
        kind: "objections",
        id: &o.id,
        view,
        history: objections::history(&state.db, &o.id).await?,
        next: next.into_iter().map(|s| s.as_str()).collect(),
        extra: context! { correction => true },
    };
    Ok(item(&state, &headers, &who, i))
}

/// The transition form: `to`, a `note`, and for objections a `correction`.
fn transition(form: &Form) -> (String, Option<String>, Option<String>) {
    (
        form.text("to").unwrap_or_default(),
        form.text("note"),
        form.text("correction"),
    )
}

async fn move_objection(
    State(state): State<AppState>,
    who: StaffPage,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let run = async {
        let form = Form::read(&state, &headers, &body)?;
        let by = acting(&who, OBJECTION_HANDLER)?.client_id;
        let o = objections::get(&state.db, &id)
            .await?
            .ok_or_else(|| Error::NotFound("no such objection".into()))?;
        let (to, note, correction) = transition(&form);
        let req = objections::TransitionRequest {
            to,
            note,
            correction,
        };
        let (_, _, change) = objections::decide(&state, o, req, (Actor::Handler, by))?;
        Ok::<_, Error>(done(
            Ok(change.attach(())),
            &format!("/console/objections/{id}"),
        ))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn complaints_page(
    State(state): State<AppState>,
    who: StaffPage,
    headers: HeaderMap,
) -> Page {
    require(&who, &[OBJECTION_HANDLER])?;
    let now = state.clock.now();
    let mut all = storage::complaints::list_all(&state.db).await?;
    all.sort_by_key(|c| (!c.overdue(now), c.due_at));
    let rows = all
        .iter()
        .map(|c| Value::from_serialize(c.admin_view(now)))
        .collect();
    Ok(table(&state, &headers, &who, "complaints", rows))
}

/// A complaint, with the audit records of the org it names touching its subject.
async fn complaint(
    State(state): State<AppState>,
    who: StaffPage,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    require(&who, &[OBJECTION_HANDLER])?;
    let c = complaints::get(&state.db, &id).await?;
    let accesses = complaints::accesses(&state.db, &c).await?;
    let i = Item {
        kind: "complaints",
        id: &c.id,
        view: c.admin_view(state.clock.now()),
        history: complaints::history(&state.db, &c.id).await?,
        next: complaints::MACHINE
            .next(c.status, Actor::Handler)
            .into_iter()
            .map(|s| s.as_str())
            .collect(),
        extra: context! { accesses, answer => true },
    };
    Ok(item(&state, &headers, &who, i))
}

async fn move_complaint(
    State(state): State<AppState>,
    who: StaffPage,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let run = async {
        let form = Form::read(&state, &headers, &body)?;
        let by = acting(&who, OBJECTION_HANDLER)?.client_id;
        let c = complaints::get(&state.db, &id).await?;
        let (to, note, _) = transition(&form);
        let req = complaints::TransitionRequest {
            to,
            note,
            answer: form.text("answer"),
        };
        let (_, change) = complaints::decide(&state, c, req, by)?;
        Ok::<_, Error>(done(
            Ok(change.attach(())),
            &format!("/console/complaints/{id}"),
        ))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn reports_page(State(state): State<AppState>, who: StaffPage, headers: HeaderMap) -> Page {
    require(&who, &[OBJECTION_HANDLER])?;
    let rows = storage::reports::list_all(&state.db)
        .await?
        .iter()
        .map(|r| Value::from_serialize(r.view()))
        .collect();
    Ok(table(&state, &headers, &who, "reports", rows))
}

async fn report_page(
    state: &AppState,
    who: &StaffPage,
    headers: &HeaderMap,
    id: &str,
    contact: Option<Option<String>>,
) -> Page {
    require(who, &[OBJECTION_HANDLER])?;
    let r = reports::get(&state.db, id).await?;
    let i = Item {
        kind: "reports",
        id: &r.id,
        view: r.view(),
        history: reports::history(&state.db, &r.id).await?,
        next: reports::MACHINE
            .next(r.status, Actor::Handler)
            .into_iter()
            .map(|s| s.as_str())
            .collect(),
        extra: context! {
            sealed => r.contact_sealed.is_some(),
            opened => contact.is_some(),
            contact => contact.flatten(),
        },
    };
    Ok(item(state, headers, who, i))
}

async fn report(
    State(state): State<AppState>,
    who: StaffPage,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    report_page(&state, &who, &headers, &id, None).await
}

/// Opens the sealed contact: an explicit action, recorded as this person's POST to this path.
async fn report_contact(
    State(state): State<AppState>,
    who: StaffPage,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let run = async {
        Form::read(&state, &headers, &body)?;
        acting(&who, OBJECTION_HANDLER)?;
        let r = reports::get(&state.db, &id).await?;
        let contact = r.contact(&state.report_sealer);
        report_page(&state, &who, &headers, &id, Some(contact)).await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn move_report(
    State(state): State<AppState>,
    who: StaffPage,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let run = async {
        let form = Form::read(&state, &headers, &body)?;
        let by = acting(&who, OBJECTION_HANDLER)?.client_id;
        let r = reports::get(&state.db, &id).await?;
        let (to, note, _) = transition(&form);
        let req = reports::TransitionRequest { to, note };
        let (_, change) = reports::decide(&state, &r, req, by)?;
        Ok::<_, Error>(done(
            Ok(change.attach(())),
            &format!("/console/reports/{id}"),
        ))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn requests_page(State(state): State<AppState>, who: StaffPage, headers: HeaderMap) -> Page {
    require(&who, &[OBJECTION_HANDLER])?;
    let now = state.clock.now();
    let mut all = storage::requests::list_all(&state.db).await?;
    all.sort_by_key(|r| (!r.overdue(now), r.due_at().unwrap_or(i64::MAX)));
    let rows = all
        .iter()
        .map(|r| Value::from_serialize(r.admin_view(now)))
        .collect();
    Ok(table(&state, &headers, &who, "requests", rows))
}

/// A subject's credit-repair, correction, restriction or deletion request (`/admin/requests`).
async fn request(
    State(state): State<AppState>,
    who: StaffPage,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    require(&who, &[OBJECTION_HANDLER])?;
    let r = requests::get(&state.db, &id).await?;
    let i = Item {
        kind: "requests",
        id: &r.id,
        view: r.admin_view(state.clock.now()),
        history: requests::history(&state.db, &r.id).await?,
        next: r.handler_moves().into_iter().map(|s| s.as_str()).collect(),
        extra: context! { answer => true },
    };
    Ok(item(&state, &headers, &who, i))
}

async fn move_request(
    State(state): State<AppState>,
    who: StaffPage,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let run = async {
        let form = Form::read(&state, &headers, &body)?;
        let by = acting(&who, OBJECTION_HANDLER)?.client_id;
        let r = requests::get(&state.db, &id).await?;
        let (to, note, _) = transition(&form);
        let req = requests::TransitionRequest {
            to,
            note,
            answer: form.text("answer"),
        };
        let (_, change) = requests::decide(&state, r, req, by)?;
        Ok::<_, Error>(done(
            Ok(change.attach(())),
            &format!("/console/requests/{id}"),
        ))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}
