//! The serving threads (issue 18, decision 4). One tokio multi-thread runtime served every
//! connection and ran every background task: a request's task, its socket's wake-ups and its
//! pooled store connection were each on any worker, and a profile of the no-op gateway spent
//! its time handing them between threads. Here, as in nginx and Pingora, each serving thread
//! runs its own single-threaded event loop, and a connection lives on one loop from its accept
//! to its close: the request, the store exchange (`proxy::upstream`'s pools are per thread)
//! and the answer stay on one thread (not pinned to a core: the kernel places the threads).
//! An audited answer still waits for the audit writer, on the composition root's runtime. The composition root's runtime keeps the accept loop and
//! the background tasks (audit writer, indexer, outbox, probes, metrics listener).
//!
//! Connections are handed out by the accept loop (`serve`) to the loop with the fewest open,
//! not accepted by each loop on its own copy of the socket: with copies, a burst of 64
//! connections all went to the loop that woke first (measured: one thread did 93% of the work
//! and throughput fell below the single runtime's), and `SO_REUSEPORT` would let another
//! process of the same user take a share of the connections.
//!
//! No work stealing: a handler that computes for long (a 4 MB store answer filtered, a CSV
//! export) holds every connection on its loop meanwhile, as a busy nginx worker does. Work
//! that blocks goes to `spawn_blocking` (argon2, file reads).
//!
//! Lifetime: the loops run until `release`, after the shutdown's last audit commits, because
//! those may use a pooled database connection opened on a loop (a PostgreSQL socket is driven
//! by the loop it was opened on; the audit writer opens its own, `Db::own_connection`).
//! Tasks a handler spawns with `spawn_kept` are waited for (`settle`) before those commits.
//! Dropping `Workers` (the gateway's future dropped unfinished, as tests do) ends every loop
//! at once.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread::JoinHandle,
};

use tokio::{runtime::Handle, sync::watch};

/// One serving thread's loop, how many connections it holds, and its kept tasks.
struct Worker {
    handle: Handle,
    open: Arc<AtomicUsize>,
    kept: Arc<Kept>,
}

/// The tasks a handler started that must finish before the shutdown's last audit commits
/// (`spawn_kept`): a record's commit after its caller hung up, say.
#[derive(Default)]
struct Kept {
    running: AtomicUsize,
    done: tokio::sync::Notify,
}

thread_local! {
    /// The serving thread's kept tasks; `None` on any other thread.
    static KEPT: std::cell::RefCell<Option<Arc<Kept>>> = const { std::cell::RefCell::new(None) };
}

/// Counts a kept task until it ends (or is dropped unfinished).
struct KeptGuard(Arc<Kept>);

impl Drop for KeptGuard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

/// Spawns `task` on the current runtime; on a serving thread, the shutdown waits for it
/// (`Workers::settle`) before the audit queue's last drain. A task a handler spawns outlives
/// its connection, so draining the connections does not wait for it.
pub(crate) fn spawn_kept<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let guard = KEPT.with_borrow(|k| {
        k.as_ref().map(|k| {
            k.running.fetch_add(1, Ordering::AcqRel);
            KeptGuard(k.clone())
        })
    });
    tokio::spawn(async move {
        let _guard = guard;
        task.await
    })
}

pub(super) struct Workers {
    workers: Vec<Worker>,
    /// Told `true` to end the loops.
    exit: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

/// A connection's place on a loop: counted while it is held.
pub(super) struct Placed {
    open: Arc<AtomicUsize>,
}

impl Drop for Placed {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts `n` serving threads, named `{name}-{i}` (at most 15 bytes in all: Linux cuts the
/// rest), each running an event loop until released.
pub(super) fn start(n: usize, name: &str) -> std::io::Result<Workers> {
    let (exit, _) = watch::channel(false);
    let mut workers = Workers {
        workers: Vec::with_capacity(n),
        exit,
        threads: Vec::with_capacity(n),
    };
    for i in 0..n.max(1) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let mut exit = workers.exit.subscribe();
        let kept = Arc::new(Kept::default());
        let kept_here = kept.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || {
                KEPT.set(Some(kept_here));
                runtime.block_on(async move {
                    let _ = exit.wait_for(|e| *e).await;
                });
                // The runtime is dropped here: what still runs on it (pooled store connections,
                // tasks a handler spawned) ends with it.
            })?;
        workers.workers.push(Worker {
            handle,
            open: Arc::default(),
            kept,
        });
        workers.threads.push(thread);
    }
    Ok(workers)
}

impl Workers {
    /// The loop holding the fewest connections (the first of equals), and the new
    /// connection's place on it.
    pub(super) fn place(&self) -> (&Handle, Placed) {
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.open.load(Ordering::Relaxed))
            .expect("start makes at least one loop");
        worker.open.fetch_add(1, Ordering::Relaxed);
        let placed = Placed {
            open: worker.open.clone(),
        };
        (&worker.handle, placed)
    }

    /// Waits until the tasks handlers spawned with `spawn_kept` have ended, for `limit` at
    /// most (a commit stuck on a dead database must not hold the shutdown forever).
    pub(super) async fn settle(&self, limit: std::time::Duration) {
        let all = async {
            for w in &self.workers {
                loop {
                    let done = w.kept.done.notified();
                    if w.kept.running.load(Ordering::Acquire) == 0 {
                        break;
                    }
                    done.await;
                }
            }
        };
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::error!("tasks of the serving threads still running at shutdown");
        }
    }

    /// Ends the loops and waits for their threads.
    pub(super) async fn release(mut self) {
        self.exit.send_replace(true);
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                if t.join().is_err() {
                    tracing::error!("a serving thread panicked");
                }
            }
        })
        .await;
    }
}

// No `Drop`: dropping `Workers` drops `exit`, and each loop's `wait_for` ends on the closed
// channel as it does on `true`.

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_goes_to_the_loop_holding_the_fewest() {
        let workers = start(2, "t").unwrap();
        let count = |w: &Workers| -> Vec<usize> {
            w.workers
                .iter()
                .map(|w| w.open.load(Ordering::Relaxed))
                .collect()
        };
        let a = workers.place().1;
        let b = workers.place().1;
        let c = workers.place().1;
        assert_eq!(count(&workers), [2, 1]);
        drop(a);
        drop(c);
        assert_eq!(count(&workers), [0, 1]);
        let _d = workers.place().1;
        assert_eq!(count(&workers), [1, 1]);
        drop(b);
        workers.release().await;
    }

    /// `settle` waits for a task a handler spawned with `spawn_kept` on a serving thread, and
    /// no longer than its limit.
    #[tokio::test]
    async fn settle_waits_for_the_kept_tasks_of_the_loops() {
        let workers = start(2, "t").unwrap();
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let (on, _placed) = workers.place();
        on.spawn(async move {
            // Detached: the task runs on, kept, after this one returns.
            drop(spawn_kept(async move {
                let _ = finished.await;
            }));
        })
        .await
        .unwrap();
        let started = std::time::Instant::now();
        workers.settle(std::time::Duration::from_millis(300)).await;
        assert!(started.elapsed() >= std::time::Duration::from_millis(300));
        finish.send(()).unwrap();
        let started = std::time::Instant::now();
        workers.settle(std::time::Duration::from_secs(30)).await;
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        // Off a serving thread, `spawn_kept` is a plain spawn: nothing to wait for.
        let (_keep, never) = tokio::sync::oneshot::channel::<()>();
        let _task = spawn_kept(async move {
            let _ = never.await;
        });
        let started = std::time::Instant::now();
        workers.settle(std::time::Duration::from_secs(30)).await;
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    /// Dropped without `release` (the gateway's future dropped), the loops end: nothing runs on
    /// them any more.
    #[tokio::test]
    async fn dropping_the_workers_ends_their_loops() {
        let workers = start(3, "t").unwrap();
        let handles: Vec<Handle> = workers.workers.iter().map(|w| w.handle.clone()).collect();
        for h in &handles {
            assert!(h.spawn(async {}).await.is_ok(), "a loop runs");
        }
        drop(workers);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for h in &handles {
            while h.spawn(async {}).await.is_ok() {
                assert!(std::time::Instant::now() < deadline, "a loop still runs");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}
