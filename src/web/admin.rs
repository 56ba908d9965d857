//! Staff endpoints under `/admin` (but the queues): who may call each is in its signature, as
//! DESIGN.md's roles table has it. The system administrator runs clients and policies, the
//! security officer alerts and lockdowns, and the log is read by the officer and the auditor.

use axum::{
    Json,
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};

use std::sync::Arc;

use super::{
    AppState, AttachChange as _, Error,
    extract::{self, AuditReader, Officer, SystemAdmin},
    routes::{self as r, AuditKind, Group, audited},
};
use crate::{
    audit::{
        AuditRecord, ChangeError, Deferred, Refused, export, index_store,
        store::{self as audit_store, Bounds, Filter},
        verify,
    },
    auth,
    config::is_name,
    storage::{clients, lockdowns, micros_to_rfc3339},
};

pub fn routes() -> Vec<Group> {
    vec![audited(
        AuditKind::Admin,
        vec![
            r::post("/admin/policies/reload", reload_policies),
            r::get("/admin/audit", search),
            r::get("/admin/audit/export", export_log),
            r::get("/admin/audit/verify", verify_log),
            r::post("/admin/lockdown", lock),
            r::get("/admin/lockdown", list_lockdowns),
            r::delete("/admin/lockdown/{id}", unlock),
            r::get("/admin/clients", list_clients),
            r::post("/admin/clients/{id}/disable", disable_client),
            r::post("/admin/clients/{id}/enable", enable_client),
            r::get("/admin/alerts", list_alerts),
            r::post("/admin/alerts/{id}/ack", acknowledge_alert),
        ],
    )]
}

pub use extract::SECURITY_OFFICER;

/// Swaps the whole policy set on every replica, or refuses a bad one and keeps the old set
/// serving. The new set is loaded and checked first; the signal that tells the other replicas
/// is written in the reload's audit record's transaction, and the set is swapped in here only
/// after that commit. If the record cannot be written (503), no replica changes its set.
async fn reload_policies(
    State(state): State<AppState>,
    SystemAdmin(who): SystemAdmin,
) -> Result<Response, Error> {
    let reload = crate::replicas::Reload::prepare(&state).map_err(|e| {
        tracing::warn!(client_id = %who.client_id, error = %e, "policy reload refused");
        Error::Unprocessable(format!(
            "policy set refused, the previous set stays in force: {e}"
        ))
    })?;
    let digest = reload.digest().to_string();
    let (roles, purposes) = reload.names();
    let view = Json(json!({
        "status": "reloaded", "digest": digest, "roles": roles, "purposes": purposes,
    }));
    let reload = Arc::new(reload);
    let after = {
        let (state, reload, by) = (state.clone(), reload.clone(), who.client_id);
        async move {
            reload.adopt(&state);
            tracing::info!(client_id = %by, digest = %reload.digest(), "policies reloaded; every replica told");
        }
    };
    let change = Deferred::new(move |conn| {
        let reload = reload.clone();
        Box::pin(async move { Ok(reload.signal_in(conn).await?) })
    });
    Ok(change.then(after).attach(view))
}

fn parse_time(v: &Option<String>, name: &str) -> Result<Option<i64>, Error> {
    v.as_deref()
        .map(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map(|t| (t.unix_timestamp_nanos() / 1000) as i64)
                .map_err(|_| Error::BadRequest(format!("`{name}` must be an RFC 3339 time")))
        })
        .transpose()
}

pub(crate) fn bounds(f: &Filter, reader: &AuditReader) -> Result<Bounds, Error> {
    // Checked before any search starts: an export's headers go out before its first page, so
    // a value the database refuses (PostgreSQL refuses NUL in text) would break the download
    // off after a 200 instead of answering 400.
    for (name, v) in [
        ("org", &f.org),
        ("client", &f.client),
        ("subject", &f.subject),
        ("store", &f.store),
    ] {
        if v.as_deref()
            .is_some_and(|v| v.len() > 256 || v.chars().any(char::is_control))
        {
            return Err(Error::BadRequest(format!(
                "`{name}` must be at most 256 bytes without control characters"
            )));
        }
    }
    if let Some(d) = &f.decision
        && !["allow", "deny", "error"].contains(&d.as_str())
    {
        return Err(Error::BadRequest(
            "`decision` is allow, deny or error".into(),
        ));
    }
    Ok(Bounds {
        org: f.org.clone(),
        client: f.client.clone(),
        // Reduced as the recorder reduces a store's value (a long one, or one in the
        // `sha256:` namespace, is recorded as its digest), by the recorder's own function; a
        // recorded digest pasted from a record is taken as it is (`subject_to_search`).
        subject: f
            .subject
            .as_deref()
            .map(|s| crate::policy::subject_to_search(s).into_owned()),
        // Records from before the reduction name the value as sent (rev4 R2).
        subject_as_sent: f
            .subject
            .as_deref()
            .filter(|s| crate::policy::subject_to_search(s) != *s)
            .map(str::to_owned),
        store: f.store.clone(),
        decision: f.decision.clone(),
        from_us: parse_time(&f.from, "from")?,
        to_us: parse_time(&f.to, "to")?,
        staff_actions: reader.sees_staff_actions(),
    })
}

fn view(r: &AuditRecord) -> Value {
    let mut v = serde_json::to_value(r).expect("a record serialises");
    v["time"] = json!(micros_to_rfc3339(r.time_us));
    v
}

fn query_filter(
    q: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Result<Filter, Error> {
    q.map(|Query(f)| f)
        .map_err(|e| Error::BadRequest(e.body_text()))
}

/// Newest first; `next_cursor` continues below the last record of this page, so records
/// committed meanwhile never shift or repeat a page.
async fn search(
    State(state): State<AppState>,
    reader: AuditReader,
    q: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Error> {
    let f = query_filter(q)?;
    let b = bounds(&f, &reader)?;
    let limit = f.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Error::BadRequest("`limit` is 1 to 1000".into()));
    }
    let before =
        match &f.cursor {
            None => None,
            Some(c) => Some(c.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
                Error::BadRequest("`cursor` is not one this endpoint gave".into())
            })?),
        };
    // Read first: every record committed before it was indexed before the search ran. The
    // answer is exact either way (a subject's search reads the un-indexed tail too); this
    // says how much of it the index alone served.
    let indexed_through = index_store::indexed_through(&state.db).await?;
    let items = audit_store::search(&state.db, &b, before, limit, None).await?;
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|r| r.seq.to_string()))
        .flatten();
    Ok(Json(json!({
        "items": items.iter().map(view).collect::<Vec<_>>(),
        "next_cursor": next,
        "indexed_through": micros_to_rfc3339(indexed_through),
    })))
}

/// Streams every matching record, oldest first, a page at a time: memory stays constant
/// whatever the size of the log.
pub async fn export_log(
    State(state): State<AppState>,
    reader: AuditReader,
    q: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Error> {
    let f = query_filter(q)?;
    let b = bounds(&f, &reader)?;
    let csv = match f.format.as_deref().unwrap_or("ndjson") {
        "csv" => true,
        "ndjson" => false,
        _ => return Err(Error::BadRequest("`format` is csv or ndjson".into())),
    };
    let stream = export_stream(state.db.clone(), b, csv);
    let mut res = Body::from_stream(stream).into_response();
    let (ctype, ext) = if csv {
        ("text/csv; charset=utf-8", "csv")
    } else {
        ("application/x-ndjson", "ndjson")
    };
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"credgate-audit.{ext}\""))
    {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

/// The export's body: the CSV header, then pages of 500 matching records oldest first, so
/// memory stays constant whatever the size of the log. A storage failure ends the stream with
/// an error, which breaks the download off rather than pretend it is complete.
fn export_stream(
    db: crate::storage::Db,
    b: audit_store::Bounds,
    csv: bool,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    let header_chunk = csv
        .then(|| export::csv_bytes(&[export::CSV_HEADER.iter().map(|s| s.to_string()).collect()]));
    futures_util::stream::unfold((0i64, false, header_chunk), move |(after, done, header)| {
        let db = db.clone();
        let b = b.clone();
        async move {
            if let Some(h) = header {
                return Some((
                    Ok::<_, std::io::Error>(bytes::Bytes::from(h)),
                    (after, false, None),
                ));
            }
            if done {
                return None;
            }
            match audit_store::search(&db, &b, None, 500, Some(after)).await {
                Ok(page) if page.is_empty() => None,
                Ok(page) => {
                    let last = page.last().map(|r| r.seq).unwrap_or(after);
                    let chunk = if csv {
                        export::csv_bytes(&page.iter().map(export::csv_row).collect::<Vec<_>>())
                    } else {
                        page.iter().flat_map(export::ndjson_line).collect()
                    };
                    Some((
                        Ok(bytes::Bytes::from(chunk)),
                        (last, page.len() < 500, None),
                    ))
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit export broke off");
                    Some((
                        Err(std::io::Error::other("export failed")),
                        (after, true, None),
                    ))
                }
            }
        }
    })
}

async fn verify_log(
    State(state): State<AppState>,
    _reader: AuditReader,
) -> Result<Json<verify::ChainVerdict>, Error> {
    let report = verify::verify(&state.db, &state.audit_public_key).await?;
    if !report.ok {
        tracing::error!(reason = ?report.reason, first_bad = ?report.first_bad_id, "audit verification failed");
    }
    Ok(Json(report))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockRequest {
    pub client_id: Option<String>,
    pub org: Option<String>,
    pub reason: String,
}

pub async fn lock(
    State(state): State<AppState>,
    Officer(who): Officer,
    body: Result<Json<LockRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Error> {
    let Json(req) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    match (&req.client_id, &req.org) {
        (Some(_), None) | (None, Some(_)) => {}
        _ => {
            return Err(Error::BadRequest(
                "name exactly one of `client_id` and `org`".into(),
            ));
        }
    }
    if req.org.as_deref().is_some_and(|o| !is_name(o)) {
        return Err(Error::BadRequest("`org` is not an org id".into()));
    }
    if req.client_id.as_deref().is_some_and(|c| {
        c.is_empty() || c.len() > 128 || c.chars().any(|ch| !ch.is_ascii_graphic())
    }) {
        return Err(Error::BadRequest("`client_id` is not a client id".into()));
    }
    // The one free-text rule of the workflows: a reason with control characters or hidden
    // ones (bidi overrides, zero-width) would read differently from what it says.
    let reason = LOCK_REASON.clean(&req.reason)?;
    let reason = reason.as_str();
    refuse_staff(&state, &req).await?;
    let (l, at) = lockdowns::prepare(
        req.client_id.as_deref(),
        req.org.as_deref(),
        reason,
        &who.client_id,
    );
    let view = (StatusCode::CREATED, Json(l.clone()));
    let after = {
        let (state, l) = (state.clone(), l.clone());
        async move {
            state.client_status.invalidate();
            tracing::warn!(lockdown = %l.id, client_id = ?l.client_id, org = ?l.org, by = %l.created_by, "lockdown");
        }
    };
    let l = Arc::new(l);
    let change = Deferred::new(move |conn| {
        let l = l.clone();
        Box::pin(async move { Ok(lockdowns::insert_in(conn, &l, at).await?) })
    });
    Ok(change.then(after).attach(view))
}

/// A lockdown never names a staff role's client or an org that holds one: it would lock out the
/// staff (the officer who would lift it among them). `admit` ignores such a lockdown anyway.
/// Why a lockdown is made: shown to officers and in the lockdown's audit record.
const LOCK_REASON: crate::workflows::text::Field =
    crate::workflows::text::Field::many("`reason`", 500);

/// A lockdown names a registered client that is not staff: one of an unknown id (a typo, a
/// lookalike with a zero-width space) would look in force and lock nothing.
async fn refuse_staff(state: &AppState, req: &LockRequest) -> Result<(), Error> {
    if let Some(id) = &req.client_id {
        let Some(c) = clients::get(&state.db, id).await? else {
            return Err(Error::NotFound(format!(
                "no registered client `{id}`: a lockdown names a client that exists"
            )));
        };
        if auth::is_staff_role(&c.role) {
            return Err(Error::Conflict(format!(
                "client `{id}` holds the staff role `{}`: staff clients are disabled, not locked down",
                c.role
            )));
        }
    }
    if let Some(org) = &req.org {
        let roles = clients::roles_in_org(&state.db, org).await?;
        if let Some(r) = roles.iter().find(|r| auth::is_staff_role(r)) {
            return Err(Error::Conflict(format!(
                "org `{org}` holds a client of the staff role `{r}`: lock its other clients one by one"
            )));
        }
    }
    Ok(())
}

/// The lockdowns in force, for the officer who may add or lift them.
async fn list_lockdowns(
    State(state): State<AppState>,
    _officer: Officer,
) -> Result<Json<Value>, Error> {
    let items = lockdowns::list_active(&state.db).await?;
    Ok(Json(json!({ "items": items })))
}

pub async fn unlock(
    State(state): State<AppState>,
    Officer(who): Officer,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let gone = || Error::NotFound("no active lockdown with that id".into());
    if !lockdowns::is_active(&state.db, &id).await? {
        return Err(gone());
    }
    let after = {
        let (state, id, by) = (state.clone(), id.clone(), who.client_id.clone());
        async move {
            state.client_status.invalidate();
            tracing::warn!(lockdown = %id, by = %by, "lockdown lifted");
        }
    };
    let (id, by) = (Arc::new(id), Arc::new(who.client_id));
    let change = Deferred::new(move |conn| {
        let (id, by) = (id.clone(), by.clone());
        Box::pin(async move {
            match lockdowns::lift_in(conn, &id, &by).await? {
                true => Ok(()),
                false => Err(ChangeError::Refused(Refused::NotFound(
                    "no active lockdown with that id".into(),
                ))),
            }
        })
    });
    Ok(change.then(after).attach(StatusCode::NO_CONTENT))
}

/// Every registered client, for the system administrator: names, roles and status, never a
/// secret or its hash (`ClientRecord` carries neither).
async fn list_clients(
    State(state): State<AppState>,
    _admin: SystemAdmin,
) -> Result<Json<Value>, Error> {
    let items: Vec<Value> = clients::list(&state.db)
        .await?
        .into_iter()
        .map(|c| {
            json!({
                "id": c.id, "name": c.name, "org": c.org, "role": c.role, "region": c.region,
                "status": c.status, "created_at": micros_to_rfc3339(c.created_at),
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// `credgate client disable` over HTTP, for an administrator with no shell on the gateway's host.
/// The client's tokens stop working on its next request here, and within a quarter second on
/// every other replica (the `clients` signal); `enable` undoes it.
pub async fn disable_client(
    State(state): State<AppState>,
    admin: SystemAdmin,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    set_client_status(state, admin, id, false).await
}

/// DESIGN.md's `POST /admin/clients/{id}/enable`: a disabled client may obtain tokens again.
/// Lockdowns that cover it stay in force; they are lifted on their own.
pub async fn enable_client(
    State(state): State<AppState>,
    admin: SystemAdmin,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    set_client_status(state, admin, id, true).await
}

/// Disables or enables a client: an administrator's mutation, committed with its audit record.
async fn set_client_status(
    state: AppState,
    SystemAdmin(who): SystemAdmin,
    id: String,
    enable: bool,
) -> Result<Response, Error> {
    let gone = || Error::NotFound("no client with that id".into());
    // Ids are generated names (`cg_` and hex); anything else cannot name a client.
    if !is_name(&id) {
        return Err(gone());
    }
    if clients::get(&state.db, &id).await?.is_none() {
        return Err(gone());
    }
    let status = if enable { "active" } else { "disabled" };
    let view = Json(json!({"id": id, "status": status}));
    let after = {
        let (state, id, by) = (state.clone(), id.clone(), who.client_id);
        async move {
            state.client_status.invalidate();
            tracing::warn!(client = %id, by = %by, status, "client status changed");
        }
    };
    let id = Arc::new(id);
    let change = Deferred::new(move |conn| {
        let id = id.clone();
        Box::pin(async move {
            let found = match enable {
                true => clients::enable_in(conn, &id).await?,
                false => clients::disable_in(conn, &id).await?,
            };
            match found {
                true => Ok(()),
                false => Err(ChangeError::Refused(Refused::NotFound(
                    "no client with that id".into(),
                ))),
            }
        })
    });
    Ok(change.then(after).attach(view))
}

#[derive(Deserialize)]
pub struct AlertQuery {
    status: Option<String>,
}

/// The alerts, for a security officer to work and an auditor to read: open ones by default,
/// or `status=all`.
pub async fn list_alerts(
    State(state): State<AppState>,
    _reader: AuditReader,
    Query(q): Query<AlertQuery>,
) -> Result<Json<Value>, Error> {
    let all = match q.status.as_deref() {
        None | Some("open") => false,
        Some("all") => true,
        Some(_) => return Err(Error::BadRequest("`status` is open or all".into())),
    };
    let items = crate::audit::alerts::list(&state.db, all).await?;
    Ok(Json(json!({ "items": items })))
}

pub async fn acknowledge_alert(
    State(state): State<AppState>,
    Officer(who): Officer,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    ack_alert(&state, id, who.client_id).await
}

/// Acknowledges an open alert, the change deferred to its audit record's transaction.
async fn ack_alert(state: &AppState, id: String, by: String) -> Result<Response, Error> {
    const GONE: &str = "no open alert with that id";
    if !crate::audit::alerts::is_open(&state.db, &id).await? {
        return Err(Error::NotFound(GONE.into()));
    }
    let view = Json(json!({"id": id, "status": "acknowledged"}));
    let (id, by) = (Arc::new(id), Arc::new(by));
    let change = Deferred::new(move |conn| {
        let (id, by) = (id.clone(), by.clone());
        Box::pin(async move {
            let now = crate::storage::now_micros();
            match crate::audit::alerts::ack_in(conn, &id, &by, now).await? {
                true => Ok(()),
                false => Err(ChangeError::Refused(Refused::NotFound(GONE.into()))),
            }
        })
    });
    Ok(change.attach(view))
}
