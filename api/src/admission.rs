//! Admission by lag: `POST /orders` waits while the consumers of the log
//! (the saga and the projections) are far behind it.
//!
//! When the CPUs are saturated, every stage of an order's way (the append,
//! the relay, the saga, the projections) queues for them, and an order's
//! time from placed to confirmed grows with everything in flight. Taking
//! new orders more slowly then costs no throughput (the work per order is
//! the same) but keeps the queues behind the API short: the wait moves to
//! the door, where it is bounded by the number of clients waiting.
//!
//! A poller reads, every [`POLL`], how many events the furthest-behind live
//! consumer has still to handle: the log's last position minus the
//! smallest checkpoint position among running projections and sagas that
//! moved in the last [`LIVE`] (a consumer that is stopped or has failed
//! must not close the door for good). Positions are drawn from one
//! sequence, so the difference counts the events in between, near enough.
//! A new order waits while that exceeds the limit, at most [`MAX_WAIT`],
//! then goes ahead anyway: admission shapes the load, it never refuses.
//!
//! Orders pass the door in the order they came to it: one at a time looks
//! at the lag (tokio's mutex queues its waiters fairly), the others wait
//! behind it. When each waiter looked for itself, those that happened to
//! look while the lag was low went, and some that came earlier missed that
//! moment and waited for the next: the wait at the door, which the time
//! from placed to confirmed includes, had a long tail.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// How often the lag is read.
pub const POLL: Duration = Duration::from_millis(10);
/// The longest a new order waits at the door.
pub const MAX_WAIT: Duration = Duration::from_millis(500);
/// A checkpoint not moved for this long belongs to a consumer that is not
/// running (or not keeping up at all); it is left out.
pub const LIVE: Duration = Duration::from_secs(5);

/// The lag in events, as last read, and the limit.
#[derive(Debug)]
pub struct Admission {
    limit: u64,
    lag: AtomicU64,
    /// Held by the order that looks at the lag; the others queue for it.
    door: tokio::sync::Mutex<()>,
}

impl Admission {
    /// No admission control: every order goes ahead at once.
    pub fn off() -> Arc<Admission> {
        Arc::new(Admission {
            limit: 0,
            lag: AtomicU64::new(0),
            door: tokio::sync::Mutex::new(()),
        })
    }

    /// Admission with `limit` events of lag (0: [`Admission::off`]). The
    /// poller stops when the returned value is dropped.
    pub fn spawn(pool: deadpool_postgres::Pool, limit: u64) -> Arc<Admission> {
        let admission = Arc::new(Admission {
            limit,
            lag: AtomicU64::new(0),
            door: tokio::sync::Mutex::new(()),
        });
        if limit > 0 {
            let weak = Arc::downgrade(&admission);
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(POLL);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let Some(admission) = weak.upgrade() else {
                        return;
                    };
                    match read_lag(&pool).await {
                        Ok(lag) => admission.lag.store(lag, Ordering::Relaxed),
                        Err(e) => {
                            // Unknown lag: admit.
                            admission.lag.store(0, Ordering::Relaxed);
                            tracing::debug!(error = %e, "cannot read the consumers' lag");
                        }
                    }
                    metrics::gauge!("ordo_admission_lag_events")
                        .set(admission.lag.load(Ordering::Relaxed) as f64);
                }
            });
        }
        admission
    }

    /// The lag last read, in events.
    pub fn lag(&self) -> u64 {
        self.lag.load(Ordering::Relaxed)
    }

    /// Waits, behind the orders that came first, while the lag exceeds the
    /// limit; at most [`MAX_WAIT`] in all.
    pub async fn admit(&self) {
        if self.limit == 0 {
            return;
        }
        let started = Instant::now();
        let deadline = started + MAX_WAIT;
        let turn = match self.door.try_lock() {
            // The usual case: nobody at the door, and the consumers keep up.
            Ok(_) if self.lag() <= self.limit => return,
            Ok(turn) => Some(turn),
            // Still queued at the deadline: go ahead without the turn.
            Err(_) => tokio::time::timeout_at(deadline, self.door.lock())
                .await
                .ok(),
        };
        while self.lag() > self.limit && Instant::now() < deadline {
            tokio::time::sleep(POLL / 2).await;
        }
        drop(turn);
        metrics::histogram!("ordo_admission_wait_seconds").record(started.elapsed().as_secs_f64());
    }
}

/// Events between the log's last one and the furthest-behind live
/// consumer (0 when none is live).
pub async fn read_lag(pool: &deadpool_postgres::Pool) -> Result<u64, eventstore::StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached(
            "select greatest(0, (select position from events
                                   order by transaction_id desc, position desc limit 1)
                               - least((select min(position) from read.checkpoints
                                         where status = 'running'
                                           and updated_at > now() - $1::float8 * interval '1 second'),
                                       (select min(position) from saga.checkpoint
                                         where updated_at > now() - $1::float8 * interval '1 second')))",
        )
        .await?;
    let lag: Option<i64> = client
        .query_one(&statement, &[&LIVE.as_secs_f64()])
        .await?
        .get(0);
    Ok(lag.unwrap_or(0).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(limit: u64, lag: u64) -> Admission {
        Admission {
            limit,
            lag: AtomicU64::new(lag),
            door: tokio::sync::Mutex::new(()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn admits_at_once_below_the_limit_or_when_off() {
        for (limit, lag) in [(100, 0), (100, 100), (0, 1_000_000)] {
            let started = Instant::now();
            admission(limit, lag).admit().await;
            assert_eq!(
                started.elapsed(),
                Duration::ZERO,
                "limit {limit}, lag {lag}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waits_while_behind_but_never_longer_than_max_wait() {
        let started = Instant::now();
        admission(100, 101).admit().await;
        let waited = started.elapsed();
        assert!(
            waited >= MAX_WAIT && waited <= MAX_WAIT + POLL,
            "waited {waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn orders_pass_the_door_in_the_order_they_came() {
        let gate = Arc::new(admission(100, 5_000));
        let passed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut orders = Vec::new();
        for n in 0..20 {
            let (gate, passed) = (gate.clone(), passed.clone());
            orders.push(tokio::spawn(async move {
                gate.admit().await;
                passed.lock().expect("passed").push(n);
            }));
            // One arrives every 3 ms: each looks at the lag at another moment.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        // The lag drops for a moment, long enough for a look, then rises.
        gate.lag.store(50, Ordering::Relaxed);
        tokio::time::sleep(POLL / 2).await;
        gate.lag.store(5_000, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        gate.lag.store(0, Ordering::Relaxed);
        for order in orders {
            order.await.expect("order");
        }
        let passed = passed.lock().expect("passed").clone();
        assert_eq!(
            passed,
            (0..20).collect::<Vec<_>>(),
            "first come, first through"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn goes_ahead_once_the_consumers_catch_up() {
        let gate = Arc::new(admission(100, 5_000));
        let opener = {
            let gate = gate.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                gate.lag.store(50, Ordering::Relaxed);
            })
        };
        let started = Instant::now();
        gate.admit().await;
        let waited = started.elapsed();
        opener.await.expect("opener");
        assert!(
            waited >= Duration::from_millis(100) && waited <= Duration::from_millis(100) + POLL,
            "waited {waited:?}"
        );
    }
}
