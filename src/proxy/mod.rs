//! The data path, `/v1/stores/{store}/{path}`, as a sequence of small phases:
//! authenticate -> route -> purpose -> decide -> forward -> filter response -> log.
//! Each phase either hands the next one what it needs or ends the request with an error.

pub mod route;
pub mod upstream;

use std::net::SocketAddr;

use axum::{
    Extension, Router,
    body::Body,
    extract::{ConnectInfo, Request, State},
    response::{IntoResponse, Response},
    routing::any,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use self::upstream::{Outbound, Route, Store, SubjectLocator, UpstreamResponse};
use crate::{
    auth::{self, Institution},
    domain::SubjectId,
    http::{AppState, Error, RequestId},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/stores/{store}/{*path}", any(handle))
}

/// A request that has been routed: the store, the route, and who it is about.
struct Target<'s> {
    store: &'s Store,
    route: &'s Route,
    /// The normalised, re-encoded path sent to the store.
    path: String,
    subject: Option<SubjectId>,
}

async fn handle(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(request_id): Extension<RequestId>,
    req: Request,
) -> Result<Response, Error> {
    let (parts, body) = req.into_parts();
    let who = auth::authenticate_institution(&state, &parts.headers).await?;
    let target = route(&state, &parts)?;
    let purpose = declared_purpose(&state, &parts.headers)?;
    decide(&who, &target).inspect_err(|e| {
        tracing::info!(client_id = %who.client_id, store = %target.store.name,
            dataset = %target.route.dataset, %purpose, denial = %e, "data request denied");
    })?;
    let body = read_body(body, target.store.max_request_bytes).await?;
    let upstream = target
        .store
        .forward(Outbound {
            method: &parts.method,
            path: &target.path,
            query: parts.uri.query(),
            body,
            caller_headers: &parts.headers,
            request_id: &request_id.0,
            client_ip: peer.ip(),
            purpose: &purpose,
        })
        .await?;
    let upstream_ms = upstream.elapsed.as_millis() as u64;
    let response = filter_response(upstream)?;
    tracing::info!(
        client_id = %who.client_id, org = %who.org, role = %who.role,
        store = %target.store.name, dataset = %target.route.dataset, %purpose,
        subject_type = target.subject.as_ref().map(|s| s.subject_type().as_str()),
        status = response.status().as_u16(), upstream_ms, "data request served"
    );
    Ok(response)
}

/// Phase 2: normalise the path, find the store and a configured route, and parse the data
/// subject's id. No route, no upstream contact.
fn route<'s>(state: &'s AppState, parts: &Parts) -> Result<Target<'s>, Error> {
    let raw = parts
        .uri
        .path()
        .strip_prefix("/v1/stores/")
        .ok_or_else(|| Error::NotFound("no such route".into()))?;
    let (store_name, rest) = raw.split_once('/').unwrap_or((raw, ""));
    let segs =
        route::normalise(rest).map_err(|e| Error::BadRequest(format!("path refused: {e}")))?;
    let no_route = || Error::NotFound("no configured route matches this request".into());
    let store = state.stores.get(store_name).ok_or_else(no_route)?;
    let (route, params) = store
        .find_route(&parts.method, &segs)
        .ok_or_else(no_route)?;
    let subject = match &route.subject {
        None => None,
        Some((SubjectLocator::Path(name), kind)) => {
            let value = params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .expect("config validation ties subject_path to a placeholder");
            Some(SubjectId::parse(*kind, value)?)
        }
        Some((SubjectLocator::Query(name), kind)) => {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_str(parts.uri.query().unwrap_or(""))
                    .map_err(|_| Error::BadRequest("the query string is malformed".into()))?;
            let mut values = pairs.iter().filter(|(k, _)| k == name);
            match (values.next(), values.next()) {
                (None, _) => None,
                (Some((_, v)), None) => Some(SubjectId::parse(*kind, v)?),
                // The policy would judge one value while the store answered another.
                (Some(_), Some(_)) => {
                    return Err(Error::BadRequest(format!(
                        "query parameter `{name}` given more than once"
                    )));
                }
            }
        }
    };
    Ok(Target {
        store,
        route,
        path: route::encode_segments(&segs),
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

/// Phase 3: may this caller use this route? Deny by default: a route lists the roles it admits.
fn decide(who: &Institution, target: &Target<'_>) -> Result<(), Error> {
    if target.route.roles.contains(&who.role) {
        return Ok(());
    }
    Err(Error::Forbidden {
        rule: "route-roles".into(),
        detail: format!(
            "role `{}` may not call {} {} of store `{}`",
            who.role, target.route.method, target.route.template, target.store.name
        ),
    })
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

/// Phase 5: only a successful JSON answer passes, re-emitted with our own headers. A store's
/// error pages, redirects and headers never reach the caller.
fn filter_response(up: UpstreamResponse) -> Result<Response, Error> {
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
            if !is_json || serde_json::from_slice::<serde::de::IgnoredAny>(&up.body).is_err() {
                return Err(Error::BadGateway(
                    "the store answered with something other than JSON",
                ));
            }
            let mut res = (s, up.body).into_response();
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(res)
        }
        StatusCode::NOT_FOUND => Err(Error::NotFound("the store has no such record".into())),
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
