//! The audit layer: wraps every audited route. It gives the handler an `AuditSlot` to fill,
//! waits for the handler's response, writes the record and waits for its commit; only then
//! does the response leave, carrying `X-Audit-Id`. If the record cannot be committed, the
//! response is replaced by a 503 and nothing the handler produced is released.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::HeaderValue;
use http_body::Body as _;

use super::{AppState, Error, Problem, RequestId, routes::Declared};
use crate::{
    audit::{AuditInfo, AuditRecord, AuditSlot, Committed, Deferred, Refusal},
    proxy::trace,
    storage::now_micros,
};

/// The kind of a request that matched no route (a 404): audited under the prefixes where an
/// audited route could have been meant, so probing them leaves a trace.
fn kind_of(path: &str) -> Option<&'static str> {
    if path.starts_with("/v1/subjects/") {
        Some("profile")
    } else if path.starts_with("/v1/") {
        Some("data")
    } else if path.starts_with("/public/") {
        Some("public")
    } else if path.starts_with("/oauth/") {
        Some("token")
    } else if path.starts_with("/subject/") {
        Some("subject")
    } else if path.starts_with("/admin/") {
        Some("admin")
    } else {
        None
    }
}

/// Stored paths are capped; the record keeps the shape of the request, not arbitrary bulk.
/// A string of at most `max` bytes has at most `max` characters and is copied whole: the
/// character walk, once 4% of a request's instructions, runs only for the long ones.
fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    s.chars().take(max).collect()
}

/// A matched route takes the kind its group declared (`web::routes`); a route missing from the
/// declarations, which `routes::mount` makes impossible, is still audited (fail closed).
fn declared_kind(declared: &Declared, req: &Request) -> Option<&'static str> {
    match req.extensions().get::<MatchedPath>() {
        Some(m) => match declared.coverage(m.as_str()) {
            Some(coverage) => coverage.kind(),
            None => Some(kind_of(req.uri().path()).unwrap_or("undeclared")),
        },
        None => kind_of(req.uri().path()),
    }
}

pub async fn audit(
    State((state, declared)): State<(AppState, Arc<Declared>)>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(kind) = declared_kind(&declared, &req) else {
        return unaudited_route(req, next).await;
    };
    // Anonymous doors' 429 floods are summarised, not recorded one by one (see `flood`).
    let door = crate::limits::Door::of(req.method(), req.uri().path());
    let slot = AuditSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut meta = Meta::of(&req, kind);
    meta.time_us = state.clock.now(); // the core's clock, which tests step (clock_steps.rs)

    let guard = HangUp(Some((state.clone(), meta.clone(), slot.clone())));
    let res = next.run(req).await;
    guard.disarm();
    // From here the record is committed in a task of its own: a caller who hangs up while it
    // is queued or committing must not cancel it (the store has answered; the writer's queue
    // count and a change's after-commit hook must not be cut half-way).
    let settled = super::workers::spawn_kept(settle(state, meta, slot, door, res));
    settled.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "committing a request's record failed in its task");
        Error::AuditUnavailable.into_response()
    })
}

/// The handler has answered: its record (and change) committed, then the answer released.
async fn settle(
    state: AppState,
    mut meta: Meta,
    slot: AuditSlot,
    door: Option<crate::limits::Door>,
    mut res: Response,
) -> Response {
    if super::limits::door_limited(&res)
        && let Some(door) = door
        && !state
            .limits
            .flood
            .admit(&meta.client_addr, door.as_str(), &meta.path, meta.time_us)
    {
        return res;
    }
    let mut info = slot.take();
    with_legal_basis(&state, &mut info);
    // The proxy names what it forwarded (the canonical path and query): that is what is kept.
    if let Some(p) = info.canonical_path.as_deref() {
        meta.path = cap(p, 512);
    }
    // A mutation's change commits with its record, or not at all; so do the deletion requests
    // of records a read withheld past retention (unless this replica asked lately). Requests
    // with neither (most data requests) take the path below unchanged: no copy, no extra await.
    let deletions = if info.expired.is_empty() {
        None
    } else {
        let expired = std::mem::take(&mut info.expired);
        crate::workflows::outbox::deletions(expired, state.clock.now(), &state.deletions)
    };
    let deferred = match (res.extensions_mut().remove::<Deferred>(), deletions) {
        (Some(change), Some(deletions)) => Some(change.followed_by(deletions)),
        (change, deletions) => change.or(deletions),
    };
    // Boxed: a mutation's path holds two records, a spare copy and the change's futures, and
    // inline it made every request's settle future 7960 bytes, moved into a task cell per
    // request (4928 boxed). Most requests never take it.
    if let Some(deferred) = deferred {
        return Box::pin(with_change(&state, meta, info, res, deferred)).await;
    }
    let t4 = info.t4_released;
    let oauth = meta.path.starts_with("/oauth/");
    let (record, decision) = record_of(meta, info, &res);
    match state.audit.append_released(record, t4).await {
        Ok(committed) => released(res, &committed, decision, t4),
        Err(e) => {
            tracing::error!(error = %e, "audit record not committed; response withheld");
            unavailable(oauth)
        }
    }
}

/// The declared purpose's legal basis, when the handler did not name it (the profile and the
/// subject's self-query): looked up in the policies now in force.
fn with_legal_basis(state: &AppState, info: &mut AuditInfo) {
    if info.legal_basis.is_none()
        && let Some(p) = info.purpose.as_deref()
    {
        info.legal_basis = state
            .policies()
            .purpose(p)
            .map(|p| p.legal_basis.code().to_string());
    }
}

/// A route declared unaudited (health, JWKS...). A change can only commit with a record: on
/// such a route it cannot happen, and the response must not claim that it did.
async fn unaudited_route(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    if res.extensions().get::<Deferred>().is_some() {
        tracing::error!("a change was attached outside the audited paths; refused");
        return Error::AuditUnavailable.into_response();
    }
    res
}

/// A caller who hangs up does not take the record with them: the store may have been asked
/// already (five callers that left while a store was slow once left five store hits and no
/// record). When the request's future is dropped before its answer, this records the attempt
/// (status 499, `client-closed-request`) with what the handler had noted. The work itself stops
/// with the caller (the store request is cancelled): a caller who hangs up frees what it held,
/// so the connection caps still bound the work in flight.
struct HangUp(Option<(AppState, Meta, AuditSlot)>);

impl HangUp {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for HangUp {
    fn drop(&mut self) {
        let Some((state, meta, slot)) = self.0.take() else {
            return;
        };
        let mut info = slot.take();
        info.rule = Some("client-closed-request".into());
        let mut res = Response::new(axum::body::Body::empty());
        *res.status_mut() = CLIENT_CLOSED;
        let (record, _) = record_of(meta, info, &res);
        super::workers::spawn_kept(async move {
            if let Err(e) = state.audit.append(record).await {
                tracing::error!(error = ?e, "the record of a request whose caller hung up was not committed");
            }
        });
    }
}

/// nginx's "client closed request": not sent to anyone, only recorded.
const CLIENT_CLOSED: http::StatusCode = match http::StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => http::StatusCode::BAD_REQUEST,
};

/// What the layer knows of the request before the handler ran.
#[derive(Clone)]
struct Meta {
    kind: &'static str,
    started: Instant,
    time_us: i64,
    request_id: String,
    /// The caller's own `X-Request-Id` and W3C trace id, when well formed (`proxy::trace`).
    caller_request_id: Option<String>,
    trace_id: Option<String>,
    method: String,
    path: String,
    client_addr: String,
}

impl Meta {
    fn of(req: &Request, kind: &'static str) -> Self {
        // A report's receipt is a credential to follow it: never stored in clear, here neither.
        let path = if req.uri().path().starts_with("/public/reports/") {
            "/public/reports/(receipt)".to_string()
        } else if let Some(q) = audit_search_query(req) {
            cap(&format!("{}?{q}", req.uri().path()), 512)
        } else {
            cap(req.uri().path(), 512)
        };
        // A whistleblower's address would identify them: it is not recorded for reports, and
        // neither are the ids their client or proxy sent (`X-Request-Id`, `traceparent`),
        // which could link the report to their other traffic.
        let report = req.uri().path().starts_with("/public/reports")
            || req.uri().path().starts_with("/report");
        let client_addr = if report {
            "withheld".to_string()
        } else {
            req.extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string())
                .unwrap_or_default()
        };
        Meta {
            kind,
            started: Instant::now(),
            time_us: now_micros(),
            request_id: req
                .extensions()
                .get::<RequestId>()
                .map(|r| r.0.clone())
                .unwrap_or_default(),
            caller_request_id: (!report)
                .then(|| trace::caller_request_id(req.headers()))
                .flatten(),
            trace_id: (!report)
                .then(|| trace::TraceContext::from_headers(req.headers()).map(|t| t.trace_id))
                .flatten(),
            method: req.method().to_string(),
            path,
            client_addr,
        }
    }
}

/// An officer's search or export of the audit log is itself a look at people's histories: its
/// record keeps what was searched (the query, capped with the path), or the log would not show
/// whose history an officer looked up.
fn audit_search_query(req: &Request) -> Option<&str> {
    let path = req.uri().path();
    let search = path.starts_with("/admin/audit") || path.starts_with("/console/audit");
    req.uri().query().filter(|q| search && !q.is_empty())
}

/// The subject an audit search named (`subject=`), so a search of the log by that subject finds
/// who looked them up. Only staff see these records: the subject's own access log lists data
/// reads (`audit::store::access_log`).
fn searched_subject(path: &str) -> Option<String> {
    let (_, query) = path.split_once('?')?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(k, v)| k == "subject" && !v.is_empty() && !v.chars().any(char::is_control))
        .map(|(_, v)| cap(&v, 128))
}

/// The record of this response, and its decision.
fn record_of(meta: Meta, info: AuditInfo, res: &Response) -> (AuditRecord, &'static str) {
    let status = res.status();
    let problem = res.extensions().get::<Problem>();
    let rule = info.rule.clone().or_else(|| {
        problem.map(|p| {
            p.rule
                .clone()
                .unwrap_or_else(|| p.type_.rsplit(':').next().unwrap_or("error").to_string())
        })
    });
    let decision = if status.is_server_error() || status == CLIENT_CLOSED {
        "error"
    } else if status.is_success() || status.is_redirection() {
        "allow"
    } else {
        "deny"
    };
    let subjects = if info.subjects.is_empty() {
        searched_subject(&meta.path).into_iter().collect()
    } else {
        info.subjects
    };
    let record = AuditRecord {
        seq: 0,
        id: format!("au_{}", uuid::Uuid::now_v7().simple()),
        time_us: meta.time_us,
        request_id: meta.request_id,
        kind: info.kind.unwrap_or(meta.kind).to_string(),
        client_id: info.client_id.map(|c| cap(&c, 128)),
        org: info.org,
        role: info.role,
        actor_subject: info.actor_subject,
        purpose: info.purpose,
        consent_id: info.consent_id.map(|c| cap(&c, 128)),
        method: meta.method,
        path: meta.path,
        store: info.store,
        dataset: info.dataset,
        subjects,
        decision: decision.into(),
        rule: if decision == "allow" { None } else { rule },
        masked: info.masked,
        status: status.as_u16(),
        bytes_out: res.body().size_hint().exact().unwrap_or(0),
        upstream_us: info.upstream_us,
        total_us: meta.started.elapsed().as_micros() as i64,
        client_addr: meta.client_addr,
        prev_hash: String::new(),
        hash: String::new(),
        actor: info.actor,
        actor_org: info.actor_org,
        legal_basis: info.legal_basis,
        caller_request_id: meta.caller_request_id,
        trace_id: meta.trace_id,
        ..Default::default() // the chain's fields are set by the audit writer
    };
    (record, decision)
}

/// The response leaves, naming its committed record.
fn released(
    mut res: Response,
    committed: &Committed,
    decision: &'static str,
    t4: bool,
) -> Response {
    if let Ok(v) = HeaderValue::from_str(&committed.id) {
        res.headers_mut().insert("x-audit-id", v);
    }
    if t4 {
        res.extensions_mut().insert(T4Released);
    }
    res.extensions_mut()
        .insert(super::metrics::Decision(decision));
    res
}

/// A mutation: its change and its record commit together. A refused change (the state moved
/// meanwhile, a cap was reached) is answered with its error, and that refusal is recorded; if
/// either cannot be written, nothing of the change exists and the answer is 503.
async fn with_change(
    state: &AppState,
    meta: Meta,
    info: AuditInfo,
    res: Response,
    deferred: Deferred,
) -> Response {
    let spare = (meta.clone(), info.clone());
    let oauth = meta.path.starts_with("/oauth/");
    let t4 = info.t4_released;
    let (record, decision) = record_of(meta, info, &res);
    match state.audit.append_with(record, deferred.change()).await {
        Ok(committed) => {
            deferred.committed().await;
            released(res, &committed, decision, t4)
        }
        Err(Refusal::Change(e)) => {
            let res = Error::from(e).into_response();
            let (record, decision) = record_of(spare.0, spare.1, &res);
            match state.audit.append(record).await {
                Ok(committed) => released(res, &committed, decision, false),
                Err(_) => unavailable(oauth),
            }
        }
        Err(Refusal::Audit(e)) => {
            tracing::error!(error = %e, "change and record not committed; nothing changed");
            unavailable(oauth)
        }
    }
}

/// The 503 of an answer whose record could not be committed: the token endpoint's in OAuth's
/// shape (RFC 6749 5.2), every other in problem+json.
fn unavailable(oauth: bool) -> Response {
    if oauth {
        super::oauth::audit_unavailable()
    } else {
        Error::AuditUnavailable.into_response()
    }
}

/// Marker: this response released T4 data clear.
#[derive(Debug, Clone, Copy)]
pub struct T4Released;
