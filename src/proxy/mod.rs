//! The data path as a sequence of small phases:
//! authenticate -> route -> purpose -> decide -> forward -> filter (mask) -> log.
//! Each phase either hands the next one what it needs or ends the request with an error.
//!
//! `/v1/stores/{store}/{path}` is for institutions (a token is required);
//! `/public/stores/{store}/{path}` is the public's, decided as the policy's `public` role.

mod decide;
mod profile;
mod query;
pub use crate::domain::route;
pub mod upstream;

use std::net::SocketAddr;

use axum::{
    Extension, Router,
    body::Body,
    extract::{ConnectInfo, Request, State},
    response::{IntoResponse, Response},
    routing::{any, get},
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use self::upstream::{Outbound, Route, Store, SubjectLocator, UpstreamResponse};
use crate::{
    audit::{AuditInfo, AuditSlot},
    auth::{self, Principal},
    domain::{SubjectId, SubjectType},
    http::{AppState, Error, RequestId},
    policy::{ApplyCtx, Outcome, Plan},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/stores/{store}/{*path}", any(institution_request))
        .route("/public/stores/{store}/{*path}", any(public_request))
        .route("/v1/subjects/{id}/profile", get(profile::profile))
}

/// A request that has been routed: the store, the route, and who it is about.
struct Target<'s> {
    store: &'s Store,
    route: &'s Route,
    /// The normalised, re-encoded path sent to the store.
    path: String,
    /// The validated, re-serialised query sent to the store.
    query: Option<String>,
    subject: Option<SubjectId>,
}

impl Target<'_> {
    /// The gateway path as decided: what the audit record holds instead of the raw target.
    fn canonical(&self, prefix: &str) -> String {
        let q = self.query.as_deref().map_or(0, |q| q.len() + 1);
        let mut s =
            String::with_capacity(prefix.len() + self.store.name.len() + self.path.len() + q);
        s.push_str(prefix);
        s.push_str(&self.store.name);
        s.push_str(&self.path);
        if let Some(q) = &self.query {
            s.push('?');
            s.push_str(q);
        }
        s
    }
}

async fn institution_request(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(request_id): Extension<RequestId>,
    req: Request,
) -> Result<Response, Error> {
    let who = auth::authenticate_institution(&state, req.headers()).await?;
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

async fn handle(
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
    slot.update(|a| {
        a.canonical_path = Some(target.canonical(prefix));
        a.store = Some(target.store.name.clone());
        a.dataset = Some(target.route.dataset.clone());
        a.subjects = target
            .subject
            .iter()
            .map(|s| s.as_str().to_string())
            .collect();
    });
    let purpose = declared_purpose(&state, &parts.headers)?;
    slot.update(|a| {
        a.purpose = Some(purpose.clone());
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
    let (status, doc, outcome, contested) =
        release(&state, &plan, &who, &target.store.name, upstream)?;
    slot.update(|a| note_outcome(a, &outcome));
    let body = serde_json::to_vec(&doc).map_err(|e| Error::Internal(e.into()))?;
    tracing::info!(
        client_id = %who.client_id(), role = %who.role(), store = %target.store.name,
        dataset = %target.route.dataset, %purpose, status = status.as_u16(), upstream_ms,
        masked = outcome.masked, withheld = outcome.withheld_records, dropped_rows = outcome.dropped_rows,
        "data request served"
    );
    let mut res = json_response(status, body, &outcome);
    if contested {
        res.headers_mut()
            .insert("x-objection", HeaderValue::from_static("pending"));
    }
    Ok(res)
}

/// Who asked, for the audit record.
fn note_principal(a: &mut AuditInfo, who: &Principal) {
    if let Principal::Institution(i) = who {
        a.client_id = Some(i.client_id.clone());
        a.org = Some(i.org.clone());
    }
    a.role = Some(who.role().to_string());
}

/// What was released, for the audit record: masked classes, the subjects of released rows.
fn note_outcome(a: &mut AuditInfo, outcome: &Outcome) {
    a.masked = outcome
        .by_class
        .iter()
        .map(|(k, v)| (k.to_string(), *v as u64))
        .collect();
    if outcome.unclassified > 0 {
        a.masked
            .insert("(unclassified)".into(), outcome.unclassified as u64);
    }
    for s in &outcome.subjects {
        if !a.subjects.contains(s) {
            a.subjects.push(s.clone());
        }
    }
    a.t4_released |= outcome.released_t4 > 0;
}

fn consent_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-consent")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(128).collect())
}

/// Phase 2: normalise the path, find the store and a configured route, and parse the data
/// subject's id. No route, no upstream contact.
fn route<'s>(state: &'s AppState, parts: &Parts, prefix: &str) -> Result<Target<'s>, Error> {
    let raw = parts
        .uri
        .path()
        .strip_prefix(prefix)
        .ok_or_else(|| Error::NotFound("no such route".into()))?;
    let (store_name, rest) = raw.split_once('/').unwrap_or((raw, ""));
    let mut segs =
        route::normalise(rest).map_err(|e| Error::BadRequest(format!("path refused: {e}")))?;
    let no_route = || Error::NotFound("no configured route matches this request".into());
    let store = state.stores.get(store_name).ok_or_else(no_route)?;
    let route = store
        .find_route(&parts.method, &segs)
        .ok_or_else(no_route)?;
    let decided = query::decide(parts.uri.query(), route)?;
    let mut subject = decided.subject;
    if let Some((SubjectLocator::Path(name), kind)) = &route.subject {
        let at = route
            .pattern
            .position(name)
            .expect("config validation ties subject_path to a placeholder");
        let id = SubjectId::parse(*kind, &segs[at])?;
        // What was decided is what is forwarded: the canonical id, never the spelling sent.
        segs[at] = id.as_str().to_string();
        subject = Some(id);
    }
    Ok(Target {
        store,
        route,
        path: route::encode_segments(&segs),
        query: decided.forwarded,
        subject,
    })
}

/// Every data request declares a purpose from the policy catalog.
fn declared_purpose(state: &AppState, headers: &HeaderMap) -> Result<String, Error> {
    let value = headers
        .get("x-purpose")
        .ok_or_else(|| Error::BadRequest("the X-Purpose header is required".into()))?
        .to_str()
        .map_err(|_| Error::BadRequest("X-Purpose is not a purpose code".into()))?;
    let policies = state.policies();
    let purpose = policies.purpose(value).ok_or_else(|| {
        Error::BadRequest(format!(
            "unknown purpose; declare one of: {}",
            policies.purpose_codes().join(", ")
        ))
    })?;
    Ok(purpose.code.clone())
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

/// The one answer for a record that is missing and for one outside the caller's region: a
/// regional role must not tell "elsewhere" from "nowhere".
fn no_such_record() -> Error {
    Error::NotFound("no such record".into())
}

/// Phase 5: only a successful JSON answer passes, masked by the plan and re-emitted with our
/// own headers, each record under objection annotated (looked up by its subject id before
/// masking; `true` when one is still open). A store's error pages, redirects and headers never
/// reach the caller.
fn release(
    state: &AppState,
    plan: &Plan,
    who: &Principal,
    store: &str,
    up: UpstreamResponse,
) -> Result<(StatusCode, serde_json::Value, Outcome, bool), Error> {
    match up.status {
        s if s.is_success() => {
            let is_json = up
                .content_type
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    let mime = v.split(';').next().unwrap_or("").trim();
                    mime == "application/json" || mime.ends_with("+json")
                })
                .unwrap_or(false);
            let mut doc: serde_json::Value = match serde_json::from_slice(&up.body) {
                Ok(doc) if is_json => doc,
                _ => {
                    return Err(Error::BadGateway(
                        "the store answered with something other than JSON",
                    ));
                }
            };
            let ctx = ApplyCtx {
                region: who.region(),
                today: time::OffsetDateTime::now_utc().date(),
                pseudonym_key: &state.pseudonym_key,
            };
            let mut pending = false;
            let outcome = if !state.marks.has_store(store) {
                plan.apply(&mut doc, &ctx)
            } else {
                // A dataset that declares no subject type: its ids are looked up as either.
                let kinds: &[SubjectType] = match plan.subject_type() {
                    Some(SubjectType::Legal) => &[SubjectType::Legal],
                    Some(SubjectType::Natural) => &[SubjectType::Natural],
                    None => &[SubjectType::Legal, SubjectType::Natural],
                };
                let mut note = |id: &str| {
                    let (v, open) = kinds
                        .iter()
                        .find_map(|k| state.marks.annotation(store, *k, id))?;
                    pending |= open;
                    Some(v)
                };
                plan.apply_annotated(&mut doc, &ctx, Some(&mut note))
            };
            if outcome.out_of_scope {
                return Err(no_such_record());
            }
            if outcome.unclassified > 0 {
                metrics::counter!("credgate_unclassified_fields_total", "dataset" => plan.dataset.to_string())
                    .increment(outcome.unclassified as u64);
                tracing::warn!(dataset = %plan.dataset, paths = ?outcome.unclassified_paths,
                    count = outcome.unclassified, "fields not in the catalog were removed");
            }
            Ok((s, doc, outcome, pending))
        }
        StatusCode::NOT_FOUND => Err(no_such_record()),
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Err(Error::BadRequest(
            "the store refused the request's parameters".into(),
        )),
        other => {
            tracing::warn!(
                status = other.as_u16(),
                "store answered with an error status"
            );
            Err(Error::BadGateway("the store answered with an error"))
        }
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
