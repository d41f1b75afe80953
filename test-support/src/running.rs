//! Tasks a test starts and stops: a role (relay, projector, saga runner,
//! API) or anything else that runs until told to stop.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a task gets to stop when asked.
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// A spawned task and the token that asks it to stop. Dropping it asks and
/// aborts the task, also when the test panics.
#[derive(Debug)]
pub struct Running<T> {
    task: Option<JoinHandle<T>>,
    stop: CancellationToken,
}

impl<T: Send + 'static> Running<T> {
    /// Spawns `start(stop)`: the task should end soon after `stop` is
    /// cancelled.
    pub fn spawn<F, Fut>(start: F) -> Running<T>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let stop = CancellationToken::new();
        Running {
            task: Some(tokio::spawn(start(stop.clone()))),
            stop,
        }
    }

    /// Asks the task to stop and waits for what it returns; panics if it
    /// does not end within 10 s, or ended already and was collected.
    pub async fn stop(mut self) -> T {
        self.stop.cancel();
        self.ended_within(STOP_WITHIN)
            .await
            .unwrap_or_else(|| panic!("the task did not stop within {STOP_WITHIN:?}"))
    }

    /// Asks the task to stop, without waiting for it.
    pub fn ask_to_stop(&self) {
        self.stop.cancel();
    }

    /// What the task returned, if it ends within `within` (by itself: this
    /// does not ask it to stop); `None` while it still runs. Re-raises its
    /// panic.
    pub async fn ended_within(&mut self, within: Duration) -> Option<T> {
        let task = self.task.as_mut()?;
        match tokio::time::timeout(within, task).await {
            Err(_) => None,
            Ok(joined) => {
                self.task = None;
                match joined {
                    Ok(value) => Some(value),
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => panic!("the task was cancelled: {e}"),
                }
            }
        }
    }

    /// True once the task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Ends the task at once, without asking, as a crash would, and waits
    /// until it is gone.
    pub async fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // Cancelled, or ended just before: either way it is gone.
            let _ = task.await;
        }
    }
}

impl<T> Drop for Running<T> {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
