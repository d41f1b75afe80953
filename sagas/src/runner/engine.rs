//! What a runner's tasks share, and the unit of work they pass around.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use chrono::Utc;
use domain::fulfilment::{SagaCommand, SagaCommandKind, SagaConfig, SagaState};
use eventstore::executor::Executor;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::config::RunnerConfig;
use super::feeder::FeederSlot;
use super::SagaStats;
use crate::clock::{Clock, SystemClock};
use crate::commands::StreamLocks;
use crate::echoes::Echoes;
use crate::error::SagaError;
use crate::hooks::Hooks;
use crate::store::SagaRow;
use eventstore::telemetry::TraceParent;

/// One command to run for a saga.
#[derive(Debug, Clone)]
pub(crate) struct Work {
    pub command: SagaCommand,
    /// The event that caused it.
    pub cause: Option<Uuid>,
    /// The order's correlation id.
    pub correlation: Option<Uuid>,
    /// Pause first (a re-issue after a failure backs off).
    pub delay: Duration,
    /// The saga's state when it issued the command (shared by the commands
    /// it issued together), to foresee what their successes lead to; kept
    /// only when it issued reservations alone. See [`super::ahead`].
    pub issued_from: Option<Arc<SagaState>>,
    /// The trace it continues: the `process` span of the message that led
    /// to it (none for timers and recovery).
    pub trace: TraceParent,
}

/// Everything a runner needs, shared by its tasks.
#[derive(Debug)]
pub(crate) struct Engine {
    pub executor: Executor,
    /// Connections of the saga's own transactions (consumer, feeder, timers),
    /// apart from the executor's: they never queue behind running commands.
    pub state: deadpool_postgres::Pool,
    pub jetstream: jetstream::Context,
    pub config: RunnerConfig,
    pub machine: SagaConfig,
    pub clock: Arc<dyn Clock>,
    pub hooks: Hooks,
    pub stats: Arc<SagaStats>,
    /// One command at a time per stream, over all of this runner's drivers.
    pub stream_locks: Arc<StreamLocks>,
    /// Bounds the commands running at once.
    pub permits: Arc<Semaphore>,
    /// Where command outcomes go to be written together, while a term runs.
    pub feeder: FeederSlot,
    /// Events this runner's commands wrote, whose messages need no handling.
    pub echoes: Echoes,
}

impl Engine {
    pub fn new(
        executor: Executor,
        state: deadpool_postgres::Pool,
        jetstream: jetstream::Context,
        config: RunnerConfig,
    ) -> Engine {
        Engine {
            machine: config.machine(),
            permits: Arc::new(Semaphore::new(config.max_concurrent_commands.max(1))),
            executor,
            state,
            jetstream,
            config,
            clock: Arc::new(SystemClock),
            hooks: Hooks::default(),
            stats: Arc::default(),
            stream_locks: Arc::default(),
            feeder: FeederSlot::default(),
            echoes: Echoes::default(),
        }
    }

    /// The clock's time in whole microseconds, PostgreSQL's resolution: a
    /// due time must read back from its timer row exactly as the state holds
    /// it, or a timer polled in the sub-microsecond gap would look early.
    pub fn now(&self) -> chrono::DateTime<Utc> {
        use chrono::SubsecRound as _;
        self.clock.now().trunc_subsecs(6)
    }

    /// A connection for the saga's own transactions.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, SagaError> {
        Ok(self.state.get().await?)
    }

    /// Counts commands the state machine issued.
    pub fn count_issued(&self, commands: &[SagaCommand]) {
        self.stats
            .issued
            .fetch_add(commands.len() as u64, Ordering::Relaxed);
    }

    /// Commands of a saga, ready to run; none for a parked saga.
    pub fn works(
        &self,
        saga: &SagaRow,
        commands: Vec<SagaCommand>,
        trace: &TraceParent,
    ) -> Vec<Work> {
        if saga.parked.is_some() {
            return Vec::new();
        }
        // Only reservations are ever followed ahead (see `ahead`): no copy
        // of the state for other commands.
        let reserving = !commands.is_empty()
            && commands
                .iter()
                .all(|c| matches!(c.kind, SagaCommandKind::ReserveStock { .. }));
        let issued_from = reserving.then(|| Arc::new(saga.state.clone()));
        commands
            .into_iter()
            .map(|command| {
                let attempts = saga
                    .state
                    .pending
                    .iter()
                    .find(|p| p.command.command_id == command.command_id)
                    .map_or(1, |p| p.attempts);
                Work {
                    cause: saga.cause_of(&command.command_id),
                    correlation: saga.correlation_id.or(Some(saga.order_id.as_uuid())),
                    delay: if attempts > 1 {
                        self.config.backoff(attempts - 1)
                    } else {
                        Duration::ZERO
                    },
                    command,
                    issued_from: issued_from.clone(),
                    trace: trace.clone(),
                }
            })
            .collect()
    }
}
