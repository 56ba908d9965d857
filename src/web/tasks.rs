//! The supervisor of the web layer's background tasks: every task `App` starts is spawned here
//! and its handle kept, so that shutdown can stop each one and wait for it rather than leaving
//! it to die with the runtime part-way through a write.

use tokio::task::JoinHandle;

/// The running background tasks, by name (the name is for the log only).
#[derive(Default)]
pub struct Tasks {
    running: Vec<(&'static str, JoinHandle<()>)>,
}

impl Tasks {
    /// Spawns `task` and keeps its handle.
    pub fn spawn(
        &mut self,
        name: &'static str,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.keep(name, tokio::spawn(task));
    }

    /// Keeps the handle of a task started elsewhere (the core's `spawn` functions).
    pub fn keep(&mut self, name: &'static str, handle: JoinHandle<()>) {
        self.running.push((name, handle));
    }

    /// How many tasks are kept.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Stops every task and waits for each to end. The tasks are loops on a timer or a channel
    /// with no state of their own worth finishing; what they queued to the audit log is drained
    /// by the caller afterwards.
    pub async fn stop(mut self) {
        let running = std::mem::take(&mut self.running);
        for (_, handle) in &running {
            handle.abort();
        }
        for (name, handle) in running {
            match handle.await {
                Ok(()) => tracing::debug!(task = name, "background task had ended"),
                Err(e) if e.is_cancelled() => {
                    tracing::debug!(task = name, "background task stopped")
                }
                Err(e) => tracing::error!(task = name, error = %e, "background task panicked"),
            }
        }
    }
}

/// Dropped without `stop` (a gateway whose start failed after its tasks were spawned, or whose
/// `run_until` was dropped), the tasks are aborted: a `JoinHandle` dropped detaches its task,
/// and an indexer, outbox or probe of a gateway that is gone went on using its database.
impl Drop for Tasks {
    fn drop(&mut self) {
        for (_, handle) in &self.running {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spawns a task that never returns; the receiver sees the channel closed once the task's
    /// future is gone (aborted, not merely detached).
    fn spawn_forever(tasks: &mut Tasks) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn("forever", async move {
            let _held = tx;
            std::future::pending::<()>().await
        });
        rx
    }

    #[tokio::test]
    async fn stop_ends_every_task_even_one_that_never_returns() {
        let mut tasks = Tasks::default();
        let rx = spawn_forever(&mut tasks);
        tasks.spawn("done", async {});
        assert_eq!(tasks.len(), 2);
        tasks.stop().await;
        assert!(rx.await.is_err());
    }

    #[tokio::test]
    async fn dropped_tasks_are_aborted() {
        let mut tasks = Tasks::default();
        let rx = spawn_forever(&mut tasks);
        drop(tasks);
        let closed = tokio::time::timeout(std::time::Duration::from_secs(10), rx).await;
        assert!(matches!(closed, Ok(Err(_))), "the task still runs");
    }
}
