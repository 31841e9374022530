//! One lifecycle for every background task: spawned through [`Workers`], cancelled and
//! drained on shutdown. Nothing in the crate calls `tokio::spawn` on its own.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The background tasks of one running bridge.
#[derive(Clone, Default)]
pub struct Workers {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    cancel: CancellationToken,
    tasks: Mutex<JoinSet<()>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let running = self.inner.tasks.lock().map_or(0, |t| t.len());
        f.debug_struct("Workers")
            .field("running", &running)
            .field("cancelled", &self.inner.cancel.is_cancelled())
            .finish()
    }
}

impl Workers {
    /// No tasks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` in the background until it ends or the bridge shuts down, whichever
    /// comes first: at shutdown it is dropped at its next `.await`. After shutdown began,
    /// nothing new starts.
    pub fn spawn(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.inner.cancel.clone();
        let mut tasks = self
            .inner
            .tasks
            .lock()
            .expect("workers lock is not poisoned");
        if cancel.is_cancelled() {
            debug!(name, "shutting down: task not started");
            return;
        }
        // Reap what has finished, so short tasks (throttle timers) do not accumulate.
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done
                && e.is_panic()
            {
                warn!(error = %e, "a background task panicked");
            }
        }
        tasks.spawn(async move {
            tokio::select! {
                biased;
                () = cancel.cancelled() => debug!(name, "task cancelled"),
                () = task => {}
            }
        });
    }

    /// The token cancelled at shutdown, for loops that want to stop between two steps.
    pub fn cancelled(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// How many tasks are running (finished ones may still be counted until reaped).
    pub fn len(&self) -> usize {
        self.inner.tasks.lock().map_or(0, |t| t.len())
    }

    /// Whether no task is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cancels every task and waits for them to finish, at most `grace`; what is still
    /// running then is aborted.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.cancel.cancel();
        let mut tasks = std::mem::take(
            &mut *self
                .inner
                .tasks
                .lock()
                .expect("workers lock is not poisoned"),
        );
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            warn!(
                left = tasks.len(),
                "background tasks did not stop in time; aborted"
            );
            tasks.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_cancels_and_drains_everything() {
        let workers = Workers::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        for _ in 0..3 {
            let tx = tx.clone();
            // Holds a sender until cancelled: the channel closes only when all are dropped.
            workers.spawn("forever", async move {
                let _tx = tx;
                std::future::pending::<()>().await;
            });
        }
        drop(tx);
        assert_eq!(workers.len(), 3);
        workers.shutdown(Duration::from_secs(5)).await;
        assert!(rx.recv().await.is_none(), "every task was dropped");
        assert!(workers.is_empty());
        workers.spawn("late", async {});
        assert!(workers.is_empty(), "nothing starts after shutdown");
    }
}
