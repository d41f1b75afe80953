//! Consuming: the ordered consumer a term reads the stream with, and
//! handling each batch of messages in one transaction.

use eventstore::telemetry::{self, attr, Attribute, Hop, Kind, TraceParent};
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull::OrderedConfig, consumer::DeliverPolicy};
use chrono::Utc;
use domain::fulfilment::{SagaCommand, SagaInput, SagaPhase};
use domain::ids::OrderId;
use eventstore::nats::ensure_stream;
use futures::stream::ReadyChunks;
use futures::StreamExt as _;
use uuid::Uuid;

use super::engine::{Engine, Work};
use super::term::{crash_on, TermError};
use crate::error::SagaError;
use crate::hooks::Step;
use crate::input::{classify, Classified, Incoming};
use crate::store::{self, Checkpoint, SagaRow};

/// Longest life of a pull request of the saga consumer; heartbeats come at
/// half of it, so a consumer lost with a NATS restart is noticed in seconds
/// rather than the default 30.
const CONSUMER_EXPIRY: Duration = Duration::from_secs(5);

/// What one message delivers: a message, or what went wrong fetching it.
pub(crate) type Delivery = Result<jetstream::Message, jetstream::consumer::pull::OrderedError>;

/// A term's view of the stream: its messages in batches of what is ready,
/// and how far they have been handled.
pub(crate) struct Consumer {
    pub messages: ReadyChunks<jetstream::consumer::pull::Ordered>,
    pub checkpoint: Checkpoint,
}

impl Consumer {
    /// Opens the stream (creating it if missing) and an ordered consumer
    /// starting right after the stored checkpoint.
    pub async fn start(engine: &Engine) -> Result<Consumer, TermError> {
        let config = &engine.config;
        let mut stream = ensure_stream(
            &engine.jetstream,
            &config.stream,
            &config.prefix,
            config.unprotected,
        )
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
                // One filter subject: nats-server 2.9 ignores several.
                filter_subject: config.prefix.wildcard(),
                deliver_policy,
                description: Some("ordo saga coordinator".to_owned()),
                max_expires: CONSUMER_EXPIRY,
                ..Default::default()
            })
            .await
            .map_err(|e| TermError::Nats(e.to_string()))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| TermError::Nats(e.to_string()))?
            .ready_chunks(config.batch_size.max(1));
        tracing::info!(after_sequence = checkpoint.sequence, position = %checkpoint.position, "saga coordinator resumes");
        Ok(Consumer {
            messages,
            checkpoint,
        })
    }
}

impl Engine {
    /// Handles one batch of messages in one transaction; returns the
    /// commands to run, per order.
    #[tracing::instrument(level = "debug", skip_all, fields(messages = batch.len()))]
    pub(crate) async fn handle_batch(
        &self,
        batch: Vec<Delivery>,
        checkpoint: &mut Checkpoint,
    ) -> Result<Vec<(OrderId, Vec<Work>)>, TermError> {
        let mut next = *checkpoint;
        let mut relevant: Vec<(Incoming, OrderId, Result<SagaInput, String>)> = Vec::new();
        // With tracing on: each relevant message's `process` span (a child
        // of the relay's publish, ended when the batch commits) and the
        // context its commands continue, in `relevant`'s order.
        let mut traced: Vec<(Hop, TraceParent)> = Vec::new();
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
                if telemetry::enabled() {
                    let parent = TraceParent::from_headers(message.headers.as_ref());
                    let hop = Hop::start(
                        format_args!("process {}", message.subject),
                        Kind::Consumer,
                        &parent,
                        || {
                            vec![
                                Attribute::new(attr::MESSAGING_SYSTEM, "nats"),
                                Attribute::new(attr::MESSAGING_OPERATION, "process"),
                                Attribute::new(
                                    attr::MESSAGING_DESTINATION,
                                    message.subject.to_string(),
                                ),
                                Attribute::new(attr::MESSAGING_CONSUMER, "saga"),
                                Attribute::new(attr::MESSAGING_MESSAGE_ID, incoming.id.to_string()),
                                Attribute::new(attr::EVENT_TYPE, incoming.event_type.clone()),
                                Attribute::new(attr::POSITION, incoming.position.to_string()),
                                Attribute::new("ordo.order.id", order_id.to_string()),
                            ]
                        },
                    );
                    let carried = hop.carry(&parent);
                    traced.push((hop, carried));
                }
                relevant.push((incoming, order_id, input));
            }
        }
        if let Some(time) = newest {
            let lag = (Utc::now() - time).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::gauge!("ordo_saga_lag_seconds").set(lag);
            // The saga's hop: appended → received by the coordinator.
            metrics::histogram!("ordo_saga_receive_delay_seconds").record(lag);
        }
        let batch_size = relevant.len() as i64;
        for (hop, _) in &traced {
            hop.set(|| Attribute::new(attr::MESSAGING_BATCH, batch_size));
        }
        let mut traces = traced.iter().map(|(_, trace)| trace.clone());
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
        let mut issued: Vec<(OrderId, Vec<SagaCommand>, TraceParent)> = Vec::new();
        let mut steps = Vec::new();
        for (incoming, order_id, input) in relevant {
            let trace = traces.next().unwrap_or_default();
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
                    issued.push((order_id, commands, trace));
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
        drop(traced);
        *checkpoint = next;
        self.stats.messages.fetch_add(handled, Ordering::Relaxed);
        for step in &steps {
            crash_on(self.hooks.check(step))?;
        }
        Ok(issued
            .into_iter()
            .filter_map(|(order_id, commands, trace)| {
                let saga = sagas.get(&order_id)?;
                self.count_issued(&commands);
                Some((order_id, self.works(saga, commands, &trace)))
            })
            .collect())
    }
}
