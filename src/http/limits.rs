//! Rate limits from config, with governor's GCRA limiters keyed by client id (after
//! authentication) and by source address on each anonymous door. Each door has its own bucket,
//! so browsing the public tier never locks an address out of token issuance. A limited request
//! gets 429 with `Retry-After`; a flood of them is summarised in the audit log (see
//! `crate::audit::flood`).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};
use http::{HeaderValue, Method};
use serde::Deserialize;

use super::{AppState, Error};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per minute per institution client.
    #[serde(default = "d_client")]
    pub per_client_per_minute: u32,
    /// Public data requests (`/public/stores/...`) per minute per source address.
    #[serde(default = "d_public")]
    pub per_address_per_minute: u32,
    /// Token requests per minute per source address. Generous: many institutions may share one
    /// address behind a NAT; the hashing bound and the per-client lock do the real work.
    #[serde(default = "d_token")]
    pub token_per_address_per_minute: u32,
    /// Whistleblower receipt lookups (`GET /public/reports/{receipt}`) per minute per address.
    #[serde(default = "d_receipts")]
    pub receipts_per_address_per_minute: u32,
    /// Report filings (`POST /public/reports`) per minute per address.
    #[serde(default = "d_filings")]
    pub filings_per_address_per_minute: u32,
    /// Password hashes (argon2id, 19 MiB each) computed at once by the token endpoint.
    #[serde(default = "d_hash_concurrency")]
    pub token_hash_concurrency: usize,
    /// How long a token request waits for a hashing slot before it is answered 503.
    #[serde(default = "d_hash_wait")]
    pub token_hash_wait_ms: u64,
    /// Failed logins of one client id, within `token_lock_secs`, that lock it...
    #[serde(default = "d_failures")]
    pub token_failures_before_lock: u32,
    /// ...for this long.
    #[serde(default = "d_lock")]
    pub token_lock_secs: u64,
    /// The window of the audit log's 429 summaries: one record per (address, door) per window.
    #[serde(default = "d_summary_window")]
    pub audit_summary_window_secs: u64,
}

fn d_client() -> u32 {
    6000
}
fn d_public() -> u32 {
    120
}
fn d_token() -> u32 {
    600
}
fn d_receipts() -> u32 {
    30
}
fn d_filings() -> u32 {
    30
}
fn d_hash_concurrency() -> usize {
    2
}
fn d_hash_wait() -> u64 {
    250
}
fn d_failures() -> u32 {
    10
}
fn d_lock() -> u64 {
    300
}
fn d_summary_window() -> u64 {
    60
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// The anonymous doors, each with its own per-address bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Door {
    PublicData,
    Receipt,
    ReportFiling,
    Token,
}

impl Door {
    /// The door a request knocks on, if it is an anonymous one.
    pub fn of(method: &Method, path: &str) -> Option<Door> {
        if path.starts_with("/public/stores/") {
            Some(Door::PublicData)
        } else if path == "/public/reports" && method == Method::POST {
            Some(Door::ReportFiling)
        } else if path.starts_with("/public/reports/") {
            Some(Door::Receipt)
        } else if path == "/oauth/token" {
            Some(Door::Token)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Door::PublicData => "public-data",
            Door::Receipt => "report-receipt",
            Door::ReportFiling => "report-filing",
            Door::Token => "token",
        }
    }

    /// Whistleblower doors: the caller's address is never written down.
    pub fn withholds_address(self) -> bool {
        matches!(self, Door::Receipt | Door::ReportFiling)
    }
}

type Limiter<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// One door's bucket and its quota, for the `RateLimit-Policy` header.
struct Bucket {
    limiter: Limiter<IpAddr>,
    per_minute: u32,
}

#[derive(Clone)]
pub struct RateLimits {
    clients: Arc<Limiter<String>>,
    doors: Arc<HashMap<Door, Bucket>>,
    /// Token endpoint defences: the hashing bound and the per-client lock.
    pub logins: Arc<LoginGuard>,
    /// The audit log's 429 summariser.
    pub flood: Arc<crate::audit::flood::Flood>,
}

fn quota(per_minute: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(per_minute.max(1)).expect("at least one"))
}

fn keyed<K: std::hash::Hash + Eq + Clone>(per_minute: u32) -> Limiter<K> {
    RateLimiter::keyed(quota(per_minute)).with_middleware::<StateInformationMiddleware>()
}

impl RateLimits {
    pub fn new(c: &RateLimitConfig) -> Self {
        let doors: HashMap<Door, Bucket> = [
            (Door::PublicData, c.per_address_per_minute),
            (Door::Receipt, c.receipts_per_address_per_minute),
            (Door::ReportFiling, c.filings_per_address_per_minute),
            (Door::Token, c.token_per_address_per_minute),
        ]
        .into_iter()
        .map(|(door, per_minute)| {
            let per_minute = per_minute.max(1);
            let limiter = keyed(per_minute);
            (
                door,
                Bucket {
                    limiter,
                    per_minute,
                },
            )
        })
        .collect();
        let limits = Self {
            clients: Arc::new(keyed(c.per_client_per_minute)),
            doors: Arc::new(doors),
            logins: Arc::new(LoginGuard::new(c)),
            flood: Arc::new(crate::audit::flood::Flood::new(Duration::from_secs(
                c.audit_summary_window_secs.max(1),
            ))),
        };
        // Forget idle keys now and then, so the tables stay small.
        let weak = (
            Arc::downgrade(&limits.clients),
            Arc::downgrade(&limits.doors),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                match (weak.0.upgrade(), weak.1.upgrade()) {
                    (Some(c), Some(d)) => {
                        c.retain_recent();
                        d.values().for_each(|b| b.limiter.retain_recent());
                    }
                    _ => return,
                }
            }
        });
        limits
    }

    pub fn check_client(&self, client_id: &str) -> Result<(), Error> {
        self.clients
            .check_key(&client_id.to_string())
            .map(|_| ())
            .map_err(|n| {
                Error::RateLimited(n.wait_time_from(DefaultClock::default().now()).as_secs() + 1)
            })
    }

    /// Takes one request from `door`'s bucket for `ip`: the headers to add, or the 429.
    fn check_door(
        &self,
        door: Door,
        ip: IpAddr,
    ) -> Result<[(&'static str, HeaderValue); 2], Error> {
        let bucket = &self.doors[&door];
        let q = bucket.per_minute;
        let policy = HeaderValue::from_str(&format!("\"{}\";q={q};w=60", door.as_str()))
            .expect("a door name is a valid header value");
        let snapshot = bucket.limiter.check_key(&ip).map_err(|n| {
            Error::RateLimited(n.wait_time_from(DefaultClock::default().now()).as_secs() + 1)
        })?;
        let left = snapshot.remaining_burst_capacity().min(q);
        // GCRA refills one request every 60/q seconds: full again after (q - left) of them.
        let reset = (u64::from(q - left) * 60).div_ceil(u64::from(q));
        let state = HeaderValue::from_str(&format!("\"{}\";r={left};t={reset}", door.as_str()))
            .expect("numbers are valid header values");
        Ok([("ratelimit-policy", policy), ("ratelimit", state)])
    }
}

/// The layer that charges each anonymous door's bucket before the handler runs. It sits inside
/// the audit layer, so a 429 is accounted for (individually or in a summary).
pub async fn limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(door) = Door::of(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return Error::Internal(anyhow::anyhow!("no peer address on an anonymous door"))
            .into_response();
    };
    match state.limits.check_door(door, peer.ip()) {
        Ok(headers) => {
            let mut res = next.run(req).await;
            for (name, value) in headers {
                res.headers_mut().insert(name, value);
            }
            res
        }
        Err(e) => {
            let mut res = e.into_response();
            res.headers_mut().insert(
                "ratelimit",
                HeaderValue::from_str(&format!("\"{}\";r=0", door.as_str()))
                    .expect("a door name is a valid header value"),
            );
            res
        }
    }
}

/// Why the token endpoint will not hash this attempt now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    /// Every hashing slot is busy: try again in a second.
    Busy,
    /// Too many failures for this client id: locked for this many more seconds.
    Locked(u64),
}

/// Failures of one client id.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first: std::time::Instant,
    locked_until: Option<std::time::Instant>,
}

/// Bound on the failure table: past it, expired entries go; unlocked new ids are not tracked
/// until there is room (locks already in force are kept).
const FAILURES_MAX: usize = 50_000;

/// The token endpoint's defences against a memory and CPU lever: at most `token_hash_concurrency`
/// argon2 hashes at once (each allocates 19 MiB), and a lock on a client id after repeated
/// failures. Unknown ids are counted like known ones, so a lock tells nothing about existence.
pub struct LoginGuard {
    hashing: Arc<tokio::sync::Semaphore>,
    wait: Duration,
    failures: Mutex<HashMap<String, Failures>>,
    max_failures: u32,
    lock: Duration,
}

impl LoginGuard {
    fn new(c: &RateLimitConfig) -> Self {
        Self {
            hashing: Arc::new(tokio::sync::Semaphore::new(c.token_hash_concurrency.max(1))),
            wait: Duration::from_millis(c.token_hash_wait_ms),
            failures: Mutex::default(),
            max_failures: c.token_failures_before_lock.max(1),
            lock: Duration::from_secs(c.token_lock_secs),
        }
    }

    /// A hashing slot for `client_id`, held until the permit drops (move it into the blocking
    /// task, so a cancelled request does not free the slot while its hash still runs).
    pub async fn admit(
        &self,
        client_id: &str,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, LoginRefusal> {
        if let Some(secs) = self.locked_for(client_id) {
            return Err(LoginRefusal::Locked(secs));
        }
        tokio::time::timeout(self.wait, self.hashing.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(LoginRefusal::Busy)
    }

    fn locked_for(&self, client_id: &str) -> Option<u64> {
        let now = std::time::Instant::now();
        let table = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let until = table.get(client_id)?.locked_until?;
        (until > now).then(|| (until - now).as_secs() + 1)
    }

    /// Notes a failed login; past the threshold within the lock period, the id is locked.
    pub fn failed(&self, client_id: &str) {
        let now = std::time::Instant::now();
        let mut table = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if table.len() >= FAILURES_MAX && !table.contains_key(client_id) {
            let lock = self.lock;
            table.retain(|_, f| {
                f.locked_until.is_some_and(|u| u > now) || now.duration_since(f.first) < lock
            });
            if table.len() >= FAILURES_MAX {
                return;
            }
        }
        let entry = table.entry(client_id.to_string()).or_insert(Failures {
            count: 0,
            first: now,
            locked_until: None,
        });
        if now.duration_since(entry.first) >= self.lock
            || entry.locked_until.is_some_and(|u| u <= now)
        {
            *entry = Failures {
                count: 0,
                first: now,
                locked_until: None,
            };
        }
        entry.count += 1;
        if entry.count >= self.max_failures {
            entry.locked_until = Some(now + self.lock);
        }
    }

    /// A successful login clears the id's failures.
    pub fn succeeded(&self, client_id: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(client_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(failures: u32, lock_secs: u64) -> LoginGuard {
        let c = RateLimitConfig {
            token_failures_before_lock: failures,
            token_lock_secs: lock_secs,
            token_hash_concurrency: 1,
            token_hash_wait_ms: 10,
            ..RateLimitConfig::default()
        };
        LoginGuard::new(&c)
    }

    #[tokio::test]
    async fn an_id_is_locked_after_its_failures_and_others_are_not() {
        let g = guard(3, 60);
        for _ in 0..2 {
            g.failed("cg_a");
        }
        assert!(g.admit("cg_a").await.is_ok());
        g.failed("cg_a");
        assert!(matches!(g.admit("cg_a").await, Err(LoginRefusal::Locked(s)) if s <= 61));
        assert!(g.admit("cg_b").await.is_ok());
    }

    #[tokio::test]
    async fn a_full_hashing_bound_answers_busy_instead_of_queueing() {
        let g = guard(3, 60);
        let held = g.admit("cg_a").await.unwrap();
        assert_eq!(g.admit("cg_b").await.unwrap_err(), LoginRefusal::Busy);
        drop(held);
        assert!(g.admit("cg_b").await.is_ok());
    }

    #[test]
    fn doors_are_told_apart() {
        assert_eq!(
            Door::of(&Method::GET, "/public/stores/power/lists/red"),
            Some(Door::PublicData)
        );
        assert_eq!(
            Door::of(&Method::POST, "/public/reports"),
            Some(Door::ReportFiling)
        );
        assert_eq!(
            Door::of(&Method::GET, "/public/reports/abc"),
            Some(Door::Receipt)
        );
        assert_eq!(Door::of(&Method::POST, "/oauth/token"), Some(Door::Token));
        assert_eq!(Door::of(&Method::GET, "/v1/stores/power/x"), None);
    }
}
