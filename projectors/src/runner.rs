//! The live projector: one projection kept up to date from JetStream.
//!
//! **Why an ordered consumer, not a durable one.** The checkpoint in
//! PostgreSQL, written in the same transaction as the read model's changes,
//! is the only record of progress we trust. An ordered consumer is ephemeral
//! and flow-controlled: it starts at the checkpoint's stream sequence + 1,
//! delivers strictly in stream order (it recreates itself on any gap), and
//! needs no acks, so there is no ack deadline to miss and no redelivery storm
//! reordering one aggregate's events. A durable consumer would keep a second
//! notion of progress on the server that can disagree with ours. Anything
//! delivered again anyway (a restart, a reset sequence) sits at or below the
//! checkpoint's position and is skipped.
//!
//! One instance per projection is active ([`eventstore::leadership`]);
//! others stand by and take over when its lock's session ends.
//! Each batch (whatever is ready, up to `batch_size`) is applied in one
//! transaction together with the checkpoint. An event that cannot be applied
//! stops the projection: the events before it are committed, the checkpoint
//! row says `failed` and names the event, a metric and a log line say so.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull::OrderedConfig, consumer::DeliverPolicy};
use domain::ids::StreamType;
use eventstore::envelope::Envelope;
use eventstore::leadership::{Backoff, Leadership, Lease, LockKey, TermEnd};
use eventstore::nats::{StreamName, SubjectPrefix};
use eventstore::telemetry::{self, attr, Attribute, Hop, Kind, TraceParent};
use eventstore::{DatabaseUrl, Position, StoreError};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{self, Checkpoint};
use crate::event::ProjectionEvent;
use crate::projection::{ApplyError, Projection};
use crate::writes::Writes;

/// How often a standby tries for the lock, and the active one checks it holds it.
pub const STANDBY_POLL: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Consumers are created one at a time in a process: nats-server before
/// 2.9.15 can drop the answers to concurrent creations.
static CONSUMER_CREATION: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Settings of the projectors.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// The JetStream stream the relay feeds.
    pub stream: StreamName,
    /// Its subject prefix.
    pub prefix: SubjectPrefix,
    /// Most events applied in one transaction.
    pub batch_size: usize,
}

impl ProjectorConfig {
    /// Defaults for a stream and prefix.
    pub fn new(stream: StreamName, prefix: SubjectPrefix) -> Self {
        ProjectorConfig {
            stream,
            prefix,
            batch_size: 500,
        }
    }
}

/// What a projector is doing, for tests and status.
#[derive(Debug, Default)]
pub struct ProjectorStats {
    /// Holds the lock and applies events.
    pub active: AtomicBool,
    /// Events applied.
    pub applied: AtomicU64,
    /// Messages skipped as already applied.
    pub skipped: AtomicU64,
    /// Messages of other stream types, passed over unread.
    pub passed: AtomicU64,
    /// Stopped on an event it cannot apply.
    pub failed: AtomicBool,
}

/// Why a projector stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// Something that retrying cannot fix.
    #[error("projection {projection}: {reason}")]
    Fatal {
        /// The projection.
        projection: Projection,
        /// What is wrong.
        reason: String,
    },
}

/// Trouble in one leadership term; retried.
#[derive(Debug, thiserror::Error)]
enum TermError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error("the checkpoint moved under the projector (a rebuild swapped it)")]
    Moved,
}

impl From<tokio_postgres::Error> for TermError {
    fn from(e: tokio_postgres::Error) -> Self {
        TermError::Store(e.into())
    }
}

/// How a term ended without error.
enum Ended {
    Shutdown,
    Failed,
}

/// Keeps one projection up to date.
#[derive(Debug, Clone)]
pub struct Projector {
    projection: Projection,
    pool: deadpool_postgres::Pool,
    url: DatabaseUrl,
    jetstream: jetstream::Context,
    config: ProjectorConfig,
    stats: Arc<ProjectorStats>,
}

impl Projector {
    /// A projector for `projection`.
    pub fn new(
        projection: Projection,
        pool: deadpool_postgres::Pool,
        url: DatabaseUrl,
        jetstream: jetstream::Context,
        config: ProjectorConfig,
    ) -> Projector {
        Projector {
            projection,
            pool,
            url,
            jetstream,
            config,
            stats: Arc::default(),
        }
    }

    /// Live figures.
    pub fn stats(&self) -> Arc<ProjectorStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown`: stands by, leads, recovers (see
    /// [`eventstore::leadership`]). A projection that failed on an event
    /// stays stopped (holding its lock, so no standby fails on it again)
    /// until the process restarts.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ProjectorError> {
        let name = self.projection.name();
        let stats = self.stats.clone();
        let leadership = Leadership::new(
            self.url.clone(),
            LockKey::new("projection", self.projection),
            format!("projector {name}"),
        )
        .standby_poll(STANDBY_POLL)
        .backoff(Backoff {
            first: Duration::from_millis(100),
            max: MAX_BACKOFF,
        })
        .on_active(move |active| stats.active.store(active, Ordering::SeqCst));
        leadership
            .run(&shutdown, |lease| async {
                match self.lead(lease, &shutdown).await {
                    Ok(Ended::Shutdown) => TermEnd::Stopped,
                    Ok(Ended::Failed) => {
                        self.stats.failed.store(true, Ordering::SeqCst);
                        metrics::gauge!("ordo_projection_failed", "projection" => name).set(1.0);
                        // Keep the lock: a standby would only fail on the same event.
                        TermEnd::Hold
                    }
                    Err(TermError::Moved) => {
                        tracing::info!(
                            projection = name,
                            "checkpoint moved (rebuild); resuming from it"
                        );
                        TermEnd::Restart
                    }
                    Err(e) => TermEnd::Interrupted(e.to_string()),
                }
            })
            .await
    }

    /// One leadership term.
    async fn lead(&self, _lease: Lease, shutdown: &CancellationToken) -> Result<Ended, TermError> {
        let name = self.projection.name();
        let mut client = self.pool.get().await.map_err(StoreError::from)?;
        let mut cp = checkpoint::load(&**client, name).await?;
        if cp.status == "failed" {
            tracing::info!(projection = name, event = ?cp.failed_event, "retrying after an earlier failure");
            checkpoint::mark_running(&**client, name).await?;
        }
        metrics::gauge!("ordo_projection_failed", "projection" => name).set(0.0);

        let stream = loop {
            match self.jetstream.get_stream(self.config.stream.as_str()).await {
                Ok(stream) => break stream,
                Err(e) => {
                    tracing::debug!(projection = name, error = %e, "waiting for the stream (the relay creates it)");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(Ended::Shutdown),
                        _ = tokio::time::sleep(STANDBY_POLL) => {}
                    }
                }
            }
        };
        let deliver_policy = match cp.stream_sequence {
            0 => DeliverPolicy::All,
            n => DeliverPolicy::ByStartSequence {
                start_sequence: n + 1,
            },
        };
        let consumer = {
            let _serial = CONSUMER_CREATION.lock().await;
            stream
                .create_consumer(OrderedConfig {
                    filter_subject: self.config.prefix.wildcard(),
                    deliver_policy,
                    ..Default::default()
                })
                .await
                .map_err(|e| TermError::JetStream(e.to_string()))?
        };
        let messages = consumer
            .messages()
            .await
            .map_err(|e| TermError::JetStream(e.to_string()))?;
        let mut chunks = messages.ready_chunks(self.config.batch_size.max(1));
        loop {
            let chunk = tokio::select! {
                _ = shutdown.cancelled() => return Ok(Ended::Shutdown),
                chunk = chunks.next() => chunk.ok_or_else(|| TermError::JetStream("message stream ended".into()))?,
            };
            let received = chrono::Utc::now();
            let mut batch = Batch::default();
            for message in chunk {
                let message = message.map_err(|e| TermError::JetStream(e.to_string()))?;
                let sequence = message
                    .info()
                    .map_err(|e| TermError::JetStream(e.to_string()))?
                    .stream_sequence;
                let expected = cp.stream_sequence + batch.messages + 1;
                if sequence < expected {
                    continue; // delivered again below the checkpoint
                }
                if sequence > expected {
                    let reason = format!(
                        "JetStream skipped from sequence {} to {sequence}: the stream no longer holds \
                         events this projection needs; run `ordo rebuild {name}`",
                        expected - 1
                    );
                    return self.fail(&client, None, &reason).await;
                }
                batch.messages += 1;
                // The subject names the stream type: events of streams this
                // projection does not read are passed over unread, and only
                // the position of the batch's last message is ever needed.
                if concerns(self.projection, &message.subject) == Some(false) {
                    self.stats.passed.fetch_add(1, Ordering::Relaxed);
                    batch.passed = Some(message.payload.clone());
                    continue;
                }
                batch.passed = None;
                let envelope: Envelope = match serde_json::from_slice(&message.payload) {
                    Ok(envelope) => envelope,
                    Err(e) => {
                        let reason = format!(
                            "message {sequence} on {} is not an ordo event: {e}",
                            message.subject
                        );
                        return self.fail(&client, None, &reason).await;
                    }
                };
                if envelope.position <= cp.position {
                    self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if telemetry::enabled() {
                    // A child of the relay's publish, whose context the
                    // message's headers carry.
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
                                Attribute::new(attr::MESSAGING_CONSUMER, name),
                                Attribute::new(attr::MESSAGING_MESSAGE_ID, envelope.id.to_string()),
                                Attribute::new(attr::EVENT_TYPE, envelope.event_type.clone()),
                                Attribute::new(attr::STREAM_ID, envelope.subject.clone()),
                                Attribute::new(attr::STREAM_VERSION, envelope.streamversion as i64),
                                Attribute::new(attr::POSITION, envelope.position.to_string()),
                            ]
                        },
                    );
                    let carried = hop.carry(&parent);
                    batch.hops.push((hop, carried));
                }
                batch.events.push(ProjectionEvent::from_envelope(envelope));
                batch.sequences.push(sequence);
            }
            if batch.messages == 0 {
                continue;
            }
            let last_sequence = cp.stream_sequence + batch.messages;
            let mut position = batch.events.last().map_or(cp.position, |e| e.position);
            if let Some(payload) = &batch.passed {
                match serde_json::from_slice::<Head>(payload) {
                    Ok(head) => position = position.max(head.position),
                    Err(e) => {
                        let reason = format!("message {last_sequence} is not an ordo event: {e}");
                        return self.fail(&client, None, &reason).await;
                    }
                }
            }
            // The batch's one transaction, linked to every event's trace.
            let applying = (!batch.hops.is_empty()).then(|| {
                Hop::linked(
                    format_args!("apply {name}"),
                    Kind::Internal,
                    batch.hops.iter().map(|(_, trace)| trace),
                    || {
                        vec![
                            Attribute::new(attr::MESSAGING_CONSUMER, name),
                            Attribute::new(attr::BATCH_SIZE, batch.events.len() as i64),
                            Attribute::new(attr::DB_SYSTEM, "postgresql"),
                        ]
                    },
                )
            });
            let result = self
                .apply(&mut client, &cp, &batch.events, position, last_sequence)
                .await;
            let size = batch.events.len() as i64;
            for (hop, _) in batch.hops.drain(..) {
                hop.set(|| Attribute::new(attr::MESSAGING_BATCH, size));
                if let Err(e) = &result {
                    hop.fail(|| e.to_string());
                }
            }
            if let (Some(hop), Err(e)) = (&applying, &result) {
                hop.fail(|| e.to_string());
            }
            drop(applying);
            match result {
                Ok(next) => {
                    let applied = batch.events.len() as u64;
                    self.stats.applied.fetch_add(applied, Ordering::Relaxed);
                    metrics::counter!("ordo_projection_events_total", "projection" => name)
                        .increment(applied);
                    if let Some(last) = batch.events.last() {
                        let now = chrono::Utc::now();
                        let seconds = |d: chrono::TimeDelta| {
                            d.num_microseconds().unwrap_or(i64::MAX).max(0) as f64 / 1e6
                        };
                        metrics::gauge!("ordo_projection_lag_seconds", "projection" => name)
                            .set(seconds(now - last.recorded_at));
                        // The pipeline's hops for this projection: appended →
                        // received from JetStream, and received → applied.
                        metrics::histogram!("ordo_projection_receive_delay_seconds", "projection" => name)
                            .record(seconds(received - last.recorded_at));
                        metrics::histogram!("ordo_projection_apply_seconds", "projection" => name)
                            .record(seconds(now - received));
                    }
                    cp = next;
                }
                Err(ApplyError::Poison {
                    index,
                    event_id,
                    reason,
                    ..
                }) => {
                    // Keep what came before the poison, then stop on it.
                    if index > 0 {
                        let prefix = &batch.events[..index];
                        let position = prefix[index - 1].position;
                        self.apply(
                            &mut client,
                            &cp,
                            prefix,
                            position,
                            batch.sequences[index - 1],
                        )
                        .await
                        .map_err(|e| match e {
                            ApplyError::Store(e) => TermError::Store(e),
                            ApplyError::CheckpointMoved => TermError::Moved,
                            other => TermError::Store(StoreError::Internal(other.to_string())),
                        })?;
                    }
                    let event = &batch.events[index];
                    let reason = format!(
                        "{} {} at {}: {reason}",
                        event.event_type, event_id, event.position
                    );
                    return self.fail(&client, Some(event_id), &reason).await;
                }
                Err(ApplyError::CheckpointMoved) => return Err(TermError::Moved),
                Err(ApplyError::Store(e)) => return Err(TermError::Store(e)),
            }
        }
    }

    /// Applies events and moves the checkpoint, in one transaction, unless
    /// someone else moved the checkpoint.
    ///
    /// The rows are read first, outside the transaction; then the
    /// checkpoint's move and the writes are sent together. The transaction
    /// holds a transaction id (and with it the log's horizon, which the
    /// relay waits for) for about one round trip, where it held one for
    /// each of its statements. Reading outside is safe because everything
    /// that writes these tables moves this checkpoint in the same
    /// transaction: if the rows changed after they were read, the
    /// checkpoint moved too, and the conditional move finds that out.
    async fn apply(
        &self,
        client: &mut deadpool_postgres::Object,
        cp: &Checkpoint,
        events: &[ProjectionEvent],
        position: Position,
        last_sequence: u64,
    ) -> Result<Checkpoint, ApplyError> {
        let name = self.projection.name();
        let mut writes = Writes::default();
        self.projection
            .plan(&***client, "read", events, &mut writes)
            .await?;
        let tx = client.transaction().await?;
        let (moved, ()) = futures::try_join!(
            checkpoint::advance_from(&tx, name, cp, position, last_sequence),
            writes.execute(&tx),
        )?;
        if !moved {
            // Dropping the transaction rolls the writes back.
            return Err(ApplyError::CheckpointMoved);
        }
        tx.commit().await?;
        Ok(Checkpoint {
            position,
            stream_sequence: last_sequence,
            status: "running".into(),
            error: None,
            failed_event: None,
            ..cp.clone()
        })
    }

    async fn fail(
        &self,
        client: &tokio_postgres::Client,
        event_id: Option<uuid::Uuid>,
        reason: &str,
    ) -> Result<Ended, TermError> {
        let name = self.projection.name();
        tracing::error!(projection = name, event = ?event_id, reason, "projection stopped on an event it cannot apply");
        metrics::counter!("ordo_projection_failures_total", "projection" => name).increment(1);
        checkpoint::mark_failed(client, name, event_id, reason).await?;
        Ok(Ended::Failed)
    }
}

/// The messages of one chunk.
#[derive(Default)]
struct Batch {
    /// Messages consumed (applied or skipped).
    messages: u64,
    /// Events to apply, in order.
    events: Vec<ProjectionEvent>,
    /// Their stream sequences.
    sequences: Vec<u64>,
    /// The last message, when it was passed over unread (another stream
    /// type's): the checkpoint moves to its position.
    passed: Option<bytes::Bytes>,
    /// With tracing on, each event's `process` span (ended once the batch
    /// is applied) and its context, which the batch's span links to.
    hops: Vec<(Hop, TraceParent)>,
}

/// What a passed-over message is read for.
#[derive(serde::Deserialize)]
struct Head {
    position: Position,
}

/// Whether a message on `subject` (`<prefix>.<streamtype>.<id>.<Type>`)
/// concerns `projection`; `None` when the subject does not say.
fn concerns(projection: Projection, subject: &str) -> Option<bool> {
    let stream_type = subject.split('.').nth(1)?.parse::<StreamType>().ok()?;
    Some(projection.handles(stream_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_says_which_projections_a_message_concerns() {
        let order = "events.order.0192a3b4-0000-7000-8000-000000000001.OrderPlaced";
        let product = "events.product.0192a3b4-0000-7000-8000-000000000002.StockReserved";
        let user = "events.user.0192a3b4-0000-7000-8000-000000000003.UserRegistered";
        assert_eq!(concerns(Projection::Orders, order), Some(true));
        assert_eq!(concerns(Projection::Users, order), Some(true));
        assert_eq!(concerns(Projection::Products, order), Some(false));
        assert_eq!(concerns(Projection::Products, product), Some(true));
        assert_eq!(concerns(Projection::Orders, product), Some(false));
        assert_eq!(concerns(Projection::Users, product), Some(false));
        assert_eq!(concerns(Projection::Users, user), Some(true));
        assert_eq!(concerns(Projection::Orders, user), Some(false));
        // A subject that does not say is read, never passed over.
        assert_eq!(concerns(Projection::Orders, "events"), None);
        assert_eq!(concerns(Projection::Orders, "events.invoice.x.Y"), None);
    }
}
