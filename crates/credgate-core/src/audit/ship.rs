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
//! Delivery is at least once, in order, per chain. Syslog over TCP has no acknowledgement:
//! a write only hands a message to the network (the kernel's buffers), and a receiver that
//! stopped reading, or dies, loses what sits there. So a message counts as received only when
//! the session that carried it is closed in order: every `ROTATE_AFTER` (or `ROTATE_RECORDS`)
//! the shipper closes its side and waits for the receiver's close, which a receiver sends
//! only after reading up to ours (rsyslog closes on end of stream). Only then is the place
//! saved (`audit_shipping`, per writer and sink). A session that fails (reset, timeout, no
//! answering close) is followed by one that starts again from the last confirmed place: the
//! receiver sees duplicates (which `witnesses_in` tolerates), never a gap. The send buffer is
//! capped (`SEND_BUFFER`) so a mute receiver blocks the writes instead of reading as caught
//! up. "Read by the receiver" is still not "written to its disk": only RELP (or another
//! application-level acknowledgement) is an end-to-end ack, which plain syslog lacks.
//!
//! Every chain is shipped, not only this process's: a chain whose writer stopped, or came
//! back under another id, is adopted by a process whose own lease is live, once that chain's
//! lease (renewed by its shipper every `UPKEEP_EVERY`) has run out for `LEASE`; its own
//! writer takes it back when it runs again. Two processes may both ship a chain for a moment
//! (a lease race, or the owner's return): the receiver sees duplicates; each saves only places
//! its receiver confirmed, so a race never makes a gap.
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
    collections::BTreeMap,
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

/// Records read and shipped per round, per chain: one write and one flush each.
const PAGE: i64 = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A receiver that stops reading fills the socket; the round gives up after this and
/// reconnects (resending from the confirmed place), rather than waiting forever on a write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The socket's send buffer asked of the kernel (which doubles it): what a receiver that
/// stopped reading can swallow before the writes block is bounded, so the lag grows instead
/// of reading "caught up" on megabytes nobody read.
const SEND_BUFFER: u32 = 64 * 1024;
/// Caught up, the shipper looks again after this even without a commit (the idle tick's
/// checkpoints are not broadcast).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// A session with unconfirmed messages is closed in order after this long (or this many
/// messages), and the receiver's answering close confirms what it read: the place saved,
/// and what a failed session sends again, stay within these bounds.
const ROTATE_AFTER: Duration = Duration::from_secs(30);
/// Caught up with messages unconfirmed, a session is closed in order once this old: at most
/// one reconnection this often under sparse traffic, and a quiet log's place saved soon.
const ROTATE_IDLE: Duration = Duration::from_secs(3);
const ROTATE_RECORDS: i64 = 20_000;
/// How long the receiver may take to close after our close.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes a receiver may send in one session (read and dropped) before it is a protocol error.
const CHATTER_MAX: usize = 4096;
/// A chain's lease on shipping to a sink, renewed every `UPKEEP_EVERY`: a chain whose
/// holder stopped renewing for this long may be adopted by another process.
const LEASE: Duration = Duration::from_secs(10);
const UPKEEP_EVERY: Duration = Duration::from_secs(3);
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(4);

/// What `/readyz` and the metrics say of the sink. `/readyz` answers anyone who reaches the
/// listener, so it says whether the sink is up, a coarse lag state, how many chains the sink
/// is not known to hold whole, and whether a saved place was found corrupt; never where the
/// collector is, why it fails, or exact places (those go to the log, the metrics and
/// in-process callers).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SinkReport {
    pub sink: String,
    #[serde(skip)]
    pub address: String,
    pub tls: bool,
    /// Connected, and the last write succeeded.
    pub up: bool,
    /// `caught_up`: every record of this process's chain was handed to the network (written
    /// to the socket; not proof the receiver read it); `behind`: not yet.
    pub lag: String,
    /// Chains of the log (any writer, this one included) with records or checkpoints past
    /// the place the receiver is known to have read (confirmed at each session's orderly
    /// close): a live chain is behind for up to `ROTATE_AFTER`; one behind for long is an
    /// alarm (`credgate_audit_ship_chains_behind`).
    pub chains_behind: usize,
    /// A saved place was past the log's head (the row was edited, or the log cut): that
    /// chain is shipped again from its start. Stays set until the process restarts.
    pub place_corrupt: bool,
    /// This chain's places of the last record and checkpoint handed to the network.
    #[serde(skip)]
    pub records_through: i64,
    #[serde(skip)]
    pub checkpoints_through: i64,
    /// This chain's place the receiver is known to have read (the saved place).
    #[serde(skip)]
    pub confirmed_through: i64,
    /// Records committed and not yet handed to the network.
    #[serde(skip)]
    pub lag_records: i64,
    /// Records handed to the network and not yet known read (resent should the session fail).
    #[serde(skip)]
    pub unconfirmed_records: i64,
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
            lag: "behind".into(),
            chains_behind: 0,
            place_corrupt: false,
            records_through: 0,
            checkpoints_through: 0,
            confirmed_through: 0,
            lag_records: 0,
            unconfirmed_records: 0,
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
            r.lag = if r.lag_records == 0 {
                "caught_up"
            } else {
                "behind"
            }
            .into();
            let s = r.sink.clone();
            let up = if r.up { 1.0 } else { 0.0 };
            metrics::gauge!("credgate_audit_ship_sink_up", "sink" => s.clone()).set(up);
            metrics::gauge!("credgate_audit_ship_lag_records", "sink" => s.clone())
                .set(r.lag_records as f64);
            metrics::gauge!("credgate_audit_ship_unconfirmed_records", "sink" => s.clone())
                .set(r.unconfirmed_records as f64);
            metrics::gauge!("credgate_audit_ship_chains_behind", "sink" => s.clone())
                .set(r.chains_behind as f64);
            metrics::gauge!("credgate_audit_ship_place_corrupt", "sink" => s)
                .set(if r.place_corrupt { 1.0 } else { 0.0 });
        }
    }
}

/// Starts shipping when `[audit.ship]` is set (a task that ends at once otherwise). A CA file
/// that cannot be read stops the start, as a bad listener certificate does: the operator
/// asked for shipping, and a gateway that silently ships nothing is worse.
pub fn spawn(core: &crate::services::Core) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let Some(config) = core.config.audit.ship.clone() else {
        return Ok(tokio::spawn(async {}));
    };
    let sink = Sink::from_config(&config)?;
    let shipper = Shipper {
        db: core.db.clone(),
        me: core.audit.writer_id().to_string(),
        header: Header::new(&config),
        sink_name: config.sink,
        sink,
        status: core.shipping.clone(),
        wake: core.audit.wake(),
        chains: Vec::new(),
        upkept: None,
    };
    tracing::info!(sink = %shipper.sink_name, address = %shipper.sink.address(), tls = shipper.sink.tls.is_some(),
        "audit: shipping this process's chain (and any chain its writer left)");
    Ok(tokio::spawn(shipper.run()))
}

/// What ends a round.
enum Failure {
    /// The sink: reconnect after a backoff.
    Sink(String),
    /// The database: retry on the same connection.
    Db(crate::storage::StorageError),
    /// A record that would not serialise (never expected): retried after a pause.
    Encode(String),
}

impl From<crate::storage::StorageError> for Failure {
    fn from(e: crate::storage::StorageError) -> Self {
        Self::Db(e)
    }
}

/// A connection to the sink, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One chain being shipped: this process's own (first), or one adopted whose lease ran out.
#[derive(Debug, Clone)]
struct Chain {
    writer_id: String,
    own: bool,
    /// Handed to the network in this session (written and flushed to the socket).
    handed: Progress,
    /// Known read by the receiver (it closed in order after our close): the saved place,
    /// and where each session starts again.
    confirmed: Progress,
}

struct Shipper {
    db: Db,
    /// This process's writer id: its own chain, and its name as a lease holder.
    me: String,
    sink_name: String,
    sink: Sink,
    header: Header,
    status: Status,
    /// Woken by this process's commits (`AuditLog::wake`): a `watch` of the head, so while
    /// the sink is down, or a write or a confirm waits, no committed record is held here.
    wake: tokio::sync::watch::Receiver<i64>,
    chains: Vec<Chain>,
    /// When the leases were last renewed and the log's chains last looked at.
    upkept: Option<tokio::time::Instant>,
}

impl Shipper {
    /// Forever: connect, ship until the sink fails or the session is closed in order to
    /// confirm what it read, back off after a failure (jittered, exponential, capped).
    async fn run(mut self) {
        // The own chain's lease is renewed beside the sessions, so a write blocked on a mute
        // receiver, a confirm or a backoff never lets it lapse (another process would adopt
        // the chain of a live writer); aborted with this task.
        let _heartbeat = AbortOnDrop(tokio::spawn(heartbeat(
            self.db.clone(),
            self.me.clone(),
            self.sink_name.clone(),
        )));
        let mut failures = 0u32;
        loop {
            self.upkeep().await;
            if self.chains.is_empty() {
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
            match self.session().await {
                Ok(()) => failures = 0,
                Err(why) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(sink = %self.sink_name, error = %why, failures,
                        "audit shipping: session failed; what it sent since the last confirmed place is sent again");
                    self.status.update(|r| {
                        r.up = false;
                        r.last_error = Some(why);
                    });
                    tokio::time::sleep(backoff(failures)).await;
                }
            }
        }
    }

    /// One connection's life, from the confirmed places: Ok when it was closed in order and
    /// the receiver's close confirmed what it read; Err (why) when it failed, and then
    /// everything it handed over is unconfirmed and sent again by the next session (H1).
    async fn session(&mut self) -> Result<(), String> {
        for c in &mut self.chains {
            c.handed = c.confirmed;
        }
        self.refresh_lag().await;
        let mut conn = self.sink.connect().await?;
        self.status.update(|r| {
            r.up = true;
            r.last_error = None;
        });
        let started = tokio::time::Instant::now();
        loop {
            let more = match self.round(&mut conn).await {
                Ok(more) => more,
                Err(Failure::Sink(e)) => return Err(e),
                Err(Failure::Db(e)) => {
                    tracing::warn!(error = %e, "audit shipping: the log could not be read; retrying");
                    tokio::time::sleep(IDLE_POLL).await;
                    false
                }
                Err(Failure::Encode(e)) => {
                    tracing::error!(error = %e, "audit shipping: a message could not be encoded; retrying");
                    tokio::time::sleep(IDLE_POLL).await;
                    false
                }
            };
            self.refresh_lag().await;
            let unconfirmed = self.unconfirmed();
            let due = if more { ROTATE_AFTER } else { ROTATE_IDLE };
            if unconfirmed >= ROTATE_RECORDS || (unconfirmed > 0 && started.elapsed() >= due) {
                return self.confirm(conn).await;
            }
            if !more {
                self.idle(&mut conn).await?;
            }
            if self.upkept.is_none_or(|t| t.elapsed() >= UPKEEP_EVERY) {
                self.upkeep().await;
            }
        }
    }

    /// Messages handed to the network and not yet known read, every chain together.
    fn unconfirmed(&self) -> i64 {
        self.chains
            .iter()
            .map(|c| {
                (c.handed.records_through - c.confirmed.records_through)
                    + (c.handed.checkpoints_through - c.confirmed.checkpoints_through)
            })
            .sum()
    }

    /// Ends the session in order: our side closes (after everything we sent), and the
    /// receiver closes back only once it has read up to our close (rsyslog does so on end of
    /// stream). Then, and only then, what was handed over counts as received and is saved.
    /// No close within `CONFIRM_TIMEOUT` (a receiver that stopped reading): not confirmed.
    async fn confirm(&mut self, mut conn: Box<dyn Stream>) -> Result<(), String> {
        let io = async {
            conn.shutdown().await?;
            let mut buf = [0u8; 512];
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    // TLS: a peer that closed TCP without close_notify read our close first.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        };
        match tokio::time::timeout(CONFIRM_TIMEOUT, io).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("the sink's close failed: {e}")),
            Err(_) => {
                return Err(format!(
                    "the sink did not close after our close within {}s (not reading)",
                    CONFIRM_TIMEOUT.as_secs()
                ));
            }
        }
        let now = now_micros();
        for c in &mut self.chains {
            c.confirmed = c.handed;
            if let Err(e) =
                shipping::save(&self.db, &c.writer_id, &self.sink_name, c.confirmed, now).await
            {
                tracing::warn!(error = %e, "audit shipping: confirmed place not saved (resent after a restart)");
            }
        }
        self.refresh_lag().await;
        Ok(())
    }

    /// Waits for a commit or the poll timer. A receiver that closed the connection meanwhile
    /// ends the session now rather than on the next write (which the kernel would accept). A
    /// syslog receiver says nothing (RFC 6587): bytes it sends are read and dropped without a
    /// round each (no busy loop against the database), and past `CHATTER_MAX` in one session
    /// the session ends as a protocol error.
    async fn idle(&mut self, conn: &mut Box<dyn Stream>) -> Result<(), String> {
        let mut byte = [0u8; 512];
        let poll = tokio::time::sleep(IDLE_POLL);
        tokio::pin!(poll);
        let mut heard = 0usize;
        loop {
            tokio::select! {
                woken = self.wake.changed() => {
                    if woken.is_err() {
                        (&mut poll).await;
                    }
                    // One round reads every commit so far (`changed` marked them seen).
                    return Ok(());
                }
                () = &mut poll => return Ok(()),
                read = conn.read(&mut byte) => match read {
                    Ok(0) => return Err("the sink closed the connection".into()),
                    Err(e) => return Err(format!("the sink's connection failed: {e}")),
                    Ok(n) => {
                        heard += n;
                        if heard > CHATTER_MAX {
                            metrics::counter!("credgate_audit_ship_protocol_errors_total", "sink" => self.sink_name.clone()).increment(1);
                            return Err(format!("the sink sent {heard} bytes; a syslog receiver sends none (protocol error)"));
                        }
                    }
                },
            }
        }
    }

    /// Ships the next page of each chain's records and the checkpoints up to its end, in
    /// chain order, as one write. True when there may be more right away.
    async fn round(&mut self, conn: &mut Box<dyn Stream>) -> Result<bool, Failure> {
        let mut bytes = Vec::new();
        let mut more = false;
        let mut sent = 0usize;
        let mut next = Vec::with_capacity(self.chains.len());
        for c in &self.chains {
            let p = c.handed;
            let records =
                super::store::chain_page_after(&self.db, &c.writer_id, p.records_through, PAGE)
                    .await?;
            let upto = records.last().map_or(p.records_through, |r| r.chain_seq);
            let cps =
                shipping::checkpoints_between(&self.db, &c.writer_id, p.checkpoints_through, upto)
                    .await?;
            more |= records.len() as i64 == PAGE;
            sent += records.len() + cps.len();
            self.header
                .encode(&records, &cps, &mut bytes)
                .map_err(Failure::Encode)?;
            next.push(Progress {
                records_through: upto,
                checkpoints_through: cps.last().map_or(p.checkpoints_through, |c| c.chain_seq),
            });
        }
        if sent == 0 {
            return Ok(false);
        }
        write_flushed(conn, &bytes).await.map_err(Failure::Sink)?;
        for (c, p) in self.chains.iter_mut().zip(next) {
            c.handed = p;
        }
        metrics::counter!("credgate_audit_ship_messages_total", "sink" => self.sink_name.clone())
            .increment(sent as u64);
        Ok(more)
    }

    /// Every `UPKEEP_EVERY`: loads this process's chain the first time, renews or drops
    /// adopted chains' leases,
    /// adopts a chain left behind (records past its saved place, lease run out: its writer
    /// stopped, or runs under another id now), and counts the chains behind (H2).
    async fn upkeep(&mut self) {
        self.upkept = Some(tokio::time::Instant::now());
        let now = now_micros();
        let until = now + LEASE.as_micros() as i64;
        if self.chains.is_empty() {
            match self.load(&self.me.clone(), true).await {
                Ok(c) => self.chains.push(c),
                Err(e) => {
                    tracing::warn!(error = %e, "audit shipping: the log could not be read; retrying");
                    return;
                }
            }
        }
        let me = self.me.clone();
        let sink = self.sink_name.clone();
        let all = match shipping::chains_at(&self.db, &sink).await {
            Ok(all) => all,
            Err(e) => return tracing::warn!(error = %e, "audit shipping: chains not read; retried"),
        };
        let behind = all.iter().filter(|c| c.behind() || c.corrupt()).count();
        self.status.update(|r| r.chains_behind = behind);
        for c in all.iter().filter(|c| c.writer_id != me) {
            let held = self.chains.iter().any(|x| x.writer_id == c.writer_id);
            let wanted = held || (c.behind() && c.lease_until_us < now);
            if !wanted {
                continue;
            }
            match shipping::claim(&self.db, &c.writer_id, &sink, &me, now, until, false).await {
                Ok(true) if !held => match self.load(&c.writer_id, false).await {
                    Ok(chain) => {
                        tracing::warn!(chain = %c.writer_id, sink = %sink,
                            "audit shipping: adopted a chain left behind (its writer is not shipping it)");
                        self.chains.push(chain);
                    }
                    Err(e) => tracing::warn!(error = %e, "audit shipping: chain not read"),
                },
                Ok(true) => {}
                Ok(false) => self.chains.retain(|x| x.own || x.writer_id != c.writer_id),
                Err(e) => tracing::warn!(error = %e, "audit shipping: lease not taken"),
            }
        }
    }

    /// A chain's saved place, checked against the log (H3): a place past the chain's head or
    /// its newest checkpoint is corruption (an edited row would otherwise silence the sink
    /// while the lag reads 0): logged as an error, reported, and the chain shipped again from
    /// its start (the receiver sees duplicates, never a gap).
    async fn load(
        &mut self,
        writer_id: &str,
        own: bool,
    ) -> Result<Chain, crate::storage::StorageError> {
        let at = shipping::chain_at(&self.db, writer_id, &self.sink_name).await?;
        let mut confirmed = at.saved;
        if at.corrupt() {
            tracing::error!(chain = %writer_id, sink = %self.sink_name, saved = at.saved.records_through,
                head = at.head, "audit shipping: the saved place is past the log's head (edited?); shipping this chain again from its start");
            metrics::counter!("credgate_audit_ship_place_corrupt_total", "sink" => self.sink_name.clone()).increment(1);
            self.status.update(|r| r.place_corrupt = true);
            confirmed = Progress::default();
        }
        Ok(Chain {
            writer_id: writer_id.to_string(),
            own,
            handed: confirmed,
            confirmed,
        })
    }

    /// This process's chain's lag (head minus handed) and unconfirmed count, into the report.
    async fn refresh_lag(&mut self) {
        let Some(own) = self.chains.first() else {
            return;
        };
        let Ok(head) = shipping::head(&self.db, &own.writer_id).await else {
            return;
        };
        let (h, c) = (own.handed, own.confirmed);
        let unconfirmed = self.unconfirmed();
        self.status.update(|r| {
            r.records_through = h.records_through;
            r.checkpoints_through = h.checkpoints_through;
            r.confirmed_through = c.records_through;
            r.lag_records = (head - h.records_through).max(0);
            r.unconfirmed_records = unconfirmed;
        });
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Forever: this process takes (forced: the chain's own writer always may) and renews the
/// lease on shipping its own chain to `sink`, every `UPKEEP_EVERY`.
async fn heartbeat(db: Db, me: String, sink: String) {
    loop {
        let now = now_micros();
        let until = now + LEASE.as_micros() as i64;
        if let Err(e) = shipping::claim(&db, &me, &sink, &me, now, until, true).await {
            tracing::warn!(error = %e, "audit shipping: lease not renewed; retried");
        }
        tokio::time::sleep(UPKEEP_EVERY).await;
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
            (None, false) => None,
            // Validation refuses both; never fall back to plain TCP when TLS was asked (L2).
            (None, true) => anyhow::bail!("audit.ship: tls = true needs ca_file"),
            (Some(_), false) => anyhow::bail!("audit.ship: ca_file is only used with tls = true"),
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
            let tcp = connect_capped(&self.host, self.port)
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

/// A TCP connection to the first of `host`'s addresses that answers, its send buffer capped
/// to `SEND_BUFFER` before connecting (H1: bounded what a mute receiver can swallow).
async fn connect_capped(host: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let mut last = std::io::Error::other("no address");
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        let _ = socket.set_send_buffer_size(SEND_BUFFER);
        match socket.connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The parts of every message's header that do not change: PRI's facility, HOSTNAME, PROCID.
struct Header {
    facility: u8,
    hostname: String,
    procid: String,
    max_message: usize,
}

impl Header {
    fn new(c: &ShipConfig) -> Self {
        Self {
            facility: c.facility_code(),
            hostname: hostname(),
            procid: std::process::id().to_string(),
            max_message: c.max_message_bytes,
        }
    }

    /// The framed messages of `records` and `cps`, in chain order: a checkpoint right after
    /// the record it signs (and before the next one).
    /// Appended to `out`. A message over `max_message` is still sent whole (cutting it would
    /// break its hash), and warned of and counted: the receiver may truncate it (L1).
    fn encode(
        &self,
        records: &[AuditRecord],
        cps: &[Checkpoint],
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let mut items: Vec<(i64, u8, Vec<u8>)> = Vec::with_capacity(records.len() + cps.len());
        for r in records {
            items.push((r.chain_seq, 0, self.record(r)?));
        }
        for c in cps {
            items.push((c.chain_seq, 1, self.checkpoint(c)?));
        }
        items.sort_by_key(|(place, kind, _)| (*place, *kind));
        for (place, _, msg) in items {
            if msg.len() > self.max_message {
                tracing::warn!(
                    place,
                    bytes = msg.len(),
                    max = self.max_message,
                    "audit shipping: a message longer than audit.ship.max_message_bytes (the receiver may cut it)"
                );
                metrics::counter!("credgate_audit_ship_oversize_total").increment(1);
            }
            frame(&msg, out);
        }
        Ok(())
    }

    /// Severity informational (6): the record, whole, as JSON in MSG.
    fn record(&self, r: &AuditRecord) -> Result<Vec<u8>, String> {
        let sd = [
            ("writer_id", r.writer_id.clone()),
            ("chain_seq", r.chain_seq.to_string()),
            ("seq", r.seq.to_string()),
            ("id", r.id.clone()),
            ("hash", r.hash.clone()),
            ("prev_hash", r.prev_hash.clone()),
        ];
        let body = json_body(r)?;
        Ok(self.message(6, r.time_us, MSGID_RECORD, &sd, &body))
    }

    /// Severity notice (5): the checkpoint, as a witness `audit verify` reads, in MSG.
    fn checkpoint(&self, c: &Checkpoint) -> Result<Vec<u8>, String> {
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
        let body = json_body(&body)?;
        Ok(self.message(5, c.time_us, MSGID_CHECKPOINT, &sd, &body))
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
fn json_body(v: &impl Serialize) -> Result<Vec<u8>, String> {
    let raw = serde_json::to_vec(v).map_err(|e| format!("serialising a message: {e}"))?;
    if !raw.contains(&0x7f) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + 8);
    for b in raw {
        match b {
            0x7f => out.extend_from_slice(b"\\u007f"),
            b => out.push(b),
        }
    }
    Ok(out)
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

/// The longest line of a sink's file `witnesses_from` reads (without its line end): far over
/// any message credgate ships, so a longer line is not one of them, and reading it whole
/// would let a file of one endless line grow the reader's memory without bound.
///
/// Why no genuine line comes near it: a record's message is its JSON and a few short SD
/// parameters. An answer records at most 1,000 subjects (`MAX_SUBJECTS` of the policy engine),
/// each a valid id, a value of at most 128 bytes or a 71-byte digest: under 0.8 MB even if
/// every byte were a control character JSON writes as `\u00XX`. The rest comes from the
/// request's head, which hyper's HTTP/1 reader caps at 417,792 bytes (its default
/// `max_buf_size`; the gateway serves HTTP/1 only): re-encoded or replaced, a byte of it
/// becomes at most 3, about 1.3 MB. So a data answer's line stays under about 2 MB, a quarter
/// of this. (A profile records the subjects of each of its sections, up to 1,000 each: a line
/// past this would take dozens of sections each naming 1,000 long values.) The receiver's own
/// limit (rsyslog's `maxMessageSize`, 64 KiB in the README's setup) cuts long lines far sooner.
pub const MAX_SINK_LINE: usize = 8 * 1024 * 1024;

/// What a sink's file holds, for `audit verify --sink-file`.
#[derive(Debug, Default)]
pub struct SinkFile {
    /// The newest checkpoint of each chain the sink received whose signature verifies with
    /// this log's key, as witnesses.
    pub witnesses: Vec<Witness>,
    /// Every place of each chain with a checkpoint line signed by this log's key, and the hash
    /// it signed: each must still be in the log with that hash, or archived. Not only the
    /// newest: a tail cut and written again past the old newest checkpoint leaves older
    /// signed places whose hash the log no longer holds (rev3 F6). One entry per place, so
    /// the memory is the checkpoints', not the file's.
    pub signed: BTreeMap<String, BTreeMap<i64, String>>,
    /// The first place for which the file holds two signed checkpoint lines with different
    /// hashes: the chain was cut and written again (the key signed both).
    pub conflict: Option<SignedConflict>,
    /// The newest record line of each chain (by place): a witness too, but unsigned (its
    /// hash is unkeyed; anyone able to send syslog to the receiver can forge one).
    pub newest_records: Vec<RecordWitness>,
    pub records: usize,
    /// Checkpoint lines whose signature verifies.
    pub checkpoints: usize,
    /// Checkpoint lines whose signature does not verify with this log's key (forged, or
    /// another deployment's): ignored, counted.
    pub unsigned: usize,
    /// Lines that are not credgate's RFC 5424 messages (other programs', or damaged).
    pub skipped: usize,
    /// The number (from 1) of a line longer than `MAX_SINK_LINE`: not a message credgate
    /// shipped, so the file is not what it should be; reading stopped there, and the
    /// verification fails on it (what was read before it is still reported).
    pub line_too_long: Option<u64>,
}

/// Two signed checkpoints of one place of one chain that disagree on its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignedConflict {
    pub writer_id: String,
    pub chain_seq: i64,
    /// The hash of the line read first, then the other.
    pub hashes: [String; 2],
}

/// A chain's newest shipped record as a sink's file has it: the log must still hold that
/// place with that hash (or an archive must cover it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordWitness {
    pub writer_id: String,
    pub chain_seq: i64,
    pub hash: String,
}

/// Reads a receiver's file, one message a line (rsyslog's `%rawmsg%`), a line at a time (the
/// file may be large): every checkpoint signed with `public_key` is kept by place (`signed`)
/// and each chain's newest becomes a witness the log must still hold; a line whose signature
/// does not verify is counted and ignored, so a forged line cannot push out or contradict a
/// genuine one (M2). Each chain's newest record line is kept as an unsigned witness (M1).
/// Duplicates (at-least-once) and other programs' lines are harmless; a damaged line is
/// skipped and counted. A line longer than `MAX_SINK_LINE` ends the reading (`line_too_long`):
/// at most that much of it is read, through `take`, never the whole line.
pub fn witnesses_from(
    mut text: impl std::io::BufRead,
    public_key: &[u8],
) -> std::io::Result<SinkFile> {
    use std::io::{BufRead as _, Read as _};
    let mut out = SinkFile::default();
    let mut newest: BTreeMap<String, Witness> = Default::default();
    let mut records: BTreeMap<String, RecordWitness> = Default::default();
    let mut line = Vec::new();
    let mut number = 0_u64;
    loop {
        line.clear();
        number += 1;
        // The line and its `\n`, or one byte past the cap when it is longer.
        let cap = MAX_SINK_LINE as u64 + 1;
        let read = (&mut text).take(cap).read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        if read as u64 == cap && line.last() != Some(&b'\n') {
            out.line_too_long = Some(number);
            break;
        }
        let l = line.strip_suffix(b"\n").unwrap_or(&line);
        if l.is_empty() {
            continue;
        }
        let Some(m) = parse(l).filter(|m| m.app_name == APP_NAME) else {
            out.skipped += 1;
            continue;
        };
        match m.msgid.as_str() {
            MSGID_RECORD => match record_witness(&m) {
                Some(r) => {
                    out.records += 1;
                    let newer = records
                        .get(&r.writer_id)
                        .is_none_or(|old| old.chain_seq < r.chain_seq);
                    if newer {
                        records.insert(r.writer_id.clone(), r);
                    }
                }
                None => out.skipped += 1,
            },
            MSGID_CHECKPOINT => match serde_json::from_slice::<Witness>(&m.msg) {
                Ok(w) if w.writer_id.is_some() && w.chain_seq.is_some() => {
                    if !signed(&w, public_key) {
                        out.unsigned += 1;
                        continue;
                    }
                    out.checkpoints += 1;
                    out.keep_signed(&w);
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
    out.newest_records = records.into_values().collect();
    Ok(out)
}

/// `witnesses_from` a file already in memory.
pub fn witnesses_in(text: &[u8], public_key: &[u8]) -> SinkFile {
    witnesses_from(text, public_key).expect("reading from memory does not fail")
}

impl SinkFile {
    /// Notes a signed checkpoint's place and hash; a second hash for a place already noted is
    /// the first conflict (kept), an equal one a duplicate (at-least-once delivery).
    fn keep_signed(&mut self, w: &Witness) {
        let (Some(writer), Some(place)) = (w.writer_id.as_deref(), w.chain_seq) else {
            return;
        };
        let places = self.signed.entry(writer.to_string()).or_default();
        match places.get(&place) {
            None => {
                places.insert(place, w.hash.clone());
            }
            Some(held) if *held != w.hash && self.conflict.is_none() => {
                self.conflict = Some(SignedConflict {
                    writer_id: writer.to_string(),
                    chain_seq: place,
                    hashes: [held.clone(), w.hash.clone()],
                });
            }
            Some(_) => {}
        }
    }
}

/// A record line's place and hash, from its structured data.
fn record_witness(m: &Received) -> Option<RecordWitness> {
    Some(RecordWitness {
        writer_id: m.param("writer_id")?.to_string(),
        chain_seq: m.param("chain_seq")?.parse().ok()?,
        hash: m.param("hash")?.to_string(),
    })
}

/// The checkpoint's signature verifies with this log's key.
fn signed(w: &Witness, public_key: &[u8]) -> bool {
    let (Some(writer), Some(place)) = (w.writer_id.as_deref(), w.chain_seq) else {
        return false;
    };
    super::chain::chain_checkpoint_signed(
        public_key,
        writer,
        place,
        &w.hash,
        w.time_us,
        &w.signature,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            facility: 16,
            hostname: "gw-1".into(),
            procid: "42".into(),
            max_message: 64 * 1024,
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
        let msg = header().record(&r).unwrap();
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
        let mut bytes = Vec::new();
        header()
            .encode(&records, &[cp(2), cp(1)], &mut bytes)
            .unwrap();
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
        // The signatures here are not real: counted as unsigned, never witnesses.
        let found = witnesses_in(&file, &[0u8; 32]);
        let counts = (
            found.records,
            found.checkpoints,
            found.unsigned,
            found.skipped,
        );
        assert_eq!(counts, (3, 0, 2, 1));
        assert!(found.witnesses.is_empty());
        assert_eq!(found.newest_records.len(), 1);
        assert_eq!(found.newest_records[0].chain_seq, 3);
    }

    /// Every signed checkpoint is kept by place, not only the newest; a place signed twice
    /// with different hashes is the conflict (a chain cut and written again), a duplicate is
    /// not; a line that does not verify neither counts nor conflicts.
    #[test]
    fn every_signed_checkpoint_is_kept_and_a_second_hash_for_a_place_conflicts() {
        use ring::signature::KeyPair as _;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let cp = |n: i64, hash: &str, signature: Option<&str>| Checkpoint {
            seq: n,
            writer_id: "w".into(),
            chain_seq: n,
            time_us: 5,
            hash: hash.into(),
            key_id: "k".into(),
            signature: signature.map_or_else(
                || super::super::chain::sign_chain_checkpoint(&key, "w", n, hash, 5),
                str::to_string,
            ),
        };
        let mut file = Vec::new();
        for c in [
            cp(1, "a1", None),
            cp(2, "a2", None),
            cp(2, "a2", None),
            cp(1, "forged", Some("00")),
            cp(3, "a3", None),
            cp(2, "b2", None),
        ] {
            file.extend_from_slice(&header().checkpoint(&c).unwrap());
            file.push(b'\n');
        }
        let found = witnesses_in(&file, key.public_key().as_ref());
        assert_eq!((found.checkpoints, found.unsigned), (5, 1));
        let places: Vec<_> = found.signed["w"]
            .iter()
            .map(|(p, h)| (*p, h.as_str()))
            .collect();
        assert_eq!(places, [(1, "a1"), (2, "a2"), (3, "a3")]);
        assert_eq!(
            found.conflict,
            Some(SignedConflict {
                writer_id: "w".into(),
                chain_seq: 2,
                hashes: ["a2".into(), "b2".into()],
            })
        );
        assert_eq!(found.witnesses.len(), 1);
        assert_eq!(found.witnesses[0].chain_seq, Some(3));
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
