//! Objections, requests (credit repair, correction, restriction, deletion) and complaints: file
//! one, follow its status, deadline and history, withdraw an objection. Each goes through the
//! core workflow the API handler calls (`check_submission`/`prepare`/`filing`, `own`,
//! `decide`), so an item of another subject is not found here exactly as it is not there.

use axum::{
    Extension,
    body::Bytes,
    extract::{Path, State},
    response::Response,
};
use http::{HeaderMap, StatusCode};
use minijinja::context;
use serde_json::{Value, json};

use super::{Form, form, see_other, show};
use crate::{
    audit::AuditSlot,
    domain::SubjectId,
    storage,
    web::{
        AppState, AttachChange as _, Error,
        pages::{Lang, labels, session::SubjectPage},
    },
    workflows::{
        WorkflowError, complaints,
        objections::{self, Actor, Status, TransitionRequest},
        requests,
    },
};

/// The records a subject may file about: each (store, dataset) whose dataset the catalog says
/// is about this type of subject, with the catalog's fields of it, each with its label in the
/// reader's language (the path where the catalog has none). The record itself is always the
/// subject's own (`record_ref` is their id: `check_own_record`).
fn my_records(state: &AppState, subject: &SubjectId, lang: Lang) -> Vec<Value> {
    let policies = state.policies();
    let mut out: Vec<Value> = state
        .stores
        .datasets()
        .filter_map(|(store, dataset)| {
            let d = policies.dataset(dataset)?;
            (d.subject_type == Some(subject.subject_type())).then(|| {
                let fields: Vec<Value> = d
                    .fields
                    .iter()
                    .map(|(p, _)| json!({"path": p, "label": labels::field(lang, Some(d), p)}))
                    .collect();
                let title = labels::dataset(lang, Some(d), dataset);
                json!({"store": store, "dataset": dataset, "title": title, "fields": fields})
            })
        })
        .collect();
    out.sort_by_key(|v| v.to_string());
    out.dedup();
    out
}

/// `store|dataset|field` (field may be empty) from a form's `record` choice.
fn target(f: &Form) -> (String, String, Option<String>) {
    let mut it = f.get("record").splitn(3, '|');
    let (s, d) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
    let field = it.next().filter(|x| !x.is_empty()).map(str::to_owned);
    (s.to_owned(), d.to_owned(), field)
}

/// One list page (objections, requests or complaints) with its filing form.
struct ListPage<'a> {
    template: &'a str,
    here: &'a str,
    items: Vec<Value>,
}

fn draw_list(
    state: &AppState,
    who: &SubjectPage,
    headers: &HeaderMap,
    p: ListPage<'_>,
    (status, typed, message): (StatusCode, Value, Option<&str>),
) -> Response {
    let lang = Lang::choose(headers);
    let items: Vec<Value> = p
        .items
        .into_iter()
        .map(|v| labels::case(&state.policies(), lang, v))
        .collect();
    let ctx = context! {
        items, typed, message,
        records => my_records(state, &who.subject.id, lang),
        kinds => requests::Kind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        categories => complaints::CATEGORIES,
        who => who.subject.id.as_str(),
    };
    show(state, headers, status, (p.template, p.here), ctx)
}

/// A case's page: its fields as rows, its history, and the withdraw button where allowed.
fn draw_case(
    who: &SubjectPage,
    headers: &HeaderMap,
    state: &AppState,
    kind: &str,
    view: Value,
    history: Vec<Value>,
    withdraw: bool,
) -> Response {
    let view = labels::case(&state.policies(), Lang::choose(headers), view);
    let ctx = context! { kind, case => view, history, withdraw, who => who.subject.id.as_str() };
    let here = format!("/portal/{kind}s");
    show(
        state,
        headers,
        StatusCode::OK,
        ("portal/case.html", &here),
        ctx,
    )
}

async fn objection_list(state: &AppState, who: &SubjectPage) -> Result<Vec<Value>, Error> {
    let now = state.clock.now();
    Ok(objections::list_for_subject(&state.db, &who.subject.id)
        .await?
        .iter()
        .map(|o| o.view(now))
        .collect())
}

const OBJECTIONS: (&str, &str) = ("portal/objections.html", "/portal/objections");

pub async fn objections(
    State(state): State<AppState>,
    who: SubjectPage,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let items = objection_list(&state, &who).await?;
    let p = ListPage {
        template: OBJECTIONS.0,
        here: OBJECTIONS.1,
        items,
    };
    Ok(draw_list(
        &state,
        &who,
        &headers,
        p,
        (StatusCode::OK, json!({}), None),
    ))
}

pub async fn file_objection(
    State(state): State<AppState>,
    who: SubjectPage,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let f = form(&state, &headers, &body)?;
    let (store, dataset, field) = target(&f);
    let mut req = objections::Submission {
        store,
        dataset,
        record_ref: who.subject.id.as_str().to_owned(),
        field,
        reason: f.get("reason").to_owned(),
        requested_correction: f.opt("correction"),
    };
    if let Err(e) = objections::check_submission(&state, &who.subject.id, &mut req) {
        let typed = json!({"record": f.get("record"), "reason": f.get("reason"),
                           "correction": f.get("correction")});
        let items = objection_list(&state, &who).await?;
        let p = ListPage {
            template: OBJECTIONS.0,
            here: OBJECTIONS.1,
            items,
        };
        return refused(e, || draw_list(&state, &who, &headers, p, bad(typed)));
    }
    slot.update(|a| {
        a.store = Some(req.store.clone());
        a.dataset = Some(req.dataset.clone());
        a.subjects = vec![who.subject.id.as_str().into()];
    });
    let o = objections::prepare(&state, &who.subject.id, req);
    let to = format!("/portal/objections/{}", o.id);
    Ok(see_other(&to, Some(objections::filing(&state, o))))
}

fn bad(typed: Value) -> (StatusCode, Value, Option<&'static str>) {
    (StatusCode::BAD_REQUEST, typed, Some("portal.invalid"))
}

/// A refused submission is drawn again with what was typed; anything else is an error page.
fn refused(e: WorkflowError, draw: impl FnOnce() -> Response) -> Result<Response, Error> {
    match e {
        WorkflowError::BadRequest(_) => Ok(draw()),
        e => Err(e.into()),
    }
}

pub async fn objection(
    State(state): State<AppState>,
    who: SubjectPage,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let o = objections::own(&state.db, &who.subject.id, super::item_id(&id)?).await?;
    let history = objections::history(&state.db, &o.id).await?;
    let withdraw = o.status.may_go(Status::Withdrawn, Actor::Subject);
    let view = o.view(state.clock.now());
    Ok(draw_case(
        &who,
        &headers,
        &state,
        "objection",
        view,
        history,
        withdraw,
    ))
}

pub async fn withdraw_objection(
    State(state): State<AppState>,
    who: SubjectPage,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    form(&state, &headers, &body)?;
    let o = objections::own(&state.db, &who.subject.id, super::item_id(&id)?).await?;
    let req = TransitionRequest {
        to: "withdrawn".into(),
        note: None,
        correction: None,
    };
    let actor = (Actor::Subject, "subject".to_string());
    let (after, _, change) = objections::decide(&state, o, req, actor)?;
    let to = format!("/portal/objections/{}", after.id);
    Ok(see_other(&to, Some(change)))
}

async fn request_list(state: &AppState, who: &SubjectPage) -> Result<Vec<Value>, Error> {
    let now = state.clock.now();
    Ok(
        storage::requests::list_for_subject(&state.db, &who.subject.id)
            .await?
            .iter()
            .map(|r| r.view(now))
            .collect(),
    )
}

const REQUESTS: (&str, &str) = ("portal/requests.html", "/portal/requests");

pub async fn requests(
    State(state): State<AppState>,
    who: SubjectPage,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let items = request_list(&state, &who).await?;
    let p = ListPage {
        template: REQUESTS.0,
        here: REQUESTS.1,
        items,
    };
    Ok(draw_list(
        &state,
        &who,
        &headers,
        p,
        (StatusCode::OK, json!({}), None),
    ))
}

pub async fn file_request(
    State(state): State<AppState>,
    who: SubjectPage,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let f = form(&state, &headers, &body)?;
    let (store, dataset, _) = target(&f);
    let req = requests::Submission {
        kind: f.get("kind").to_owned(),
        store,
        dataset,
        record_ref: who.subject.id.as_str().to_owned(),
        reason: f.get("reason").to_owned(),
    };
    let r = match requests::prepare(&state, &who.subject.id, req) {
        Ok(r) => r,
        Err(e) => {
            let typed = json!({"record": f.get("record"), "kind": f.get("kind"),
                               "reason": f.get("reason")});
            let items = request_list(&state, &who).await?;
            let p = ListPage {
                template: REQUESTS.0,
                here: REQUESTS.1,
                items,
            };
            return refused(e, || draw_list(&state, &who, &headers, p, bad(typed)));
        }
    };
    slot.update(|a| {
        a.store = Some(r.store.clone());
        a.dataset = Some(r.dataset.clone());
        a.subjects = vec![who.subject.id.as_str().into()];
    });
    let to = format!("/portal/requests/{}", r.id);
    Ok(see_other(&to, Some(requests::filing(&state, r))))
}

pub async fn request(
    State(state): State<AppState>,
    who: SubjectPage,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let r = requests::own(&state.db, &who.subject.id, super::item_id(&id)?).await?;
    let history = requests::history(&state.db, &r.id).await?;
    let view = r.view(state.clock.now());
    Ok(draw_case(
        &who, &headers, &state, "request", view, history, false,
    ))
}

async fn complaint_list(state: &AppState, who: &SubjectPage) -> Result<Vec<Value>, Error> {
    let now = state.clock.now();
    Ok(
        storage::complaints::list_for_subject(&state.db, &who.subject.id)
            .await?
            .iter()
            .map(|c| c.view(now))
            .collect(),
    )
}

const COMPLAINTS: (&str, &str) = ("portal/complaints.html", "/portal/complaints");

pub async fn complaints(
    State(state): State<AppState>,
    who: SubjectPage,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let items = complaint_list(&state, &who).await?;
    let p = ListPage {
        template: COMPLAINTS.0,
        here: COMPLAINTS.1,
        items,
    };
    Ok(draw_list(
        &state,
        &who,
        &headers,
        p,
        (StatusCode::OK, json!({}), None),
    ))
}

pub async fn file_complaint(
    State(state): State<AppState>,
    who: SubjectPage,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let f = form(&state, &headers, &body)?;
    let req = complaints::Submission {
        against_org: f.get("org").trim().to_owned(),
        category: f.get("category").to_owned(),
        description: f.get("description").to_owned(),
    };
    let c = match complaints::prepare(&state, &who.subject.id, req) {
        Ok(c) => c,
        Err(e) => {
            let typed = json!({"org": f.get("org"), "category": f.get("category"),
                               "description": f.get("description")});
            let items = complaint_list(&state, &who).await?;
            let p = ListPage {
                template: COMPLAINTS.0,
                here: COMPLAINTS.1,
                items,
            };
            return refused(e, || draw_list(&state, &who, &headers, p, bad(typed)));
        }
    };
    let to = format!("/portal/complaints/{}", c.id);
    Ok(complaints::filing(c).attach(see_other(&to, None)))
}

pub async fn complaint(
    State(state): State<AppState>,
    who: SubjectPage,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let c = complaints::own(&state.db, &who.subject.id, super::item_id(&id)?).await?;
    let history = complaints::history(&state.db, &c.id).await?;
    let view = c.view(state.clock.now());
    Ok(draw_case(
        &who,
        &headers,
        &state,
        "complaint",
        view,
        history,
        false,
    ))
}
