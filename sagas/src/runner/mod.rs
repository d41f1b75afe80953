//! The saga runner: one active coordinator that consumes events from
//! JetStream, keeps each order's saga state in PostgreSQL, runs the commands
//! the state machine asks for, and fires durable timers.
//!
//! One file per job, in the order a message meets them:
//!
//! - **Leadership** (here, on [`eventstore::leadership`]). Several
//!   `ordo saga` processes may run; one coordinates, the others stand by and
//!   take over when its lock's session ends. Within the leader, a saga's
//!   state changes are serialised by its row lock and its commands by one
//!   driver task per order, so no two actors ever work on one order at once.
//! - `term`: one leadership term, everything that lives only while this
//!   runner leads: the consumer, the feeder, the drivers, the timer poll.
//! - `consume`: an ordered consumer on `<prefix>.>` started after the
//!   checkpoint; each batch of ready messages is one transaction that locks
//!   the sagas concerned, feeds each message to the pure state machine
//!   (`domain::fulfilment::handle`), and writes the new states, their
//!   timers, the message ids handled and the checkpoint. Only then do the
//!   commands run. Redelivered, republished or already-handled messages are
//!   no-ops; the echo of a command this runner ran is skipped when its
//!   success was already fed (see [`crate::echoes`]).
//! - `drivers`: one driver per order runs its queued commands one after
//!   another (stock commands issued together, on different products, at
//!   once) and feeds their outcomes back.
//! - `execute`: running one command through the event store's executor
//!   with its deterministic id, retrying transient failures with backoff
//!   before reporting `CommandFailed` to the state machine.
//! - `ahead`: reservations whose successes lead to the order's
//!   confirmation are followed by it at once, and all are recorded together.
//! - `feeder`: command outcomes are written to their sagas many per
//!   transaction.
//! - [`timers`]: due payment timers are fired with `for update skip
//!   locked`, each firing one transaction with the state change.
//! - `recovery`: a new coordinator re-issues the pending commands of every
//!   unfinished saga; their ids make that harmless if they already ran.
//!
//! **Locks.** Transactions lock saga rows before timer rows: the consumer
//! locks a batch's sagas (in `order_id` order), the feeder its outcomes'
//! sagas (in the same order); either may then write those sagas' timers. The
//! poller locks timer and saga together with `skip locked`, so it never
//! waits, and nothing that waits holds a lock another waiter needs: no
//! deadlock. No transaction takes a second pooled connection while holding
//! row locks.
//!
//! **Failures.** Anything transient (PostgreSQL, NATS) ends the leadership
//! term; the runner backs off and starts a new one from the durable state. A
//! message or outcome the state machine cannot express parks that one saga
//! (`parked`), never the runner.

mod ahead;
mod config;
mod consume;
mod drivers;
mod engine;
mod execute;
mod feeder;
mod recovery;
mod term;
pub mod timers;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use eventstore::executor::Executor;
use eventstore::leadership::{Backoff, Leadership, LockKey, TermEnd};
use eventstore::DatabaseUrl;
use tokio_util::sync::CancellationToken;

pub use config::RunnerConfig;

use crate::clock::Clock;
use crate::error::SagaError;
use crate::hooks::Hooks;
use engine::Engine;
use term::{Term, TermError};

/// Live figures of a runner, for status pages and tests.
#[derive(Debug, Default)]
pub struct SagaStats {
    /// True while this runner is the coordinator.
    pub active: AtomicBool,
    /// Messages that concerned a saga and were handled.
    pub messages: AtomicU64,
    /// Messages skipped as already handled.
    pub duplicates: AtomicU64,
    /// Messages skipped as echoes of this runner's own commands, whose
    /// success it had already fed to the saga.
    pub echoes: AtomicU64,
    /// Messages that were not ordo envelopes.
    pub malformed: AtomicU64,
    /// Commands the state machine issued (re-issues included).
    pub issued: AtomicU64,
    /// Command executions (retries and repeats included).
    pub executed: AtomicU64,
    /// Timers fired.
    pub timers_fired: AtomicU64,
    /// Confirmations run straight after the reservations that lead to
    /// them, before those were recorded (see the `ahead` module).
    pub ahead: AtomicU64,
    /// Of those, the ones whose outcome did not count: refused, failed, or
    /// the saga had moved another way by the time it was recorded.
    pub ahead_dropped: AtomicU64,
}

/// The saga runner; see the module docs.
#[derive(Debug)]
pub struct SagaRunner {
    engine: Engine,
    url: DatabaseUrl,
}

impl SagaRunner {
    /// A runner issuing commands through `executor`, keeping its sagas on
    /// `state` (connections of its own, apart from the executor's, so its
    /// transactions never queue behind running commands), leading by a
    /// lock taken on a session to `url`, consuming through `jetstream`.
    pub fn new(
        executor: Executor,
        state: deadpool_postgres::Pool,
        url: DatabaseUrl,
        jetstream: jetstream::Context,
        config: RunnerConfig,
    ) -> SagaRunner {
        SagaRunner {
            engine: Engine::new(executor, state, jetstream, config),
            url,
        }
    }

    /// Uses `clock` for every time the runner needs (tests move it by hand).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> SagaRunner {
        self.engine.clock = clock;
        self
    }

    /// Installs test hooks (failure injection, repetition).
    pub fn with_hooks(mut self, hooks: Hooks) -> SagaRunner {
        self.engine.hooks = hooks;
        self
    }

    /// Live figures of this runner.
    pub fn stats(&self) -> Arc<SagaStats> {
        self.engine.stats.clone()
    }

    /// Runs until `shutdown`: stands by, coordinates, recovers from failures.
    ///
    /// Returns `Ok` on shutdown; an error only for what retrying cannot fix
    /// (the stream belongs to something else) or an injected crash.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), SagaError> {
        let engine = Arc::new(self.engine);
        let config = &engine.config;
        let stats = engine.stats.clone();
        let leadership = Leadership::new(
            self.url,
            LockKey::new("saga", &config.stream),
            format!("saga coordinator of stream {}", config.stream),
        )
        .standby_poll(config.standby_poll)
        .backoff(Backoff {
            first: config.retry_backoff.max(Duration::from_millis(10)),
            max: config.max_backoff,
        })
        .on_active(move |active| {
            stats.active.store(active, Ordering::SeqCst);
            metrics::gauge!("ordo_saga_active").set(if active { 1.0 } else { 0.0 });
        });
        leadership
            .run(&shutdown, |_lease| async {
                match Term::new(engine.clone()).lead(&shutdown).await {
                    Ok(()) => TermEnd::Stopped,
                    Err(TermError::Injected) => TermEnd::Fatal(SagaError::Injected),
                    Err(TermError::Fatal(e)) => TermEnd::Fatal(e),
                    Err(e) => {
                        metrics::counter!("ordo_saga_failures_total").increment(1);
                        TermEnd::Interrupted(format!("{e}; starting over from the stored state"))
                    }
                }
            })
            .await
    }
}
