//! Whistleblower reports: anyone may file one without a token. The reporter's contact is sealed
//! with AES-256-GCM (a fresh nonce each time, the report id as associated data) and opened only
//! for objection handlers; it never enters logs, audit records, metrics or error messages. The
//! reporter follows the report with a receipt code, stored only as a hash.

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use ring::rand::{SecureRandom, SystemRandom};
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
    audit::{AuditSlot, ChangeError, Deferred, Refused},
    storage::micros_to_rfc3339,
    workflows::events,
};

pub const CATEGORIES: &[&str] = &["fraud", "false_records", "data_abuse", "safety", "other"];

pub use crate::auth::sealer::Sealer;

fn receipt_hash(receipt: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, receipt.as_bytes()).as_ref())
}

/// received -> investigating -> closed.
fn may_go(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("received", "investigating") | ("investigating", "closed") | ("received", "closed")
    )
}

pub fn routes() -> Vec<Group> {
    vec![
        audited(
            AuditKind::Public,
            vec![
                r::post("/public/reports", file),
                r::get("/public/reports/{receipt}", follow),
            ],
        ),
        audited(
            AuditKind::Admin,
            vec![
                r::get("/admin/reports", admin_list),
                r::get("/admin/reports/{id}", admin_get),
                r::post("/admin/reports/{id}/transitions", admin_transition),
            ],
        ),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Filing {
    about: String,
    category: String,
    description: String,
    #[serde(default)]
    reporter_contact: Option<String>,
}

fn db_err(e: sqlx::Error) -> Error {
    Error::storage(e.into())
}

/// The body is parsed by hand so that no parser message can echo what the reporter sent.
async fn file(State(state): State<AppState>, body: Bytes) -> Result<Response, Error> {
    let req: Filing = serde_json::from_slice(&body).map_err(|_| {
        Error::BadRequest(
            "send JSON with about, category, description and optionally reporter_contact".into(),
        )
    })?;
    if req.about.trim().is_empty() || req.about.chars().count() > 200 {
        return Err(Error::BadRequest("about is 1 to 200 characters".into()));
    }
    if !CATEGORIES.contains(&req.category.as_str()) {
        return Err(Error::BadRequest(format!(
            "category is one of: {}",
            CATEGORIES.join(", ")
        )));
    }
    if req.description.trim().is_empty() || req.description.chars().count() > 8000 {
        return Err(Error::BadRequest(
            "description is 1 to 8000 characters".into(),
        ));
    }
    if req
        .reporter_contact
        .as_deref()
        .is_some_and(|c| c.chars().count() > 500 || c.chars().any(char::is_control))
    {
        return Err(Error::BadRequest(
            "the contact is at most 500 characters, without control characters".into(),
        ));
    }
    let id = format!("rp_{}", uuid::Uuid::now_v7().simple());
    let mut raw = [0u8; 16];
    SystemRandom::new()
        .fill(&mut raw)
        .expect("the OS random source works");
    let receipt = hex::encode(raw);
    let sealed = req
        .reporter_contact
        .as_deref()
        .map(|c| state.report_sealer.seal(&id, &pad_contact(c)));
    let now = state.clock.now();
    let answer = json!({"id": id, "receipt": receipt, "status": "received"});
    let change = filing(id, receipt_hash(&receipt), req, sealed, now);
    Ok(change.attach((StatusCode::CREATED, Json(answer))))
}

/// The filing, deferred to its audit record's transaction.
fn filing(
    id: String,
    receipt_hash: String,
    req: Filing,
    sealed: Option<String>,
    now: i64,
) -> Deferred {
    let filed = Arc::new((id, receipt_hash, req, sealed));
    Deferred::new(move |conn| {
        let filed = filed.clone();
        Box::pin(async move {
            let (id, receipt_hash, req, sealed) = &*filed;
            sqlx::query(
                "INSERT INTO reports (id, receipt_hash, about, category, description, contact_sealed, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'received', $7, $7)",
            )
            .bind(id)
            .bind(receipt_hash)
            .bind(&req.about)
            .bind(&req.category)
            .bind(&req.description)
            .bind(sealed)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            let step = events::Step {
                kind: "report",
                id,
                at: now,
                actor: "reporter",
                from: None,
                to: "received",
                note: None,
            };
            Ok(events::record(conn, &step).await?)
        })
    })
}

/// Every sealed contact is this many bytes before sealing, whatever its length: the longest
/// contact (500 characters of up to 4 bytes) and the marker fit, so the ciphertext's length
/// tells nothing about the contact.
const CONTACT_BUCKET: usize = 2048;

/// Marks a padded contact. Contacts sealed before padding lack it and open as they were.
const PADDED: &str = "\u{1}pad1\u{1}";

/// The contact, marked and padded with NULs to `CONTACT_BUCKET` bytes.
fn pad_contact(contact: &str) -> String {
    let mut padded = String::with_capacity(CONTACT_BUCKET);
    padded.push_str(PADDED);
    padded.push_str(contact);
    let fill = CONTACT_BUCKET.saturating_sub(padded.len());
    padded.extend(std::iter::repeat_n('\0', fill));
    padded
}

/// The contact as filed: the marker and padding removed (an old, unpadded one as it is).
fn unpad_contact(opened: String) -> String {
    match opened.strip_prefix(PADDED) {
        Some(rest) => rest.trim_end_matches('\0').to_string(),
        None => opened,
    }
}

/// The reporter's view: status only, found by receipt.
async fn follow(
    State(state): State<AppState>,
    Path(receipt): Path<String>,
) -> Result<Json<Value>, Error> {
    let row = sqlx::query("SELECT status, updated_at FROM reports WHERE receipt_hash = $1")
        .bind(receipt_hash(&receipt))
        .fetch_optional(state.db.pool())
        .await
        .map_err(db_err)?
        .ok_or_else(|| Error::NotFound("no report with that receipt".into()))?;
    Ok(Json(json!({
        "status": row.try_get::<String, _>("status").map_err(db_err)?,
        "updated_at": micros_to_rfc3339(row.try_get("updated_at").map_err(db_err)?),
    })))
}

fn view(r: &sqlx::any::AnyRow) -> Result<Value, sqlx::Error> {
    Ok(json!({
        "id": r.try_get::<String, _>("id")?,
        "about": r.try_get::<String, _>("about")?,
        "category": r.try_get::<String, _>("category")?,
        "description": r.try_get::<String, _>("description")?,
        "status": r.try_get::<String, _>("status")?,
        "created_at": micros_to_rfc3339(r.try_get("created_at")?),
        "updated_at": micros_to_rfc3339(r.try_get("updated_at")?),
    }))
}

async fn admin_list(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
) -> Result<Json<Value>, Error> {
    handler(&state, &headers, &slot).await?;
    let rows = sqlx::query("SELECT * FROM reports ORDER BY created_at")
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

/// Handlers only: the report with its contact opened.
async fn admin_get(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    handler(&state, &headers, &slot).await?;
    let r = sqlx::query("SELECT * FROM reports WHERE id = $1")
        .bind(&id)
        .fetch_optional(state.db.pool())
        .await
        .map_err(db_err)?
        .ok_or_else(|| Error::NotFound("no such report".into()))?;
    let mut v = view(&r).map_err(db_err)?;
    let sealed: Option<String> = r.try_get("contact_sealed").map_err(db_err)?;
    v["reporter_contact"] = json!(
        sealed
            .and_then(|s| state.report_sealer.open(&id, &s))
            .map(unpad_contact)
    );
    v["history"] = json!(events::history(&state.db, "report", &id).await?);
    Ok(Json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionRequest {
    to: String,
    #[serde(default)]
    note: Option<String>,
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
    let r = sqlx::query("SELECT status FROM reports WHERE id = $1")
        .bind(&id)
        .fetch_optional(state.db.pool())
        .await
        .map_err(db_err)?
        .ok_or_else(|| Error::NotFound("no such report".into()))?;
    let from: String = r.try_get("status").map_err(db_err)?;
    if !may_go(&from, &req.to) {
        return Err(Error::Conflict(format!(
            "a report that is {from} cannot become {}",
            req.to
        )));
    }
    let now = state.clock.now();
    let answer = json!({"id": id, "status": req.to});
    let moved = Arc::new((id, from, req.to, req.note, who.client_id));
    let change = Deferred::new(move |conn| {
        let moved = moved.clone();
        Box::pin(async move {
            let (id, from, to, note, actor) = &*moved;
            let step = events::Step {
                kind: "report",
                id,
                at: now,
                actor,
                from: Some(from),
                to,
                note: note.as_deref(),
            };
            if events::advance(conn, events::Table::Reports, &step).await? {
                Ok(())
            } else {
                Err(ChangeError::Refused(Refused::Conflict(
                    "the report changed meanwhile".into(),
                )))
            }
        })
    });
    Ok(change.attach(Json(answer)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{Engine, engine::general_purpose::STANDARD};

    #[test]
    fn sealing_hides_the_contact_uses_fresh_nonces_and_binds_the_report() {
        let s = Sealer::new(&[7u8; 32]);
        let a = s.seal("rp_1", "whistle@example.cn");
        let b = s.seal("rp_1", "whistle@example.cn");
        assert_ne!(a, b, "a fresh nonce each time");
        assert!(!String::from_utf8_lossy(&STANDARD.decode(&a).unwrap()).contains("whistle"));
        assert_eq!(s.open("rp_1", &a).as_deref(), Some("whistle@example.cn"));
        assert_eq!(
            s.open("rp_2", &a),
            None,
            "moved to another report, it does not open"
        );
        assert_eq!(Sealer::new(&[8u8; 32]).open("rp_1", &a), None);
    }

    #[test]
    fn padded_contacts_are_one_size_and_open_as_filed() {
        let s = Sealer::new(&[7u8; 32]);
        let short = s.seal("rp_1", &pad_contact("a@b.cn"));
        let long = s.seal("rp_1", &pad_contact(&"长".repeat(500)));
        assert_eq!(short.len(), long.len());
        let open = |c: &str| s.open("rp_1", c).map(unpad_contact);
        assert_eq!(open(&short).as_deref(), Some("a@b.cn"));
        assert_eq!(open(&long), Some("长".repeat(500)));
        // Sealed before padding existed: opens unchanged.
        let old = s.seal("rp_1", "old@example.cn");
        assert_eq!(open(&old).as_deref(), Some("old@example.cn"));
    }
}
