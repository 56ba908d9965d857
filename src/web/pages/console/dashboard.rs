//! `/console/`: what needs attention, by role. Audit readers see requests by decision over the
//! last 24 hours and 30 days (server-drawn SVG), the open alerts and each writer's chain with its
//! last signed checkpoint; handlers see the overdue objections.

use axum::{
    extract::State,
    response::{IntoResponse, Redirect, Response},
};
use http::HeaderMap;
use minijinja::{Value, context};

use super::{StaffPage, show};
use crate::{
    audit::{alerts, store as audit_store},
    storage::{dashboard, micros_to_rfc3339},
    web::{
        AppState, Error,
        extract::{AUDITOR, OBJECTION_HANDLER, SECURITY_OFFICER},
        pages::{Lang, chart},
    },
    workflows::objections,
};

const DAY_US: i64 = 86_400 * 1_000_000;

pub async fn to_home() -> Response {
    Redirect::to("/console/").into_response()
}

async fn show_page(
    state: &AppState,
    headers: &HeaderMap,
    who: &StaffPage,
) -> Result<Response, Error> {
    let lang = Lang::choose(headers);
    let reader = who.has(SECURITY_OFFICER) || who.has(AUDITOR);
    let mut ctx = context! {};
    if reader {
        ctx = context! { ..audit_part(state, who, lang).await?, ..ctx };
    }
    if who.has(OBJECTION_HANDLER) {
        let now = state.clock.now();
        let overdue: Vec<Value> = objections::list_all(&state.db)
            .await?
            .into_iter()
            .filter(|o| o.overdue(now))
            .map(|o| Value::from_serialize(o.view(now)))
            .collect();
        ctx = context! { overdue, ..ctx };
    }
    Ok(show(
        state,
        headers,
        who,
        "console/dashboard.html",
        "/console/",
        ctx,
    ))
}

/// The audit reader's part: the charts, the open alerts and the chain's head.
async fn audit_part(state: &AppState, who: &StaffPage, lang: Lang) -> Result<Value, Error> {
    let now = state.clock.now();
    let staff = who.has(AUDITOR);
    let day = dashboard::decisions_since(&state.db, now - DAY_US, staff).await?;
    let month = dashboard::decisions_since(&state.db, now - 30 * DAY_US, staff).await?;
    let bars = |title: &str, data: Vec<(String, i64)>| {
        let data: Vec<(String, u64)> = data
            .into_iter()
            .map(|(d, n)| {
                (
                    lang.t(&format!("console.decision.{d}")).to_owned(),
                    n.max(0) as u64,
                )
            })
            .collect();
        Value::from_safe_string(chart::bars(title, &data))
    };
    let open: Vec<alerts::Alert> = alerts::list(&state.db, false).await?;
    // One row per writer (each replica signs its own chain): the newest checkpoint only, never
    // the whole checkpoint table.
    let chains: Vec<Value> = audit_store::chain_status(&state.db)
        .await?
        .into_iter()
        .map(|c| {
            context! {
                writer => c.writer_id, records => c.head_chain_seq,
                signed_through => c.signed_through,
                signed_at => c.last_checkpoint_time_us.map(micros_to_rfc3339),
                key => c.last_checkpoint_key_id, unsigned => c.unsigned,
            }
        })
        .collect();
    Ok(context! {
        chart_day => bars(lang.t("console.dash.day"), day),
        chart_month => bars(lang.t("console.dash.month"), month),
        alerts_open => open.len(),
        alerts => open.into_iter().take(5).collect::<Vec<_>>(),
        chains => chains,
    })
}

pub async fn view(State(state): State<AppState>, who: StaffPage, headers: HeaderMap) -> Response {
    show_page(&state, &headers, &who)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}
