//! What the fault tests share: a PostgreSQL cluster of the test's own, a small tmpfs, and
//! parallel clients that keep every outcome (when it started and ended, its status, its audit
//! id) so that the checks afterwards can sort the outcomes by phase of the fault.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use credgate::storage::Db;

use crate::helpers::{dead_addr, skip_unless_ci};

/// A PostgreSQL cluster of the test's own: `initdb` in a temporary directory owned by the
/// `postgres` user (initdb and pg_ctl refuse to run as root), on a free loopback port, its
/// socket in that directory. Stopped (immediately) when dropped.
pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl PgCluster {
    /// `None` (after SKIPPED) where the binaries or the `postgres` user are missing, unless
    /// under `CI=true`, where that fails.
    pub fn create(test: &str) -> Option<Self> {
        let Some(bin) = pg_bin() else {
            skip_unless_ci(test, "PostgreSQL's initdb/pg_ctl are not installed");
            return None;
        };
        if !has_user("postgres") || !Path::new("/usr/sbin/runuser").exists() {
            skip_unless_ci(test, "it needs the `postgres` user and runuser");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let chown = Command::new("chown")
            .args(["-R", "postgres:", &dir.path().display().to_string()])
            .status()
            .unwrap();
        assert!(chown.success(), "chown of the cluster's directory");
        let cluster = Self {
            bin,
            port: dead_addr().port(),
            dir,
        };
        cluster.pg(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        cluster.start();
        Some(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs a PostgreSQL program as the `postgres` user; fails the test with its output.
    fn pg(&self, program: &str, args: &[&str]) {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the cluster and waits until it accepts connections (`-w`).
    pub fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.pg(
            "pg_ctl",
            &["-D", &self.data(), "-l", &log, "-o", &opts, "-w", "start"],
        );
    }

    /// `pg_ctl -m immediate stop`: the server processes quit at once, as in a crash (recovery
    /// runs at the next start); returns once they are gone.
    pub fn stop_immediately(&self) {
        self.pg(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The directory holding initdb and pg_ctl: on the PATH, or the newest Debian cluster's.
fn pg_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists());
    if on_path.is_some() {
        return on_path;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn has_user(name: &str) -> bool {
    Command::new("id")
        .arg(name)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A tmpfs of `size` mounted on a temporary directory: a real filesystem that fills. Unmounted
/// (lazily: the gateway in the test's process may still hold its files open) when dropped.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (after SKIPPED) where this process may not mount, unless under `CI=true`, where
    /// that fails: CI runs the tests as root, like this machine.
    pub fn mount(test: &str, size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self { dir }),
            other => {
                skip_unless_ci(test, &format!("it cannot mount a tmpfs: {other:?}"));
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the filesystem refuses (ENOSPC); returns its path.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0x55u8; 64 * 1024];
        loop {
            if let Err(e) = f.write_all(&chunk) {
                assert_eq!(e.raw_os_error(), Some(28), "ENOSPC expected: {e}");
                break;
            }
        }
        // The last pages too: smaller writes until not even one fits.
        while f.write_all(&chunk[..512]).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// One request's fate, as its client saw it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Which of the load's targets (gateway URLs) it went to.
    pub target: usize,
    pub what: &'static str,
    pub started: Instant,
    pub ended: Instant,
    /// `None`: no response at all (refused or reset connection), which releases nothing.
    pub status: Option<u16>,
    pub audit_id: Option<String>,
    pub problem_json: bool,
    /// The body of a refusal (a few hundred bytes at most), to look for internals in.
    pub refusal: String,
}

impl Outcome {
    pub fn took(&self) -> Duration {
        self.ended - self.started
    }

    /// A refusal in the contract's shape: on the token endpoint RFC 6749's body
    /// (`temporarily_unavailable`, whether its handler or the audit layer refused), everywhere
    /// else a problem+json.
    pub fn is_clean_refusal(&self) -> bool {
        if self.what == "token" {
            !self.problem_json
                && self
                    .refusal
                    .contains("\"error\":\"temporarily_unavailable\"")
        } else {
            self.problem_json
        }
    }
}

/// What each client does.
#[derive(Clone)]
pub enum Work {
    /// Entity reads through the gateway from `store` (bearer token, purpose), over these USCCs.
    Entities {
        store: &'static str,
        token: String,
        purpose: &'static str,
        usccs: Vec<String>,
    },
    /// Client-credentials token requests.
    Tokens { id: String, secret: String },
}

/// Parallel clients running until `stop`; every outcome is kept.
pub struct Load {
    pub outcomes: Arc<Mutex<Vec<Outcome>>>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    /// Each client's target and when its current request started (none between requests).
    current: Vec<(usize, Arc<Mutex<Option<Instant>>>)>,
}

impl Load {
    /// `clients` of each kind of work, spread round-robin over `targets`.
    pub fn start(targets: &[String], work: &[(Work, usize)]) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        let mut current = Vec::new();
        let mut n = 0;
        for (w, clients) in work {
            for _ in 0..*clients {
                let target = n % targets.len();
                let since = Arc::new(Mutex::new(None));
                current.push((target, since.clone()));
                let client = Client {
                    http: http.clone(),
                    url: targets[target].clone(),
                    target,
                    work: w.clone(),
                    outcomes: outcomes.clone(),
                    stop: stop.clone(),
                    current: since,
                };
                workers.push(tokio::spawn(client.run(n)));
                n += 1;
            }
        }
        Self {
            outcomes,
            stop,
            workers,
            current,
        }
    }

    /// Whether a request to `target` has been under way for at least `age` (the gateway has
    /// read it): what a test waits for before a signal that must find work in flight.
    pub fn in_flight(&self, target: usize, age: Duration) -> bool {
        self.current.iter().any(|(t, since)| {
            *t == target && since.lock().unwrap().is_some_and(|s| s.elapsed() >= age)
        })
    }

    /// How many responses released data (200) so far, counting only requests started after
    /// `since`.
    pub fn released_since(&self, since: Instant) -> usize {
        self.outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|o| o.status == Some(200) && o.started >= since)
            .count()
    }

    /// Stops the clients, waits for them, and returns every outcome.
    pub async fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers {
            w.await.expect("a client panicked");
        }
        self.outcomes.lock().unwrap().clone()
    }
}

struct Client {
    http: reqwest::Client,
    url: String,
    target: usize,
    work: Work,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    stop: Arc<AtomicBool>,
    current: Arc<Mutex<Option<Instant>>>,
}

impl Client {
    async fn run(self, seed: usize) {
        let mut i = seed * 7;
        while !self.stop.load(Ordering::SeqCst) {
            i += 1;
            let req = match &self.work {
                Work::Entities {
                    store,
                    token,
                    purpose,
                    usccs,
                } => self
                    .http
                    .get(format!(
                        "{}/v1/stores/{store}/entities/{}",
                        self.url,
                        usccs[i % usccs.len()]
                    ))
                    .bearer_auth(token)
                    .header("X-Purpose", *purpose),
                Work::Tokens { id, secret } => {
                    self.http.post(format!("{}/oauth/token", self.url)).form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", id.as_str()),
                        ("client_secret", secret.as_str()),
                    ])
                }
            };
            let what = match self.work {
                Work::Entities { .. } => "entity",
                Work::Tokens { .. } => "token",
            };
            let started = Instant::now();
            *self.current.lock().unwrap() = Some(started);
            let outcome = observe(req, what, self.target, started).await;
            *self.current.lock().unwrap() = None;
            let refused = outcome.status != Some(200);
            self.outcomes.lock().unwrap().push(outcome);
            if refused {
                // A client backs off a little after a refusal, as a real one would; without it
                // the fast 503s spin the two cores and starve the gateway's own timers.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn observe(
    req: reqwest::RequestBuilder,
    what: &'static str,
    target: usize,
    started: Instant,
) -> Outcome {
    let mut o = Outcome {
        target,
        what,
        started,
        ended: started,
        status: None,
        audit_id: None,
        problem_json: false,
        refusal: String::new(),
    };
    if let Ok(res) = req.send().await {
        o.status = Some(res.status().as_u16());
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        o.audit_id = header("x-audit-id");
        o.problem_json = header("content-type").as_deref() == Some("application/problem+json");
        let body = res.bytes().await.unwrap_or_default();
        if o.status != Some(200) {
            o.refusal = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        }
    }
    o.ended = Instant::now();
    o
}

/// The promises, whatever happened: no data without an audit id, every audit id a client
/// received is in the log, the chain verifies, and every refusal with a response is a
/// problem+json naming nothing of the gateway's internals. Returns the number of records.
pub async fn assert_nothing_unaudited(db: &Db, audit_key: &[u8], outcomes: &[Outcome]) -> usize {
    let unaudited: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.status == Some(200) && o.audit_id.is_none())
        .collect();
    assert!(
        unaudited.is_empty(),
        "{} responses released data without an audit id, e.g. {:?}",
        unaudited.len(),
        unaudited.first()
    );
    for o in outcomes
        .iter()
        .filter(|o| o.status.is_some_and(|s| s >= 500))
    {
        assert!(
            o.is_clean_refusal(),
            "a {:?} that is no problem: {o:?}",
            o.status
        );
        for internal in [
            "sqlx",
            "SQLITE",
            "disk is full",
            "circuit",
            "postgres",
            "connection",
        ] {
            assert!(
                !o.refusal.to_lowercase().contains(&internal.to_lowercase()),
                "internals in a refusal: {o:?}"
            );
        }
    }
    let ids: Vec<String> = outcomes.iter().filter_map(|o| o.audit_id.clone()).collect();
    let records = crate::helpers::assert_every_release_recorded(db, &ids).await;
    let report = credgate::audit::verify::verify(db, audit_key)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    records
}

/// How many outcomes of each kind had each status (`-` for no response), for the log.
pub fn tally(outcomes: &[Outcome]) -> String {
    let mut counts = std::collections::BTreeMap::<(&str, String), usize>::new();
    for o in outcomes {
        let status = o.status.map_or("-".to_string(), |s| s.to_string());
        *counts.entry((o.what, status)).or_default() += 1;
    }
    counts
        .iter()
        .map(|((what, status), n)| format!("{what} {status}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// p50, p99 and the maximum of these durations, in milliseconds (0 for none).
pub fn spread(mut took: Vec<Duration>) -> (u128, u128, u128) {
    if took.is_empty() {
        return (0, 0, 0);
    }
    took.sort();
    let at = |q: usize| took[(took.len() - 1) * q / 100].as_millis();
    (at(50), at(99), took[took.len() - 1].as_millis())
}

/// `GET /readyz`: its status and body.
pub async fn readyz(http: &reqwest::Client, url: &str) -> (u16, String) {
    match http.get(format!("{url}/readyz")).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}
