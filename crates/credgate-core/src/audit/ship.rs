//! Audit shipping: the log leaves the machine. Each process ships its OWN chain (the records
//! and signed checkpoints of its `[audit] writer_id`), in chain order, to an external syslog
//! receiver (`[audit.ship]`): RFC 5424 messages in octet-counted framing (`LEN SP SYSLOG-MSG`,
//! RFC 6587 section 3.4.1), over TCP or over TLS (RFC 5425). An operator who keeps the sink's
//! copy out of reach of the database's administrators can then find a tail cut from the
//! database (`credgate audit verify --sink-file`): the sink holds signed checkpoints the log
//! no longer holds.
//!
//! Off the request path, always: the shipper reads rows the writer has already committed, in
//! a task of its own, woken by the writer's `committed` broadcast (and a timer, for the idle
//! tick's checkpoints). A sink that is down, slow or refusing never delays or fails a
//! request; it only makes the lag grow (`credgate_audit_ship_lag_records`,
//! `credgate_audit_ship_sink_up`, and `/readyz`'s `audit_shipping`). `/readyz` stays ready:
//! every record is durable in the database before its answer leaves (the promise of the audit
//! log), so a collector outage is an operator's alarm, not a reason to stop serving; taking
//! the gateway out of service would hand anyone able to disturb the collector an outage.
//!
//! Delivery is at least once, in order, per chain. Syslog over TCP has no acknowledgement, so
//! a message counts as shipped once it is written and flushed to the socket; then the place
//! is saved in `audit_shipping` (per writer and sink, at most every `SAVE_EVERY`, and once
//! caught up) and a restart resumes after it. A process stopped or killed between the flush
//! and the save ships those messages again (the receiver
//! sees duplicates, which `witnesses_in` tolerates); a receiver that dies with messages in
//! its socket buffer loses them, which only RELP-style acknowledgements could prevent (the
//! peer's close is watched between rounds to keep that window small).
//!
//! What is shipped, and why that is safe: each record exactly as the log stores it (every
//! field, so the sink's copy can be verified against its hash), and each checkpoint (place,
//! hash, time, key id, signature). Records never hold a response body, a client secret, a
//! token, a report's receipt, or anything of a whistleblower's (the audit layer withholds the
//! address and the receipt; `DESIGN.md`, "Audit record"), so nothing leaves that the log's
//! own readers could not see. They do hold subject ids, organisations and client addresses:
//! the sink is personal data of the same class as the log, so ship it over TLS to a
//! collector kept like the database (`SECURITY.md`). Nothing of the gateway's keys leaves:
//! a checkpoint's signature is verifiable with the public key only.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{AuditRecord, store::Checkpoint, verify::Witness};
use crate::{
    config::ShipConfig,
    storage::{
        Db, now_micros,
        shipping::{self, Progress},
    },
};

/// The SD-ID of the structured data: `name@PEN`. 32473 is the private enterprise number
/// RFC 5612 reserves for documentation and examples; credgate has none of its own.
pub const SD_ID: &str = "credgate@32473";
/// RFC 5424 APP-NAME.
pub const APP_NAME: &str = "credgate";
/// MSGIDs: a record, a checkpoint.
pub const MSGID_RECORD: &str = "audit";
pub const MSGID_CHECKPOINT: &str = "checkpoint";

/// Records read and shipped per round: one write and one flush each.
const PAGE: i64 = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A receiver that stops reading fills the socket; the round gives up after this and
/// reconnects, rather than waiting forever on one write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Caught up, the shipper looks again after this even without a commit (the idle tick's
/// checkpoints are not broadcast).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// The place is saved at most this often: each save is a write (an fsync on SQLite) beside
/// the audit writer's, and under load a round follows a round. Caught up, the next idle
/// round saves it; a crash in between only ships those messages again.
const SAVE_EVERY: Duration = Duration::from_millis(200);
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(4);

/// What `/readyz` and the metrics say of the sink. `/readyz` answers anyone who reaches the
/// listener, so, as for identity providers, it says whether the sink is up and how far behind,
/// never where the collector is or why it fails: those (`address`, `last_error`) go to the
/// log and to in-process callers only.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SinkReport {
    pub sink: String,
    #[serde(skip)]
    pub address: String,
    pub tls: bool,
    /// Connected, and the last write succeeded.
    pub up: bool,
    /// The chain's places of the last record and checkpoint flushed to the sink.
    pub records_through: i64,
    pub checkpoints_through: i64,
    /// Records committed and not yet shipped.
    pub lag_records: i64,
    /// Why the sink is down: a connection or TLS error (addresses and certificate problems,
    /// never record content). Not serialised (see above).
    #[serde(skip)]
    pub last_error: Option<String>,
}

/// The shipper's state, shared with `/readyz`; `None` inside when shipping is off.
#[derive(Debug, Clone, Default)]
pub struct Status(Arc<Mutex<Option<SinkReport>>>);

impl Status {
    /// Down (not yet connected) when configured; empty when not.
    pub fn new(config: Option<&ShipConfig>) -> Self {
        let report = config.map(|c| SinkReport {
            sink: c.sink.clone(),
            address: c.address.clone(),
            tls: c.tls,
            up: false,
            records_through: 0,
            checkpoints_through: 0,
            lag_records: 0,
            last_error: None,
        });
        Self(Arc::new(Mutex::new(report)))
    }

    pub fn report(&self) -> Option<SinkReport> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes the report and sets the gauges from it.
    fn update(&self, f: impl FnOnce(&mut SinkReport)) {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = guard.as_mut() {
            f(r);
            let sink = r.sink.clone();
            metrics::gauge!("credgate_audit_ship_sink_up", "sink" => sink.clone()).set(if r.up {
                1.0
            } else {
                0.0
            });
            metrics::gauge!("credgate_audit_ship_lag_records", "sink" => sink)
                .set(r.lag_records as f64);
        }
    }
}

/// Starts shipping this process's chain when `[audit.ship]` is set (a task that ends at once
/// otherwise). A CA file that cannot be read stops the start, as a bad listener certificate
/// does: the operator asked for shipping, and a gateway that silently ships nothing is worse.
pub fn spawn(core: &crate::services::Core) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let Some(config) = core.config.audit.ship.clone() else {
        return Ok(tokio::spawn(async {}));
    };
    let sink = Sink::from_config(&config)?;
    let shipper = Shipper {
        db: core.db.clone(),
        writer_id: core.audit.writer_id().to_string(),
        header: Header::new(&config),
        sink_name: config.sink,
        sink,
        status: core.shipping.clone(),
        wake: core.audit.committed.subscribe(),
        progress: None,
        dirty: false,
        saved_at: tokio::time::Instant::now(),
    };
    tracing::info!(sink = %shipper.sink_name, address = %shipper.sink.address(), tls = shipper.sink.tls.is_some(),
        "audit: shipping this process's chain");
    Ok(tokio::spawn(shipper.run()))
}

/// What ends a round.
enum Failure {
    /// The sink: reconnect after a backoff.
    Sink(String),
    /// The database: retry on the same connection.
    Db(crate::storage::StorageError),
}

impl From<crate::storage::StorageError> for Failure {
    fn from(e: crate::storage::StorageError) -> Self {
        Self::Db(e)
    }
}

/// A connection to the sink, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Shipper {
    db: Db,
    writer_id: String,
    sink_name: String,
    sink: Sink,
    header: Header,
    status: Status,
    wake: tokio::sync::broadcast::Receiver<super::CommittedRecord>,
    /// What the sink has (read from the database on the first round, then kept here).
    progress: Option<Progress>,
    /// `progress` is ahead of the saved place since this save.
    dirty: bool,
    saved_at: tokio::time::Instant,
}

impl Shipper {
    /// Forever: connect, ship until the sink fails, back off (jittered, exponential, capped),
    /// and again.
    async fn run(mut self) {
        let mut failures = 0u32;
        loop {
            let why = self.session(&mut failures).await;
            failures = failures.saturating_add(1);
            tracing::warn!(sink = %self.sink_name, error = %why, failures, "audit shipping: sink down; retrying");
            self.status.update(|r| {
                r.up = false;
                r.last_error = Some(why);
            });
            tokio::time::sleep(backoff(failures)).await;
        }
    }

    /// One connection's life: returns why it ended.
    async fn session(&mut self, failures: &mut u32) -> String {
        self.refresh_lag().await;
        let mut conn = match self.sink.connect().await {
            Ok(c) => c,
            Err(e) => return e,
        };
        *failures = 0;
        self.status.update(|r| {
            r.up = true;
            r.last_error = None;
        });
        loop {
            match self.round(&mut conn).await {
                Ok(true) => {}
                Ok(false) => {
                    if let Err(e) = self.idle(&mut conn).await {
                        return e;
                    }
                }
                Err(Failure::Sink(e)) => return e,
                Err(Failure::Db(e)) => {
                    tracing::warn!(error = %e, "audit shipping: the log could not be read; retrying");
                    tokio::time::sleep(IDLE_POLL).await;
                }
            }
        }
    }

    /// Waits for a commit or the poll timer; a receiver that closed the connection meanwhile
    /// ends the session now rather than on the next write (which the kernel would accept).
    async fn idle(&mut self, conn: &mut Box<dyn Stream>) -> Result<(), String> {
        use tokio::sync::broadcast::error::{RecvError, TryRecvError};
        let mut byte = [0u8; 64];
        tokio::select! {
            woken = self.wake.recv() => {
                if matches!(woken, Err(RecvError::Closed)) {
                    tokio::time::sleep(IDLE_POLL).await;
                }
                // One round reads every commit so far: the notes queued behind this one are
                // spent, not each worth a round of its own.
                while matches!(self.wake.try_recv(), Ok(_) | Err(TryRecvError::Lagged(_))) {}
                Ok(())
            }
            () = tokio::time::sleep(IDLE_POLL) => Ok(()),
            read = conn.read(&mut byte) => match read {
                Ok(0) => Err("the sink closed the connection".into()),
                Err(e) => Err(format!("the sink's connection failed: {e}")),
                // A syslog receiver says nothing; whatever it sent is ignored.
                Ok(_) => Ok(()),
            },
        }
    }

    /// Ships the next page of records and the checkpoints up to its end, in chain order, and
    /// saves the place. True when there may be more right away.
    async fn round(&mut self, conn: &mut Box<dyn Stream>) -> Result<bool, Failure> {
        let p = match self.progress {
            Some(p) => p,
            None => shipping::progress(&self.db, &self.writer_id, &self.sink_name).await?,
        };
        self.progress = Some(p);
        let records =
            super::store::chain_page_after(&self.db, &self.writer_id, p.records_through, PAGE)
                .await?;
        let upto = records.last().map_or(p.records_through, |r| r.chain_seq);
        let cps =
            shipping::checkpoints_between(&self.db, &self.writer_id, p.checkpoints_through, upto)
                .await?;
        if records.is_empty() && cps.is_empty() {
            self.save_if_due().await;
            self.refresh_lag().await;
            return Ok(false);
        }
        let bytes = self.header.encode(&records, &cps);
        write_flushed(conn, &bytes).await.map_err(Failure::Sink)?;
        let next = Progress {
            records_through: upto,
            checkpoints_through: cps.last().map_or(p.checkpoints_through, |c| c.chain_seq),
        };
        self.progress = Some(next);
        self.dirty = true;
        metrics::counter!("credgate_audit_ship_messages_total", "sink" => self.sink_name.clone())
            .increment((records.len() + cps.len()) as u64);
        self.save_if_due().await;
        self.refresh_lag().await;
        Ok(records.len() as i64 == PAGE)
    }

    /// Saves the place shipped when it moved and the last save is `SAVE_EVERY` old. Should
    /// the save fail, it is tried again next round; a restart meanwhile resends (at least
    /// once).
    async fn save_if_due(&mut self) {
        let Some(p) = self.progress.filter(|_| self.dirty) else {
            return;
        };
        if self.saved_at.elapsed() < SAVE_EVERY {
            return;
        }
        let now = now_micros();
        match shipping::save(&self.db, &self.writer_id, &self.sink_name, p, now).await {
            Ok(()) => {
                self.dirty = false;
                self.saved_at = tokio::time::Instant::now();
            }
            Err(e) => tracing::warn!(error = %e, "audit shipping: progress not saved; retried"),
        }
    }

    /// The lag (head minus shipped) and the place, into the report and gauges.
    async fn refresh_lag(&mut self) {
        let Ok(head) = shipping::head(&self.db, &self.writer_id).await else {
            return;
        };
        if self.progress.is_none()
            && let Ok(p) = shipping::progress(&self.db, &self.writer_id, &self.sink_name).await
        {
            self.progress = Some(p);
        }
        let p = self.progress.unwrap_or_default();
        self.status.update(|r| {
            r.records_through = p.records_through;
            r.checkpoints_through = p.checkpoints_through;
            r.lag_records = (head - p.records_through).max(0);
        });
    }
}

/// Writes all of `bytes` and flushes, within `WRITE_TIMEOUT`.
async fn write_flushed(conn: &mut Box<dyn Stream>, bytes: &[u8]) -> Result<(), String> {
    let io = async {
        conn.write_all(bytes).await?;
        conn.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, io).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("writing to the sink failed: {e}")),
        Err(_) => Err(format!(
            "the sink took no data for {}s",
            WRITE_TIMEOUT.as_secs()
        )),
    }
}

/// The wait before reconnecting after `failures` failures in a row: exponential from
/// `BACKOFF_BASE`, capped at `BACKOFF_CAP`, half of it random ("equal jitter"), so that the
/// replicas of a deployment do not all reconnect in the same instant when the sink returns.
fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_BASE
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    let half = exp / 2;
    let mut r = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r);
    let frac = f64::from(u32::from_le_bytes(r)) / f64::from(u32::MAX);
    half + half.mul_f64(frac)
}

/// Where the sink is and how to speak to it.
struct Sink {
    host: String,
    port: u16,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl Sink {
    /// Over TLS the sink's certificate is verified against `ca_file` alone (the system's roots
    /// are not consulted: the collector is a known party), for the address's host name.
    fn from_config(c: &ShipConfig) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
        let (host, port) = c.host_port().map_err(anyhow::Error::msg)?;
        let tls = match (&c.ca_file, c.tls) {
            (Some(ca), true) => {
                let what = || format!("audit.ship.ca_file {}", ca.display());
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca).with_context(what)? {
                    roots.add(cert.with_context(what)?).with_context(what)?;
                }
                anyhow::ensure!(!roots.is_empty(), "{}: no CA certificate in it", what());
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let name = ServerName::try_from(host.to_string())
                    .context("audit.ship.address: not a name a certificate can carry")?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
            _ => None,
        };
        Ok(Self {
            host: host.to_string(),
            port,
            tls,
        })
    }

    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// A connection, TLS handshake included, within `CONNECT_TIMEOUT`.
    async fn connect(&self) -> Result<Box<dyn Stream>, String> {
        let addr = self.address();
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| format!("connecting to {addr}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => Ok(Box::new(tcp) as Box<dyn Stream>),
                Some((connector, name)) => connector
                    .connect(name.clone(), tcp)
                    .await
                    .map(|s| Box::new(s) as Box<dyn Stream>)
                    .map_err(|e| format!("TLS with {addr}: {e}")),
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .unwrap_or_else(|_| Err(format!("connecting to {addr}: timed out")))
    }
}

/// The parts of every message's header that do not change: PRI's facility, HOSTNAME, PROCID.
struct Header {
    facility: u8,
    hostname: String,
    procid: String,
}

impl Header {
    fn new(c: &ShipConfig) -> Self {
        Self {
            facility: c.facility_code(),
            hostname: hostname(),
            procid: std::process::id().to_string(),
        }
    }

    /// The framed messages of `records` and `cps`, in chain order: a checkpoint right after
    /// the record it signs (and before the next one).
    fn encode(&self, records: &[AuditRecord], cps: &[Checkpoint]) -> Vec<u8> {
        let mut items: Vec<(i64, u8, Vec<u8>)> = Vec::with_capacity(records.len() + cps.len());
        items.extend(records.iter().map(|r| (r.chain_seq, 0, self.record(r))));
        items.extend(cps.iter().map(|c| (c.chain_seq, 1, self.checkpoint(c))));
        items.sort_by_key(|(place, kind, _)| (*place, *kind));
        let mut out = Vec::new();
        for (_, _, msg) in items {
            frame(&msg, &mut out);
        }
        out
    }

    /// Severity informational (6): the record, whole, as JSON in MSG.
    fn record(&self, r: &AuditRecord) -> Vec<u8> {
        let sd = [
            ("writer_id", r.writer_id.clone()),
            ("chain_seq", r.chain_seq.to_string()),
            ("seq", r.seq.to_string()),
            ("id", r.id.clone()),
            ("hash", r.hash.clone()),
            ("prev_hash", r.prev_hash.clone()),
        ];
        let body = json_body(r);
        self.message(6, r.time_us, MSGID_RECORD, &sd, &body)
    }

    /// Severity notice (5): the checkpoint, as a witness `audit verify` reads, in MSG.
    fn checkpoint(&self, c: &Checkpoint) -> Vec<u8> {
        let sd = [
            ("writer_id", c.writer_id.clone()),
            ("chain_seq", c.chain_seq.to_string()),
            ("seq", c.seq.to_string()),
            ("hash", c.hash.clone()),
            ("time_us", c.time_us.to_string()),
            ("key_id", c.key_id.clone()),
            ("signature", c.signature.clone()),
        ];
        let body = serde_json::json!({
            "writer_id": c.writer_id, "chain_seq": c.chain_seq, "seq": c.seq,
            "time_us": c.time_us, "hash": c.hash, "key_id": c.key_id, "signature": c.signature,
        });
        let body = json_body(&body);
        self.message(5, c.time_us, MSGID_CHECKPOINT, &sd, &body)
    }

    /// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] BOM MSG` (RFC 5424 section 6).
    /// MSG is JSON: control characters are escaped there, so no message holds a raw line
    /// break and a receiver writing one message a line stays one message a line.
    fn message(
        &self,
        severity: u8,
        time_us: i64,
        msgid: &str,
        sd: &[(&str, String)],
        body: &[u8],
    ) -> Vec<u8> {
        let time = crate::storage::micros_to_rfc3339(time_us);
        let time = if time.is_empty() { "-".into() } else { time };
        let mut head = format!(
            "<{}>1 {time} {} {APP_NAME} {} {msgid} [{SD_ID}",
            u16::from(self.facility) * 8 + u16::from(severity),
            self.hostname,
            self.procid
        );
        for (name, value) in sd {
            head.push(' ');
            head.push_str(name);
            head.push_str("=\"");
            sd_escape(value, &mut head);
            head.push('"');
        }
        head.push_str("] \u{feff}");
        let mut msg = head.into_bytes();
        msg.extend_from_slice(body);
        msg
    }
}

/// MSG: `v` as one line of JSON with no control byte at all. JSON escapes those below 0x20;
/// DEL (0x7f) it leaves raw, and receivers rewrite it (rsyslog's control-character escaping),
/// which would change the copy, so it is escaped too (`\u007f`, only ever inside a string).
fn json_body(v: &impl Serialize) -> Vec<u8> {
    let raw = serde_json::to_vec(v).expect("records and checkpoints serialise");
    if !raw.contains(&0x7f) {
        return raw;
    }
    let mut out = Vec::with_capacity(raw.len() + 8);
    for b in raw {
        match b {
            0x7f => out.extend_from_slice(b"\\u007f"),
            b => out.push(b),
        }
    }
    out
}

/// RFC 6587 section 3.4.1: `MSG-LEN SP SYSLOG-MSG`, the length in octets.
fn frame(msg: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg);
}

/// RFC 5424 section 6.3.3: inside a PARAM-VALUE, `"`, `\` and `]` are escaped with `\`.
fn sd_escape(value: &str, out: &mut String) {
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// HOSTNAME: the host's name when it is 1 to 255 printable ASCII characters, else `-`.
fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "-".into())
}

/// One message as a receiver wrote it (one line of its file, without the framing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub app_name: String,
    pub msgid: String,
    /// The parameters of the `SD_ID` element, unescaped, in order.
    pub params: Params,
    /// MSG without its BOM.
    pub msg: Vec<u8>,
}

impl Received {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses one RFC 5424 message (header, structured data, MSG); `None` when it is not one.
pub fn parse(line: &[u8]) -> Option<Received> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut rest = line.strip_prefix(b"<")?;
    let close = rest.iter().position(|&b| b == b'>')?;
    rest = rest[close + 1..].strip_prefix(b"1 ")?;
    let mut fields = Vec::with_capacity(5);
    for _ in 0..5 {
        let end = rest.iter().position(|&b| b == b' ')?;
        fields.push(std::str::from_utf8(&rest[..end]).ok()?.to_string());
        rest = &rest[end + 1..];
    }
    let (params, rest) = parse_sd(rest)?;
    let msg = match rest.strip_prefix(b" ") {
        Some(m) => m.strip_prefix("\u{feff}".as_bytes()).unwrap_or(m).to_vec(),
        None if rest.is_empty() => Vec::new(),
        None => return None,
    };
    Some(Received {
        app_name: fields[2].clone(),
        msgid: fields[4].clone(),
        params,
        msg,
    })
}

/// SD-PARAMs as (name, value), unescaped, in order.
pub type Params = Vec<(String, String)>;

/// STRUCTURED-DATA: `-`, or elements `[ID name="value" ...]`; the parameters of `SD_ID`.
fn parse_sd(mut rest: &[u8]) -> Option<(Params, &[u8])> {
    if let Some(after) = rest.strip_prefix(b"-") {
        return Some((Vec::new(), after));
    }
    let mut ours = Vec::new();
    while let Some(after) = rest.strip_prefix(b"[") {
        let end = after
            .iter()
            .position(|&b| b == b' ' || b == b']')
            .unwrap_or(after.len());
        let id = std::str::from_utf8(&after[..end]).ok()?;
        let (params, after) = parse_params(&after[end..])?;
        if id == SD_ID {
            ours = params;
        }
        rest = after;
    }
    Some((ours, rest))
}

/// ` name="value"` pairs up to the element's `]`; values unescaped (RFC 5424 section 6.3.3).
fn parse_params(mut rest: &[u8]) -> Option<(Params, &[u8])> {
    let mut params = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix(b"]") {
            return Some((params, after));
        }
        rest = rest.strip_prefix(b" ")?;
        let eq = rest.iter().position(|&b| b == b'=')?;
        let name = std::str::from_utf8(&rest[..eq]).ok()?.to_string();
        rest = rest[eq + 1..].strip_prefix(b"\"")?;
        let mut value = Vec::new();
        loop {
            match *rest.first()? {
                b'\\' if matches!(rest.get(1), Some(b'"' | b'\\' | b']')) => {
                    value.push(rest[1]);
                    rest = &rest[2..];
                }
                b'"' => {
                    rest = &rest[1..];
                    break;
                }
                b => {
                    value.push(b);
                    rest = &rest[1..];
                }
            }
        }
        params.push((name, String::from_utf8(value).ok()?));
    }
}

/// What a sink's file holds, for `audit verify --sink-file`.
#[derive(Debug, Default)]
pub struct SinkFile {
    /// The newest checkpoint of each chain the sink received (by place), as witnesses.
    pub witnesses: Vec<Witness>,
    pub records: usize,
    pub checkpoints: usize,
    /// Lines that are not credgate's RFC 5424 messages (other programs', or damaged).
    pub skipped: usize,
}

/// Reads a receiver's file, one message a line (rsyslog's `%rawmsg%`): each chain's newest
/// checkpoint becomes a witness the log must still hold. Duplicates (at-least-once) and other
/// programs' lines are harmless; a damaged checkpoint line is skipped and counted.
pub fn witnesses_in(text: &[u8]) -> SinkFile {
    let mut out = SinkFile::default();
    let mut newest: std::collections::BTreeMap<String, Witness> = Default::default();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let Some(m) = parse(line).filter(|m| m.app_name == APP_NAME) else {
            out.skipped += 1;
            continue;
        };
        match m.msgid.as_str() {
            MSGID_RECORD => out.records += 1,
            MSGID_CHECKPOINT => match serde_json::from_slice::<Witness>(&m.msg) {
                Ok(w) if w.writer_id.is_some() && w.chain_seq.is_some() => {
                    out.checkpoints += 1;
                    let writer = w.writer_id.clone().unwrap_or_default();
                    let newer = newest
                        .get(&writer)
                        .is_none_or(|old| old.chain_seq < w.chain_seq);
                    if newer {
                        newest.insert(writer, w);
                    }
                }
                _ => out.skipped += 1,
            },
            _ => out.skipped += 1,
        }
    }
    out.witnesses = newest.into_values().collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            facility: 16,
            hostname: "gw-1".into(),
            procid: "42".into(),
        }
    }

    fn hostile_record() -> AuditRecord {
        AuditRecord {
            seq: 7,
            id: "a-1".into(),
            time_us: 1_700_000_000_123_456,
            writer_id: "w\"\\]x".into(),
            chain_seq: 3,
            path: "/v1/a\nb]\"\\é中\u{1}\u{7f}\r".into(),
            hash: "ab".repeat(32),
            prev_hash: "cd".repeat(32),
            ..Default::default()
        }
    }

    #[test]
    fn a_hostile_record_keeps_its_frame_and_escapes_and_parses_back_whole() {
        let r = hostile_record();
        let msg = header().record(&r);
        assert!(
            !msg.iter().any(|&b| b < 0x20 || b == 0x7f),
            "no raw control byte or line break in the message"
        );
        let mut framed = Vec::new();
        frame(&msg, &mut framed);
        let prefix = format!("{} ", msg.len());
        assert!(framed.starts_with(prefix.as_bytes()), "octet count");
        let m = parse(&msg).expect("parses");
        assert_eq!(
            (m.app_name.as_str(), m.msgid.as_str()),
            ("credgate", "audit")
        );
        assert_eq!(m.param("writer_id"), Some(r.writer_id.as_str()));
        assert_eq!(m.param("hash"), Some(r.hash.as_str()));
        let back: AuditRecord = serde_json::from_slice(&m.msg).unwrap();
        assert_eq!(back, r);
        let text = String::from_utf8(msg).unwrap();
        assert!(text.starts_with("<134>1 2023-11-14T22:13:20.123456Z gw-1 credgate 42 audit "));
        assert!(text.contains(r#"writer_id="w\"\\\]x""#), "{text}");
    }

    #[test]
    fn checkpoints_follow_their_record_and_become_witnesses() {
        let mut records: Vec<AuditRecord> = (1..=3)
            .map(|n| AuditRecord {
                writer_id: "w".into(),
                chain_seq: n,
                ..Default::default()
            })
            .collect();
        records[0].seq = 10;
        let cp = |n: i64| Checkpoint {
            seq: n + 9,
            writer_id: "w".into(),
            chain_seq: n,
            time_us: 5,
            hash: "h".into(),
            key_id: "k".into(),
            signature: "s".into(),
        };
        let bytes = header().encode(&records, &[cp(2), cp(1)]);
        // Unframe: LEN SP MSG ...
        let mut rest = &bytes[..];
        let mut order = Vec::new();
        let mut file = Vec::new();
        while !rest.is_empty() {
            let sp = rest.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&rest[..sp]).unwrap().parse().unwrap();
            let msg = &rest[sp + 1..sp + 1 + len];
            let m = parse(msg).unwrap();
            order.push(format!("{}{}", m.msgid, m.param("chain_seq").unwrap()));
            file.extend_from_slice(msg);
            file.push(b'\n');
            rest = &rest[sp + 1 + len..];
        }
        assert_eq!(
            order,
            ["audit1", "checkpoint1", "audit2", "checkpoint2", "audit3"]
        );
        file.extend_from_slice(b"not syslog at all\n");
        let found = witnesses_in(&file);
        assert_eq!((found.records, found.checkpoints, found.skipped), (3, 2, 1));
        assert_eq!(found.witnesses.len(), 1);
        assert_eq!(found.witnesses[0].chain_seq, Some(2));
        assert_eq!(found.witnesses[0].seq, 11);
    }

    #[test]
    fn backoff_grows_jittered_and_stays_under_its_cap() {
        for n in 1..40 {
            let d = backoff(n);
            let exp = BACKOFF_BASE
                .saturating_mul(1u32 << (n - 1).min(16))
                .min(BACKOFF_CAP);
            assert!(d >= exp / 2 && d <= exp, "{n}: {d:?}");
        }
        assert!(backoff(1) <= BACKOFF_BASE);
    }
}
