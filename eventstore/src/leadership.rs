//! Leadership: a job that one process at a time may do (the relay, each
//! projection, the saga coordinator, a rebuild), whichever processes run it.
//!
//! The one who does the job holds a PostgreSQL session-level advisory lock on
//! a connection of its own, named by a [`LockKey`]. Everyone else stands by
//! and tries for the lock every `standby_poll`; when the holder's process
//! dies its session ends, the server frees the lock, and a standby takes over
//! within that interval. Nothing else is needed: no lease table, no clock.
//!
//! [`Leadership::run`] is the loop every such job shares: stand by, take the
//! lock, run one *term* of the job, and when the term ends say why
//! ([`TermEnd`]): stop, stop with an error, start a new term at once, hold
//! the lock without working, or back off and try again. A term is dropped
//! the moment its lock's session is found closed, so two holders never work
//! at once for longer than one `standby_poll`. Writers whose safety must not
//! depend on that (the relay) check [`Lease::is_lost`] before each write, and
//! make a stale holder's writes fail anyway.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::GenericClient;
use tokio_util::sync::CancellationToken;

use crate::db::DatabaseUrl;
use crate::error::StoreError;

/// FNV-1a, 64 bits: stable across builds, platforms and releases (unlike
/// `std`'s hashers), which lock keys and checksums stored in the database
/// need.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The advisory lock of one job, the same in every process and release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LockKey(i64);

impl LockKey {
    /// The lock of job `kind` (`relay`, `saga`, `projection`, `rebuild`) on
    /// `name` (a stream, a projection): the hash of `ordo.<kind>:<name>`.
    /// Two deployments sharing one server use different stream names, so
    /// their relays and sagas never wait for each other.
    pub fn new(kind: &str, name: impl fmt::Display) -> LockKey {
        LockKey(fnv1a(format!("ordo.{kind}:{name}").as_bytes()) as i64)
    }

    /// A key chosen by hand (migrations use the ASCII of "ordomigr").
    pub const fn raw(key: i64) -> LockKey {
        LockKey(key)
    }

    /// The key as PostgreSQL takes it.
    pub fn get(self) -> i64 {
        self.0
    }

    /// Takes the lock for the session of `client` if nobody holds it.
    pub async fn try_lock(self, client: &impl GenericClient) -> Result<bool, StoreError> {
        let row = client
            .query_one("select pg_try_advisory_lock($1)", &[&self.0])
            .await?;
        Ok(row.get(0))
    }

    /// Waits until the session of `client` holds the lock.
    pub async fn lock(self, client: &impl GenericClient) -> Result<(), StoreError> {
        client
            .execute("select pg_advisory_lock($1)", &[&self.0])
            .await?;
        Ok(())
    }

    /// Gives the lock back (closing the session would too).
    pub async fn unlock(self, client: &impl GenericClient) -> Result<(), StoreError> {
        client
            .execute("select pg_advisory_unlock($1)", &[&self.0])
            .await?;
        Ok(())
    }
}

/// Sleeps for `pause`, or less if `shutdown` comes first.
pub async fn sleep_or_stop(pause: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        _ = shutdown.cancelled() => {}
    }
}

/// Pauses between failed terms: from `first`, doubling up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first pause, and the one after a term that ran a good while.
    pub first: Duration,
    /// The longest pause.
    pub max: Duration,
}

/// A term that ran this long ended a run of failures: the next pause starts
/// again from [`Backoff::first`].
const CALM_TERM: Duration = Duration::from_secs(30);

/// Proof of holding a job's lock, for one term.
#[derive(Debug, Clone)]
pub struct Lease {
    session: Arc<tokio_postgres::Client>,
}

impl Lease {
    /// True once the lock's session has ended: someone else may hold the
    /// lock now.
    pub fn is_lost(&self) -> bool {
        self.session.is_closed()
    }

    /// Returns when the session is found closed, looking every `poll`.
    async fn watch(&self, poll: Duration) {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.is_lost() {
                return;
            }
        }
    }
}

/// How a term ended.
#[derive(Debug)]
pub enum TermEnd<E> {
    /// Shutdown was asked for: stop.
    Stopped,
    /// Something retrying cannot fix: stop with it.
    Fatal(E),
    /// Start a new term at once, without backing off (a projection's
    /// checkpoint was moved by a rebuild).
    Restart,
    /// Keep the lock, so no standby takes the job over, and do nothing more
    /// until shutdown (a projection failed on an event every holder would
    /// fail on).
    Hold,
    /// Trouble that a new term, after a pause, may not meet (PostgreSQL or
    /// NATS away); the text says what it was.
    Interrupted(String),
}

/// Called with `true` when this process takes the job, `false` when it
/// lets go (stats and gauges follow it).
type OnActive = Arc<dyn Fn(bool) + Send + Sync>;

/// One job done by one process at a time; see the module docs.
#[derive(Clone)]
pub struct Leadership {
    url: DatabaseUrl,
    key: LockKey,
    job: String,
    standby_poll: Duration,
    backoff: Backoff,
    on_active: Option<OnActive>,
}

impl fmt::Debug for Leadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leadership")
            .field("job", &self.job)
            .field("key", &self.key)
            .field("standby_poll", &self.standby_poll)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// How often a standby tries for the lock, unless told otherwise.
pub const STANDBY_POLL: Duration = Duration::from_secs(1);

impl Leadership {
    /// The job `job` (as logs name it) under `key`, its lock taken on
    /// connections to `url`; standbys try every [`STANDBY_POLL`], failed
    /// terms back off from 100 ms to 5 s.
    pub fn new(url: DatabaseUrl, key: LockKey, job: impl Into<String>) -> Leadership {
        Leadership {
            url,
            key,
            job: job.into(),
            standby_poll: STANDBY_POLL,
            backoff: Backoff {
                first: Duration::from_millis(100),
                max: Duration::from_secs(5),
            },
            on_active: None,
        }
    }

    /// How often a standby tries for the lock, and the holder looks whether
    /// its session still stands.
    pub fn standby_poll(mut self, poll: Duration) -> Leadership {
        self.standby_poll = poll.max(Duration::from_millis(1));
        self
    }

    /// Pauses after failed terms.
    pub fn backoff(mut self, backoff: Backoff) -> Leadership {
        self.backoff = Backoff {
            first: backoff.first.max(Duration::from_millis(1)),
            max: backoff.max.max(backoff.first),
        };
        self
    }

    /// Calls `on_active(true)` when a term starts, `false` when it ends.
    pub fn on_active(mut self, on_active: impl Fn(bool) + Send + Sync + 'static) -> Leadership {
        self.on_active = Some(Arc::new(on_active));
        self
    }

    fn set_active(&self, active: bool) {
        if let Some(on_active) = &self.on_active {
            on_active(active);
        }
    }

    /// Takes the lock on a connection of its own, or says someone else has it.
    async fn try_take(&self) -> Result<Option<Lease>, StoreError> {
        let session = self.url.connect().await?;
        Ok(self.key.try_lock(&session).await?.then(|| Lease {
            session: Arc::new(session),
        }))
    }

    /// Runs the job until `shutdown`: stands by while another process holds
    /// it, runs `term` while this one does, and starts over (after a pause
    /// when the term was interrupted) until a term says to stop.
    pub async fn run<E, F, Fut>(&self, shutdown: &CancellationToken, mut term: F) -> Result<(), E>
    where
        F: FnMut(Lease) -> Fut,
        Fut: Future<Output = TermEnd<E>>,
    {
        let job = self.job.as_str();
        let mut pause = self.backoff.first;
        let mut announced_standby = false;
        while !shutdown.is_cancelled() {
            let lease = match self.try_take().await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    if !announced_standby {
                        tracing::info!(job, "another process does this job; standing by");
                        announced_standby = true;
                    }
                    sleep_or_stop(self.standby_poll, shutdown).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(job, error = %e, "cannot reach PostgreSQL; retrying");
                    sleep_or_stop(pause, shutdown).await;
                    pause = (pause * 2).min(self.backoff.max);
                    continue;
                }
            };
            announced_standby = false;
            tracing::info!(job, "active");
            self.set_active(true);
            let started = Instant::now();
            let end = tokio::select! {
                end = term(lease.clone()) => end,
                () = lease.watch(self.standby_poll) => {
                    TermEnd::Interrupted("lost the lock: its PostgreSQL session ended".into())
                }
            };
            if started.elapsed() >= CALM_TERM {
                pause = self.backoff.first;
            }
            match end {
                TermEnd::Stopped => {
                    self.set_active(false);
                    return Ok(());
                }
                TermEnd::Fatal(e) => {
                    self.set_active(false);
                    return Err(e);
                }
                TermEnd::Hold => {
                    tokio::select! {
                        _ = shutdown.cancelled() => {
                            self.set_active(false);
                            return Ok(());
                        }
                        () = lease.watch(self.standby_poll) => {
                            // Whoever holds the lock now has the job.
                            self.set_active(false);
                            tracing::warn!(job, "lost the lock while holding it; standing by");
                        }
                    }
                }
                TermEnd::Restart => {
                    self.set_active(false);
                    tracing::info!(job, "starting a new term");
                    pause = self.backoff.first;
                }
                TermEnd::Interrupted(reason) => {
                    self.set_active(false);
                    // Let go of the lock before pausing: a standby may do
                    // better meanwhile.
                    drop(lease);
                    tracing::warn!(
                        job,
                        error = reason,
                        "interrupted; starting over after a pause"
                    );
                    sleep_or_stop(pause, shutdown).await;
                    pause = (pause * 2).min(self.backoff.max);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_those_every_earlier_release_used() {
        // Processes of the previous release and this one must exclude each
        // other during a rolling upgrade: the keys are pinned.
        let fnv = |text: &str| fnv1a(text.as_bytes()) as i64;
        assert_eq!(
            LockKey::new("relay", "ORDO_EVENTS").get(),
            fnv("ordo.relay:ORDO_EVENTS")
        );
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(
            LockKey::new("relay", "A"),
            LockKey::new("saga", "A"),
            "jobs of one stream have locks of their own"
        );
    }
}
