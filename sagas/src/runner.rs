//! The saga runner: one active coordinator that consumes events from
//! JetStream, keeps each order's saga state in PostgreSQL, runs the commands
//! the state machine asks for, and fires durable timers.
//!
//! How the pieces fit:
//!
//! - **Leadership.** Several `ordo saga` processes may run; one coordinates.
//!   It holds a PostgreSQL advisory lock on a connection of its own (like the
//!   relay); the others try for it every `standby_poll` and take over when
//!   the leader's session ends. Within the leader, a saga's state changes are
//!   serialised by its row lock and its commands by one driver task per order,
//!   so no two actors ever work on one order at the same moment.
//! - **Consumption.** An ordered consumer on `<prefix>.>` (one filter subject:
//!   nats-server 2.9.10), started after the checkpoint's stream sequence.
//!   Messages are handled in batches of what is ready: for each batch, one
//!   transaction locks the sagas concerned, feeds each message to the pure
//!   state machine (`domain::fulfilment::handle`), writes the new states, the
//!   timers they set, the message ids handled and the checkpoint, and commits.
//!   Only then do the commands run. A message at or below the checkpoint (by
//!   sequence or log position) or whose id was handled before is a no-op, so
//!   redelivery, a reset checkpoint or a republished event changes nothing.
//!   The echo of a command this runner ran (the event it wrote) is skipped
//!   when its success was already fed: see [`crate::echoes`].
//! - **Commands** run through the event store's executor with their
//!   deterministic ids, one at a time per order (stock commands issued
//!   together, on different products, at once), their answers fed back to
//!   the state machine together. A queued command is checked
//!   against the saga's current state before it runs. Transient failures are
//!   retried with backoff in-process, then reported as `CommandFailed`; the
//!   state machine decides whether to try again or (compensations) to give
//!   up and need attention. Reservations whose successes lead to the
//!   order's confirmation are followed by it at once, and the three
//!   outcomes are recorded together (see `Engine::foresee`).
//! - **Timers** are rows written with the state that set them. The leader
//!   polls for due ones with `for update skip locked`, feeds
//!   `PaymentTimerFired` and deletes the row in one transaction.
//! - **Recovery.** A new coordinator re-issues the pending commands of every
//!   unfinished saga; their ids make that harmless if they already ran.
//! - **Locks.** Transactions lock saga rows before timer rows: the consumer
//!   locks a batch's sagas (in `order_id` order), a command's outcome locks
//!   its one saga; either may then write that saga's timer. The poller locks
//!   timer and saga together with `skip locked`, so it never waits, and
//!   nothing that waits holds a lock another waiter needs: no deadlock. No
//!   transaction takes a second pooled connection while holding row locks.
//! - **Failures.** Anything transient (PostgreSQL, NATS) ends the leadership
//!   term; the runner backs off and starts a new one from the durable state.
//!   A message or outcome the state machine cannot express parks that one
//!   saga (`parked`), never the runner.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull::OrderedConfig, consumer::DeliverPolicy};
use chrono::Utc;
use domain::fulfilment::{
    SagaAction, SagaCommand, SagaCommandKind, SagaConfig, SagaInput, SagaPhase, SagaState,
};
use domain::ids::OrderId;
use eventstore::executor::{CommandContext, Executor};
use eventstore::nats::{ensure_stream, BusError, StreamName, SubjectPrefix};
use eventstore::DatabaseUrl;
use futures::StreamExt as _;
use rand::Rng as _;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::{Clock, SystemClock};
use crate::commands::{self, Outcome, StreamLocks};
use crate::echoes::Echoes;
use crate::error::SagaError;
use crate::hooks::{Hooks, Injected, Step};
use crate::input::{classify, Classified, Incoming};
use crate::store::{self, Checkpoint, SagaRow};

/// Settings of a saga runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The JetStream stream to consume (`ORDO_STREAM`).
    pub stream: StreamName,
    /// First token of every subject (`ORDO_SUBJECT_PREFIX`).
    pub prefix: SubjectPrefix,
    /// How long a confirmed order may stay unpaid (`ORDO_PAYMENT_TIMEOUT`).
    pub payment_timeout: Duration,
    /// Tries of a compensation before the saga needs attention.
    pub max_compensation_attempts: u32,
    /// In-process retries of a command after a transient failure, before
    /// the failure is reported to the state machine.
    pub command_retries: u32,
    /// First pause between retries; it doubles up to `max_backoff`.
    pub retry_backoff: Duration,
    /// Longest pause between retries (of commands, and of leadership terms).
    pub max_backoff: Duration,
    /// How often the leader looks for due timers.
    pub timer_poll: Duration,
    /// How often a standby tries to become the coordinator (and the leader
    /// checks it still is).
    pub standby_poll: Duration,
    /// Most messages handled in one transaction.
    pub batch_size: usize,
    /// Most commands running at once, over all orders.
    pub max_concurrent_commands: usize,
}

impl RunnerConfig {
    /// Production defaults for a stream, prefix and payment timeout.
    pub fn new(stream: StreamName, prefix: SubjectPrefix, payment_timeout: Duration) -> Self {
        RunnerConfig {
            stream,
            prefix,
            payment_timeout,
            max_compensation_attempts: 5,
            command_retries: 3,
            retry_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            timer_poll: Duration::from_secs(1),
            standby_poll: Duration::from_secs(1),
            batch_size: 256,
            max_concurrent_commands: 128,
        }
    }

    fn machine(&self) -> SagaConfig {
        SagaConfig {
            payment_timeout: chrono::Duration::from_std(self.payment_timeout)
                .unwrap_or_else(|_| chrono::Duration::days(365)),
            max_compensation_attempts: self.max_compensation_attempts.max(1),
        }
    }

    /// `retry_backoff × 2^attempt`, capped, with jitter so retries of many
    /// sagas spread out.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .retry_backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_backoff);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis.max(1)))
    }
}

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
    /// them, before those were recorded (see `Engine::run_ahead`).
    pub ahead: AtomicU64,
    /// Of those, the ones whose outcome did not count: refused, failed, or
    /// the saga had moved another way by the time it was recorded.
    pub ahead_dropped: AtomicU64,
}

/// The saga runner; see the module docs.
#[derive(Debug)]
pub struct SagaRunner {
    engine: Engine,
}

impl SagaRunner {
    /// A runner issuing commands through `executor`, keeping its sagas in the
    /// database at `url` (the executor's) on connections of its own, leading
    /// by a lock taken on one more, consuming through `jetstream`.
    pub fn new(
        executor: Executor,
        url: DatabaseUrl,
        jetstream: jetstream::Context,
        config: RunnerConfig,
    ) -> Result<SagaRunner, SagaError> {
        let permits = Arc::new(Semaphore::new(config.max_concurrent_commands.max(1)));
        Ok(SagaRunner {
            engine: Engine {
                machine: config.machine(),
                executor,
                state: url.pool(STATE_CONNECTIONS)?,
                url,
                jetstream,
                config,
                clock: Arc::new(SystemClock),
                hooks: Hooks::default(),
                stats: Arc::default(),
                stream_locks: Arc::default(),
                permits,
                feeder: std::sync::Mutex::new(None),
                echoes: Echoes::default(),
            },
        })
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
        let base = engine.config.retry_backoff.max(Duration::from_millis(10));
        let mut backoff = base;
        let mut announced_standby = false;
        while !shutdown.is_cancelled() {
            let lock = match engine.try_lead().await {
                Ok(Some(lock)) => lock,
                Ok(None) => {
                    if !announced_standby {
                        tracing::info!(stream = %engine.config.stream, "another saga coordinator is active; standing by");
                        announced_standby = true;
                    }
                    sleep_or_stop(engine.config.standby_poll, &shutdown).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "saga runner cannot reach PostgreSQL; retrying");
                    sleep_or_stop(backoff, &shutdown).await;
                    backoff = (backoff * 2).min(engine.config.max_backoff);
                    continue;
                }
            };
            announced_standby = false;
            tracing::info!(stream = %engine.config.stream, "saga coordinator is active");
            engine.set_active(true);
            let started = Instant::now();
            let result = Term::new(engine.clone()).lead(&lock, &shutdown).await;
            engine.set_active(false);
            // Dropping `lock` ends its session, which frees the lock.
            drop(lock);
            match result {
                Ok(()) => return Ok(()),
                Err(TermError::Injected) => return Err(SagaError::Injected),
                Err(TermError::Fatal(e)) => return Err(e),
                Err(e) => {
                    metrics::counter!("ordo_saga_failures_total").increment(1);
                    tracing::warn!(error = %e, "saga coordinator interrupted; starting over from the stored state");
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff = base;
                    }
                    sleep_or_stop(backoff, &shutdown).await;
                    backoff = (backoff * 2).min(engine.config.max_backoff);
                }
            }
        }
        Ok(())
    }
}

/// What went wrong in one leadership term.
#[derive(Debug, thiserror::Error)]
enum TermError {
    /// PostgreSQL trouble, or anything else worth a fresh term.
    #[error(transparent)]
    Saga(SagaError),
    /// NATS trouble.
    #[error("NATS: {0}")]
    Nats(String),
    /// The lock's session ended.
    #[error("lost the saga coordinator lock")]
    LostLock,
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
            SagaError::Bus(e @ BusError::StreamMismatch { .. }) => {
                TermError::Fatal(SagaError::Bus(e))
            }
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

fn crash_on(injected: Result<(), Injected>) -> Result<(), TermError> {
    injected.map_err(|_| TermError::Injected)
}

/// One command to run for a saga.
#[derive(Debug, Clone)]
pub(crate) struct Work {
    command: SagaCommand,
    /// The event that caused it.
    cause: Option<Uuid>,
    /// The order's correlation id.
    correlation: Option<Uuid>,
    /// Pause first (a re-issue after a failure backs off).
    delay: Duration,
    /// The saga's state when it issued the command (shared by the commands
    /// it issued together), to foresee what their successes lead to; kept
    /// only when it issued reservations alone. See [`Engine::foresee`].
    issued_from: Option<Arc<SagaState>>,
}

/// Everything a runner needs, shared by its tasks.
#[derive(Debug)]
pub(crate) struct Engine {
    executor: Executor,
    url: DatabaseUrl,
    /// Connections of the saga's own transactions (consumer, feeder, timers),
    /// apart from the executor's: they never queue behind running commands.
    state: deadpool_postgres::Pool,
    jetstream: jetstream::Context,
    config: RunnerConfig,
    machine: SagaConfig,
    clock: Arc<dyn Clock>,
    hooks: Hooks,
    stats: Arc<SagaStats>,
    stream_locks: Arc<StreamLocks>,
    permits: Arc<Semaphore>,
    /// Where command outcomes go to be written together, while a term runs.
    /// Outcomes given at once go together, so they share a transaction.
    feeder: std::sync::Mutex<Option<mpsc::UnboundedSender<Vec<FeedRequest>>>>,
    /// Events this runner's commands wrote, whose messages need no handling.
    echoes: Echoes,
}

/// A command's outcome waiting to be fed to its saga.
#[derive(Debug)]
struct FeedRequest {
    order_id: OrderId,
    inputs: Vec<SagaInput>,
    cause: Cause,
    park_if_pending: Option<(String, String)>,
    /// The outcome of a command run ahead of the saga's say-so (see
    /// [`Engine::run_ahead`]), with the events it wrote: it counts only if
    /// the saga, as stored, has issued that command by then.
    ahead: Option<Vec<Uuid>>,
    reply: oneshot::Sender<Result<Vec<Work>, String>>,
}

/// Connections of a runner's own transactions: the consumer's, the
/// feeder's, the timer poller's, and one to spare.
const STATE_CONNECTIONS: usize = 4;

/// Most outcomes written in one transaction.
const FEED_BATCH: usize = 256;

impl Engine {
    /// The clock's time in whole microseconds, PostgreSQL's resolution: a
    /// due time must read back from its timer row exactly as the state holds
    /// it, or a timer polled in the sub-microsecond gap would look early.
    fn now(&self) -> chrono::DateTime<Utc> {
        use chrono::SubsecRound as _;
        self.clock.now().trunc_subsecs(6)
    }

    fn set_active(&self, active: bool) {
        self.stats.active.store(active, Ordering::SeqCst);
        metrics::gauge!("ordo_saga_active").set(if active { 1.0 } else { 0.0 });
    }

    /// The advisory lock key: one coordinator per stream.
    fn lock_key(&self) -> i64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in format!("ordo.saga:{}", self.config.stream).bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash as i64
    }

    /// Takes the lock on a connection of its own, or says someone else has it.
    async fn try_lead(&self) -> Result<Option<tokio_postgres::Client>, SagaError> {
        let client = self.url.connect().await?;
        let row = client
            .query_one("select pg_try_advisory_lock($1)", &[&self.lock_key()])
            .await?;
        Ok(row.get::<_, bool>(0).then_some(client))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, SagaError> {
        Ok(self.state.get().await?)
    }

    /// Counts commands the state machine issued.
    fn count_issued(&self, commands: &[SagaCommand]) {
        self.stats
            .issued
            .fetch_add(commands.len() as u64, Ordering::Relaxed);
    }

    /// Commands of a saga, ready to run; none for a parked saga.
    fn works(&self, saga: &SagaRow, commands: Vec<SagaCommand>) -> Vec<Work> {
        if saga.parked.is_some() {
            return Vec::new();
        }
        // Only reservations are ever followed ahead (see `foresee`): no copy
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
                }
            })
            .collect()
    }

    /// Handles one batch of messages in one transaction; returns the
    /// commands to run, per order.
    #[tracing::instrument(level = "debug", skip_all, fields(messages = batch.len()))]
    async fn handle_batch(
        &self,
        batch: Vec<Result<jetstream::Message, jetstream::consumer::pull::OrderedError>>,
        checkpoint: &mut Checkpoint,
    ) -> Result<Vec<(OrderId, Vec<Work>)>, TermError> {
        let mut next = *checkpoint;
        let mut relevant: Vec<(Incoming, OrderId, Result<SagaInput, String>)> = Vec::new();
        let mut newest = None;
        for message in batch {
            // The ordered consumer repairs gaps and missed heartbeats itself;
            // whatever still surfaces is handled by starting over from the
            // checkpoint.
            let message = message.map_err(|e| TermError::Nats(e.to_string()))?;
            let sequence = message
                .info()
                .map_err(|e| TermError::Nats(format!("message without JetStream info: {e}")))?
                .stream_sequence;
            if sequence <= next.sequence {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            next.sequence = sequence;
            let (incoming, target) = match classify(&message.payload) {
                Classified::Malformed(reason) => {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("ordo_saga_malformed_messages_total").increment(1);
                    tracing::warn!(sequence, subject = %message.subject, reason, "skipping a message that is not an ordo event");
                    continue;
                }
                Classified::Irrelevant(incoming) => (incoming, None),
                Classified::Input {
                    incoming,
                    order_id,
                    input,
                } => (incoming, Some((order_id, Ok(input)))),
                Classified::Unreadable {
                    incoming,
                    order_id,
                    reason,
                } => (incoming, Some((order_id, Err(reason)))),
            };
            // The relay publishes in log order, so positions only grow along
            // the stream; one at or below the checkpoint was handled before
            // (the stream was recreated, or an event republished).
            if incoming.position <= next.position {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            next.position = incoming.position;
            newest = incoming.time.or(newest);
            if self.echoes.take(&incoming.id) {
                self.stats.echoes.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if let Some((order_id, input)) = target {
                relevant.push((incoming, order_id, input));
            }
        }
        if let Some(time) = newest {
            let lag = (Utc::now() - time).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::gauge!("ordo_saga_lag_seconds").set(lag);
        }
        if relevant.is_empty() {
            if next != *checkpoint {
                let client = self.client().await?;
                store::save_checkpoint(&client, self.config.stream.as_str(), next).await?;
                *checkpoint = next;
            }
            return Ok(Vec::new());
        }

        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let ids: Vec<Uuid> = relevant.iter().map(|(i, _, _)| i.id).collect();
        let message_orders: Vec<Uuid> = relevant.iter().map(|(_, o, _)| o.as_uuid()).collect();
        let mut order_ids = message_orders.clone();
        order_ids.sort_unstable();
        order_ids.dedup();
        // Every message is recorded as handled at once (those recorded
        // before are the duplicates), while the sagas load; the locks taken
        // here give the transaction its id, so from here to the commit it
        // holds the log's horizon back, and its statements are sent without
        // waiting for each other's answers.
        let (mut fresh, mut sagas) = futures::try_join!(
            store::record_processed(&tx, &ids, &message_orders),
            store::load_for_update(&tx, &order_ids),
        )?;
        let now = self.now();
        let times = self.hooks.times();
        let mut handled = 0;
        let mut issued: Vec<(OrderId, Vec<SagaCommand>)> = Vec::new();
        let mut steps = Vec::new();
        for (incoming, order_id, input) in relevant {
            if !fresh.remove(&incoming.id) {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let saga = sagas
                .entry(order_id)
                .or_insert_with(|| SagaRow::new(order_id));
            match input {
                Err(reason) => {
                    tracing::error!(%order_id, event_id = %incoming.id, event_type = incoming.event_type, reason, "cannot read an event of this saga; parking it");
                    saga.park(format!(
                        "cannot read {} {}: {reason}",
                        incoming.event_type, incoming.id
                    ));
                }
                Ok(input) => {
                    if matches!(input, SagaInput::OrderPlaced { .. })
                        && saga.state.phase == SagaPhase::NotStarted
                    {
                        saga.correlation_id = incoming.correlationid.or(Some(order_id.as_uuid()));
                        saga.origin_event_id = Some(incoming.id);
                    }
                    let commands = saga.apply(&input, now, &self.machine, times, Some(incoming.id));
                    issued.push((order_id, commands));
                }
            }
            handled += 1;
            steps.push(Step::MessageCommitted {
                order_id,
                event_type: incoming.event_type,
            });
        }
        futures::try_join!(
            store::save_all(&tx, sagas.values(), now),
            store::save_checkpoint(&tx, self.config.stream.as_str(), next),
        )?;
        tx.commit().await?;
        *checkpoint = next;
        self.stats.messages.fetch_add(handled, Ordering::Relaxed);
        for step in &steps {
            crash_on(self.hooks.check(step))?;
        }
        Ok(issued
            .into_iter()
            .filter_map(|(order_id, commands)| {
                let saga = sagas.get(&order_id)?;
                self.count_issued(&commands);
                Some((order_id, self.works(saga, commands)))
            })
            .collect())
    }

    /// Fires due timers: each firing, with its timer row deleted, is one
    /// transaction with the state change. Rows another poller holds are
    /// skipped, so no timer fires twice.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn fire_due_timers(&self) -> Result<Vec<(OrderId, Vec<Work>)>, TermError> {
        let now = self.now();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let due = store::due_timers(&tx, now, TIMER_BATCH).await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut fired = Vec::with_capacity(due.len());
        for mut saga in due {
            let commands = saga.apply(
                &SagaInput::PaymentTimerFired,
                now,
                &self.machine,
                self.hooks.times(),
                None,
            );
            // The row goes with the firing. Should the state machine still
            // hold a due time (it judged the firing early), the row stays
            // as the state says, so the timer is not lost.
            saga.timer = Some(saga.state.payment_due_at);
            saga.dirty = true;
            store::save(&tx, &saga, now).await?;
            tracing::info!(order_id = %saga.order_id, "payment timer fired");
            fired.push((saga, commands));
        }
        tx.commit().await?;
        self.stats
            .timers_fired
            .fetch_add(fired.len() as u64, Ordering::Relaxed);
        let mut out = Vec::with_capacity(fired.len());
        for (saga, commands) in fired {
            crash_on(self.hooks.check(&Step::TimerCommitted {
                order_id: saga.order_id,
            }))?;
            self.count_issued(&commands);
            out.push((saga.order_id, self.works(&saga, commands)));
        }
        Ok(out)
    }

    /// The sagas a new coordinator must resume: their pending commands.
    async fn recover(&self) -> Result<Vec<(OrderId, Vec<Work>)>, TermError> {
        let client = self.client().await?;
        let sagas = store::with_pending_commands(&client).await?;
        if !sagas.is_empty() {
            tracing::info!(
                sagas = sagas.len(),
                "re-issuing the pending commands of unfinished sagas"
            );
        }
        Ok(sagas
            .iter()
            .map(|saga| {
                (
                    saga.order_id,
                    self.works(saga, saga.state.pending_commands()),
                )
            })
            .collect())
    }

    /// Runs queued commands of one order at once (commands on different
    /// streams that the state machine issued together) and records their
    /// outcomes together, so the saga row is written once for all of them;
    /// returns the commands that led to.
    #[tracing::instrument(level = "debug", skip_all, fields(%order_id, commands = works.len()))]
    async fn perform(&self, order_id: OrderId, works: Vec<Work>) -> Result<Vec<Work>, TermError> {
        let runs = works.iter().map(|work| self.run_work(order_id, work));
        let outcomes = futures::future::try_join_all(runs).await?;
        let ahead = self.foresee(&works, &outcomes);
        let mut requests = Vec::new();
        for (work, outcomes) in works.iter().zip(outcomes) {
            crash_on(self.hooks.check(&Step::AfterCommand {
                order_id,
                command_id: work.command.command_id.clone(),
            }))?;
            for outcome in outcomes {
                requests.push(self.outcome_request(order_id, work, outcome, false));
            }
        }
        // The reservations' echoes are expected by now (just above): the
        // consumer skips them while the confirmation runs.
        let ahead = match ahead {
            Some(work) => self.run_ahead(order_id, work).await?,
            None => None,
        };
        let mut works = works;
        if let Some((work, outcome)) = ahead {
            crash_on(self.hooks.check(&Step::AfterCommand {
                order_id,
                command_id: work.command.command_id.clone(),
            }))?;
            requests.push(self.outcome_request(order_id, &work, outcome, true));
            works.push(work);
        }
        let follow = self.feed(requests).await?;
        for work in &works {
            crash_on(self.hooks.check(&Step::OutcomeCommitted {
                order_id,
                command_id: work.command.command_id.clone(),
            }))?;
        }
        Ok(follow)
    }

    /// The order's confirmation, when the reservations just run lead to it:
    /// it is then run straight after them ([`Engine::run_ahead`]), before
    /// their outcomes are written, so that all are written in one
    /// transaction and the confirmation does not wait for the first one:
    /// one saga write and one commit fewer on every order's way to
    /// confirmed.
    ///
    /// The saga's state when it issued the reservations, fed their
    /// successes, foretells what it issues next; only when that is exactly
    /// one confirmation (and every reservation succeeded once) is it run
    /// ahead. It is safe because the order aggregate decides: a
    /// confirmation of an order that moved on meanwhile is refused. Its
    /// outcome is then dropped, and one recorded by the feeder counts only
    /// if the saga as stored has issued the same command by then; otherwise
    /// the saga learns of the confirmation from its event, as of any other.
    /// A crash before the outcomes are written leaves the reservations
    /// pending: they are re-issued, replayed by their ids, and the
    /// confirmation issued again is replayed by its id too.
    fn foresee(&self, works: &[Work], outcomes: &[Vec<Outcome>]) -> Option<Work> {
        let from = works.first().and_then(|w| w.issued_from.clone())?;
        let together = works.iter().all(|w| {
            w.issued_from
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, &from))
        });
        // `issued_from` is only kept for reservations.
        let all_reserved = outcomes
            .iter()
            .all(|o| matches!(o.as_slice(), [Outcome::Succeeded { .. }]));
        if !together || !all_reserved {
            return None;
        }
        let now = self.now();
        let mut state = (*from).clone();
        let mut next = Vec::new();
        for work in works {
            let input = SagaInput::CommandSucceeded {
                command_id: work.command.command_id.clone(),
            };
            let (after, actions) = domain::fulfilment::handle(state, input, now, &self.machine);
            state = after;
            next.extend(actions.into_iter().filter_map(|action| match action {
                SagaAction::Issue(command) => Some(command),
                _ => None,
            }));
        }
        let [command] = next.as_slice() else {
            return None;
        };
        if !matches!(command.kind, SagaCommandKind::ConfirmOrder { .. }) {
            return None;
        }
        // Caused, as the saga would record it, by the last reservation's event.
        let cause = outcomes.iter().rev().find_map(|o| match o.as_slice() {
            [Outcome::Succeeded { events, .. }] => events.last().copied(),
            _ => None,
        });
        Some(Work {
            command: command.clone(),
            cause: cause.or(works[0].cause),
            correlation: works[0].correlation,
            delay: Duration::ZERO,
            issued_from: None,
        })
    }

    /// Runs the command [`Engine::foresee`] foresaw; its outcome if it
    /// succeeded.
    async fn run_ahead(
        &self,
        order_id: OrderId,
        work: Work,
    ) -> Result<Option<(Work, Outcome)>, TermError> {
        let mut outcome = self.run_work(order_id, &work).await?;
        self.stats.ahead.fetch_add(1, Ordering::Relaxed);
        Ok(match outcome.pop() {
            Some(succeeded @ Outcome::Succeeded { .. }) if outcome.is_empty() => {
                Some((work, succeeded))
            }
            // Refused or failed: the saga, told of the reservations, issues
            // it again and hears its answer the ordinary way.
            _ => {
                self.stats.ahead_dropped.fetch_add(1, Ordering::Relaxed);
                None
            }
        })
    }

    /// Runs one command (as many times as the hooks say); its outcomes.
    async fn run_work(&self, order_id: OrderId, work: &Work) -> Result<Vec<Outcome>, TermError> {
        if !work.delay.is_zero() {
            tokio::time::sleep(work.delay).await;
        }
        // No check that the command is still pending: running one that was
        // answered meanwhile is harmless (its id makes the executor replay
        // it, and the state machine ignores the repeated answer), and the
        // check would cost a query for every command.
        let command_id = work.command.command_id.clone();
        let injected_failure = match self.hooks.check(&Step::BeforeCommand {
            order_id,
            command_id: command_id.clone(),
        }) {
            Ok(()) => false,
            Err(Injected::FailCommand) => true,
            Err(Injected::Crash) => return Err(TermError::Injected),
        };
        let ctx = CommandContext {
            command_id: Some(command_id),
            correlation_id: work.correlation,
            causation_id: work.cause,
            trace_id: None,
        };
        let mut outcomes = Vec::new();
        for _ in 0..self.hooks.times() {
            outcomes.push(if injected_failure {
                Outcome::Transient("injected failure".to_owned())
            } else {
                self.run_with_retries(&work.command, &ctx).await
            });
        }
        Ok(outcomes)
    }

    /// Runs a command, retrying transient failures with backoff.
    async fn run_with_retries(&self, command: &SagaCommand, ctx: &CommandContext) -> Outcome {
        // The semaphore only closes when the runner is dropped.
        let _permit = self.permits.acquire().await.ok();
        let mut attempt = 0;
        loop {
            let outcome = {
                let _turn = self
                    .stream_locks
                    .lock(commands::target_stream(command))
                    .await;
                commands::execute(&self.executor, command, ctx).await
            };
            self.stats.executed.fetch_add(1, Ordering::Relaxed);
            match outcome {
                Outcome::Transient(e) if attempt < self.config.command_retries => {
                    tracing::debug!(command_id = %command.command_id, error = %e, attempt, "command failed; retrying");
                    tokio::time::sleep(self.config.backoff(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// What feeding a command's outcome to its saga takes.
    fn outcome_request(
        &self,
        order_id: OrderId,
        work: &Work,
        outcome: Outcome,
        ahead: bool,
    ) -> FeedRequest {
        let command = &work.command;
        let id = command.command_id.clone();
        let failed = |error: String| SagaInput::CommandFailed {
            command_id: id.clone(),
            error,
        };
        let mut written_event = None;
        let mut ahead_events = None;
        let (inputs, park_if_pending, written) = match outcome {
            Outcome::Succeeded { position, events } => {
                written_event = events.last().copied();
                if ahead {
                    // Expected by the feeder, if the outcome counts.
                    ahead_events = Some(events);
                } else {
                    // Their messages will tell the saga nothing the outcome
                    // fed now does not; the consumer may skip them.
                    self.echoes.expect(&events);
                }
                (
                    vec![SagaInput::CommandSucceeded {
                        command_id: id.clone(),
                    }],
                    None,
                    position,
                )
            }
            Outcome::Refused(input) => (vec![input], None, None),
            Outcome::OrderMovedOn { observed, refusal } => {
                (observed, Some(format!("{id} was refused: {refusal}")), None)
            }
            Outcome::Transient(error) => {
                tracing::warn!(%order_id, command_id = %id, error, "command keeps failing; telling the saga");
                (vec![failed(error)], None, None)
            }
            // A compensation is the state machine's to give up on.
            Outcome::Permanent(error) if command.is_compensation() => {
                (vec![failed(error)], None, None)
            }
            Outcome::Permanent(error) => (
                Vec::new(),
                Some(format!("{id} cannot succeed: {error}")),
                None,
            ),
        };
        FeedRequest {
            order_id,
            inputs,
            cause: Cause {
                event: work.cause,
                written,
                written_event,
            },
            park_if_pending: park_if_pending.map(|r| (id, r)),
            ahead: ahead_events,
            reply: oneshot::channel().0,
        }
    }

    /// Feeds outcomes to their sagas; returns the commands they led to.
    /// While a term runs, the outcomes of all running commands are written
    /// together by the feeder (one transaction for many, instead of one
    /// each); the ones given here at once go to it at once, so they share a
    /// transaction. Otherwise they are written directly.
    async fn feed(&self, requests: Vec<FeedRequest>) -> Result<Vec<Work>, TermError> {
        let feeder = self
            .feeder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(feeder) = feeder else {
            let works = self.feed_many(requests).await?;
            return Ok(works.into_iter().flatten().collect());
        };
        let stopped = || {
            TermError::Saga(SagaError::Store(eventstore::StoreError::Internal(
                "the outcome feeder stopped".into(),
            )))
        };
        let mut answers = Vec::with_capacity(requests.len());
        let mut together = Vec::with_capacity(requests.len());
        for mut request in requests {
            let (reply, answer) = oneshot::channel();
            request.reply = reply;
            together.push(request);
            answers.push(answer);
        }
        feeder.send(together).map_err(|_| stopped())?;
        let mut follow = Vec::new();
        for answer in answers {
            match answer.await {
                Ok(Ok(works)) => follow.extend(works),
                Ok(Err(e)) => {
                    return Err(TermError::Saga(SagaError::Store(
                        eventstore::StoreError::Internal(e),
                    )))
                }
                Err(_) => return Err(stopped()),
            }
        }
        Ok(follow)
    }

    /// Feeds many outcomes in one transaction; returns each one's follow-up
    /// commands, in order.
    async fn feed_many(&self, requests: Vec<FeedRequest>) -> Result<Vec<Vec<Work>>, TermError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut ids: Vec<Uuid> = requests.iter().map(|r| r.order_id.as_uuid()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut sagas = store::load_for_update(&tx, &ids).await?;
        let now = self.now();
        let mut issued_per_request = Vec::with_capacity(requests.len());
        // Commands run ahead whose success was recorded here: the saga
        // issued them in this transaction, they need not run again.
        let mut done_ahead: Vec<&str> = Vec::new();
        for request in &requests {
            let Some(saga) = sagas.get_mut(&request.order_id) else {
                issued_per_request.push(None);
                continue;
            };
            if let Some(events) = &request.ahead {
                let issued_by_saga = request.inputs.iter().all(|input| {
                    matches!(input, SagaInput::CommandSucceeded { command_id }
                        if saga.state.pending.iter().any(|p| &p.command.command_id == command_id))
                });
                if !issued_by_saga {
                    self.stats.ahead_dropped.fetch_add(1, Ordering::Relaxed);
                    // The saga moved another way meanwhile. The command's
                    // event reaches it as any other message, which it then
                    // handles (no echo is expected for it).
                    issued_per_request.push(Some(Vec::new()));
                    continue;
                }
                self.echoes.expect(events);
                done_ahead.extend(request.inputs.iter().filter_map(|input| match input {
                    SagaInput::CommandSucceeded { command_id } => Some(command_id.as_str()),
                    _ => None,
                }));
            }
            let mut issued = Vec::new();
            for input in &request.inputs {
                issued.extend(saga.apply(
                    input,
                    now,
                    &self.machine,
                    self.hooks.times(),
                    request.cause.event,
                ));
            }
            // Commands that follow from a command's success were caused by
            // the event it wrote.
            if !issued.is_empty() {
                let event_id = match (request.cause.written_event, request.cause.written) {
                    (Some(event_id), _) => Some(event_id),
                    (None, Some(position)) => store::event_at(&tx, position).await?,
                    (None, None) => None,
                };
                if let Some(event_id) = event_id {
                    saga.caused_by(&issued, event_id);
                }
            }
            if let Some((command_id, reason)) = &request.park_if_pending {
                if saga
                    .state
                    .pending
                    .iter()
                    .any(|p| &p.command.command_id == command_id)
                {
                    tracing::error!(order_id = %request.order_id, reason, "parking the saga");
                    saga.park(reason.clone());
                }
            }
            issued_per_request.push(Some(issued));
        }
        store::save_all(&tx, sagas.values(), now).await?;
        tx.commit().await?;
        let mut out = Vec::with_capacity(requests.len());
        for (request, issued) in requests.iter().zip(issued_per_request) {
            match (issued, sagas.get(&request.order_id)) {
                (Some(mut issued), Some(saga)) => {
                    self.count_issued(&issued);
                    issued.retain(|c| !done_ahead.contains(&c.command_id.as_str()));
                    out.push(self.works(saga, issued));
                }
                _ => out.push(Vec::new()),
            }
        }
        Ok(out)
    }

    /// Writes outcomes as they come, as many per transaction as are waiting.
    async fn run_feeder(self: Arc<Self>, mut requests: mpsc::UnboundedReceiver<Vec<FeedRequest>>) {
        while let Some(first) = requests.recv().await {
            let mut batch = first;
            while batch.len() < FEED_BATCH {
                match requests.try_recv() {
                    Ok(together) => batch.extend(together),
                    Err(_) => break,
                }
            }
            let (replies, requests_only): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .map(|r| {
                    let FeedRequest {
                        order_id,
                        inputs,
                        cause,
                        park_if_pending,
                        ahead,
                        reply,
                    } = r;
                    (
                        reply,
                        FeedRequest {
                            order_id,
                            inputs,
                            cause,
                            park_if_pending,
                            ahead,
                            reply: oneshot::channel().0,
                        },
                    )
                })
                .unzip();
            match self.feed_many(requests_only).await {
                Ok(works) => {
                    for (reply, works) in replies.into_iter().zip(works) {
                        let _ = reply.send(Ok(works));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(message.clone()));
                    }
                }
            }
        }
    }
}

/// What caused an outcome's follow-up commands.
#[derive(Debug, Clone, Copy)]
struct Cause {
    /// The event behind the command that ran.
    event: Option<Uuid>,
    /// Where that command wrote its last event, if it wrote one.
    written: Option<eventstore::Position>,
    /// That event's id, when the command wrote it just now.
    written_event: Option<Uuid>,
}

/// Longest life of a pull request of the saga consumer; heartbeats come at
/// half of it.
const CONSUMER_EXPIRY: Duration = Duration::from_secs(5);

/// Timers fired per transaction.
const TIMER_BATCH: i64 = 100;

/// The queues of commands waiting to run, one per order with a driver.
type Queues = Arc<Mutex<HashMap<OrderId, VecDeque<Work>>>>;

fn push_unique(queue: &mut VecDeque<Work>, works: Vec<Work>) {
    for work in works {
        if !queue
            .iter()
            .any(|w| w.command.command_id == work.command.command_id)
        {
            queue.push_back(work);
        }
    }
}

/// One leadership term: everything that lives only while this runner leads.
struct Term {
    engine: Arc<Engine>,
    queues: Queues,
    /// One driver per order with queued commands. Dropping the term aborts
    /// them all, which is also what an injected crash does.
    drivers: JoinSet<Result<(), TermError>>,
}

impl Term {
    fn new(engine: Arc<Engine>) -> Term {
        Term {
            engine,
            queues: Arc::default(),
            drivers: JoinSet::new(),
        }
    }

    /// Queues commands for an order, starting its driver if it has none.
    fn enqueue(&mut self, order_id: OrderId, works: Vec<Work>) {
        if works.is_empty() {
            return;
        }
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = queues.get_mut(&order_id) {
            push_unique(queue, works);
            return;
        }
        let mut queue = VecDeque::new();
        push_unique(&mut queue, works);
        queues.insert(order_id, queue);
        self.drivers
            .spawn(drive(self.engine.clone(), self.queues.clone(), order_id));
    }

    async fn lead(
        mut self,
        lock: &tokio_postgres::Client,
        shutdown: &CancellationToken,
    ) -> Result<(), TermError> {
        let engine = self.engine.clone();
        let config = &engine.config;
        let mut stream = ensure_stream(&engine.jetstream, &config.stream, &config.prefix)
            .await
            .map_err(SagaError::from)?;
        let mut checkpoint = {
            let client = engine.client().await?;
            store::load_checkpoint(&client, config.stream.as_str()).await?
        };
        let info = stream
            .info()
            .await
            .map_err(|e| TermError::Nats(e.to_string()))?;
        if checkpoint.sequence > info.state.last_sequence {
            // The stream was recreated (its sequences start over). Read it
            // all: positions and handled ids skip what was done before.
            tracing::warn!(
                checkpoint = checkpoint.sequence,
                last_sequence = info.state.last_sequence,
                "the stream is behind the saga checkpoint; reading it from the start"
            );
            checkpoint.sequence = 0;
        } else if info.state.messages > 0 && info.state.first_sequence > checkpoint.sequence + 1 {
            tracing::error!(
                checkpoint = checkpoint.sequence,
                first_sequence = info.state.first_sequence,
                "messages the sagas never saw were removed from the stream; their orders need a look"
            );
        }
        // Should async-nats recreate the consumer before it delivered a
        // message, it starts over from the stream's first message; the
        // sequence, position and handled-id checks make that a slow no-op.
        let deliver_policy = match checkpoint.sequence {
            0 => DeliverPolicy::All,
            n => DeliverPolicy::ByStartSequence {
                start_sequence: n + 1,
            },
        };
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: config.prefix.wildcard(),
                deliver_policy,
                description: Some("ordo saga coordinator".to_owned()),
                // Pull requests expire (and idle heartbeats come) this often,
                // so a consumer lost with a NATS restart is noticed in
                // seconds rather than the default 30.
                max_expires: CONSUMER_EXPIRY,
                ..Default::default()
            })
            .await
            .map_err(|e| TermError::Nats(e.to_string()))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| TermError::Nats(e.to_string()))?
            .ready_chunks(config.batch_size.max(1));
        tracing::info!(after_sequence = checkpoint.sequence, position = %checkpoint.position, "saga coordinator resumes");

        // Outcomes of this term's commands are written together.
        let (feeds, feed_requests) = mpsc::unbounded_channel();
        *engine.feeder.lock().unwrap_or_else(|p| p.into_inner()) = Some(feeds);
        let _feeder = FeederGuard {
            engine: engine.clone(),
            task: tokio::spawn(engine.clone().run_feeder(feed_requests)),
        };
        for (order_id, works) in engine.recover().await? {
            self.enqueue(order_id, works);
        }
        let mut disconnected = false;
        let mut lock_check = tokio::time::interval(config.standby_poll);
        let mut timer_poll = tokio::time::interval(config.timer_poll);
        let mut attention = tokio::time::interval(Duration::from_secs(5));
        for interval in [&mut lock_check, &mut timer_poll, &mut attention] {
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = lock_check.tick() => {
                    if lock.is_closed() {
                        return Err(TermError::LostLock);
                    }
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
                        self.enqueue(order_id, works);
                    }
                    if !full {
                        break;
                    }
                },
                batch = messages.next() => {
                    let batch = batch.ok_or_else(|| TermError::Nats("the consumer ended".into()))?;
                    for (order_id, works) in engine.handle_batch(batch, &mut checkpoint).await? {
                        self.enqueue(order_id, works);
                    }
                }
                Some(done) = self.drivers.join_next() => match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(e) => return Err(TermError::Saga(SagaError::Store(
                        eventstore::StoreError::Internal(format!("a saga driver died: {e}")),
                    ))),
                },
            }
        }
    }
}

/// Stops a term's feeder with the term.
struct FeederGuard {
    engine: Arc<Engine>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FeederGuard {
    fn drop(&mut self) {
        *self.engine.feeder.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.task.abort();
    }
}

/// Runs an order's queued commands one after another until none are left.
/// What a driver runs next: the first queued command and, when it is a
/// stock command, the stock commands queued right behind it on other
/// products. Those were issued together (an order's reservations, its
/// releases) and touch different streams, so they run at once; an order
/// command waits for what was queued before it, as the state machine asked.
fn next_works(queue: &mut VecDeque<Work>) -> Vec<Work> {
    let Some(first) = queue.pop_front() else {
        return Vec::new();
    };
    let mut works = vec![first];
    if !is_stock_command(&works[0]) {
        return works;
    }
    while let Some(next) = queue.front() {
        let stream = commands::target_stream(&next.command);
        if !is_stock_command(next)
            || works
                .iter()
                .any(|w| commands::target_stream(&w.command) == stream)
        {
            break;
        }
        works.extend(queue.pop_front());
    }
    works
}

fn is_stock_command(work: &Work) -> bool {
    matches!(
        work.command.kind,
        SagaCommandKind::ReserveStock { .. }
            | SagaCommandKind::ReleaseStock { .. }
            | SagaCommandKind::ShipStock { .. }
    )
}

async fn drive(engine: Arc<Engine>, queues: Queues, order_id: OrderId) -> Result<(), TermError> {
    loop {
        let works = {
            let mut queues = queues.lock().unwrap_or_else(|p| p.into_inner());
            let works = queues
                .get_mut(&order_id)
                .map(next_works)
                .unwrap_or_default();
            if works.is_empty() {
                queues.remove(&order_id);
                return Ok(());
            }
            works
        };
        let follow = engine.perform(order_id, works).await?;
        if !follow.is_empty() {
            let mut queues = queues.lock().unwrap_or_else(|p| p.into_inner());
            push_unique(queues.entry(order_id).or_default(), follow);
        }
    }
}

async fn sleep_or_stop(pause: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        _ = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::clock::ManualClock;
    use domain::fulfilment::SagaInput;
    use domain::ids::ProductId;
    use domain::values::Quantity;
    use eventstore::EventStore;
    use std::collections::HashSet;
    use test_support::TestEnv;

    fn work(id: &str, kind: SagaCommandKind) -> Work {
        Work {
            command: SagaCommand {
                command_id: id.to_owned(),
                kind,
            },
            cause: None,
            correlation: None,
            delay: Duration::ZERO,
            issued_from: None,
        }
    }

    #[test]
    fn stock_commands_queued_together_run_together_and_order_commands_alone() {
        let order_id = OrderId::new(Uuid::new_v4());
        let (p1, p2) = (
            ProductId::new(Uuid::new_v4()),
            ProductId::new(Uuid::new_v4()),
        );
        let reserve = |product_id| SagaCommandKind::ReserveStock {
            product_id,
            order_id,
            quantity: Quantity::new(1).unwrap(),
        };
        let release = |product_id| SagaCommandKind::ReleaseStock {
            product_id,
            order_id,
        };
        let ids = |works: Vec<Work>| -> Vec<String> {
            works.into_iter().map(|w| w.command.command_id).collect()
        };
        let mut queue: VecDeque<Work> = [
            work("reserve:0", reserve(p1)),
            work("reserve:1", reserve(p2)),
            work("confirm", SagaCommandKind::ConfirmOrder { order_id }),
            work("release:0", release(p1)),
            work("release:0 again", release(p1)),
            work("release:1", release(p2)),
        ]
        .into();
        assert_eq!(ids(next_works(&mut queue)), ["reserve:0", "reserve:1"]);
        assert_eq!(ids(next_works(&mut queue)), ["confirm"]);
        assert_eq!(
            ids(next_works(&mut queue)),
            ["release:0"],
            "never two commands on one stream at once"
        );
        assert_eq!(
            ids(next_works(&mut queue)),
            ["release:0 again", "release:1"]
        );
        assert!(next_works(&mut queue).is_empty());
    }

    /// Sagas awaiting payment, stored with their timers, as the runner
    /// would have left them.
    async fn confirmed_sagas(engine: &Engine, count: usize) -> Vec<OrderId> {
        let mut client = engine.client().await.unwrap();
        let tx = client.transaction().await.unwrap();
        let now = engine.now();
        let mut orders = Vec::new();
        for _ in 0..count {
            let order_id = OrderId::new(Uuid::new_v4());
            let mut saga = SagaRow::new(order_id);
            let product_id = ProductId::new(Uuid::new_v4());
            let inputs = [
                SagaInput::OrderPlaced {
                    order_id,
                    lines: vec![(product_id, Quantity::new(1).unwrap())],
                },
                SagaInput::ReservationSucceeded { product_id },
                SagaInput::CommandSucceeded {
                    command_id: format!("{order_id}:confirm"),
                },
            ];
            for input in &inputs {
                saga.apply(input, now, &engine.machine, 1, None);
            }
            assert_eq!(saga.state.phase, SagaPhase::AwaitingPayment);
            store::save(&tx, &saga, now).await.unwrap();
            orders.push(order_id);
        }
        tx.commit().await.unwrap();
        orders
    }

    #[tokio::test]
    async fn the_sagas_own_transactions_never_wait_for_its_commands_connections() {
        let env = TestEnv::new().await;
        let commands = env.database_url.pool(1).unwrap();
        let runner = SagaRunner::new(
            Executor::new(EventStore::new(commands.clone())),
            env.database_url.clone(),
            env.jetstream.clone(),
            RunnerConfig::new(
                env.stream.clone(),
                env.prefix.clone(),
                Duration::from_secs(60),
            ),
        )
        .unwrap();
        // Every connection of the commands' pool is taken (as by a burst of
        // running commands): the consumer, feeder and timers still get one.
        let _busy = commands.get().await.unwrap();
        let client = tokio::time::timeout(Duration::from_secs(2), runner.engine.client())
            .await
            .expect("a connection of the saga's own, not one of its commands'")
            .unwrap();
        let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
    }

    /// Sequential scans so far of each of these `saga` tables, every one
    /// this connection made included (its statistics are flushed first).
    async fn saga_scans(client: &deadpool_postgres::Object, tables: &[&str]) -> Vec<i64> {
        client
            .batch_execute("select pg_stat_force_next_flush()")
            .await
            .unwrap();
        let mut scans = Vec::with_capacity(tables.len());
        for table in tables {
            let row = client
                .query_one(
                    "select coalesce((select seq_scan from pg_stat_user_tables
                                       where schemaname = 'saga' and relname = $1), 0)",
                    &[table],
                )
                .await
                .unwrap();
            scans.push(row.get(0));
        }
        scans
    }

    #[tokio::test]
    async fn handled_messages_are_told_apart_from_new_ones_without_reading_the_table_through() {
        let env = TestEnv::new().await;
        let mut client = env.client().await;
        let before = saga_scans(&client, &["processed"]).await;
        let order = Uuid::new_v4();
        let mut seen = Vec::new();
        // Batches as the consumer makes them while the table grows from
        // empty, each with a message handled before and one given twice;
        // halfway, at about a thousand rows (where a sequential scan looks
        // cheapest to the planner), another connection takes over and
        // prepares its statements afresh.
        let mut other = env.client().await;
        for batch in 0..100 {
            if batch == 50 {
                saga_scans(&client, &["processed"]).await;
                std::mem::swap(&mut client, &mut other);
            }
            let new: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
            let mut ids = new.clone();
            ids.extend(seen.last().copied());
            ids.push(new[0]);
            let orders = vec![order; ids.len()];
            let tx = client.transaction().await.unwrap();
            let fresh = store::record_processed(&tx, &ids, &orders).await.unwrap();
            tx.commit().await.unwrap();
            let expected: HashSet<Uuid> = new.iter().copied().collect();
            assert_eq!(fresh, expected, "exactly the messages not handled before");
            seen.extend(new);
        }
        assert_eq!(
            saga_scans(&client, &["processed"]).await,
            before,
            "no batch read the table through"
        );
        let stored: i64 = client
            .query_one("select count(*) from saga.processed", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored, seen.len() as i64);
    }

    #[tokio::test]
    async fn sagas_and_timers_are_found_by_key_whatever_the_size_their_statements_were_planned_at()
    {
        let env = TestEnv::new().await;
        let mut client = env.client().await;
        let before = saga_scans(&client, &["sagas", "timers"]).await;
        let now = Utc::now();
        let mut other = env.client().await;
        let mut previous: Vec<Uuid> = Vec::new();
        // Each batch stores twenty new sagas with timers and clears the
        // timers of the batch before, as the consumer and feeder do; halfway,
        // at about a thousand rows, another connection prepares the
        // statements afresh.
        for batch in 0..100 {
            if batch == 50 {
                saga_scans(&client, &["sagas", "timers"]).await;
                std::mem::swap(&mut client, &mut other);
            }
            let new: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
            let asked: Vec<Uuid> = new.iter().chain(&previous).copied().collect();
            let tx = client.transaction().await.unwrap();
            let mut found = store::load_for_update(&tx, &asked).await.unwrap();
            let mut found_ids: Vec<Uuid> = found.keys().map(|o| o.as_uuid()).collect();
            found_ids.sort_unstable();
            let mut expected = previous.clone();
            expected.sort_unstable();
            assert_eq!(
                found_ids, expected,
                "batch {batch}: exactly the stored sagas"
            );
            for saga in found.values_mut() {
                saga.timer = Some(None);
                saga.dirty = true;
            }
            for id in &new {
                let mut saga = SagaRow::new(OrderId::new(*id));
                saga.timer = Some(Some(now));
                saga.dirty = true;
                found.insert(saga.order_id, saga);
            }
            store::save_all(&tx, found.values(), now).await.unwrap();
            tx.commit().await.unwrap();
            previous = new;
        }
        assert_eq!(
            saga_scans(&client, &["sagas", "timers"]).await,
            before,
            "no statement read saga.sagas or saga.timers through"
        );
        let counts = client
            .query_one(
                "select (select count(*) from saga.sagas), (select count(*) from saga.timers)",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            (counts.get::<_, i64>(0), counts.get::<_, i64>(1)),
            (2000, 20)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_pollers_at_once_never_fire_one_timer_twice() {
        let env = TestEnv::new().await;
        let clock = Arc::new(ManualClock::starting_now());
        let mut config = RunnerConfig::new(
            env.stream.clone(),
            env.prefix.clone(),
            Duration::from_secs(60),
        );
        config.max_concurrent_commands = 4;
        let runner = SagaRunner::new(
            Executor::new(EventStore::new(env.pool.clone())),
            env.database_url.clone(),
            env.jetstream.clone(),
            config,
        )
        .unwrap()
        .with_clock(clock.clone());
        let engine = Arc::new(runner.engine);
        let orders = confirmed_sagas(&engine, 40).await;

        // Not due yet: nothing fires.
        assert!(engine.fire_due_timers().await.unwrap().is_empty());
        clock.advance(chrono::Duration::seconds(61));
        let pollers: Vec<_> = (0..3)
            .map(|_| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    let mut fired = Vec::new();
                    loop {
                        let round = engine.fire_due_timers().await.unwrap();
                        if round.is_empty() {
                            return fired;
                        }
                        fired.extend(round);
                    }
                })
            })
            .collect();
        let mut fired = Vec::new();
        for poller in pollers {
            fired.extend(poller.await.unwrap());
        }
        let mut fired_orders: Vec<OrderId> = fired.iter().map(|(o, _)| *o).collect();
        fired_orders.sort();
        let mut expected = orders.clone();
        expected.sort();
        assert_eq!(fired_orders, expected, "each timer fired exactly once");
        // Each firing issued the cancellation, once.
        assert!(fired.iter().all(|(order_id, works)| works.len() == 1
            && works[0].command.command_id == format!("{order_id}:cancel:payment_timeout")));
        let client = engine.client().await.unwrap();
        let left: i64 = client
            .query_one("select count(*) from saga.timers", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0);
    }
}
