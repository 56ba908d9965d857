//! Alert rules over the committed audit stream: a client far above its own request-rate
//! baseline, one client (or one anonymous address) touching many distinct subjects (scraping),
//! repeated denials, T4 data released clear outside working hours (once per client and window),
//! and audit-write failures. Each alert names the rule, the client and the audit ids behind it.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{AuditRecord, CommittedRecord};
use crate::{
    services::Core,
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
    /// Distinct subjects one client touches within `window_secs`. At most 100000 are tracked
    /// per client, so a threshold above that never fires.
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

/// The ids an alert cites: the most recent ones of the window.
const CITED: usize = 50;

/// Distinct subjects tracked per client at most. An alert threshold above it never fires; the
/// cap keeps a client that touches millions of subjects from growing the analyzer without end.
const MAX_TRACKED_SUBJECTS: usize = 100_000;

/// What the analyzer keeps of one client's window: counts and the few ids an alert cites,
/// never one entry per request. (It kept every request of the window, ten minutes by default:
/// at 20k req/s that grew by about 3 MB a second.)
#[derive(Default)]
struct ClientWindow {
    /// When each subject was last touched. Holds at most the alert threshold (capped): past it,
    /// the rule only needs to know "at least that many". foldhash with a per-process seed, as
    /// the policy engine's set of the same ids: SipHash of a list answer's hundred-odd ids was
    /// most of the analyzer's 1.2% of a list load's CPU.
    subjects: HashMap<String, i64, foldhash::fast::RandomState>,
    subjects_pruned_at: i64,
    /// Denials per second of the window, oldest first, and their sum.
    denials: VecDeque<(i64, usize)>,
    denial_total: usize,
    /// The latest ids, for citing: any request, requests that touched subjects, denials.
    recent: VecDeque<(i64, String)>,
    recent_with_subjects: VecDeque<(i64, String)>,
    recent_denied: VecDeque<(i64, String)>,
    minute: i64,
    minute_count: u32,
    baseline: f64,
    fired: HashMap<&'static str, i64>,
}

fn remember(q: &mut VecDeque<(i64, String)>, now: i64, id: &str) {
    if q.len() == CITED {
        q.pop_front();
    }
    q.push_back((now, id.to_string()));
}

/// The cited ids still inside the window, newest first. Filtered, not cut at the first old
/// one: records arrive in commit order, and a slow request's record carries an earlier time.
fn cite(q: &VecDeque<(i64, String)>, since: i64) -> Vec<String> {
    q.iter()
        .rev()
        .filter(|(t, _)| *t >= since)
        .map(|(_, id)| id.clone())
        .collect()
}

impl ClientWindow {
    fn push(&mut self, r: &AuditRecord, denied: bool, since: i64, subject_cap: usize) {
        let now = r.time_us;
        remember(&mut self.recent, now, &r.id);
        if !r.subjects.is_empty() {
            remember(&mut self.recent_with_subjects, now, &r.id);
        }
        if denied {
            remember(&mut self.recent_denied, now, &r.id);
            let second = now.div_euclid(1_000_000);
            match self.denials.back_mut() {
                Some((s, n)) if *s == second => *n += 1,
                _ => self.denials.push_back((second, 1)),
            }
            self.denial_total += 1;
        }
        // A second's bucket leaves once all of it is older than the window.
        while let Some(&(s, n)) = self.denials.front() {
            if (s + 1) * 1_000_000 > since {
                break;
            }
            self.denials.pop_front();
            self.denial_total -= n;
        }
        for s in &r.subjects {
            if let Some(t) = self.subjects.get_mut(s) {
                *t = now;
            } else if self.subjects.len() < subject_cap {
                self.subjects.insert(s.clone(), now);
            }
        }
        // Forget subjects last touched before the window, at most once a second: a full map
        // already says "at least the threshold", and pruning it on every request would cost
        // each request a pass over it.
        if now - self.subjects_pruned_at >= 1_000_000 {
            self.subjects.retain(|_, t| *t >= since);
            self.subjects_pruned_at = now;
        }
    }
}

/// Anonymous addresses tracked at most: past it, new addresses are not judged until idle ones
/// leave (each address costs up to `scrape_subjects` entries, so this bounds the analyzer).
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// The analyzer's state: a window per client, and one per address for anonymous requests.
#[derive(Default)]
struct Windows {
    clients: HashMap<String, ClientWindow>,
    addresses: HashMap<String, ClientWindow>,
    addresses_pruned_at: i64,
    address_cap_warned: bool,
}

/// The analyzer task: one per process, fed by the writer.
pub fn spawn(state: Core, config: AlertConfig) -> tokio::task::JoinHandle<()> {
    let mut rx = state.audit.committed.subscribe();
    tokio::spawn(async move {
        let mut windows = Windows::default();
        let mut failures_seen = 0u64;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Ok(c) => judge(&state, &config, &mut windows, &c).await,
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
    })
}

async fn judge(state: &Core, c: &AlertConfig, w: &mut Windows, committed: &CommittedRecord) {
    let r = &*committed.record;
    match &r.client_id {
        Some(_) if r.kind == "token" && r.decision != "allow" => {
            // Failed logins name an unverified id; they are not that client's traffic.
        }
        Some(client) => {
            let window = w.clients.entry(client.clone()).or_default();
            let t4 = committed.t4_released && r.decision == "allow";
            judge_client(state, c, window, client, (r, t4)).await
        }
        None if r.kind == "public" => judge_address(state, c, w, r).await,
        None => {}
    }
}

/// Anonymous requests, judged per source address: the same scraping rule as a client's
/// (distinct subjects within the window). Addresses idle for a window are forgotten.
async fn judge_address(state: &Core, c: &AlertConfig, w: &mut Windows, r: &AuditRecord) {
    // Whistleblowers' addresses are never recorded ("withheld"), so never tracked.
    if r.client_addr.is_empty() || r.client_addr == "withheld" || r.subjects.is_empty() {
        return;
    }
    let now = r.time_us;
    let since = now - c.window_secs * 1_000_000;
    if now - w.addresses_pruned_at >= 1_000_000 {
        w.addresses
            .retain(|_, a| a.recent.back().is_some_and(|(t, _)| *t >= since));
        w.addresses_pruned_at = now;
    }
    if !w.addresses.contains_key(&r.client_addr) && w.addresses.len() >= MAX_TRACKED_ADDRESSES {
        if !std::mem::replace(&mut w.address_cap_warned, true) {
            tracing::warn!(
                cap = MAX_TRACKED_ADDRESSES,
                "too many anonymous addresses to judge; new ones wait until idle ones leave"
            );
        }
        return;
    }
    let a = w.addresses.entry(r.client_addr.clone()).or_default();
    a.push(
        r,
        false,
        since,
        c.scrape_subjects.clamp(1, MAX_TRACKED_SUBJECTS),
    );
    let distinct = a.subjects.len();
    if distinct < c.scrape_subjects {
        return;
    }
    let detail = format!(
        "anonymous requests from {} touched {distinct} distinct subjects within {} s",
        r.client_addr, c.window_secs
    );
    let ids = cite(&a.recent_with_subjects, since);
    fire_once(state, c, a, None, ("many-subjects", detail, ids), now).await;
}

/// Raises `rule` unless it fired for this window's owner within the window: one alert per rule
/// and client (or address) per window, not one per request.
async fn fire_once(
    state: &Core,
    c: &AlertConfig,
    w: &mut ClientWindow,
    client: Option<&str>,
    (rule, detail, ids): (&'static str, String, Vec<String>),
    now: i64,
) {
    let last = w.fired.get(rule).copied().unwrap_or(i64::MIN);
    if now.saturating_sub(last) < c.window_secs * 1_000_000 {
        return;
    }
    w.fired.insert(rule, now);
    if let Err(e) = insert(&state.db, rule, client, &detail, &ids).await {
        tracing::error!(error = %e, rule, "alert could not be stored");
    }
}

async fn judge_client(
    state: &Core,
    c: &AlertConfig,
    w: &mut ClientWindow,
    client: &str,
    (r, t4_released): (&AuditRecord, bool),
) {
    let now = r.time_us;
    let since = now - c.window_secs * 1_000_000;
    let subject_cap = c.scrape_subjects.clamp(1, MAX_TRACKED_SUBJECTS);
    w.push(r, r.decision == "deny", since, subject_cap);
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
    if w.minute_count >= c.rate_min && w.minute_count as f64 >= c.rate_factor * w.baseline.max(1.0)
    {
        let detail = format!(
            "{} requests this minute against a baseline of {:.1}",
            w.minute_count, w.baseline
        );
        fire.push(("rate-above-baseline", detail, cite(&w.recent, since)));
    }
    let distinct = w.subjects.len();
    if distinct >= c.scrape_subjects {
        let detail = format!("{distinct} distinct subjects within {} s", c.window_secs);
        fire.push((
            "many-subjects",
            detail,
            cite(&w.recent_with_subjects, since),
        ));
    }
    let denials = w.denial_total;
    if denials >= c.denials {
        let detail = format!("{denials} denials within {} s", c.window_secs);
        fire.push(("repeated-denials", detail, cite(&w.recent_denied, since)));
    }
    // The proxy's own account of what it released, not a guess from the policy.
    if t4_released && !working_hours(c, now) {
        let detail = "T4 data released clear outside working hours".to_string();
        fire.push(("t4-outside-hours", detail, vec![r.id.clone()]));
    }
    for alert in fire {
        fire_once(state, c, w, Some(client), alert, now).await;
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

/// The newest 500 alerts: open ones only, or `all`.
pub async fn list(db: &Db, all: bool) -> Result<Vec<Alert>, StorageError> {
    let sql = match all {
        false => "SELECT * FROM alerts WHERE acked_at IS NULL ORDER BY created_at DESC LIMIT 500",
        true => "SELECT * FROM alerts ORDER BY created_at DESC LIMIT 500",
    };
    let rows = sqlx::query(sql).fetch_all(db.pool()).await?;
    Ok(rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?)
}

/// Whether alert `id` exists and is not yet acknowledged.
pub async fn is_open(db: &Db, id: &str) -> Result<bool, StorageError> {
    let open: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM alerts WHERE id = $1 AND acked_at IS NULL")
            .bind(id)
            .fetch_one(db.pool())
            .await?;
    Ok(open > 0)
}

/// Acknowledges alert `id` in the caller's transaction: false if it was not open (another
/// officer acknowledged it meanwhile).
pub async fn ack_in(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    by: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE alerts SET acked_at = $1, acked_by = $2 WHERE id = $3 AND acked_at IS NULL",
    )
    .bind(now)
    .bind(by)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn record(n: i64, subjects: &[&str]) -> AuditRecord {
        AuditRecord {
            id: format!("au_{n}"),
            time_us: n * S,
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn denials_and_subjects_leave_the_window_and_memory_stays_bounded() {
        let window = 10 * S;
        let mut w = ClientWindow::default();
        // Ten seconds of traffic, one request a second, each denied, each a new subject.
        for n in 1..=10 {
            let subject = format!("s{n}");
            w.push(&record(n, &[&subject]), true, n * S - window, 1000);
        }
        assert_eq!(w.denial_total, 10);
        assert_eq!(w.subjects.len(), 10);
        // Twenty seconds later, one allowed request with no subject: the window is empty.
        w.push(&record(30, &[]), false, 30 * S - window, 1000);
        assert_eq!(w.denial_total, 0);
        assert!(w.subjects.is_empty());
        assert!(cite(&w.recent_denied, 30 * S - window).is_empty());
        assert_eq!(cite(&w.recent, 30 * S - window), vec!["au_30"]);

        // A client touching far more subjects than the threshold: the map holds the cap, the
        // cited ids stay at fifty, and the count still reaches the threshold.
        let mut w = ClientWindow::default();
        for n in 0..5000 {
            let subject = format!("s{n}");
            w.push(&record(100, &[&subject]), false, 100 * S - window, 200);
        }
        assert_eq!(w.subjects.len(), 200);
        assert_eq!(w.recent_with_subjects.len(), CITED);
        assert_eq!(cite(&w.recent, 0).len(), CITED);
    }
}
