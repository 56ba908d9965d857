//! Alerts (audit readers see them, the security officer acknowledges), lockdowns (the
//! officer's), clients (the system administrator's). Lists call the core reads the `/admin`
//! handlers call; every change calls the `/admin` handler itself as this person.

use axum::{
    Json,
    extract::{Path, State},
    response::{IntoResponse, Response},
};
use http::HeaderMap;
use minijinja::{Value, context};

use super::{Form, StaffPage, acting, back, done, require, show};
use crate::{
    audit::alerts,
    storage::{clients, lockdowns, micros_to_rfc3339},
    web::{
        AppState, Error, admin,
        extract::{AUDITOR, Officer, SECURITY_OFFICER, SYSTEM_ADMIN, SystemAdmin},
        routes::{Route, get, post},
    },
};

pub fn routes() -> Vec<Route> {
    vec![
        get("/console/alerts", alerts_page),
        post("/console/alerts/{id}/ack", ack),
        get("/console/lockdowns", lockdowns_page),
        post("/console/lockdowns", lock),
        post("/console/lockdowns/{id}/lift", lift),
        get("/console/clients", clients_page),
        post("/console/clients/{id}/{action}", client_status),
    ]
}

type Page = Result<Response, Error>;

/// Open alerts first, then the acknowledged ones (`/admin/alerts?status=all`).
async fn alerts_page(State(state): State<AppState>, who: StaffPage, headers: HeaderMap) -> Page {
    require(&who, &[SECURITY_OFFICER, AUDITOR])?;
    let mut items = alerts::list(&state.db, true).await?;
    items.sort_by_key(|a| a.acked_at.is_some());
    let rows: Vec<Value> = items.iter().map(Value::from_serialize).collect();
    let ctx = context! { rows, title => "console.nav.alerts", kind => "alerts" };
    Ok(show(
        &state,
        &headers,
        &who,
        "console/table.html",
        "/console/alerts",
        ctx,
    ))
}

async fn ack(
    State(state): State<AppState>,
    who: StaffPage,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let run = async {
        let form = Form::read(&state, &headers, &body)?;
        let officer = Officer(acting(&who, SECURITY_OFFICER)?);
        let res = admin::acknowledge_alert(State(state.clone()), officer, Path(id)).await;
        Ok::<_, Error>(done(res, &back(&form, "/console/alerts")))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn lockdowns_page(State(state): State<AppState>, who: StaffPage, headers: HeaderMap) -> Page {
    require(&who, &[SECURITY_OFFICER])?;
    let rows: Vec<Value> = lockdowns::list_active(&state.db)
        .await?
        .iter()
        .map(Value::from_serialize)
        .collect();
    let ctx = context! { rows, title => "console.nav.lockdowns", kind => "lockdowns" };
    Ok(show(
        &state,
        &headers,
        &who,
        "console/table.html",
        "/console/lockdowns",
        ctx,
    ))
}

/// A new lockdown of one client or one org, with its reason, through `POST /admin/lockdown`.
async fn lock(
    State(state): State<AppState>,
    who: StaffPage,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let run = async {
        let form = Form::read(&state, &headers, &body)?;
        let officer = Officer(acting(&who, SECURITY_OFFICER)?);
        let req = admin::LockRequest {
            client_id: form.text("client_id"),
            org: form.text("org"),
            reason: form.text("reason").unwrap_or_default(),
        };
        let res = admin::lock(State(state.clone()), officer, Ok(Json(req))).await;
        Ok::<_, Error>(done(res, "/console/lockdowns"))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn lift(
    State(state): State<AppState>,
    who: StaffPage,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let run = async {
        Form::read(&state, &headers, &body)?;
        let officer = Officer(acting(&who, SECURITY_OFFICER)?);
        let res = admin::unlock(State(state.clone()), officer, Path(id)).await;
        Ok::<_, Error>(done(res, "/console/lockdowns"))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// Every client, as `/admin/clients` lists them: never a secret or its hash.
async fn clients_page(State(state): State<AppState>, who: StaffPage, headers: HeaderMap) -> Page {
    require(&who, &[SYSTEM_ADMIN])?;
    let rows: Vec<Value> = clients::list(&state.db)
        .await?
        .into_iter()
        .map(|c| {
            context! {
                id => c.id, name => c.name, org => c.org, role => c.role, region => c.region,
                status => serde_json::to_value(c.status).ok().and_then(|v| v.as_str().map(str::to_owned)),
                created_at => micros_to_rfc3339(c.created_at),
            }
        })
        .collect();
    let ctx = context! { rows, title => "console.nav.clients", kind => "clients" };
    Ok(show(
        &state,
        &headers,
        &who,
        "console/table.html",
        "/console/clients",
        ctx,
    ))
}

/// `disable` or `enable`, through `/admin/clients/{id}/...`.
async fn client_status(
    State(state): State<AppState>,
    who: StaffPage,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let run = async {
        Form::read(&state, &headers, &body)?;
        let admin = SystemAdmin(acting(&who, SYSTEM_ADMIN)?);
        let res = match action.as_str() {
            "disable" => admin::disable_client(State(state.clone()), admin, Path(id)).await,
            "enable" => admin::enable_client(State(state.clone()), admin, Path(id)).await,
            _ => return Err(Error::NotFound("no such action".into())),
        };
        Ok(done(res, "/console/clients"))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}
