//! The one writer of this process's chain: drains what is queued (up to `batch_max`; a batch
//! of fewer than `ENOUGH` also takes what arrives within `batch_wait_us` of its first), chains the hashes in order onto its own chain
//! (`writer_id`), inserts the batch as one statement, then acknowledges every sender. One
//! fsync serves the whole batch. A failed commit acknowledges every sender with an error.
//! No other replica writes this chain, so no batch waits on another replica's head.
//!
//! When idle, the writer signs its own chain's tail once it has been unsigned for
//! `checkpoint_secs`. It never signs another chain (see `Idle::tick`): a crashed replica's tail
//! waits for that writer id to run again, and verify names it meanwhile.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use ring::signature::Ed25519KeyPair;
use tokio::sync::mpsc;

use super::{
    AuditConfig, AuditError, AuditRecord, Change, ChangeError, Committed, CommittedRecord, Queued,
    Refusal, Refused, chain, store,
};
use crate::{
    clock::Clock,
    storage::{Db, StorageError},
};

pub(super) struct Writer {
    pub db: Db,
    /// The core's clock: checkpoint times and the age of the unsigned tail read it, as record
    /// times do, so a test can step it back under the writer.
    pub clock: Arc<Clock>,
    pub rx: mpsc::Receiver<Queued>,
    pub signing: Ed25519KeyPair,
    pub key_id: String,
    pub writer_id: String,
    pub config: AuditConfig,
    pub healthy: Arc<AtomicBool>,
    pub queued: Arc<AtomicUsize>,
    pub busy: Arc<AtomicBool>,
    pub failures: Arc<std::sync::atomic::AtomicU64>,
    pub committed: tokio::sync::broadcast::Sender<CommittedRecord>,
    /// The chain's newest committed place: wakes the indexer and the shipper (no records held).
    pub head: tokio::sync::watch::Sender<i64>,
}

pub(super) async fn run(mut w: Writer) {
    let wait = Duration::from_micros(w.config.batch_wait_us);
    let mut known = None;
    let mut conn = store::WriterConn::new(w.db.clone(), w.writer_id.clone());
    // A record with a change, received while a batch was filling: it runs after that batch.
    let mut carried: Option<Queued> = None;
    let mut idle = Idle::new(&w.config, w.clock.clone());
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => {
                let due = idle.next_due(known.as_ref());
                tokio::select! {
                    p = w.rx.recv() => match p {
                        Some(p) => p,
                        None => return,
                    },
                    () = tokio::time::sleep_until(due) => {
                        idle.tick(&w, &mut conn, &mut known).await;
                        continue;
                    }
                }
            }
        };
        w.busy.store(true, Ordering::SeqCst);
        if first.change.is_some() {
            commit_change(&w, &mut conn, &mut known, first).await;
            w.busy.store(false, Ordering::SeqCst);
            continue;
        }
        let (batch, change) = gather(&mut w.rx, first, wait, w.config.batch_max).await;
        carried = change;
        commit_batch(&w, &mut conn, &mut known, batch).await;
        w.busy.store(false, Ordering::SeqCst);
    }
}

/// A batch at least this large when the writer takes it commits at once. The commit window is
/// for an idle writer's first records; under load the previous commit already gathered the
/// next batch, and sleeping the window out (200 us, which tokio's 1 ms timer makes up to
/// ~1.2 ms) only lengthened every request's turn. Measured at 64 connections, SQLite audit,
/// alternated rounds against sleeping the window out: 16.2k / 14.0k / 16.3k -> 16.5k / 20.4k /
/// 19.3k req/s, p99 8.5 / 11.5 / 7.6 -> 8.1 / 6.2 / 6.8 ms. No window at all would commit a
/// light load's lone records one by one, a commit and an fsync each.
pub(super) const ENOUGH: usize = 8;

/// Fills a batch after `first`: what is queued now, then, when the batch is smaller than
/// `ENOUGH`, what queued by the end of the window. The writer sleeps the window out instead of waiting in
/// `recv`: a task waiting in `recv` is woken by every send, and each wake from a serving
/// thread is a futex wake of a runtime thread, about one a record under load (issue 18's
/// profile: 1.1 context switches and 5 extra syscalls a request). A record with a change
/// ends the batch and is returned to run after it.
async fn gather(
    rx: &mut mpsc::Receiver<Queued>,
    first: Queued,
    wait: Duration,
    max: usize,
) -> (Vec<Queued>, Option<Queued>) {
    let deadline = tokio::time::Instant::now() + wait;
    let mut batch = vec![first];
    let mut slept = wait.is_zero();
    loop {
        while batch.len() < max {
            let Ok(next) = rx.try_recv() else { break };
            // A change commits alone, after what was queued before it.
            if next.change.is_some() {
                return (batch, Some(next));
            }
            batch.push(next);
        }
        if slept || batch.len() >= max.min(ENOUGH) {
            return (batch, None);
        }
        tokio::time::sleep_until(deadline).await;
        slept = true;
    }
}

/// Commits a batch of plain records as one statement and acknowledges every sender.
async fn commit_batch(
    w: &Writer,
    conn: &mut store::WriterConn,
    known: &mut Option<store::ChainHead>,
    batch: Vec<Queued>,
) {
    w.queued.fetch_sub(batch.len(), Ordering::SeqCst);
    metrics::histogram!("credgate_audit_batch_size").record(batch.len() as f64);
    let n = batch.len();
    let mut records = Vec::with_capacity(n);
    let mut acks = Acks::default();
    for p in batch {
        acks.push(p.home, p.ack, p.t4_released);
        records.push(p.record);
    }
    // How long a batch's turn takes (wait for the write turn, INSERT, fsync): what each of its
    // requests waited for its record, beyond gathering. Plain batches only: a mutation's
    // transaction also runs its change, and would blur what the log's commits cost.
    let started = std::time::Instant::now();
    let appended = store::append(conn, known, &mut records, |stored, records| {
        chain_onto(stored, records, w)
    })
    .await;
    metrics::histogram!("credgate_audit_commit_seconds").record(started.elapsed().as_secs_f64());
    match appended {
        Ok(()) => {
            w.healthy.store(true, Ordering::Relaxed);
            acks.committed(w, records);
        }
        Err(e) => {
            failed(w, &e, n);
            acks.failed();
        }
    }
}

/// Where a sender waits: its thread, and that thread's runtime.
pub(super) struct Home {
    thread: std::thread::ThreadId,
    runtime: Option<tokio::runtime::Handle>,
}

impl Home {
    pub(super) fn current() -> Self {
        Self {
            thread: std::thread::current().id(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }
}

type Ack = tokio::sync::oneshot::Sender<Result<Committed, Refusal>>;

/// A batch's answers, grouped by the thread each sender waits on (a thread runs one runtime:
/// a serving loop, or a worker of the root's). Answering a oneshot from the
/// writer's thread wakes its waiter through that thread's runtime: one `eventfd` write per
/// record (1.2 syscalls a request in issue 18's trace). One task spawned on each serving
/// thread answers that thread's senders locally instead: one wake per thread per batch.
#[derive(Default)]
struct Acks {
    groups: Vec<(Home, Vec<(usize, Ack)>)>,
    t4: Vec<bool>,
}

impl Acks {
    fn push(&mut self, home: Home, ack: Ack, t4_released: bool) {
        let place = self.t4.len();
        self.t4.push(t4_released);
        match self
            .groups
            .iter_mut()
            .find(|(h, _)| h.thread == home.thread)
        {
            Some((_, acks)) => acks.push((place, ack)),
            None => self.groups.push((home, vec![(place, ack)])),
        }
    }

    /// Tells the alert rules and the wakers of every record, then answers each thread's
    /// senders. The order between threads' answers, and between them and a change committed
    /// next (answered from here), is not kept: each sender's data was decided before its
    /// record was queued. A group whose runtime is gone has its answers dropped, which its
    /// senders (gone with that runtime) would read as "not committed".
    fn committed(mut self, w: &Writer, records: Vec<AuditRecord>) {
        let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        for (r, t4) in records.into_iter().zip(std::mem::take(&mut self.t4)) {
            published(w, r, t4);
        }
        self.answer(ids);
    }

    /// Answers each sender with the id of the record at its place in the batch.
    fn answer(self, ids: Vec<String>) {
        let mut ids: Vec<Option<String>> = ids.into_iter().map(Some).collect();
        for (home, acks) in self.groups {
            let mine: Vec<(Committed, Ack)> = acks
                .into_iter()
                .filter_map(|(place, ack)| {
                    Some((
                        Committed {
                            id: ids[place].take()?,
                        },
                        ack,
                    ))
                })
                .collect();
            deliver(home, move || {
                for (answer, ack) in mine {
                    let _ = ack.send(Ok(answer));
                }
            });
        }
    }

    fn failed(self) {
        for (home, acks) in self.groups {
            deliver(home, move || {
                for (_, ack) in acks {
                    let _ = ack.send(Err(Refusal::Audit(AuditError::WriteFailed)));
                }
            });
        }
    }
}

/// Runs `answer` on the thread the senders wait on, or here when it has no runtime.
fn deliver(home: Home, answer: impl FnOnce() + Send + 'static) {
    match home.runtime {
        Some(rt) => {
            rt.spawn(async move { answer() });
        }
        None => answer(),
    }
}

/// Applies one record's change and appends the record in one transaction (see
/// `store::append_change`), then acknowledges: committed, refused, or failed.
async fn commit_change(
    w: &Writer,
    conn: &mut store::WriterConn,
    known: &mut Option<store::ChainHead>,
    p: Queued,
) {
    w.queued.fetch_sub(1, Ordering::SeqCst);
    let Queued {
        record,
        t4_released,
        change,
        ack,
        ..
    } = p;
    let change = change.expect("only records with a change come here");
    let mut records = [record];
    let outcome = store::append_change(conn, known, &mut records, &*change, |stored, records| {
        chain_onto(stored, records, w)
    })
    .await;
    let [record] = records;
    match outcome {
        Ok(()) => {
            w.healthy.store(true, Ordering::Relaxed);
            acknowledge(w, ack, record, t4_released);
        }
        Err(store::ChangeOutcome::Refused(ChangeError::Refused(e))) => {
            let _ = ack.send(Err(Refusal::Change(e)));
        }
        Err(store::ChangeOutcome::Refused(ChangeError::Storage(e))) => {
            failed(w, &StorageError::from(e), 1);
            let _ = ack.send(Err(Refusal::Audit(AuditError::WriteFailed)));
        }
        // The caller's input, not an outage: no alarm, the writer stays healthy.
        Err(store::ChangeOutcome::Failed(e)) if e.is_unstorable_input() => {
            let why = "a value of this request cannot be stored (a control character such as NUL)";
            let _ = ack.send(Err(Refusal::Change(Refused::Unstorable(why.into()))));
        }
        Err(store::ChangeOutcome::Failed(e)) => {
            failed(w, &e, 1);
            let _ = ack.send(Err(Refusal::Audit(AuditError::WriteFailed)));
        }
    }
}

fn acknowledge(w: &Writer, ack: Ack, r: AuditRecord, t4_released: bool) {
    let _ = ack.send(Ok(Committed { id: r.id.clone() }));
    published(w, r, t4_released);
}

/// Tells the alert rules and the tasks a commit wakes about a committed record.
fn published(w: &Writer, r: AuditRecord, t4_released: bool) {
    // Always stored, receivers or not, so one subscribed later sees only later commits.
    w.head.send_replace(r.chain_seq);
    let _ = w.committed.send(CommittedRecord {
        record: Arc::new(r),
        t4_released,
    });
}

fn failed(w: &Writer, e: &StorageError, n: usize) {
    tracing::error!(error = %e, records = n, "audit commit failed; nothing released");
    metrics::counter!("credgate_audit_write_failures_total").increment(1);
    w.healthy.store(false, Ordering::Relaxed);
    w.failures.fetch_add(1, Ordering::Relaxed);
}

/// The no-op benchmark mode has no writer: a change is committed on its own, unrecorded.
pub(super) async fn apply_unaudited(db: &Db, change: &dyn Change) -> Result<(), Refusal> {
    let failed = |e: sqlx::Error| {
        tracing::error!(error = %e, "change not committed");
        Refusal::Audit(AuditError::WriteFailed)
    };
    let mut tx = db.pool().begin().await.map_err(failed)?;
    match change.apply(&mut tx).await {
        Ok(()) => tx.commit().await.map_err(failed),
        Err(ChangeError::Refused(e)) => Err(Refusal::Change(e)),
        Err(ChangeError::Storage(e)) => Err(failed(e)),
    }
}

/// Chains `records` onto this writer's chain, in order, and signs a checkpoint when `every`
/// records or `every_us` have passed since the chain was last signed.
fn chain_onto(
    stored: &store::ChainHead,
    records: &mut [AuditRecord],
    w: &Writer,
) -> Option<store::Checkpoint> {
    let every = w.config.checkpoint_every;
    let every_us = w.config.checkpoint_secs as i64 * 1_000_000;
    for r in records.iter_mut() {
        r.writer_id.clone_from(&w.writer_id);
    }
    let (chain_seq, hash) = chain::link(stored.chain_seq, stored.hash.clone(), records);
    let now = w.clock.now();
    let due = chain_seq - stored.checkpoint_chain_seq >= every
        || stored
            .unsigned_since_us
            .is_some_and(|since| tail_due(now, since, every_us));
    due.then(|| checkpoint(w, &w.writer_id, chain_seq, hash, now))
}

/// Whether a tail unsigned since `since` is due at `now`: once it is `every_us` old, or at once
/// when `since` lies ahead of `now`. The clock was stepped back then (the tail's real age is
/// unknown), and waiting for the clock to catch up would leave the tail unsigned for as long as
/// the step (an hour's step: an hour of records no checkpoint vouches for).
fn tail_due(now: i64, since: i64, every_us: i64) -> bool {
    now < since || now - since >= every_us
}

fn checkpoint(
    w: &Writer,
    writer_id: &str,
    chain_seq: i64,
    hash: String,
    now: i64,
) -> store::Checkpoint {
    store::Checkpoint {
        seq: 0,
        writer_id: writer_id.to_string(),
        chain_seq,
        time_us: now,
        signature: chain::sign_chain_checkpoint(&w.signing, writer_id, chain_seq, &hash, now),
        hash,
        key_id: w.key_id.clone(),
    }
}

/// The idle tick's schedule: this chain's tail when it falls due.
struct Idle {
    every: Duration,
    clock: Arc<Clock>,
}

impl Idle {
    fn new(config: &AuditConfig, clock: Arc<Clock>) -> Self {
        Self {
            every: Duration::from_secs(config.checkpoint_secs.max(1)),
            clock,
        }
    }

    /// When to wake without a record: this chain's tail falling due. With the head unknown (at
    /// start, after a failure), at once, to read it.
    fn next_due(&self, known: Option<&store::ChainHead>) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let Some(head) = known else { return now };
        head.unsigned_since_us.map_or(now + self.every, |since| {
            let (clock_now, every_us) = (self.clock.now(), self.every.as_micros() as i64);
            // A tail stamped ahead of the clock (stepped back) is due at once (`tail_due`).
            if tail_due(clock_now, since, every_us) {
                return now;
            }
            now + self
                .every
                .saturating_sub(Duration::from_micros((clock_now - since).max(0) as u64))
        })
    }

    /// Signs this chain's tail if it is due. Only its own: a writer that signed other chains'
    /// heads (to leave no crashed replica's tail unsigned) signed whatever anyone with the
    /// database's role had inserted as a chain, turning a forged chain into a signed one
    /// (second review, H1). A crashed replica's tail stays unsigned until that writer id runs
    /// again; verify names it (`signed_through`, and the records after it). A failure is logged
    /// and retried at the next tick; nothing waits on it.
    async fn tick(
        &mut self,
        w: &Writer,
        conn: &mut store::WriterConn,
        known: &mut Option<store::ChainHead>,
    ) {
        if let Err(e) = sign_own_tail(w, conn, known, self.every).await {
            tracing::warn!(error = %e, "audit: signing the idle chain's tail failed; retrying");
            *known = None;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Signs this writer's head when its tail has been unsigned for `every`.
async fn sign_own_tail(
    w: &Writer,
    conn: &mut store::WriterConn,
    known: &mut Option<store::ChainHead>,
    every: Duration,
) -> Result<(), StorageError> {
    let head = match known.take() {
        Some(h) => h,
        None => store::chain_head(&w.db, &w.writer_id).await?,
    };
    let now = w.clock.now();
    let every_us = i64::try_from(every.as_micros()).unwrap_or(i64::MAX);
    let due = head
        .unsigned_since_us
        .is_some_and(|since| tail_due(now, since, every_us));
    if !due || head.chain_seq == 0 {
        *known = Some(head);
        return Ok(());
    }
    let cp = checkpoint(w, &w.writer_id, head.chain_seq, head.hash.clone(), now);
    store::append_checkpoint(conn, &cp).await?;
    *known = Some(store::signed(head, &cp));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Ack, Acks, Home, deliver, tail_due};
    use crate::audit::{AuditError, Refusal};

    /// A current-thread runtime on a thread of its own, as a serving loop is.
    fn serving_loop() -> (tokio::runtime::Handle, std::thread::ThreadId, impl FnOnce()) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (id_tx, id_rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            id_tx.send(std::thread::current().id()).unwrap();
            rt.block_on(async {
                let _ = stopped.await;
            });
        });
        let id = id_rx.recv().unwrap();
        (handle, id, move || {
            let _ = stop.send(());
            t.join().unwrap();
        })
    }

    fn queued() -> (
        super::Queued,
        tokio::sync::oneshot::Receiver<Result<super::Committed, Refusal>>,
    ) {
        let (ack, done) = tokio::sync::oneshot::channel();
        let q = super::Queued {
            record: crate::audit::AuditRecord::default(),
            t4_released: false,
            change: None,
            ack,
            home: Home::current(),
        };
        (q, done)
    }

    /// Queues `queued_before` records, then gathers after one more: the batch size and how long
    /// it took.
    async fn gather_after(queued_before: usize) -> (usize, std::time::Duration) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let mut keep = Vec::new();
        for _ in 0..queued_before {
            let (q, done) = queued();
            tx.send(q).await.ok().unwrap();
            keep.push(done);
        }
        let (first, _first_done) = queued();
        let started = std::time::Instant::now();
        let (batch, carried) = super::gather(&mut rx, first, WINDOW, 512).await;
        assert!(carried.is_none());
        (batch.len(), started.elapsed())
    }

    const WINDOW: std::time::Duration = std::time::Duration::from_millis(300);

    #[tokio::test]
    async fn a_batch_already_large_commits_at_once_and_a_small_one_waits_the_window() {
        // The first record and ENOUGH - 1 queued: exactly ENOUGH, at once.
        let (n, took) = gather_after(super::ENOUGH - 1).await;
        assert_eq!(n, super::ENOUGH);
        assert!(took < WINDOW / 2, "waited {took:?}");
        // One fewer: the whole window.
        let (n, took) = gather_after(super::ENOUGH - 2).await;
        assert_eq!(n, super::ENOUGH - 1);
        assert!(took >= WINDOW, "waited only {took:?}");
    }

    #[test]
    fn each_sender_gets_the_id_at_its_place_whatever_thread_it_waits_on() {
        let loops: Vec<_> = (0..3).map(|_| serving_loop()).collect();
        let mut acks = Acks::default();
        let mut waiting = Vec::new();
        // Interleaved across three loops: a, b, a, c, b.
        for l in [0, 1, 0, 2, 1] {
            let (ack, done): (Ack, _) = tokio::sync::oneshot::channel();
            let home = Home {
                thread: loops[l].1,
                runtime: Some(loops[l].0.clone()),
            };
            acks.push(home, ack, false);
            waiting.push(done);
        }
        let ids: Vec<String> = (0..5).map(|i| format!("au_{i}")).collect();
        acks.answer(ids.clone());
        for (done, id) in waiting.into_iter().zip(ids) {
            match done.blocking_recv() {
                Ok(Ok(c)) => assert_eq!(c.id, id),
                other => panic!("{other:?}"),
            }
        }
        for (_, _, stop) in loops {
            stop();
        }
    }

    #[tokio::test]
    async fn a_change_ends_the_batch_and_waits_its_turn() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let (plain, _a) = queued();
        tx.send(plain).await.ok().unwrap();
        let (mut change, _b) = queued();
        change.change = Some(crate::audit::Deferred::new(|_| Box::pin(async { Ok(()) })).change());
        tx.send(change).await.ok().unwrap();
        let (after, _c) = queued();
        tx.send(after).await.ok().unwrap();
        let (first, _d) = queued();
        let (batch, carried) = super::gather(&mut rx, first, WINDOW, 512).await;
        assert_eq!(
            batch.len(),
            2,
            "the first and the plain record before the change"
        );
        assert!(batch.iter().all(|q| q.change.is_none()));
        assert!(carried.is_some_and(|c| c.change.is_some()));
        assert!(
            rx.try_recv().is_ok_and(|q| q.change.is_none()),
            "the record after it waits"
        );
    }

    #[tokio::test]
    async fn a_record_arriving_within_the_window_joins_and_batch_max_caps() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(WINDOW / 3).await;
            let (q, done) = queued();
            late.send(q).await.ok().unwrap();
            std::mem::forget(done);
        });
        let (first, _f) = queued();
        let (batch, _) = super::gather(&mut rx, first, WINDOW, 512).await;
        assert_eq!(batch.len(), 2, "the record sent within the window");
        let mut keep = Vec::new();
        for _ in 0..6 {
            let (q, done) = queued();
            tx.send(q).await.ok().unwrap();
            keep.push(done);
        }
        let (first, _f) = queued();
        let (batch, _) = super::gather(&mut rx, first, WINDOW, 4).await;
        assert_eq!(
            batch.len(),
            4,
            "batch_max below ENOUGH caps and commits at once"
        );
    }

    #[test]
    fn answers_run_on_the_thread_their_sender_waits_on() {
        let (rt, thread, stop) = serving_loop();
        let (tx, rx) = std::sync::mpsc::channel();
        let home = Home {
            thread,
            runtime: Some(rt),
        };
        deliver(home, move || tx.send(std::thread::current().id()).unwrap());
        let ran_on = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(ran_on, thread);
        stop();
        // Without a runtime (a caller outside tokio), the writer answers at once.
        let (tx, rx) = std::sync::mpsc::channel();
        let home = Home {
            thread,
            runtime: None,
        };
        deliver(home, move || tx.send(std::thread::current().id()).unwrap());
        assert_eq!(rx.try_recv().unwrap(), std::thread::current().id());
    }

    #[test]
    fn a_failed_batch_answers_every_sender_of_every_thread_and_a_gone_loop_fails_closed() {
        let (a, a_id, stop_a) = serving_loop();
        let (b, b_id, stop_b) = serving_loop();
        let (gone, gone_id, stop_gone) = serving_loop();
        stop_gone();
        let mut acks = Acks::default();
        let mut waiting = Vec::new();
        for (rt, id) in [(&a, a_id), (&b, b_id), (&a, a_id), (&gone, gone_id)] {
            let (ack, done): (Ack, _) = tokio::sync::oneshot::channel();
            let home = Home {
                thread: id,
                runtime: Some(rt.clone()),
            };
            acks.push(home, ack, false);
            waiting.push(done);
        }
        assert_eq!(acks.groups.len(), 3, "one group a thread");
        acks.failed();
        let answers: Vec<_> = waiting.into_iter().map(|d| d.blocking_recv()).collect();
        for answer in &answers[..3] {
            assert!(matches!(
                answer,
                Ok(Err(Refusal::Audit(AuditError::WriteFailed)))
            ));
        }
        // The loop is gone: its answer is dropped, which its caller reads as "not committed".
        assert!(answers[3].is_err());
        stop_a();
        stop_b();
    }

    #[test]
    fn a_tail_is_due_when_old_enough_or_stamped_ahead_of_a_clock_stepped_back() {
        let every = 10_000_000;
        assert!(
            !tail_due(1_000_000_000, 1_000_000_000, every),
            "just unsigned"
        );
        assert!(!tail_due(1_009_999_999, 1_000_000_000, every));
        assert!(tail_due(1_010_000_000, 1_000_000_000, every), "old enough");
        // The clock went back an hour after the tail was stamped: due now, not in an hour.
        assert!(tail_due(
            1_000_000_000 - 3_600_000_000,
            1_000_000_000,
            every
        ));
        assert!(tail_due(999_999_999, 1_000_000_000, every));
    }
}
