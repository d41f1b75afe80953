//! The outcome feeder: command outcomes go back to their sagas many per
//! transaction. While a term runs, every driver hands its outcomes to one
//! feeder task, which writes as many as are waiting together (one
//! transaction for many, instead of one each); outcomes handed over at once
//! share a transaction. Outside a term they are written directly.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use domain::fulfilment::SagaInput;
use domain::ids::OrderId;
use eventstore::telemetry::TraceParent;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::engine::{Engine, Work};
use super::term::TermError;
use crate::commands::Outcome;
use crate::error::SagaError;
use crate::store;

/// Most outcomes written in one transaction.
const FEED_BATCH: usize = 256;

/// What answers a [`FeedRequest`]: the commands its outcome led to.
type Reply = oneshot::Sender<Result<Vec<Work>, String>>;

/// A command's outcome waiting to be fed to its saga.
#[derive(Debug)]
pub(crate) struct FeedRequest {
    order_id: OrderId,
    inputs: Vec<SagaInput>,
    cause: Cause,
    park_if_pending: Option<(String, String)>,
    /// The outcome of a command run ahead of the saga's say-so (see
    /// [`super::ahead`]), with the events it wrote: it counts only if the
    /// saga, as stored, has issued that command by then.
    ahead: Option<Vec<Uuid>>,
    /// The trace the command ran in; its follow-ups continue it.
    trace: TraceParent,
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

/// Outcomes handed over at once, each with where its answer goes.
type Handover = Vec<(FeedRequest, Reply)>;

/// Where outcomes go while a term runs: the feeder's queue.
#[derive(Debug, Default)]
pub(crate) struct FeederSlot(Mutex<Option<mpsc::UnboundedSender<Handover>>>);

impl FeederSlot {
    fn set(&self, sender: Option<mpsc::UnboundedSender<Handover>>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = sender;
    }

    fn get(&self) -> Option<mpsc::UnboundedSender<Handover>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A term's feeder task; dropping it (with the term) stops it.
pub(crate) struct Feeder {
    engine: Arc<Engine>,
    task: tokio::task::JoinHandle<()>,
}

impl Feeder {
    /// Starts the feeder and routes the engine's outcomes to it.
    pub fn start(engine: Arc<Engine>) -> Feeder {
        let (sender, requests) = mpsc::unbounded_channel();
        engine.feeder.set(Some(sender));
        Feeder {
            task: tokio::spawn(engine.clone().run_feeder(requests)),
            engine,
        }
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.engine.feeder.set(None);
        self.task.abort();
    }
}

impl Engine {
    /// What feeding a command's outcome to its saga takes.
    pub(crate) fn outcome_request(
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
            trace: work.trace.clone(),
        }
    }

    /// Feeds outcomes to their sagas; returns the commands they led to.
    /// The ones given here at once go to the feeder at once, so they share
    /// a transaction.
    pub(crate) async fn feed(&self, requests: Vec<FeedRequest>) -> Result<Vec<Work>, TermError> {
        let Some(feeder) = self.feeder.get() else {
            let works = self.feed_many(requests).await?;
            return Ok(works.into_iter().flatten().collect());
        };
        let stopped = || TermError::internal("the outcome feeder stopped");
        let mut answers = Vec::with_capacity(requests.len());
        let mut together = Vec::with_capacity(requests.len());
        for request in requests {
            let (reply, answer) = oneshot::channel();
            together.push((request, reply));
            answers.push(answer);
        }
        feeder.send(together).map_err(|_| stopped())?;
        let mut follow = Vec::new();
        for answer in answers {
            match answer.await {
                Ok(Ok(works)) => follow.extend(works),
                Ok(Err(e)) => return Err(TermError::internal(e)),
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
                    (None, Some(position)) => eventstore::store::event_at(&tx, position)
                        .await
                        .map_err(SagaError::from)?,
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
                    out.push(self.works(saga, issued, &request.trace));
                }
                _ => out.push(Vec::new()),
            }
        }
        Ok(out)
    }

    /// Writes outcomes as they come, as many per transaction as are waiting.
    async fn run_feeder(self: Arc<Self>, mut requests: mpsc::UnboundedReceiver<Handover>) {
        while let Some(first) = requests.recv().await {
            let mut batch = first;
            while batch.len() < FEED_BATCH {
                match requests.try_recv() {
                    Ok(together) => batch.extend(together),
                    Err(_) => break,
                }
            }
            let (requests_only, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
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
