//! Complaints: a data subject complains about an institution's use of their data. The handler
//! sees the audit records of that org touching that subject; an upheld complaint may lock the
//! org down at once.

use axum::{
    Extension, Json,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use std::sync::Arc;

use super::objections::handler;
use super::{
    AppState, AttachChange as _, Error,
    routes::{self as r, AuditKind, Group, audited},
};
use crate::{
    audit::{AuditSlot, ChangeError, Deferred, Refused, store as audit_store},
    auth,
    config::is_name,
    storage::{lockdowns, micros_to_rfc3339},
    workflows::events,
};

pub const CATEGORIES: &[&str] = &[
    "unauthorized_access",
    "purpose_misuse",
    "excessive_query",
    "data_leak",
    "other",
];

/// submitted -> investigating -> upheld | dismissed -> closed.
fn may_go(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("submitted", "investigating")
            | ("investigating", "upheld")
            | ("investigating", "dismissed")
            | ("upheld", "closed")
            | ("dismissed", "closed")
    )
}

pub fn routes() -> Vec<Group> {
    vec![
        audited(
            AuditKind::Subject,
            vec![
                r::get("/subject/complaints", subject_list),
                r::post("/subject/complaints", submit),
                r::get("/subject/complaints/{id}", subject_get),
            ],
        ),
        audited(
            AuditKind::Admin,
            vec![
                r::get("/admin/complaints", admin_list),
                r::get("/admin/complaints/{id}", admin_get),
                r::post("/admin/complaints/{id}/transitions", admin_transition),
            ],
        ),
    ]
}

const COLUMNS: &str = "id, subject_id, subject_type, against_org, category, description, status, \
     outcome, created_at, updated_at";

fn view(r: &sqlx::any::AnyRow) -> Result<Value, sqlx::Error> {
    Ok(json!({
        "id": r.try_get::<String, _>("id")?,
        "against_org": r.try_get::<String, _>("against_org")?,
        "category": r.try_get::<String, _>("category")?,
        "description": r.try_get::<String, _>("description")?,
        "status": r.try_get::<String, _>("status")?,
        "outcome": r.try_get::<Option<String>, _>("outcome")?,
        "created_at": micros_to_rfc3339(r.try_get("created_at")?),
        "updated_at": micros_to_rfc3339(r.try_get("updated_at")?),
    }))
}

fn db_err(e: sqlx::Error) -> Error {
    Error::storage(e.into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Submission {
    against_org: String,
    category: String,
    description: String,
}

async fn submit(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    body: Result<Json<Submission>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Error> {
    let subject = auth::authenticate_subject_audited(&state, &headers, &slot)?;
    let Json(req) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    if !is_name(&req.against_org) {
        return Err(Error::BadRequest("against_org is not an org id".into()));
    }
    if !CATEGORIES.contains(&req.category.as_str()) {
        return Err(Error::BadRequest(format!(
            "category is one of: {}",
            CATEGORIES.join(", ")
        )));
    }
    if req.description.trim().is_empty() || req.description.chars().count() > 4000 {
        return Err(Error::BadRequest(
            "description is 1 to 4000 characters".into(),
        ));
    }
    let now = state.clock.now();
    let id = format!("cp_{}", uuid::Uuid::now_v7().simple());
    let view = json!({"id": id, "status": "submitted", "against_org": req.against_org,
                      "category": req.category, "created_at": micros_to_rfc3339(now)});
    let filed = Arc::new((id, subject.id.clone(), req));
    let change = Deferred::new(move |conn| {
        let filed = filed.clone();
        Box::pin(async move {
            let (id, subject, req) = &*filed;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO complaints ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, 'submitted', NULL, $7, $7)"
            )))
            .bind(id)
            .bind(subject.as_str())
            .bind(subject.subject_type().as_str())
            .bind(&req.against_org)
            .bind(&req.category)
            .bind(&req.description)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            let step = events::Step {
                kind: "complaint",
                id,
                at: now,
                actor: "subject",
                from: None,
                to: "submitted",
                note: None,
            };
            Ok(events::record(conn, &step).await?)
        })
    });
    Ok(change.attach((StatusCode::CREATED, Json(view))))
}

async fn subject_list(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
) -> Result<Json<Value>, Error> {
    let subject = auth::authenticate_subject_audited(&state, &headers, &slot)?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM complaints WHERE subject_id = $1 AND subject_type = $2 \
         ORDER BY created_at DESC"
    )))
    .bind(subject.id.as_str())
    .bind(subject.id.subject_type().as_str())
    .fetch_all(state.db.pool())
    .await
    .map_err(db_err)?;
    let items = rows
        .iter()
        .map(view)
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err)?;
    Ok(Json(json!({ "items": items })))
}

/// The complaint and its owner: the subject's id and type (both name the owner, as for
/// consents and objections).
async fn find(
    state: &AppState,
    id: &str,
) -> Result<Option<(sqlx::any::AnyRow, (String, String))>, Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM complaints WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(state.db.pool())
    .await
    .map_err(db_err)?;
    Ok(match row {
        Some(r) => {
            let subject: String = r.try_get("subject_id").map_err(db_err)?;
            let kind: String = r.try_get("subject_type").map_err(db_err)?;
            Some((r, (subject, kind)))
        }
        None => None,
    })
}

async fn subject_get(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let subject = auth::authenticate_subject_audited(&state, &headers, &slot)?;
    match find(&state, &id).await? {
        Some((r, (owner, kind)))
            if owner == subject.id.as_str() && kind == subject.id.subject_type().as_str() =>
        {
            let mut v = view(&r).map_err(db_err)?;
            v["history"] = json!(events::history(&state.db, "complaint", &id).await?);
            Ok(Json(v))
        }
        _ => Err(Error::NotFound("no such complaint".into())),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
}

async fn admin_list(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Error> {
    handler(&state, &headers, &slot).await?;
    let Query(q) = q.map_err(|e| Error::BadRequest(e.body_text()))?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM complaints ORDER BY created_at"
    )))
    .fetch_all(state.db.pool())
    .await
    .map_err(db_err)?;
    let mut items = Vec::new();
    for r in &rows {
        let mut v = view(r).map_err(db_err)?;
        if q.status.as_deref().is_some_and(|s| v["status"] != s) {
            continue;
        }
        v["subject"] = json!(r.try_get::<String, _>("subject_id").map_err(db_err)?);
        v["subject_type"] = json!(r.try_get::<String, _>("subject_type").map_err(db_err)?);
        items.push(v);
    }
    Ok(Json(json!({ "items": items })))
}

/// The complaint, with the audit records of that org touching that subject.
async fn admin_get(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    handler(&state, &headers, &slot).await?;
    let (r, (subject, kind)) = find(&state, &id)
        .await?
        .ok_or_else(|| Error::NotFound("no such complaint".into()))?;
    let mut v = view(&r).map_err(db_err)?;
    let org: String = r.try_get("against_org").map_err(db_err)?;
    let bounds = audit_store::Bounds {
        org: Some(org),
        subject: Some(subject.clone()),
        ..Default::default()
    };
    let records = audit_store::search(&state.db, &bounds, None, 200, None).await?;
    v["subject"] = json!(subject);
    v["subject_type"] = json!(kind);
    v["audit"] = json!(records
        .iter()
        .map(|a| json!({"id": a.id, "time": micros_to_rfc3339(a.time_us), "client_id": a.client_id,
                        "role": a.role, "purpose": a.purpose, "store": a.store, "dataset": a.dataset,
                        "decision": a.decision, "status": a.status}))
        .collect::<Vec<_>>());
    v["history"] = json!(events::history(&state.db, "complaint", &id).await?);
    Ok(Json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionRequest {
    to: String,
    #[serde(default)]
    note: Option<String>,
    /// On `upheld`: lock the org out at once.
    #[serde(default)]
    lockdown: bool,
}

async fn admin_transition(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<TransitionRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Error> {
    let who = handler(&state, &headers, &slot).await?;
    let Json(req) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    if req
        .note
        .as_deref()
        .is_some_and(|n| n.chars().count() > 2000)
    {
        return Err(Error::BadRequest("note is at most 2000 characters".into()));
    }
    let (r, _) = find(&state, &id)
        .await?
        .ok_or_else(|| Error::NotFound("no such complaint".into()))?;
    let from: String = r.try_get("status").map_err(db_err)?;
    if !may_go(&from, &req.to) || (req.lockdown && req.to != "upheld") {
        return Err(Error::Conflict(format!(
            "a complaint that is {from} cannot become {}",
            req.to
        )));
    }
    let org: String = r.try_get("against_org").map_err(db_err)?;
    let now = state.clock.now();
    let mut v = json!({"id": id, "status": req.to});
    // An upheld complaint's lockdown commits with the transition and its record, or neither.
    let lockdown = req.lockdown.then(|| {
        let reason = format!("complaint {id} upheld");
        lockdowns::prepare(None, Some(&org), &reason, &who.client_id)
    });
    if let Some((l, _)) = &lockdown {
        v["lockdown"] = json!(l);
    }
    let after = {
        let (state, id, lockdown) = (state.clone(), id.clone(), lockdown.clone());
        async move {
            if let Some((l, _)) = lockdown {
                state.client_status.invalidate();
                tracing::warn!(complaint = %id, org = ?l.org, lockdown = %l.id, "complaint upheld with lockdown");
            }
        }
    };
    let moved = Moved {
        id,
        from,
        to: req.to,
        note: req.note,
        actor: who.client_id,
        lockdown,
    };
    let change = deferred_move(moved, now);
    Ok(change.then(after).attach(Json(v)))
}

/// A complaint's move, as the handler decided it.
struct Moved {
    id: String,
    from: String,
    to: String,
    note: Option<String>,
    actor: String,
    /// On `upheld` with `lockdown`: the org's lockdown and its creation time.
    lockdown: Option<(lockdowns::Lockdown, i64)>,
}

/// The move (and its lockdown), deferred to the audit record's transaction; refused with 409
/// if the complaint moved meanwhile.
fn deferred_move(moved: Moved, now: i64) -> Deferred {
    let moved = Arc::new(moved);
    Deferred::new(move |conn| {
        let moved = moved.clone();
        Box::pin(async move {
            let Moved {
                id,
                from,
                to,
                note,
                actor,
                lockdown,
            } = &*moved;
            let step = events::Step {
                kind: "complaint",
                id,
                at: now,
                actor,
                from: Some(from),
                to,
                note: note.as_deref(),
            };
            if !events::advance(conn, events::Table::Complaints, &step).await? {
                return Err(ChangeError::Refused(Refused::Conflict(
                    "the complaint changed meanwhile".into(),
                )));
            }
            if matches!(to.as_str(), "upheld" | "dismissed") {
                sqlx::query("UPDATE complaints SET outcome = $1 WHERE id = $2")
                    .bind(to)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
            }
            if let Some((l, at)) = lockdown {
                lockdowns::insert_in(conn, l, *at).await?;
            }
            Ok(())
        })
    })
}
