//! Following the log: batches of events in log order, waiting for more when
//! there are none, never skipping one that commits late.
//!
//! A reader that finds nothing new either waits for a notification (nothing is
//! in flight), or, when events have committed beyond the horizon, looks again
//! after a short, growing pause: the transaction holding the horizon will end
//! and there may be no notification for it (it need not be an append).

use std::time::Duration;

use tokio::sync::watch;

use crate::error::StoreError;
use crate::event::RecordedEvent;
use crate::notify::LogListener;
use crate::position::Position;
use crate::store::{EventStore, LogFilter, LogRow};

/// How often a follower looks even without a notification.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// First and longest pause while waiting for the horizon to move.
const HORIZON_PAUSE_MIN: Duration = Duration::from_millis(1);
const HORIZON_PAUSE_MAX: Duration = Duration::from_millis(50);

/// The pause before looking again, `waited` after the horizon first held
/// events back: a quarter of that, within bounds. What holds the horizon is
/// mostly a write transaction of a few milliseconds; doubling the pause
/// each time could overshoot its end by as long again, a delay every event
/// behind it then carries. A quarter bounds that to a quarter of the wait,
/// at the price of a few more looks.
fn horizon_pause(waited: Duration) -> Duration {
    (waited / 4).clamp(HORIZON_PAUSE_MIN, HORIZON_PAUSE_MAX)
}

/// A cursor over the global log, yielding rows decoded as `T`.
#[derive(Debug)]
pub struct LogFollower<T = RecordedEvent> {
    _rows: std::marker::PhantomData<fn() -> T>,
    store: EventStore,
    wakeups: watch::Receiver<u64>,
    after: Position,
    batch_size: i64,
    filter: LogFilter,
}

impl<T: LogRow> LogFollower<T> {
    /// A follower reading after `after`, `batch_size` events at a time.
    pub fn new(
        store: EventStore,
        listener: &LogListener,
        after: Position,
        batch_size: i64,
    ) -> Self {
        LogFollower {
            _rows: std::marker::PhantomData,
            store,
            wakeups: listener.subscribe(),
            after,
            batch_size,
            filter: LogFilter::default(),
        }
    }

    /// Only events matching `filter` (the position still advances over the
    /// whole log).
    pub fn with_filter(mut self, filter: LogFilter) -> Self {
        self.filter = filter;
        self
    }

    /// The position after the last event returned.
    pub fn position(&self) -> Position {
        self.after
    }

    /// Moves the cursor (after a resynchronisation).
    pub fn seek(&mut self, after: Position) {
        self.after = after;
    }

    /// The next events, if any are available now.
    pub async fn try_next_batch(&mut self) -> Result<Vec<T>, StoreError> {
        let batch: Vec<T> = self
            .store
            .read_log_as(self.after, &self.filter, self.batch_size)
            .await?;
        if let Some(last) = batch.last() {
            self.after = last.position();
        }
        Ok(batch)
    }

    /// The next non-empty batch, waiting as long as it takes.
    pub async fn next_batch(&mut self) -> Result<Vec<T>, StoreError> {
        let mut held_since = None;
        loop {
            // Mark before reading, so a notification during the read is not lost.
            self.wakeups.borrow_and_update();
            let batch = self.try_next_batch().await?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            if self.store.pending_beyond_horizon().await? {
                let since = *held_since.get_or_insert_with(tokio::time::Instant::now);
                tokio::time::sleep(horizon_pause(since.elapsed())).await;
                continue;
            }
            held_since = None;
            tokio::select! {
                changed = self.wakeups.changed() => {
                    if changed.is_err() {
                        // listener gone: fall back to polling
                        tokio::time::sleep(POLL_INTERVAL).await;
                    }
                }
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_is_a_quarter_of_the_wait_within_bounds() {
        assert_eq!(horizon_pause(Duration::ZERO), HORIZON_PAUSE_MIN);
        assert_eq!(
            horizon_pause(Duration::from_millis(20)),
            Duration::from_millis(5)
        );
        assert_eq!(horizon_pause(Duration::from_secs(10)), HORIZON_PAUSE_MAX);
    }
}
