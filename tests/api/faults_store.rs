//! Stores that misbehave (issue 19), against a real `credgate serve` process: a store that
//! refuses connections, closes or resets mid-answer, answers garbage, a 1 MiB header or 2,000
//! headers, trickles its head or body a byte a second, sends more than the cap (declared or
//! chunked), invalid or absurdly nested JSON, the wrong or no content type, a redirect, or a 500
//! full of its internals. Each is a raw tokio TCP server on loopback, so it can do what no HTTP
//! framework would let it do.
//!
//! `proxy.rs` has one request each for a dead store, a slow one, an oversized answer and a 500
//! with a secret (in-process). This goes further: sixteen clients at once per fault while
//! well-behaved clients keep going, every answer's status, audit record (decision, status,
//! rule, store) and headers checked, the chain verified, and the process's RSS measured
//! after a warm-up and after each of two rounds of some 4,000 such requests.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use credgate::storage::Db;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::helpers::{FakeStore, GatewayProcess, dead_addr, fake_router, serve};

/// What the hostile store puts in its answers and the client must never see, in any case.
const SECRETS: &[&str] = &[
    "db-7.corp.internal",
    "10.20.30.40",
    "hunter2",
    "traceback",
    "select * from",
    "/opt/store",
    "nullpointerexception",
    "session=internal",
    "redirect-target",
];

const INTERNALS: &str = "Traceback (most recent call last):\n  File \"/opt/store/app.py\", line 42\n\
     psycopg2.OperationalError: could not connect to db-7.corp.internal (10.20.30.40)\n\
     SQL: SELECT * FROM entities WHERE password = 'hunter2'\n\
     java.lang.NullPointerException at Store.java:7\n";

const JSON: &str = r#"{"uscc":"91350100M000100Y43","name":"x"}"#;

/// One misbehaviour: the gateway path that meets it and the answer DESIGN.md documents.
struct Case {
    path: &'static str,
    status: u16,
    /// Requests per client in the measured round: the slow cases cost the store's deadline
    /// (1.5 s) each, so they get fewer.
    per_client: usize,
}

const fn case(path: &'static str, status: u16, per_client: usize) -> Case {
    Case {
        path,
        status,
        per_client,
    }
}

const CASES: &[Case] = &[
    case("/v1/stores/refusing/x", 502, 13),
    case("/v1/stores/hostile/close", 502, 13),
    case("/v1/stores/hostile/reset-head", 502, 13),
    case("/v1/stores/hostile/reset-body", 502, 13),
    case("/v1/stores/hostile/garbage", 502, 13),
    case("/v1/stores/hostile/huge-head", 502, 13),
    case("/v1/stores/hostile/many-headers", 502, 13),
    case("/v1/stores/hostile/trickle-head", 504, 2),
    case("/v1/stores/hostile/trickle-body", 504, 2),
    case("/v1/stores/hostile/over-cap-declared", 502, 13),
    case("/v1/stores/hostile/over-cap-chunked", 502, 13),
    case("/v1/stores/hostile/bad-json", 502, 13),
    case("/v1/stores/hostile/bad-utf8", 502, 13),
    case("/v1/stores/hostile/deep-json", 502, 13),
    case("/v1/stores/hostile/wrong-type", 502, 13),
    case("/v1/stores/hostile/no-type", 502, 13),
    case("/v1/stores/hostile/redirect-301", 502, 13),
    case("/v1/stores/hostile/redirect-302", 502, 13),
    case("/v1/stores/hostile/redirect-307", 502, 13),
    case("/v1/stores/hostile/redirect-308", 502, 13),
    case("/v1/stores/hostile/internals", 502, 13),
];

const CLIENTS: usize = 16;

/// What the hostile store's profile section (`/entities/{uscc}`) answers, in turn.
const IN_TURN: &[&str] = &[
    "/internals",
    "/reset-body",
    "/over-cap-declared",
    "/redirect-302",
    "/wrong-type",
    "/bad-json",
    "/trickle-body",
];
static ROTATION: AtomicUsize = AtomicUsize::new(0);

/// The hostile store: a raw TCP server. Requests it answers completely keep the connection
/// (the gateway's pool reuses it); the others end it, by FIN or by RST. `followed` counts
/// requests to the redirects' target: the gateway must never go there.
async fn hostile_store(followed: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let me = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let followed = followed.clone();
            tokio::spawn(async move {
                let mut sock = sock;
                while let Ok(Some(path)) = read_head(&mut sock).await {
                    match answer(&mut sock, &path, me, &followed).await {
                        Ok(true) => continue,
                        _ => break,
                    }
                }
            });
        }
    });
    me
}

/// The request target of the next request head; `None` when the peer closed. The gateway
/// sends GETs without bodies and never pipelines, so a head is all there is.
async fn read_head(sock: &mut TcpStream) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 32 * 1024 {
            return Err(io::ErrorKind::InvalidData.into());
        }
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    Ok(Some(head.split(' ').nth(1).unwrap_or("/").to_string()))
}

/// Answers one request as its path says; `Ok(true)` when the connection may be reused. Longer
/// than a function should be: it is the table of misbehaviours, one arm each, read best whole.
async fn answer(
    sock: &mut TcpStream,
    path: &str,
    me: SocketAddr,
    followed: &AtomicUsize,
) -> io::Result<bool> {
    let json = "application/json";
    match path {
        "/close" => Ok(false),
        "/reset-head" => {
            sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Ty").await?;
            reset(sock).await
        }
        "/reset-body" => {
            let head =
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n";
            sock.write_all(format!("{head}{}", &JSON[..20]).as_bytes())
                .await?;
            reset(sock).await
        }
        "/garbage" => {
            sock.write_all(b"SSH-2.0-OpenSSH_8.9 db-7.corp.internal\r\n\r\n")
                .await?;
            Ok(false)
        }
        "/huge-head" => {
            let pad = "a".repeat(1024 * 1024);
            let head = format!("HTTP/1.1 200 OK\r\nX-Pad: {pad}\r\nContent-Length: 2\r\n\r\n{{}}");
            sock.write_all(head.as_bytes()).await?;
            Ok(false)
        }
        "/many-headers" => {
            let many: String = (0..2000).map(|i| format!("X-H{i}: {i}\r\n")).collect();
            let head = format!(
                "HTTP/1.1 200 OK\r\n{many}Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
            );
            sock.write_all(head.as_bytes()).await?;
            Ok(false)
        }
        "/trickle-head" => {
            trickle(
                sock,
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            )
            .await
        }
        "/trickle-body" => {
            let head =
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 120\r\n\r\n";
            sock.write_all(head.as_bytes()).await?;
            trickle(sock, format!("{JSON:<120}").as_bytes()).await
        }
        "/over-cap-declared" => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                big_json_len()
            );
            sock.write_all(head.as_bytes()).await?;
            big_json(sock, false).await
        }
        "/over-cap-chunked" => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
            sock.write_all(head.as_bytes()).await?;
            big_json(sock, true).await
        }
        "/bad-json" => complete(sock, 200, Some(json), r#"{"uscc": "9135"#, "").await,
        "/bad-utf8" => {
            // Well-formed JSON but for one byte that is not UTF-8, inside a string.
            let body: &[u8] = b"{\"uscc\": \"91350100M000100Y4\xff\"}";
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            sock.write_all(&[head.as_bytes(), body].concat()).await?;
            Ok(false)
        }
        "/deep-json" => {
            let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
            complete(sock, 200, Some(json), &deep, "").await
        }
        "/wrong-type" => complete(sock, 200, Some("text/html"), JSON, "").await,
        "/no-type" => complete(sock, 200, None, JSON, "").await,
        p if p.starts_with("/entities/") => {
            // A profile section: each request meets the next misbehaviour in turn.
            let turn = ROTATION.fetch_add(1, Ordering::SeqCst) % IN_TURN.len();
            Box::pin(answer(sock, IN_TURN[turn], me, followed)).await
        }
        "/redirect-target" => {
            followed.fetch_add(1, Ordering::SeqCst);
            complete(sock, 200, Some(json), JSON, "").await
        }
        p if p.starts_with("/redirect-") => {
            let code: u16 = p["/redirect-".len()..].parse().unwrap_or(302);
            let location = format!("Location: http://{me}/redirect-target\r\n");
            complete(sock, code, Some(json), JSON, &location).await
        }
        "/internals" => {
            let extra = "Server: db-7.corp.internal\r\nX-Backend: 10.20.30.40\r\n\
                         Set-Cookie: session=internal\r\nX-Debug: SELECT * FROM entities\r\n";
            complete(sock, 500, Some("text/plain"), INTERNALS, extra).await
        }
        _ => complete(sock, 404, Some("text/plain"), "no", "").await,
    }
}

async fn complete(
    sock: &mut TcpStream,
    status: u16,
    content_type: Option<&str>,
    body: &str,
    extra: &str,
) -> io::Result<bool> {
    let ct = content_type.map_or(String::new(), |t| format!("Content-Type: {t}\r\n"));
    let head = format!(
        "HTTP/1.1 {status} Whatever\r\n{ct}{extra}Content-Length: {}\r\n\r\n",
        body.len()
    );
    sock.write_all(format!("{head}{body}").as_bytes()).await?;
    Ok(true)
}

/// Ends the connection with an RST (linger 0), not a FIN: a store that crashed mid-answer.
async fn reset(sock: &mut TcpStream) -> io::Result<bool> {
    sock.flush().await?;
    sock.set_zero_linger()?;
    Ok(false)
}

/// One byte a second: the gateway's deadline for the store must end it, not the store.
async fn trickle(sock: &mut TcpStream, bytes: &[u8]) -> io::Result<bool> {
    for b in bytes {
        sock.write_all(std::slice::from_ref(b)).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(false)
}

/// The over-cap answer: valid JSON (an entity whose name is 8 MiB of `x`), so that a gateway
/// without its cap would release it as a 200 rather than fail on it by chance.
const BIG_BLOCKS: usize = 512;
const BIG_PREFIX: &str = r#"{"uscc":"91350100M000100Y43","name":""#;
const BIG_SUFFIX: &str = r#""}"#;

fn big_json_len() -> usize {
    BIG_PREFIX.len() + BIG_BLOCKS * 16 * 1024 + BIG_SUFFIX.len()
}

/// Writes the over-cap answer until done or until the gateway stops reading and the write
/// fails (`chunked`: one chunk per piece, then the last chunk).
async fn big_json(sock: &mut TcpStream, chunked: bool) -> io::Result<bool> {
    let block = vec![b'x'; 16 * 1024];
    let pieces = std::iter::once(BIG_PREFIX.as_bytes())
        .chain(std::iter::repeat_n(&block[..], BIG_BLOCKS))
        .chain(std::iter::once(BIG_SUFFIX.as_bytes()));
    for piece in pieces {
        if chunked {
            sock.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .await?;
        }
        sock.write_all(piece).await?;
        if chunked {
            sock.write_all(b"\r\n").await?;
        }
    }
    if chunked {
        sock.write_all(b"0\r\n\r\n").await?;
    }
    Ok(true)
}

/// The stores of this test, appended to the gateway's config file: the hostile one and one
/// whose address refuses connections.
fn hostile_config(hostile: SocketAddr) -> String {
    let mut text = format!(
        "\n[[stores]]\nname = \"hostile\"\nupstream = \"http://{hostile}\"\n\
         response_timeout_ms = 1500\nmax_response_bytes = 65536\n"
    );
    text += "\n[[stores.routes]]\nmethod = \"GET\"\npath = \"/entities/{uscc}\"\n\
             dataset = \"entity\"\nsubject_path = \"uscc\"\nsubject_type = \"legal\"\n\
             profile = true\n";
    for c in CASES.iter().filter(|c| c.path.contains("/hostile/")) {
        let path = c.path.trim_start_matches("/v1/stores/hostile");
        text += &format!(
            "\n[[stores.routes]]\nmethod = \"GET\"\npath = \"{path}\"\ndataset = \"entity\"\n"
        );
    }
    text += &format!(
        "\n[[stores]]\nname = \"refusing\"\nupstream = \"http://{}\"\nconnect_timeout_ms = 500\n\
         \n[[stores.routes]]\nmethod = \"GET\"\npath = \"/x\"\ndataset = \"entity\"\n",
        dead_addr()
    );
    text
}

/// The process's resident memory by kind, in KiB. A leak is anonymous memory (heap, stacks);
/// file-backed pages are the binary's code, paged in (64 KiB at a time) as paths run for the
/// first time, and SQLite's shared WAL index: they grow with what has run, not with requests.
#[derive(Clone, Copy)]
struct Rss {
    anon: u64,
    file: u64,
    shmem: u64,
}

impl std::fmt::Debug for Rss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, fi, sh) = (self.anon, self.file, self.shmem);
        write!(f, "anon {a} file {fi} shmem {sh}")
    }
}

fn rss_kib(pid: u32) -> Rss {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    Rss {
        anon: field("RssAnon:"),
        file: field("RssFile:"),
        shmem: field("RssShmem:"),
    }
}

/// A registered regulator and its access token.
async fn regulator_token(http: &reqwest::Client, url: &str, db: &Db, n: usize) -> String {
    let (client, secret) =
        credgate::cli::add_client(db, &format!("Regulator {n}"), "reg", "regulator", None)
            .await
            .unwrap();
    crate::helpers::access_token(http, url, client.id.as_str(), secret.as_str()).await
}

/// One request into a fault: its status, problem body and headers checked here (nothing of the
/// store's in them); returns its audit id.
async fn one(http: &reqwest::Client, url: &str, token: &str, c: &Case) -> String {
    let started = Instant::now();
    let res = http
        .get(format!("{url}{}", c.path))
        .bearer_auth(token)
        .header("X-Purpose", "supervision")
        .send()
        .await
        .unwrap();
    let what = c.path;
    assert_eq!(res.status().as_u16(), c.status, "{what}");
    // The store's deadline is 1.5 s and a trickle would last over a minute: 20 s is generous
    // for a loaded two-core box and still tells "cut off at the deadline" from "waited it out".
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{what}: answered after {:?}",
        started.elapsed()
    );
    let headers = res.headers().clone();
    assert_eq!(
        headers["content-type"], "application/problem+json",
        "{what}"
    );
    for name in ["location", "set-cookie", "x-backend", "x-debug"] {
        assert!(!headers.contains_key(name), "{what}: the store's {name}");
    }
    let mut seen = String::new();
    for (k, v) in &headers {
        seen += &format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes()));
    }
    let body = res.text().await.unwrap();
    seen += &body;
    let lower = seen.to_lowercase();
    for s in SECRETS {
        assert!(
            !lower.contains(s),
            "{what}: `{s}` reached the client:\n{seen}"
        );
    }
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["status"], c.status, "{what}");
    headers
        .get("x-audit-id")
        .unwrap_or_else(|| panic!("{what}: answered without X-Audit-Id"))
        .to_str()
        .unwrap()
        .to_string()
}

/// `CLIENTS` clients at once, `per_client` requests each, into one fault: the audit ids with
/// the case's index.
async fn round(
    http: &reqwest::Client,
    url: &str,
    tokens: &[String],
    per_client: impl Fn(&Case) -> usize,
) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, c) in CASES.iter().enumerate() {
        let n = per_client(c);
        let workers: Vec<_> = tokens
            .iter()
            .map(|t| {
                let (http, url, t) = (http.clone(), url.to_string(), t.clone());
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for _ in 0..n {
                        ids.push(one(&http, &url, &t, &CASES[i]).await);
                    }
                    ids
                })
            })
            .collect();
        for w in workers {
            out.extend(w.await.unwrap().into_iter().map(|id| (i, id)));
        }
    }
    out
}

/// Two well-behaved clients asking a healthy store all along, 50 requests a second between
/// them: every 200 they get must carry an audit id (the list they return), and nothing else
/// may come back.
fn steady_clients(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    let usccs: Vec<String> = credgate::sample_store::data::generate(42, 60)
        .entities
        .iter()
        .map(|e| e["uscc"].as_str().unwrap().to_string())
        .collect();
    (0..2)
        .map(|w| {
            let (http, url, token, stop, usccs) = (
                http.clone(),
                url.to_string(),
                token.to_string(),
                stop.clone(),
                usccs.clone(),
            );
            tokio::spawn(async move {
                let mut released = Vec::new();
                let mut i = w;
                while !stop.load(Ordering::SeqCst) {
                    let res = http
                        .get(format!("{url}/v1/stores/power/entities/{}", usccs[i % 60]))
                        .bearer_auth(&token)
                        .header("X-Purpose", "supervision")
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 200, "a healthy store's answer");
                    let id = res
                        .headers()
                        .get("x-audit-id")
                        .expect("no 200 without X-Audit-Id")
                        .to_str()
                        .unwrap()
                        .to_string();
                    res.bytes().await.unwrap();
                    released.push(id);
                    i += 2;
                    // Paced: the two share one client, whose quota is 6,000 a minute with as
                    // large a burst; unpaced on an idle host they passed it within the two
                    // measured rounds (429).
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
                released
            })
        })
        .collect()
}

/// A `credgate serve` process with the hostile and the refusing store added to its config.
async fn start_gateway(hostile: SocketAddr) -> GatewayProcess {
    let sample = crate::helpers::sample_store_with(60).await;
    let fake = serve(fake_router(FakeStore::default())).await;
    let mut gateway = GatewayProcess::prepare(sample, fake);
    if let Some(url) = crate::helpers::test_postgres_url().await {
        gateway.on_storage(&url);
    }
    let mut text = std::fs::read_to_string(&gateway.cfg).unwrap();
    text += &hostile_config(hostile);
    std::fs::write(&gateway.cfg, text).unwrap();
    gateway.start("error", None).await;
    gateway
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_stores_get_their_status_audited_leak_nothing_and_memory_stays_flat() {
    let followed = Arc::new(AtomicUsize::new(0));
    let gateway = start_gateway(hostile_store(followed.clone()).await).await;
    let url = gateway.url.clone();
    let db = Db::open(&gateway.config.storage_url).await.unwrap();
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut tokens = Vec::new();
    for n in 0..=CLIENTS {
        tokens.push(regulator_token(&http, &url, &db, n).await);
    }
    let steady_token = tokens.pop().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let steady = steady_clients(&http, &url, &steady_token, &stop);

    // A first round warms the pools, the allocator and the caches; memory is measured after
    // it, after a full round (every path has now run under this load), and after a second one.
    let mut seen = round(&http, &url, &tokens, |_| 1).await;
    let pid = gateway.pid();
    let mut rss = vec![rss_kib(pid)];
    let started = Instant::now();
    let mut profiles_seen = 0;
    for _ in 0..2 {
        seen.extend(round(&http, &url, &tokens, |c| c.per_client).await);
        profiles_seen += profiles(&http, &url, &tokens, &db).await;
        rss.push(rss_kib(pid));
    }
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut released = Vec::new();
    for s in steady {
        released.extend(s.await.unwrap());
    }

    let per_case = check_records(&db, &gateway, &seen).await;
    crate::helpers::assert_every_release_recorded(&db, &released).await;
    assert!(
        !released.is_empty(),
        "the healthy store was served throughout"
    );
    assert_eq!(
        followed.load(Ordering::SeqCst),
        0,
        "a redirect was followed"
    );

    eprintln!("misbehaving stores: requests per case (status), {CLIENTS} clients at once");
    for (c, n) in CASES.iter().zip(&per_case) {
        eprintln!("  {:<40} {:>4} x {}", c.path, n, c.status);
    }
    eprintln!(
        "  {profiles_seen} profiles with a misbehaving section (200, the failure listed)\n  \
         {} faulty requests and the profiles in {took:?} after warm-up, {} healthy 200s \
         alongside; resident KiB after warm-up, one round and two: {rss:?}",
        seen.len(),
        released.len()
    );
    assert_no_leak(&rss);
}

/// A leak grows with requests: the second round, on paths that have all run, may not add more
/// than 16 MiB of anonymous memory (a leak of 4 KiB a request would add 17). The first round
/// also holds the allocators and caches settling under this load (the storage pool opening
/// its connections, each with SQLite's schema, statements and pages; hyper's pools and their
/// buffers): bounded only against a gross leak here. Once in CI, with nothing else running,
/// VmRSS grew by over 48 MiB across the first round, a growth no local run showed (26 MiB of
/// anonymous memory in all; the heap measured with heaptrack never above 23 MiB, argon2's
/// 19 MiB at token issue included). File-backed pages are not counted (the note in `Rss`).
fn assert_no_leak(rss: &[Rss]) {
    let [warm, first, second] = rss else {
        panic!("three measurements")
    };
    assert!(
        second.anon <= first.anon + 16 * 1024,
        "anonymous memory grew in the second round: {rss:?}"
    );
    assert!(
        first.anon <= warm.anon + 96 * 1024,
        "anonymous memory grew in the first round: {rss:?}"
    );
}

/// Every answer's record: committed, an error with the answer's status, the rule of its
/// status, the store it was for; and the whole log verifies. Returns the count per case.
async fn check_records(db: &Db, gateway: &GatewayProcess, seen: &[(usize, String)]) -> Vec<usize> {
    let mut per_case = vec![0usize; CASES.len()];
    let records: std::collections::HashMap<String, credgate::audit::AuditRecord> =
        credgate::audit::store::page_after(db, 0, 1_000_000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
    for (i, id) in seen {
        let c = &CASES[*i];
        let r = records
            .get(id)
            .unwrap_or_else(|| panic!("{}: audit id {id} not in the log", c.path));
        let rule = if c.status == 504 {
            "upstream-timeout"
        } else {
            "upstream-failed"
        };
        let store = c.path.split('/').nth(3).unwrap();
        assert_eq!(
            (
                r.decision.as_str(),
                r.status,
                r.rule.as_deref(),
                r.store.as_deref()
            ),
            ("error", c.status, Some(rule), Some(store)),
            "{}",
            c.path
        );
        per_case[*i] += 1;
    }
    let key = credgate::auth::keyring::Keyring::open(&gateway.config.key_dir)
        .unwrap()
        .gateway_keys(db)
        .await
        .unwrap()
        .audit_signing;
    let report = credgate::audit::verify::verify(db, &key.public)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    per_case
}

/// A caller who hangs up while the gateway waits on a slow store: the store was asked, so the
/// attempt is recorded all the same (before the fix: five store hits, no record), as a 499
/// `client-closed-request` (the store request is cancelled with the caller, so hanging up frees
/// what it held; running each request on to the store's deadline let one client keep hundreds
/// in flight past the connection cap: second review, M2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_hangs_up_on_a_slow_store_still_leaves_a_record() {
    let app = crate::helpers::TestApp::spawn().await;
    let (client, token) = app.token("regulator").await;
    let hits = app.fake.hits();
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    for _ in 0..5 {
        let gone = impatient
            .get(format!("{}/v1/stores/fake/slow", app.url))
            .bearer_auth(&token)
            .header("X-Purpose", "supervision")
            .send()
            .await;
        assert!(gone.is_err(), "the caller left before the answer");
    }
    assert_eq!(app.fake.hits() - hits, 5, "the store was asked each time");
    let slow = || async {
        credgate::audit::store::page_after(&app.state.db, 0, 100_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| {
                r.client_id.as_deref() == Some(client.as_str()) && r.path.ends_with("/slow")
            })
            .collect::<Vec<_>>()
    };
    // Recorded when the caller's request is dropped; the bound only covers a loaded machine.
    crate::helpers::wait_until(
        "each access is recorded",
        Duration::from_secs(30),
        || async { slow().await.len() == 5 },
    )
    .await;
    for r in slow().await {
        assert_eq!(
            (r.decision.as_str(), r.status, r.rule.as_deref()),
            ("error", 499, Some("client-closed-request"))
        );
    }
}

/// The one-stop profile with the hostile store as one of its sections: `CLIENTS` clients at
/// once, seven profiles each (one per misbehaviour in `IN_TURN`). Each is a 200 with the healthy
/// store's section, the hostile one listed as failed with its status, nothing of the store's in
/// it, and a record that says which section failed how. Returns how many.
async fn profiles(http: &reqwest::Client, url: &str, tokens: &[String], db: &Db) -> usize {
    let uscc = credgate::sample_store::data::generate(42, 60).entities[4]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let workers: Vec<_> = tokens
        .iter()
        .map(|t| {
            let (http, url, t, uscc) = (http.clone(), url.to_string(), t.clone(), uscc.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..IN_TURN.len() {
                    seen.push(one_profile(&http, &url, &t, &uscc).await);
                }
                seen
            })
        })
        .collect();
    let mut seen = Vec::new();
    for w in workers {
        seen.extend(w.await.unwrap());
    }
    let records: std::collections::HashMap<String, credgate::audit::AuditRecord> =
        credgate::audit::store::page_after(db, 0, 1_000_000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
    for (id, status) in &seen {
        let r = records.get(id).expect("the profile's record is committed");
        let dataset = r.dataset.as_deref().unwrap_or_default();
        assert_eq!((r.decision.as_str(), r.status), ("allow", 200), "{dataset}");
        assert!(
            dataset.contains(&format!("hostile.entity=error:{status}")),
            "{dataset}"
        );
    }
    seen.len()
}

/// One profile: checked here; its audit id and the hostile section's status.
async fn one_profile(http: &reqwest::Client, url: &str, token: &str, uscc: &str) -> (String, u64) {
    let res = http
        .get(format!("{url}/v1/subjects/{uscc}/profile"))
        .bearer_auth(token)
        .header("X-Purpose", "supervision")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "a profile with a failed section");
    let id = res.headers()["x-audit-id"].to_str().unwrap().to_string();
    let mut seen = String::new();
    for (k, v) in res.headers() {
        seen += &format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes()));
    }
    let body = res.text().await.unwrap();
    seen += &body;
    let lower = seen.to_lowercase();
    for s in SECRETS {
        assert!(
            !lower.contains(s),
            "profile: `{s}` reached the client:\n{seen}"
        );
    }
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(body["sections"]["power.entity"].is_object(), "{body}");
    let failed = body["failed"].as_array().unwrap();
    let hostile = failed
        .iter()
        .find(|f| f["section"] == "hostile.entity")
        .unwrap_or_else(|| panic!("the hostile section is listed as failed: {body}"));
    let status = hostile["status"].as_u64().unwrap();
    assert!(matches!(status, 502 | 504), "{body}");
    (id, status)
}
