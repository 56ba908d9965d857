//! Rate limits from config, with governor's GCRA limiters keyed by client id (after
//! authentication) and by source address on each anonymous door. Each door has its own bucket,
//! so browsing the public tier never locks an address out of token issuance. A limited request
//! gets 429 with `Retry-After`; a flood of them is summarised in the audit log (see
//! `crate::audit::flood`).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::{HeaderValue, Method};
use serde::Deserialize;

use crate::auth::limiter::{KeyedLimiter, quota};

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
    /// Page sign-ins started or finished (`/signin/...`) per minute per address: each one
    /// writes a row and an audit record and may call the provider, and anyone may knock.
    #[serde(default = "d_signins")]
    pub signins_per_address_per_minute: u32,
    /// Password hashes (argon2id, 19 MiB each) computed at once by the token endpoint.
    #[serde(default = "d_hash_concurrency")]
    pub token_hash_concurrency: usize,
    /// How long a token request waits for a hashing slot before it is answered 503.
    #[serde(default = "d_hash_wait")]
    pub token_hash_wait_ms: u64,
    /// Failed logins of one client id from one source address (IPv6: its /64), within
    /// `token_lock_secs`, that lock that pair (not the id: ids are not secrets)...
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
fn d_signins() -> u32 {
    60
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
    SignIn,
}

impl Door {
    /// The door a request knocks on, if it is an anonymous one.
    /// The public pages share the doors of the API they stand for: a look-up or a list page
    /// is public data, filing on `/report` is a filing, and `/report/status` a receipt check.
    pub fn of(method: &Method, path: &str) -> Option<Door> {
        if path.starts_with("/public/stores/") || path == "/" || path.starts_with("/lists/") {
            Some(Door::PublicData)
        } else if (path == "/public/reports" || path == "/report") && method == Method::POST {
            Some(Door::ReportFiling)
        } else if path.starts_with("/public/reports/") || path == "/report/status" {
            Some(Door::Receipt)
        } else if path == "/oauth/token" {
            Some(Door::Token)
        } else if path.starts_with("/signin/") {
            Some(Door::SignIn)
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
            Door::SignIn => "signin",
        }
    }

    /// Whistleblower doors: the caller's address is never written down.
    pub fn withholds_address(self) -> bool {
        matches!(self, Door::Receipt | Door::ReportFiling)
    }
}

/// One door's bucket, with its constant headers built once at start.
struct Bucket {
    limiter: Arc<KeyedLimiter<IpAddr>>,
    per_minute: u32,
    /// `RateLimit-Policy` of every answer through this door.
    policy: HeaderValue,
}

impl Bucket {
    fn new(door: Door, per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        let name = door.as_str();
        let value = |s: String| HeaderValue::from_str(&s).expect("a door name is a header value");
        Self {
            limiter: KeyedLimiter::new(quota(per_minute, per_minute)),
            per_minute,
            policy: value(format!("\"{name}\";q={per_minute};w=60")),
        }
    }
}

#[derive(Clone)]
pub struct RateLimits {
    clients: Arc<KeyedLimiter<String>>,
    /// The clients' (and people's) quota per minute, also their burst.
    per_client: u32,
    doors: Arc<HashMap<Door, Bucket>>,
    /// Token endpoint defences: the hashing bound and the per-client lock.
    pub logins: Arc<LoginGuard>,
    /// The audit log's 429 summariser.
    pub flood: Arc<crate::audit::flood::Flood>,
}

impl RateLimits {
    pub fn new(c: &RateLimitConfig) -> Self {
        let doors: HashMap<Door, Bucket> = [
            (Door::PublicData, c.per_address_per_minute),
            (Door::Receipt, c.receipts_per_address_per_minute),
            (Door::ReportFiling, c.filings_per_address_per_minute),
            (Door::Token, c.token_per_address_per_minute),
            (Door::SignIn, c.signins_per_address_per_minute),
        ]
        .into_iter()
        .map(|(door, per_minute)| (door, Bucket::new(door, per_minute)))
        .collect();
        let per_client = c.per_client_per_minute;
        Self {
            clients: KeyedLimiter::new(quota(per_client, per_client)),
            per_client: per_client.max(1),
            doors: Arc::new(doors),
            logins: LoginGuard::start(c),
            flood: Arc::new(crate::audit::flood::Flood::new(Duration::from_secs(
                c.audit_summary_window_secs.max(1),
            ))),
        }
    }

    /// Takes one request from the client's bucket: `Err` holds the seconds to wait. The
    /// outcome is noted for the answer's `RateLimit` headers (see `charging`).
    pub fn check_client(&self, client_id: &str) -> Result<(), u64> {
        let q = self.per_client;
        let outcome = self.clients.check(&client_id.to_string());
        note(Charge::of("client", q, q, outcome));
        outcome.map(|_| ())
    }

    /// Takes one request from a staff person's bucket (as large as a client's, keyed apart
    /// from every client): `Err` holds the seconds to wait. Noted like a client's.
    pub fn check_person(&self, issuer: &str, person: &str) -> Result<(), u64> {
        let q = self.per_client;
        let outcome = self.clients.check(&format!("person:{issuer}:{person}"));
        note(Charge::of("person", q, q, outcome));
        outcome.map(|_| ())
    }

    /// Takes one request from `door`'s bucket for `ip`: the headers to add, or the seconds to
    /// wait. The bucket is the address's as `address_key` sees it, like the connection cap and
    /// the login locks: an IPv6 host rotating through its /64 gets one bucket, not 2^64.
    pub fn check_door(
        &self,
        door: Door,
        ip: IpAddr,
    ) -> Result<[(&'static str, HeaderValue); 2], u64> {
        let bucket = &self.doors[&door];
        let q = bucket.per_minute;
        let left = bucket.limiter.check(&address_key(ip))?.min(q);
        // GCRA refills one request every 60/q seconds: full again after (q - left) of them.
        let reset = (u64::from(q - left) * 60).div_ceil(u64::from(q));
        let state = HeaderValue::from_str(&format!("\"{}\";r={left};t={reset}", door.as_str()))
            .expect("numbers are valid header values");
        Ok([
            ("ratelimit-policy", bucket.policy.clone()),
            ("ratelimit", state),
        ])
    }

    /// The headers of `door`'s 429s (draft-ietf-httpapi-ratelimit-headers): the policy, and
    /// nothing left until `wait` seconds from now.
    pub fn exhausted(&self, door: Door, wait: u64) -> [(&'static str, HeaderValue); 2] {
        let bucket = &self.doors[&door];
        let state = HeaderValue::from_str(&format!("\"{}\";r=0;t={wait}", door.as_str()))
            .expect("numbers are valid header values");
        [
            ("ratelimit-policy", bucket.policy.clone()),
            ("ratelimit", state),
        ]
    }
}

/// What one request was charged to a known caller's bucket (a client's, a person's, a data
/// subject's), for the `RateLimit-Policy` and `RateLimit` headers of its answer
/// (draft-ietf-httpapi-ratelimit-headers -08 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    /// The policy's name: `client`, `person` or `subject`.
    pub name: &'static str,
    /// Requests per 60 s window.
    pub quota: u32,
    /// Requests left now (0 when refused).
    pub remaining: u32,
    /// Seconds until the bucket is full again, or on a refusal until a request is allowed
    /// (the 429's `Retry-After`).
    pub reset: u64,
}

impl Charge {
    /// The charge of a GCRA bucket of `per_minute` and `burst` whose check gave `outcome`
    /// (`KeyedLimiter::check`: the burst left, or the seconds to wait).
    pub fn of(name: &'static str, per_minute: u32, burst: u32, outcome: Result<u32, u64>) -> Self {
        let q = per_minute.max(1);
        let (remaining, reset) = match outcome {
            // GCRA refills one request every 60/q seconds: full again after (burst - left).
            Ok(left) => {
                let used = u64::from(burst.max(1).saturating_sub(left));
                (left.min(q), (used * 60).div_ceil(u64::from(q)))
            }
            Err(wait) => (0, wait),
        };
        Self {
            name,
            quota: q,
            remaining,
            reset,
        }
    }

    /// `RateLimit-Policy: "name";q=Q;w=60` and `RateLimit: "name";r=R;t=T`.
    pub fn headers(&self) -> [(&'static str, HeaderValue); 2] {
        let value = |s: String| HeaderValue::from_str(&s).expect("a name and numbers");
        let n = self.name;
        [
            (
                "ratelimit-policy",
                value(format!("\"{n}\";q={};w=60", self.quota)),
            ),
            (
                "ratelimit",
                value(format!("\"{n}\";r={};t={}", self.remaining, self.reset)),
            ),
        ]
    }
}

tokio::task_local! {
    /// The charge of the request being handled in this task, if the web layer asked for it.
    static CHARGED: std::cell::Cell<Option<Charge>>;
}

/// Runs `f` (a request's handling), returning its output and the last charge noted while it
/// ran. A task-local rather than a parameter: the charge is made deep in authentication, which
/// knows nothing of responses, and the web layer that writes the headers wraps every handler.
pub async fn charging<F: std::future::Future>(f: F) -> (F::Output, Option<Charge>) {
    CHARGED
        .scope(std::cell::Cell::new(None), async {
            let out = f.await;
            (out, CHARGED.with(|c| c.take()))
        })
        .await
}

/// Notes `charge` for the answer of the request in hand; outside `charging` (a CLI, a test
/// calling authentication directly) it goes nowhere.
pub fn note(charge: Charge) {
    let _ = CHARGED.try_with(|c| c.set(Some(charge)));
}

/// Why the token endpoint will not hash this attempt now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    /// Every hashing slot is busy: try again in a second.
    Busy,
    /// Too many failures for this client id from this address: locked for this many more
    /// seconds.
    Locked(u64),
}

/// Failures counted under one key, within `token_lock_secs` of the first.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first: Instant,
    locked_until: Option<Instant>,
}

impl Failures {
    /// Counts one more failure at `now` (a new period if the last one ran out): the new count.
    fn add(&mut self, now: Instant, period: Duration) -> u32 {
        if !self.live(now, period) {
            *self = Failures::new(now);
        }
        self.count += 1;
        self.count
    }

    fn new(now: Instant) -> Self {
        Self {
            count: 0,
            first: now,
            locked_until: None,
        }
    }

    /// Still counting, or still locking.
    fn live(&self, now: Instant, period: Duration) -> bool {
        match self.locked_until {
            Some(until) => until > now,
            None => now.duration_since(self.first) < period,
        }
    }
}

/// Bound on each failure table, whatever the sweeps: past it, new keys are not tracked until
/// there is room (locks already in force are kept).
const FAILURES_MAX: usize = 50_000;

/// How often the failure tables drop entries whose period has run out.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

type Digest = [u8; 32];

/// The source address as per-address counters see it: an IPv6 host holds a whole /64, so it
/// is counted by its /64 (an IPv4-mapped address as the IPv4 one).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & (!0u128 << 64)).into()),
        },
    }
}

/// What one login attempt's failures are counted under, as fixed-size digests: the table's
/// size does not depend on what callers send.
pub struct LoginKey {
    /// (client id, source address): the pair a lock applies to.
    pair: Digest,
    /// The client id alone: an alert signal, never a lock (client ids are not secrets).
    id: Digest,
}

impl LoginKey {
    pub fn new(client_id: &str, ip: IpAddr) -> Self {
        let addr = match address_key(ip) {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let digest = |parts: &[&[u8]]| {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            for part in parts {
                ctx.update(&(part.len() as u64).to_be_bytes());
                ctx.update(part);
            }
            let mut out = [0u8; 32];
            out.copy_from_slice(ctx.finish().as_ref());
            out
        };
        Self {
            pair: digest(&[client_id.as_bytes(), &addr]),
            id: digest(&[client_id.as_bytes()]),
        }
    }
}

#[derive(Default)]
struct Tables {
    pairs: HashMap<Digest, Failures>,
    ids: HashMap<Digest, Failures>,
}

/// Counts one failure under `key` in `table`, if it is tracked: the new count.
fn count(
    table: &mut HashMap<Digest, Failures>,
    key: Digest,
    now: Instant,
    period: Duration,
) -> Option<u32> {
    if table.len() >= FAILURES_MAX && !table.contains_key(&key) {
        table.retain(|_, f| f.live(now, period));
        if table.len() >= FAILURES_MAX {
            return None;
        }
    }
    Some(
        table
            .entry(key)
            .or_insert(Failures::new(now))
            .add(now, period),
    )
}

/// The token endpoint's defences against a memory and CPU lever: at most `token_hash_concurrency`
/// argon2 hashes at once (each allocates 19 MiB), and a lock after repeated failures of one
/// client id from one source address. Not of the id alone: ids are not secrets, and a lock on
/// the id would let anyone lock any institution out. Unknown ids are counted like known ones,
/// so a lock tells nothing about existence.
pub struct LoginGuard {
    hashing: Arc<tokio::sync::Semaphore>,
    wait: Duration,
    tables: Mutex<Tables>,
    max_failures: u32,
    lock: Duration,
}

impl LoginGuard {
    fn new(c: &RateLimitConfig) -> Self {
        Self {
            hashing: Arc::new(tokio::sync::Semaphore::new(c.token_hash_concurrency.max(1))),
            wait: Duration::from_millis(c.token_hash_wait_ms),
            tables: Mutex::default(),
            max_failures: c.token_failures_before_lock.max(1),
            lock: Duration::from_secs(c.token_lock_secs),
        }
    }

    /// The guard, with a task that drops expired entries for as long as it lives.
    fn start(c: &RateLimitConfig) -> Arc<Self> {
        let guard = Arc::new(Self::new(c));
        let weak = Arc::downgrade(&guard);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tick.tick().await;
                let Some(guard) = weak.upgrade() else { return };
                guard.sweep(Instant::now());
            }
        });
        guard
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sweep(&self, now: Instant) {
        let period = self.lock;
        let mut t = self.tables();
        t.pairs.retain(|_, f| f.live(now, period));
        t.ids.retain(|_, f| f.live(now, period));
    }

    /// Entries held in the failure tables.
    pub fn len(&self) -> usize {
        let t = self.tables();
        t.pairs.len() + t.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A hashing slot, held until the permit drops (move it into the blocking task, so a
    /// cancelled request does not free the slot while its hash still runs). `key` is `None`
    /// for an id credgate never issues: it waits for a slot like any other, but is not counted.
    pub async fn admit(
        &self,
        key: Option<&LoginKey>,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, LoginRefusal> {
        if let Some(secs) = key.and_then(|k| self.locked_for(k)) {
            return Err(LoginRefusal::Locked(secs));
        }
        tokio::time::timeout(self.wait, self.hashing.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(LoginRefusal::Busy)
    }

    fn locked_for(&self, key: &LoginKey) -> Option<u64> {
        let now = Instant::now();
        let until = self.tables().pairs.get(&key.pair)?.locked_until?;
        (until > now).then(|| (until - now).as_secs() + 1)
    }

    /// Notes a failed login; past the threshold within the lock period, the (id, address) pair
    /// is locked. True when the id's failures from all addresses reach the threshold (once a
    /// period): worth an alert, since someone may be trying to guess or to lock it out.
    pub fn failed(&self, key: &LoginKey) -> bool {
        let (now, period, max) = (Instant::now(), self.lock, self.max_failures);
        let mut t = self.tables();
        if let Some(n) = count(&mut t.pairs, key.pair, now, period)
            && n >= max
            && let Some(f) = t.pairs.get_mut(&key.pair)
        {
            f.locked_until = Some(now + period);
        }
        count(&mut t.ids, key.id, now, period) == Some(max)
    }

    /// A successful login clears its pair's failures (not the id's: that is the alert's count).
    pub fn succeeded(&self, key: &LoginKey) {
        self.tables().pairs.remove(&key.pair);
    }
}

#[cfg(test)]
mod tests {

    /// The public pages are charged to the buckets of the API doors they stand for.
    #[test]
    fn public_pages_share_the_doors_of_their_api() {
        use http::Method;
        let of = |m: &Method, p: &str| Door::of(m, p).map(Door::as_str);
        assert_eq!(of(&Method::GET, "/"), Some("public-data"));
        assert_eq!(of(&Method::GET, "/lists/black"), Some("public-data"));
        assert_eq!(of(&Method::POST, "/report"), Some("report-filing"));
        assert_eq!(of(&Method::GET, "/report"), None);
        assert_eq!(of(&Method::POST, "/report/status"), Some("report-receipt"));
        assert_eq!(of(&Method::GET, "/assets/site.css"), None);
        assert_eq!(of(&Method::GET, "/signin/staff"), Some("signin"));
        assert_eq!(of(&Method::GET, "/signin/subject/callback"), Some("signin"));
        assert_eq!(of(&Method::POST, "/signout"), None);
    }
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn a_door_counts_an_ipv6_host_by_its_64_and_a_mapped_address_as_ipv4() {
        let limits = RateLimits::new(&RateLimitConfig {
            per_address_per_minute: 2,
            ..RateLimitConfig::default()
        });
        let door = Door::PublicData;
        assert!(limits.check_door(door, ip("2001:db8:1:2::1")).is_ok());
        assert!(limits.check_door(door, ip("2001:db8:1:2::ffff:7")).is_ok());
        assert!(
            limits.check_door(door, ip("2001:db8:1:2:abcd::9")).is_err(),
            "a third address of the same /64 shares its bucket"
        );
        assert!(limits.check_door(door, ip("2001:db8:1:3::1")).is_ok());
        assert!(limits.check_door(door, ip("192.0.2.1")).is_ok());
        assert!(limits.check_door(door, ip("::ffff:192.0.2.1")).is_ok());
        assert!(
            limits.check_door(door, ip("192.0.2.1")).is_err(),
            "the mapped spelling is the same address"
        );
    }

    #[tokio::test]
    async fn a_pair_is_locked_after_its_failures_and_other_ids_and_addresses_are_not() {
        let g = guard(3, 60);
        let (a, b) = (
            LoginKey::new("cg_a", ip("10.0.0.1")),
            LoginKey::new("cg_b", ip("10.0.0.1")),
        );
        for _ in 0..2 {
            assert!(!g.failed(&a));
        }
        assert!(g.admit(Some(&a)).await.is_ok());
        assert!(g.failed(&a), "the id's third failure is the alert");
        assert!(matches!(g.admit(Some(&a)).await, Err(LoginRefusal::Locked(s)) if s <= 61));
        assert!(g.admit(Some(&b)).await.is_ok());
        // The same id from elsewhere is not locked: a known id cannot be locked out by others.
        let a2 = LoginKey::new("cg_a", ip("10.0.0.2"));
        assert!(g.admit(Some(&a2)).await.is_ok());
        assert!(!g.failed(&a2), "the alert fires once a period");
    }

    #[tokio::test]
    async fn an_ipv6_host_is_one_address_for_its_whole_64() {
        let g = guard(2, 60);
        g.failed(&LoginKey::new("cg_a", ip("2001:db8::1")));
        g.failed(&LoginKey::new("cg_a", ip("2001:db8::ffff:2")));
        let same64 = LoginKey::new("cg_a", ip("2001:db8::9"));
        assert!(g.admit(Some(&same64)).await.is_err());
        let other64 = LoginKey::new("cg_a", ip("2001:db8:0:1::1"));
        assert!(g.admit(Some(&other64)).await.is_ok());
        assert_eq!(address_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn expired_entries_are_swept_and_long_ids_take_no_more_room() {
        let g = guard(3, 60);
        g.failed(&LoginKey::new(&"x".repeat(60_000), ip("10.0.0.1")));
        assert_eq!(g.len(), 2);
        g.sweep(Instant::now());
        assert_eq!(g.len(), 2, "still within its period");
        g.sweep(Instant::now() + Duration::from_secs(61));
        assert!(g.is_empty());
    }

    #[tokio::test]
    async fn a_full_hashing_bound_answers_busy_instead_of_queueing() {
        let g = guard(3, 60);
        let held = g.admit(None).await.unwrap();
        assert_eq!(g.admit(None).await.unwrap_err(), LoginRefusal::Busy);
        drop(held);
        assert!(g.admit(None).await.is_ok());
    }

    #[tokio::test]
    async fn a_charge_is_noted_only_inside_charging_and_says_its_state() {
        let c = Charge::of("client", 60, 60, Ok(57));
        assert_eq!((c.remaining, c.reset), (57, 3));
        let [(_, policy), (_, state)] = c.headers();
        assert_eq!(policy, "\"client\";q=60;w=60");
        assert_eq!(state, "\"client\";r=57;t=3");
        // A burst above the rate never says more is left than the policy's quota.
        let c = Charge::of("subject", 10, 30, Ok(30));
        assert_eq!((c.quota, c.remaining, c.reset), (10, 10, 0));
        let refused = Charge::of("person", 2, 2, Err(7));
        assert_eq!((refused.remaining, refused.reset), (0, 7));
        note(c);
        let ((), seen) = charging(async { note(refused) }).await;
        assert_eq!(seen, Some(refused));
        let ((), none) = charging(async {}).await;
        assert_eq!(none, None);
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
