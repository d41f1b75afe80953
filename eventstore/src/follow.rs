//! Following the log: batches of events in log order, waiting for more when
//! there are none, never skipping one that commits late.
//!
//! A reader that finds nothing new either waits for a notification (nothing is
//! in flight), or, when events have committed beyond the horizon, looks again
//! after a short, growing pause: the transaction holding the horizon will end
//! and there may be no notification for it (it need not be an append).
//!
//! The plain horizon waits for every transaction of the server, including
//! ones that cannot append an event (a saga's state, a forgotten `begin` in
//! psql, another database's work). Once it has held events back for
//! [`LOOK_PAST_OTHERS_AFTER`], the follower reads below the horizon of the
//! transactions that may append (`schemas/sql/0007_log_horizon.sql`), so a
//! long transaction that cannot append delays it by that much, not until it
//! ends. That read consults the lock table, which costs enough under load
//! that it is not the default: the transactions that hold the plain horizon
//! are mostly short, and waiting them out costs less than looking past them
//! on every read (docs/BENCHMARKS.md, "The horizon of transactions that may
//! append"). The follower goes back to plain reads once the plain horizon
//! has passed its position.

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
/// How long the plain horizon may hold events back before the follower
/// passes over transactions that cannot append.
pub const LOOK_PAST_OTHERS_AFTER: Duration = Duration::from_secs(1);

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
    /// Since when the plain horizon has held events back, if it does.
    held_since: Option<tokio::time::Instant>,
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
            held_since: None,
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

    /// True while the follower passes over transactions that cannot append.
    pub fn looking_past_others(&self) -> bool {
        self.held_since
            .is_some_and(|since| since.elapsed() >= LOOK_PAST_OTHERS_AFTER)
    }

    /// The next events, if any are available now.
    pub async fn try_next_batch(&mut self) -> Result<Vec<T>, StoreError> {
        let batch: Vec<T> = if self.looking_past_others() {
            let (batch, plain) = self
                .store
                .read_log_past_others_as::<T>(self.after, &self.filter, self.batch_size)
                .await?;
            // Once the plain horizon is past everything read, plain reads
            // give the same answers again, for less.
            if let (Some(last), Some(plain)) = (batch.last(), plain) {
                if last.position().transaction_id < plain {
                    self.held_since = None;
                }
            }
            batch
        } else {
            let batch: Vec<T> = self
                .store
                .read_log_as(self.after, &self.filter, self.batch_size)
                .await?;
            if !batch.is_empty() {
                // The plain horizon moved: what held it has ended.
                self.held_since = None;
            }
            batch
        };
        if let Some(last) = batch.last() {
            self.after = last.position();
        }
        Ok(batch)
    }

    /// The next non-empty batch, waiting as long as it takes.
    pub async fn next_batch(&mut self) -> Result<Vec<T>, StoreError> {
        loop {
            // Mark before reading, so a notification during the read is not lost.
            self.wakeups.borrow_and_update();
            let batch = self.try_next_batch().await?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            if self.store.pending_beyond_horizon().await? {
                let since = *self
                    .held_since
                    .get_or_insert_with(tokio::time::Instant::now);
                let pause = if self.looking_past_others() {
                    // Whatever holds it now may append: it is a write of a
                    // few milliseconds, like any other.
                    HORIZON_PAUSE_MIN * 4
                } else {
                    horizon_pause(since.elapsed())
                };
                tokio::time::sleep(pause).await;
                continue;
            }
            self.held_since = None;
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
