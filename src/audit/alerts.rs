//! Alert rules over the committed audit stream: a client far above its own request-rate
//! baseline, one client touching many distinct subjects (scraping), repeated denials, T4 data
//! read outside working hours, and audit-write failures. Each alert names the rule, the client
//! and the audit ids behind it.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use axum::{
    Extension, Json,
    extract::{Path, Query, State},
    http::HeaderMap,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;

use super::{AuditRecord, AuditSlot};
use crate::{
    http::{AppState, Error},
    policy::Tier,
    storage::{Db, StorageError, micros_to_rfc3339, now_micros},
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Requests in a minute at least this many times the client's own baseline...
    #[serde(default = "d_rate_factor")]
    pub rate_factor: f64,
    /// ...and at least this many.
    #[serde(default = "d_rate_min")]
    pub rate_min: u32,
    /// Distinct subjects one client touches within `window_secs`.
    #[serde(default = "d_scrape")]
    pub scrape_subjects: usize,
    /// Denials of one client within `window_secs`.
    #[serde(default = "d_denials")]
    pub denials: usize,
    #[serde(default = "d_window")]
    pub window_secs: i64,
    /// Working hours, local time `[start, end)`, on `work_days`.
    #[serde(default = "d_start")]
    pub work_start_hour: u8,
    #[serde(default = "d_end")]
    pub work_end_hour: u8,
    #[serde(default = "d_offset")]
    pub utc_offset_hours: i8,
    /// Working days, 1 = Monday to 7 = Sunday.
    #[serde(default = "d_days")]
    pub work_days: Vec<u8>,
}

fn d_days() -> Vec<u8> {
    vec![1, 2, 3, 4, 5]
}

fn d_rate_factor() -> f64 {
    5.0
}
fn d_rate_min() -> u32 {
    120
}
fn d_scrape() -> usize {
    200
}
fn d_denials() -> usize {
    20
}
fn d_window() -> i64 {
    600
}
fn d_start() -> u8 {
    8
}
fn d_end() -> u8 {
    20
}
fn d_offset() -> i8 {
    8
}

impl Default for AlertConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub id: String,
    pub rule: String,
    pub client_id: Option<String>,
    pub detail: String,
    pub audit_ids: Vec<String>,
    pub created_at: String,
    pub acked_at: Option<String>,
    pub acked_by: Option<String>,
}

pub async fn insert(
    db: &Db,
    rule: &str,
    client: Option<&str>,
    detail: &str,
    audit_ids: &[String],
) -> Result<(), StorageError> {
    sqlx::query("INSERT INTO alerts (id, rule, client_id, detail, audit_ids, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(format!("al_{}", uuid::Uuid::now_v7().simple()))
        .bind(rule)
        .bind(client)
        .bind(detail)
        .bind(serde_json::to_string(audit_ids).expect("strings serialise"))
        .bind(now_micros())
        .execute(db.pool())
        .await?;
    tracing::warn!(rule, client_id = ?client, detail, "alert raised");
    Ok(())
}

/// One committed request of a client: time, audit id, denied?, subjects touched.
type Event = (i64, String, bool, Vec<String>);

#[derive(Default)]
struct ClientWindow {
    events: VecDeque<Event>,
    /// Kept in step with `events`, so each record costs O(its own subjects), not O(window).
    subject_counts: HashMap<String, u32>,
    denials: usize,
    minute: i64,
    minute_count: u32,
    baseline: f64,
    fired: HashMap<&'static str, i64>,
}

impl ClientWindow {
    fn push(&mut self, e: Event) {
        for s in &e.3 {
            *self.subject_counts.entry(s.clone()).or_default() += 1;
        }
        self.denials += e.2 as usize;
        self.events.push_back(e);
    }

    fn expire(&mut self, before: i64) {
        while self.events.front().is_some_and(|e| e.0 < before) {
            let e = self.events.pop_front().expect("checked");
            self.denials -= e.2 as usize;
            for s in &e.3 {
                if let Some(n) = self.subject_counts.get_mut(s) {
                    *n -= 1;
                    if *n == 0 {
                        self.subject_counts.remove(s);
                    }
                }
            }
        }
    }
}

/// The analyzer task: one per process, fed by the writer.
pub fn spawn(state: AppState, config: AlertConfig) {
    let mut rx = state.audit.committed.subscribe();
    tokio::spawn(async move {
        let mut clients: HashMap<String, ClientWindow> = HashMap::new();
        let mut failures_seen = 0u64;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Ok(r) => judge(&state, &config, &mut clients, &r).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "alert analyzer fell behind");
                    }
                    Err(_) => return,
                },
                _ = tick.tick() => {
                    let f = state.audit.failures();
                    if f > failures_seen
                        && insert(&state.db, "audit-write-failure", None,
                            &format!("{} audit commit(s) failed; the affected requests got 503", f - failures_seen), &[]).await.is_ok()
                    {
                        failures_seen = f;
                    }
                }
            }
        }
    });
}

async fn judge(
    state: &AppState,
    c: &AlertConfig,
    clients: &mut HashMap<String, ClientWindow>,
    r: &Arc<AuditRecord>,
) {
    let Some(client) = r.client_id.clone() else {
        return;
    };
    if r.kind == "token" && r.decision != "allow" {
        return; // failed logins name an unverified id; they are not that client's traffic
    }
    let w = clients.entry(client.clone()).or_default();
    let now = r.time_us;
    let window = c.window_secs * 1_000_000;
    w.push((now, r.id.clone(), r.decision == "deny", r.subjects.clone()));
    w.expire(now - window);
    let minute = now / 60_000_000;
    if minute != w.minute {
        // Exponentially weighted baseline of the client's own per-minute rate.
        w.baseline = if w.minute == 0 {
            w.minute_count as f64
        } else {
            0.8 * w.baseline + 0.2 * w.minute_count as f64
        };
        w.minute = minute;
        w.minute_count = 0;
    }
    w.minute_count += 1;

    let mut fire: Vec<(&'static str, String, Vec<String>)> = Vec::new();
    let recent_ids = |w: &ClientWindow, pred: &dyn Fn(&Event) -> bool| -> Vec<String> {
        w.events
            .iter()
            .rev()
            .filter(|e| pred(e))
            .take(50)
            .map(|e| e.1.clone())
            .collect()
    };
    if w.minute_count >= c.rate_min && w.minute_count as f64 >= c.rate_factor * w.baseline.max(1.0)
    {
        fire.push((
            "rate-above-baseline",
            format!(
                "{} requests this minute against a baseline of {:.1}",
                w.minute_count, w.baseline
            ),
            recent_ids(w, &|_| true),
        ));
    }
    let distinct = w.subject_counts.len();
    if distinct >= c.scrape_subjects {
        fire.push((
            "many-subjects",
            format!("{distinct} distinct subjects within {} s", c.window_secs),
            recent_ids(w, &|e| !e.3.is_empty()),
        ));
    }
    let denials = w.denials;
    if denials >= c.denials {
        fire.push((
            "repeated-denials",
            format!("{denials} denials within {} s", c.window_secs),
            recent_ids(w, &|e| e.2),
        ));
    }
    let t4 = r.decision == "allow"
        && matches!(r.kind.as_str(), "data" | "profile")
        && r.role
            .as_deref()
            .and_then(|role| state.policies().role(role).map(|x| x.clearance))
            == Some(Tier::T4);
    if t4 && !working_hours(c, now) {
        fire.push((
            "t4-outside-hours",
            "T4 data read outside working hours".into(),
            vec![r.id.clone()],
        ));
    }
    for (rule, detail, ids) in fire {
        // One alert per rule and client per window, not one per request.
        let last = w.fired.get(rule).copied().unwrap_or(i64::MIN);
        if rule != "t4-outside-hours" && now.saturating_sub(last) < window {
            continue;
        }
        w.fired.insert(rule, now);
        if let Err(e) = insert(&state.db, rule, Some(&client), &detail, &ids).await {
            tracing::error!(error = %e, rule, "alert could not be stored");
        }
    }
}

fn working_hours(c: &AlertConfig, time_us: i64) -> bool {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(time_us / 1_000_000) else {
        return false;
    };
    let Ok(offset) = time::UtcOffset::from_hms(c.utc_offset_hours, 0, 0) else {
        return false;
    };
    let local = t.to_offset(offset);
    let weekday = c.work_days.contains(&local.weekday().number_from_monday());
    weekday && local.hour() >= c.work_start_hour && local.hour() < c.work_end_hour
}

#[derive(Deserialize)]
pub struct AlertQuery {
    status: Option<String>,
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<Alert, sqlx::Error> {
    let ids: String = r.try_get("audit_ids")?;
    Ok(Alert {
        id: r.try_get("id")?,
        rule: r.try_get("rule")?,
        client_id: r.try_get("client_id")?,
        detail: r.try_get("detail")?,
        audit_ids: serde_json::from_str(&ids).unwrap_or_default(),
        created_at: micros_to_rfc3339(r.try_get("created_at")?),
        acked_at: r
            .try_get::<Option<i64>, _>("acked_at")?
            .map(micros_to_rfc3339),
        acked_by: r.try_get("acked_by")?,
    })
}

pub async fn list(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Query(q): Query<AlertQuery>,
) -> Result<Json<Value>, Error> {
    crate::http::admin::officer(&state, &headers, &slot).await?;
    let sql = match q.status.as_deref() {
        None | Some("open") => {
            "SELECT * FROM alerts WHERE acked_at IS NULL ORDER BY created_at DESC LIMIT 500"
        }
        Some("all") => "SELECT * FROM alerts ORDER BY created_at DESC LIMIT 500",
        Some(_) => return Err(Error::BadRequest("`status` is open or all".into())),
    };
    let rows = sqlx::query(sql)
        .fetch_all(state.db.pool())
        .await
        .map_err(|e| Error::storage(e.into()))?;
    let items = rows
        .iter()
        .map(from_row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::storage(e.into()))?;
    Ok(Json(json!({ "items": items })))
}

pub async fn ack(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    let who = crate::http::admin::officer(&state, &headers, &slot).await?;
    let done = sqlx::query(
        "UPDATE alerts SET acked_at = $1, acked_by = $2 WHERE id = $3 AND acked_at IS NULL",
    )
    .bind(now_micros())
    .bind(&who.client_id)
    .bind(&id)
    .execute(state.db.pool())
    .await
    .map_err(|e| Error::storage(e.into()))?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound("no open alert with that id".into()));
    }
    Ok(Json(json!({"id": id, "status": "acknowledged"})))
}
