//! The serving threads (issue 18, decision 4). One tokio multi-thread runtime served every
//! connection and ran every background task: a request's task, its socket's wake-ups and its
//! pooled store connection were each on any worker, and a profile of the no-op gateway spent
//! its time handing them between threads. Here, as in nginx and Pingora, each serving thread
//! runs its own single-threaded event loop, and a connection lives on one loop from its accept
//! to its close: the request, the store exchange (`proxy::upstream`'s pools are per thread)
//! and the answer stay on one core. The composition root's runtime keeps the accept loop and
//! the background tasks (audit writer, indexer, outbox, probes, metrics listener).
//!
//! Connections are handed out by the accept loop (`serve`) to the loop with the fewest open,
//! not accepted by each loop on its own copy of the socket: with copies, a burst of 64
//! connections all went to the loop that woke first (measured: one thread did 93% of the work
//! and throughput fell below the single runtime's), and `SO_REUSEPORT` would let another
//! process of the same user take a share of the connections.
//!
//! Lifetime: the loops run until `release`, after the shutdown's last audit commits, because
//! those may use a database connection opened on a loop (a PostgreSQL socket is driven by the
//! loop it was opened on). Dropping `Workers` (the gateway's future dropped unfinished, as
//! tests do) ends every loop at once.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread::JoinHandle,
};

use tokio::{runtime::Handle, sync::watch};

/// One serving thread's loop, and how many connections it holds.
struct Worker {
    handle: Handle,
    open: Arc<AtomicUsize>,
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

/// Starts `n` serving threads, each running an event loop until released.
pub(super) fn start(n: usize) -> std::io::Result<Workers> {
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
        let thread = std::thread::Builder::new()
            .name(format!("credgate-io-{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let _ = exit.wait_for(|e| *e).await;
                });
                // The runtime is dropped here: what still runs on it (pooled store connections,
                // tasks a handler spawned) ends with it.
            })?;
        workers.workers.push(Worker {
            handle,
            open: Arc::default(),
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

impl Drop for Workers {
    fn drop(&mut self) {
        self.exit.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_goes_to_the_loop_holding_the_fewest() {
        let workers = start(2).unwrap();
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

    /// Dropped without `release` (the gateway's future dropped), the loops end: nothing runs on
    /// them any more.
    #[tokio::test]
    async fn dropping_the_workers_ends_their_loops() {
        let workers = start(3).unwrap();
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
