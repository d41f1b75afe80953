//! What each read model has applied, watched once for everyone who waits on
//! `min_position`.
//!
//! A read with `min_position` waits until its projection's checkpoint
//! reaches the token. When each waiter asked PostgreSQL for itself, a look
//! cost a query per waiter, so the looks had to be spaced (up to 25 ms
//! apart) and an answer came up to that much later than the read model
//! had the write. Here one task reads every checkpoint each [`POLL`], only
//! while someone waits, and the waiters watch its answer: the cost is one
//! small query per [`POLL`] however many wait, and an answer comes at most
//! [`POLL`] (and on average half of it) after the checkpoint moved.
//!
//! The task starts with the first wait and stops when the last clone of
//! the [`Applied`] that started it is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use eventstore::Position;
use tokio::sync::{watch, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

/// How often the checkpoints are read while anyone waits.
pub const POLL: Duration = Duration::from_millis(2);
/// The pause after a failed read (PostgreSQL away): waiters keep waiting
/// until it answers again or their time is up.
const RETRY: Duration = Duration::from_millis(100);

/// Each projection's applied position, as last read, for waiters.
#[derive(Debug)]
pub struct Applied {
    pool: deadpool_postgres::Pool,
    shared: Arc<Shared>,
    started: OnceLock<DropGuard>,
}

#[derive(Debug)]
struct Shared {
    positions: watch::Sender<HashMap<String, Position>>,
    waiters: AtomicUsize,
    wake: Notify,
}

impl Applied {
    /// A watcher reading checkpoints over `pool` (nothing runs until the
    /// first wait).
    pub fn new(pool: deadpool_postgres::Pool) -> Applied {
        Applied {
            pool,
            shared: Arc::new(Shared {
                positions: watch::Sender::new(HashMap::new()),
                waiters: AtomicUsize::new(0),
                wake: Notify::new(),
            }),
            started: OnceLock::new(),
        }
    }

    /// Waits until `projection` has applied `position`, at most `timeout`.
    /// True when it has; false when the time ran out.
    pub async fn wait(&self, projection: &str, position: Position, timeout: Duration) -> bool {
        self.start();
        let mut positions = self.shared.positions.subscribe();
        let _waiting = Waiting::enter(&self.shared);
        let reached = tokio::time::timeout(
            timeout,
            positions.wait_for(|applied| {
                applied
                    .get(projection)
                    .is_some_and(|applied| *applied >= position)
            }),
        )
        .await;
        // The sender lives as long as `self`: `wait_for` cannot fail.
        matches!(reached, Ok(Ok(_)))
    }

    fn start(&self) {
        self.started.get_or_init(|| {
            let stop = CancellationToken::new();
            tokio::spawn(watch_checkpoints(
                self.pool.clone(),
                self.shared.clone(),
                stop.clone(),
            ));
            stop.drop_guard()
        });
    }
}

/// Counts a waiter in, and out when dropped (also when its wait is
/// cancelled), and wakes the task.
struct Waiting<'a>(&'a Shared);

impl<'a> Waiting<'a> {
    fn enter(shared: &'a Shared) -> Waiting<'a> {
        shared.waiters.fetch_add(1, Ordering::SeqCst);
        // A permit is stored if the task is not waiting yet: no lost wake-up.
        shared.wake.notify_one();
        Waiting(shared)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn watch_checkpoints(
    pool: deadpool_postgres::Pool,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    loop {
        if shared.waiters.load(Ordering::SeqCst) == 0 {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = shared.wake.notified() => continue,
            }
        }
        let pause = match read(&pool).await {
            Ok(positions) => {
                shared.positions.send_if_modified(|current| {
                    let changed = *current != positions;
                    *current = positions;
                    changed
                });
                POLL
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the projections' checkpoints");
                RETRY
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

async fn read(
    pool: &deadpool_postgres::Pool,
) -> Result<HashMap<String, Position>, eventstore::StoreError> {
    let client = pool.get().await?;
    Ok(projectors::checkpoint::all(&**client)
        .await?
        .into_iter()
        .map(|checkpoint| (checkpoint.projection, checkpoint.position))
        .collect())
}
