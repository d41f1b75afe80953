//! One leadership term: everything that lives only while this runner
//! coordinates, run from one loop. It ends on shutdown or on the first
//! failure; the runner then starts a new term from the durable state.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::consume::Consumer;
use super::drivers::Drivers;
use super::engine::Engine;
use super::feeder::Feeder;
use super::timers::TIMER_BATCH;
use crate::error::SagaError;
use crate::hooks::Injected;
use crate::store;

/// What went wrong in one leadership term.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TermError {
    /// PostgreSQL trouble, or anything else worth a fresh term.
    #[error(transparent)]
    Saga(SagaError),
    /// NATS trouble.
    #[error("NATS: {0}")]
    Nats(String),
    /// A test hook crashed the runner.
    #[error("injected crash")]
    Injected,
    /// Retrying cannot help.
    #[error(transparent)]
    Fatal(SagaError),
}

impl From<SagaError> for TermError {
    fn from(e: SagaError) -> Self {
        match e {
            SagaError::Injected => TermError::Injected,
            SagaError::Bus(e) if e.is_fatal() => TermError::Fatal(SagaError::Bus(e)),
            other => TermError::Saga(other),
        }
    }
}

impl From<tokio_postgres::Error> for TermError {
    fn from(e: tokio_postgres::Error) -> Self {
        TermError::Saga(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for TermError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        TermError::Saga(e.into())
    }
}

impl TermError {
    /// A failure of the term's own machinery (a task that died, a channel
    /// that closed), worth a fresh term.
    pub fn internal(reason: impl Into<String>) -> TermError {
        TermError::Saga(SagaError::Store(eventstore::StoreError::Internal(
            reason.into(),
        )))
    }
}

/// Turns a test hook's verdict into the end of the term.
pub(crate) fn crash_on(injected: Result<(), Injected>) -> Result<(), TermError> {
    injected.map_err(|_| TermError::Injected)
}

/// How often the coordinator publishes how many sagas need attention.
const ATTENTION_REPORT: Duration = Duration::from_secs(5);

/// One leadership term.
pub(crate) struct Term {
    engine: Arc<Engine>,
    /// One driver per order with queued commands. Dropping the term aborts
    /// them all, which is also what an injected crash does.
    drivers: Drivers,
}

impl Term {
    pub fn new(engine: Arc<Engine>) -> Term {
        Term {
            drivers: Drivers::new(engine.clone()),
            engine,
        }
    }

    /// Runs the term until shutdown (`Ok`) or a failure.
    pub async fn lead(mut self, shutdown: &CancellationToken) -> Result<(), TermError> {
        let engine = self.engine.clone();
        let config = &engine.config;
        let Consumer {
            mut messages,
            mut checkpoint,
        } = Consumer::start(&engine).await?;
        // Outcomes of this term's commands are written together.
        let _feeder = Feeder::start(engine.clone());
        for (order_id, works) in engine.recover().await? {
            self.drivers.enqueue(order_id, works);
        }
        let mut disconnected = false;
        let mut connection_check = tokio::time::interval(config.standby_poll);
        let mut timer_poll = tokio::time::interval(config.timer_poll);
        let mut attention = tokio::time::interval(ATTENTION_REPORT);
        for interval in [&mut connection_check, &mut timer_poll, &mut attention] {
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = connection_check.tick() => {
                    // The ephemeral consumer may not have survived whatever
                    // cut the connection (a server restart loses it): after a
                    // reconnect, start over from the checkpoint.
                    match engine.jetstream.client().connection_state() {
                        async_nats::connection::State::Connected if disconnected => {
                            return Err(TermError::Nats("reconnected to NATS".into()));
                        }
                        async_nats::connection::State::Connected => {}
                        _ => disconnected = true,
                    }
                }
                _ = attention.tick() => {
                    let client = engine.client().await?;
                    let count = store::count_needing_attention(&client).await?;
                    metrics::gauge!("ordo_saga_needs_attention").set(count as f64);
                }
                _ = timer_poll.tick() => loop {
                    // Keep going while rounds come back full: a backlog of
                    // due timers (after downtime) is worked off at once.
                    let fired = engine.fire_due_timers().await?;
                    let full = fired.len() >= TIMER_BATCH as usize;
                    for (order_id, works) in fired {
                        self.drivers.enqueue(order_id, works);
                    }
                    if !full {
                        break;
                    }
                },
                batch = messages.next() => {
                    let batch = batch.ok_or_else(|| TermError::Nats("the consumer ended".into()))?;
                    for (order_id, works) in engine.handle_batch(batch, &mut checkpoint).await? {
                        self.drivers.enqueue(order_id, works);
                    }
                }
                Some(ended) = self.drivers.next_ended() => ended?,
            }
        }
    }
}
