//! The data path's handlers: `/v1/stores/{store}/{path}` for institutions (a token is
//! required), `/public/stores/{store}/{path}` for the public, decided as the policy's `public`
//! role. Each runs the phases of `crate::proxy` in order and turns the answer into a response.

use std::net::SocketAddr;

use axum::{
    Extension,
    body::Body,
    extract::{ConnectInfo, Request, State},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::{
    AppState, Error, RequestId,
    extract::Institution,
    routes::{self as r, AuditKind, Group, audited},
};
use crate::{
    audit::{AuditInfo, AuditSlot},
    auth::Principal,
    policy::Outcome,
    proxy::{
        Target, consent_header, decide, declared_purpose, note_outcome, note_principal, release,
        route, upstream::Outbound,
    },
};

pub fn routes() -> Vec<Group> {
    vec![
        audited(
            AuditKind::Data,
            vec![r::any("/v1/stores/{store}/{*path}", institution_request)],
        ),
        audited(
            AuditKind::Public,
            vec![r::any("/public/stores/{store}/{*path}", public_request)],
        ),
        audited(
            AuditKind::Profile,
            vec![r::get("/v1/subjects/{id}/profile", super::profile::profile)],
        ),
    ]
}

async fn institution_request(
    State(state): State<AppState>,
    Institution(who): Institution,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(request_id): Extension<RequestId>,
    req: Request,
) -> Result<Response, Error> {
    handle(
        state,
        peer,
        request_id,
        Principal::Institution(who),
        "/v1/stores/",
        req,
    )
    .await
}

/// The public's door: no token is looked at, and only the `public` role's plans apply.
async fn public_request(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(request_id): Extension<RequestId>,
    req: Request,
) -> Result<Response, Error> {
    handle(
        state,
        peer,
        request_id,
        Principal::Public,
        "/public/stores/",
        req,
    )
    .await
}

pub(crate) async fn handle(
    state: AppState,
    peer: SocketAddr,
    request_id: RequestId,
    who: Principal,
    prefix: &str,
    req: Request,
) -> Result<Response, Error> {
    let (parts, body) = req.into_parts();
    let slot = parts
        .extensions
        .get::<AuditSlot>()
        .cloned()
        .unwrap_or_default();
    slot.update(|a| note_principal(a, &who));
    let target = route(&state, &parts, prefix)?;
    slot.update(|a| note_target(a, &target, prefix));
    let purpose = declared_purpose(&state, &parts.headers)?;
    let legal_basis = state
        .policies()
        .purpose(&purpose)
        .map(|p| p.legal_basis.code().to_string());
    slot.update(|a| {
        a.purpose = Some(purpose.clone());
        a.legal_basis = legal_basis;
        a.consent_id = consent_header(&parts.headers);
    });
    let plan = decide::decide(
        &state,
        &who,
        &purpose,
        &target.route.dataset,
        target.subject.as_ref(),
        &parts.headers,
    )
    .await
    .inspect_err(|e| {
        tracing::info!(client_id = %who.client_id(), role = %who.role(), store = %target.store.name,
                dataset = %target.route.dataset, %purpose, denial = %e, "data request denied");
    })?;
    let body = read_body(body, target.store.max_request_bytes).await?;
    // No store read whose record could not be kept (the probe knows the database down): the
    // answer would be refused after it anyway, and the store would have served it for nothing.
    state.db.usable().map_err(Error::storage)?;
    let upstream = target
        .store
        .forward(Outbound {
            method: &parts.method,
            path: &target.path,
            query: target.query.as_deref(),
            body,
            caller_headers: &parts.headers,
            request_id: &request_id.0,
            client_ip: peer.ip(),
            purpose: &purpose,
        })
        .await?;
    let upstream_ms = upstream.elapsed.as_millis() as u64;
    slot.update(|a| a.upstream_us = Some(upstream.elapsed.as_micros() as i64));
    // The masked answer is about as long as the store's: its buffer starts at that size.
    let received = upstream.body.len();
    let (status, doc, outcome, contested) =
        release(&state, &plan, &who, &target.store.name, upstream)?;
    slot.update(|a| note_outcome(a, &outcome));
    tracing::info!(
        client_id = %who.client_id(), role = %who.role(), store = %target.store.name,
        dataset = %target.route.dataset, %purpose, status = status.as_u16(), upstream_ms,
        masked = outcome.masked, withheld = outcome.withheld_records, dropped_rows = outcome.dropped_rows,
        "data request served"
    );
    served(status, &doc, &outcome, contested, received)
}

/// Where the request goes, as the audit record keeps it: the canonical path, not the raw one.
fn note_target(a: &mut AuditInfo, target: &Target<'_>, prefix: &str) {
    a.canonical_path = Some(target.canonical(prefix));
    a.store = Some(target.store.name.clone());
    a.dataset = Some(target.route.dataset.clone());
    a.subjects = target
        .subject
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
}

/// The masked document as the answer, with the count of masked fields and the objection mark.
/// `received`: the store's answer's length.
fn served(
    status: StatusCode,
    doc: &serde_json::Value,
    outcome: &Outcome,
    contested: bool,
    received: usize,
) -> Result<Response, Error> {
    // Sized as the store's answer: growing from serde_json's 128 bytes copied a 100-row list's
    // 40 KiB nine times, and a fixed 16 KiB was ten times a record's.
    let body = crate::policy::json::to_vec(doc, received);
    let mut res = json_response(status, body, outcome);
    if contested {
        res.headers_mut()
            .insert("x-objection", HeaderValue::from_static("pending"));
    }
    Ok(res)
}

async fn read_body(body: Body, cap: usize) -> Result<Bytes, Error> {
    match Limited::new(body, cap).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Error::PayloadTooLarge(cap))
        }
        Err(_) => Err(Error::BadRequest(
            "the request body could not be read".into(),
        )),
    }
}

fn json_response(status: StatusCode, body: Vec<u8>, outcome: &Outcome) -> Response {
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-masked-fields", HeaderValue::from(outcome.masked));
    res
}
