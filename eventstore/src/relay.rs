//! The relay: publishes every committed event to JetStream, once, in log order.
//!
//! - **One active relay** per stream ([`crate::leadership`]). Standbys try
//!   for the lock every [`STANDBY_POLL`]; when the leader's process dies its
//!   session ends, the lock is freed and a standby takes over within that
//!   interval. Before each batch it sends, the leader checks that its lock's
//!   session still stands.
//! - **In order, none twice.** Each message carries
//!   `Nats-Expected-Last-Sequence`: the stream must be exactly where the relay
//!   believes it is. Messages are pipelined (a whole batch in flight, acks
//!   awaited together), yet if one is refused every later one is refused too,
//!   so a retry can neither reorder nor repeat. Even two relays that both
//!   believe they lead (a network partition) cannot interleave: the loser's
//!   expectations fail and it resynchronises. `Nats-Msg-Id` (the event id)
//!   with the 2-minute duplicate window is a second line of defence.
//! - **Nothing lost.** The checkpoint is written after the acks. After any
//!   failure or restart the relay resynchronises: it reads the stream's last
//!   message, finds that event in the log, and continues right after it, so a
//!   crash between publishing and checkpointing republishes nothing.
//! - **NATS down** means retrying with backoff; the log is the truth and waits.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use futures::stream::{FuturesOrdered, StreamExt as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::db::DatabaseUrl;
use crate::envelope::PublishableEvent;
use crate::error::StoreError;
use crate::follow::LogFollower;
use crate::leadership::{Backoff, Leadership, Lease, LockKey, TermEnd};
use crate::nats::{ensure_stream, BusError, StreamName, SubjectPrefix, Unprotected};
use crate::notify::LogListener;
use crate::position::Position;
use crate::store::EventStore;
use crate::telemetry::{self, attr, Attribute, Hop, Kind, TraceParent};

/// How often a standby tries to become the active relay.
pub const STANDBY_POLL: Duration = Duration::from_secs(1);
/// How often the active relay publishes what holds the log's horizon back.
const HORIZON_REPORT: Duration = Duration::from_secs(1);
/// Longest pause between attempts while NATS or PostgreSQL is away.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Settings of a relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The JetStream stream to feed.
    pub stream: StreamName,
    /// First token of every subject.
    pub prefix: SubjectPrefix,
    /// Events read and published per batch.
    pub batch_size: i64,
    /// Whether an existing stream that allows message deletes or purges is
    /// used (`ORDO_ALLOW_UNPROTECTED_STREAM`) or refused.
    pub unprotected: Unprotected,
}

impl RelayConfig {
    /// Defaults for a stream and prefix.
    pub fn new(stream: StreamName, prefix: SubjectPrefix) -> Self {
        RelayConfig {
            stream,
            prefix,
            batch_size: 1000,
            unprotected: Unprotected::Refuse,
        }
    }
}

/// Why a relay stopped for good (transient trouble is retried, not returned).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The stream exists with other subjects, or allows message deletes or
    /// purges.
    #[error(transparent)]
    Bus(BusError),
}

/// What went wrong in one leadership term; all of it is retried.
#[derive(Debug, thiserror::Error)]
enum TermError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("publishing: {0}")]
    Publish(String),
    #[error("lost the relay lock")]
    LostLock,
}

/// What a relay is doing, for status pages and tests.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// True while this relay holds the lock and publishes.
    pub active: AtomicBool,
    /// Events this relay has published (acknowledged by JetStream).
    pub published: AtomicU64,
}

/// The relay process.
#[derive(Debug, Clone)]
pub struct Relay {
    stats: Arc<RelayStats>,
    store: EventStore,
    url: DatabaseUrl,
    jetstream: jetstream::Context,
    listener: LogListener,
    config: RelayConfig,
}

impl Relay {
    /// A relay publishing `store`'s log through `jetstream`.
    pub fn new(
        store: EventStore,
        url: DatabaseUrl,
        jetstream: jetstream::Context,
        listener: LogListener,
        config: RelayConfig,
    ) -> Relay {
        Relay {
            stats: Arc::default(),
            store,
            url,
            jetstream,
            listener,
            config,
        }
    }

    /// Live figures of this relay.
    pub fn stats(&self) -> Arc<RelayStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown`: stands by, leads, and recovers from failures
    /// (see [`crate::leadership`]).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RelayError> {
        let stats = self.stats.clone();
        let leadership = Leadership::new(
            self.url.clone(),
            LockKey::new("relay", &self.config.stream),
            format!("relay of stream {}", self.config.stream),
        )
        .standby_poll(STANDBY_POLL)
        .backoff(Backoff {
            first: Duration::from_millis(100),
            max: MAX_BACKOFF,
        })
        .on_active(move |active| {
            stats.active.store(active, Ordering::SeqCst);
            metrics::gauge!("ordo_relay_active").set(if active { 1.0 } else { 0.0 });
        });
        leadership
            .run(&shutdown, |lease| async {
                match self.lead(lease, &shutdown).await {
                    Ok(()) => TermEnd::Stopped,
                    Err(TermError::Bus(e)) if e.is_fatal() => TermEnd::Fatal(RelayError::Bus(e)),
                    Err(e) => {
                        metrics::counter!("ordo_relay_failures_total").increment(1);
                        TermEnd::Interrupted(format!("{e}; resynchronising"))
                    }
                }
            })
            .await
    }

    /// One leadership term: resynchronise, then publish until told to stop
    /// or something fails.
    ///
    /// A reader task fetches batches and turns them into messages while this
    /// loop publishes: up to [`BATCHES_IN_FLIGHT`] batches await their acks
    /// at once, each checkpointed when all of its acks are in, in order. The
    /// expected-sequence chain runs across batches, so pipelining keeps the
    /// order guarantee.
    async fn lead(&self, lease: Lease, shutdown: &CancellationToken) -> Result<(), TermError> {
        let stream = ensure_stream(
            &self.jetstream,
            &self.config.stream,
            &self.config.prefix,
            self.config.unprotected,
        )
        .await?;
        let (start, mut last_sequence) = self.resynchronise(stream).await?;
        tracing::info!(after = %start, last_sequence, "relay resumes");
        let (batches, mut prepared) = mpsc::channel(BATCHES_IN_FLIGHT);
        let _reader = AbortOnDrop(tokio::spawn(read_batches(
            LogFollower::new(
                self.store.clone(),
                &self.listener,
                start,
                self.config
                    .batch_size
                    .clamp(1, MAX_IN_FLIGHT / BATCHES_IN_FLIGHT as i64),
            ),
            self.config.prefix.clone(),
            batches,
        )));
        let mut in_flight = FuturesOrdered::new();
        let mut horizon_report = tokio::time::interval(HORIZON_REPORT);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = horizon_report.tick() => {
                    self.report_horizon().await;
                }
                batch = prepared.recv(), if in_flight.len() < BATCHES_IN_FLIGHT => {
                    let batch = batch.ok_or_else(|| TermError::Publish("the log reader stopped".into()))??;
                    if lease.is_lost() {
                        return Err(TermError::LostLock);
                    }
                    in_flight.push_back(self.send(batch, &mut last_sequence).await?);
                }
                Some(acked) = in_flight.next() => {
                    let acked: Acked = acked?;
                    self.save_checkpoint(acked.last, acked.sequence).await?;
                    metrics::counter!("ordo_relay_published_total").increment(acked.count);
                    self.stats.published.fetch_add(acked.count, Ordering::SeqCst);
                    let lag = (chrono::Utc::now() - acked.recorded_at).num_milliseconds().max(0);
                    metrics::gauge!("ordo_relay_lag_seconds").set(lag as f64 / 1000.0);
                    // The first hop of the pipeline: appended → published
                    // (acknowledged by JetStream), for a batch's last event.
                    metrics::histogram!("ordo_relay_publish_delay_seconds")
                        .record(lag as f64 / 1000.0);
                }
            }
        }
    }

    /// Publishes as metrics what holds the log's horizon back. A long
    /// transaction that may append delays every reader until it ends; one
    /// that cannot, followers pass over after a second.
    async fn report_horizon(&self) {
        if let Ok(horizon) = self.store.horizon().await {
            let age = horizon.holder.as_ref().map_or(0.0, |h| h.age_seconds);
            metrics::gauge!("ordo_log_horizon_age_seconds").set(age);
            if age > 30.0 {
                // One that cannot append holds only plain reads back;
                // followers pass over it.
                if let Some(holder) = horizon.holder.as_ref().filter(|h| h.may_append) {
                    tracing::warn!(
                        pid = holder.pid,
                        database = holder.database.as_deref().unwrap_or("?"),
                        age_seconds = holder.age_seconds,
                        query = holder.query.as_deref().unwrap_or(""),
                        "a long transaction holds back every log reader"
                    );
                }
            }
        }
    }

    /// Sends a batch (without waiting for acks); returns the future that
    /// waits for them and checks each landed where expected.
    async fn send(
        &self,
        batch: Prepared,
        last_sequence: &mut u64,
    ) -> Result<impl std::future::Future<Output = Result<Acked, TermError>>, TermError> {
        let first_expected = *last_sequence + 1;
        let mut acks = Vec::with_capacity(batch.messages.len());
        let batch_size = batch.messages.len();
        // One `publish` span per message, a child of the append that wrote
        // the event and ended when JetStream acknowledges it; its context
        // rides along as the message's `traceparent` header.
        let mut hops = Vec::with_capacity(if telemetry::enabled() { batch_size } else { 0 });
        for message in batch.messages {
            let hop = Hop::start(
                format_args!("publish {}", message.subject),
                Kind::Producer,
                &message.trace,
                || {
                    vec![
                        Attribute::new(attr::MESSAGING_SYSTEM, "nats"),
                        Attribute::new(attr::MESSAGING_OPERATION, "publish"),
                        Attribute::new(attr::MESSAGING_DESTINATION, message.subject.clone()),
                        Attribute::new(attr::MESSAGING_MESSAGE_ID, message.event_id.clone()),
                        Attribute::new(attr::POSITION, message.position.to_string()),
                        Attribute::new(attr::MESSAGING_BATCH, batch_size as i64),
                    ]
                },
            );
            let mut headers = async_nats::HeaderMap::new();
            hop.carry(&message.trace).to_headers(&mut headers);
            let publish = PublishMessage::build()
                .headers(headers)
                .payload(message.payload)
                .message_id(&message.event_id)
                .expected_last_sequence(*last_sequence);
            if hop.is_recording() {
                hops.push(hop);
            }
            let ack = self
                .jetstream
                .send_publish(message.subject, publish)
                .await
                .map_err(|e| TermError::Publish(e.to_string()))?;
            acks.push(ack);
            *last_sequence += 1;
        }
        let (last, count, recorded_at) = (batch.last, acks.len() as u64, batch.recorded_at);
        Ok(async move {
            let mut expected = first_expected;
            let mut hops = hops.into_iter();
            for ack in acks {
                let result = ack.await;
                if let (Some(hop), Err(e)) = (hops.next(), &result) {
                    hop.fail(|| e.to_string());
                }
                match result {
                    Ok(ack) if ack.sequence == expected && !ack.duplicate => expected += 1,
                    Ok(ack) => {
                        return Err(TermError::Publish(format!(
                            "stream answered sequence {} (duplicate: {}), expected {expected}",
                            ack.sequence, ack.duplicate
                        )))
                    }
                    Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                        return Err(TermError::Publish(
                            "the stream moved under the relay (another publisher?)".into(),
                        ))
                    }
                    Err(e) => return Err(TermError::Publish(e.to_string())),
                }
            }
            Ok(Acked {
                last,
                sequence: expected - 1,
                count,
                recorded_at,
            })
        })
    }

    /// Where to continue: the later of the stored checkpoint and the event
    /// the stream's last message carries; and the stream's last sequence.
    async fn resynchronise(
        &self,
        mut stream: jetstream::stream::Stream,
    ) -> Result<(Position, u64), TermError> {
        let mut checkpoint = self.load_checkpoint().await?;
        let info = stream
            .info()
            .await
            .map_err(|e| TermError::Publish(e.to_string()))?;
        let last_sequence = info.state.last_sequence;
        if last_sequence == 0 {
            return Ok((checkpoint, 0));
        }
        match stream.get_raw_message(last_sequence).await {
            Ok(message) => match published_position(&message.payload) {
                Some((event_id, published)) => {
                    if self.store.event_at(published).await? != Some(event_id) {
                        tracing::warn!(
                            %event_id,
                            "the stream's last message is not an event of this log; continuing from the checkpoint"
                        );
                    } else if published > checkpoint {
                        tracing::info!(%published, %checkpoint, "stream is ahead of the checkpoint");
                        checkpoint = published;
                        self.save_checkpoint(checkpoint, last_sequence).await?;
                    }
                }
                None => tracing::warn!(
                    "the stream's last message is not an ordo envelope; continuing from the checkpoint"
                ),
            },
            Err(e) => tracing::warn!(error = %e, "cannot read the stream's last message; continuing from the checkpoint"),
        }
        Ok((checkpoint, last_sequence))
    }

    async fn load_checkpoint(&self) -> Result<Position, StoreError> {
        let client = self.store.client().await?;
        let row = client
            .query_opt(
                "select transaction_id::text, position from relay_checkpoints where stream_name = $1",
                &[&self.config.stream.as_str()],
            )
            .await?;
        Ok(match row {
            Some(row) => Position::new(row.get::<_, String>(0).parse().unwrap_or(0), row.get(1)),
            None => Position::START,
        })
    }

    async fn save_checkpoint(&self, position: Position, sequence: u64) -> Result<(), StoreError> {
        let client = self.store.client().await?;
        let statement = client
            .prepare_cached(
                "insert into relay_checkpoints (stream_name, transaction_id, position, stream_sequence)
                 values ($1, $2::text::xid8, $3, $4)
                 on conflict (stream_name) do update
                   set transaction_id = excluded.transaction_id, position = excluded.position,
                       stream_sequence = excluded.stream_sequence, updated_at = now()
                 where (relay_checkpoints.transaction_id, relay_checkpoints.position)
                     < (excluded.transaction_id, excluded.position)",
            )
            .await?;
        client
            .execute(
                &statement,
                &[
                    &self.config.stream.as_str(),
                    &position.transaction_sql(),
                    &position.position,
                    &(sequence as i64),
                ],
            )
            .await?;
        Ok(())
    }
}

/// Batches awaiting acks at once.
const BATCHES_IN_FLIGHT: usize = 3;
/// Messages awaiting acks at once, at most. async-nats holds one permit of
/// its ack window (5,000 by default) per ack not yet awaited and makes the
/// next publish wait for one: more than that in flight and the relay would
/// wait on itself.
const MAX_IN_FLIGHT: i64 = 4096;

/// One message ready to publish.
#[derive(Debug)]
struct Outgoing {
    subject: String,
    payload: bytes::Bytes,
    event_id: String,
    position: Position,
    trace: TraceParent,
}

/// A batch turned into messages.
#[derive(Debug)]
struct Prepared {
    messages: Vec<Outgoing>,
    last: Position,
    recorded_at: chrono::DateTime<chrono::Utc>,
}

/// A batch whose acks are all in.
#[derive(Debug)]
struct Acked {
    last: Position,
    /// The stream sequence `last` landed at.
    sequence: u64,
    count: u64,
    recorded_at: chrono::DateTime<chrono::Utc>,
}

/// Aborts a task when dropped: the reader lives exactly as long as a term.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Follows the log and turns each batch into messages, until the receiver
/// goes away or reading fails (the failure is handed on).
async fn read_batches(
    mut follower: LogFollower<PublishableEvent>,
    prefix: SubjectPrefix,
    out: mpsc::Sender<Result<Prepared, TermError>>,
) {
    loop {
        let prepared = match follower.next_batch().await {
            Ok(batch) => prepare(&batch, &prefix),
            Err(e) => Err(e.into()),
        };
        let failed = prepared.is_err();
        if out.send(prepared).await.is_err() || failed {
            return;
        }
    }
}

fn prepare(batch: &[PublishableEvent], prefix: &SubjectPrefix) -> Result<Prepared, TermError> {
    let (Some(last), Some(_)) = (batch.last(), batch.first()) else {
        return Err(TermError::Publish("empty batch".into()));
    };
    let mut messages = Vec::with_capacity(batch.len());
    for event in batch {
        messages.push(Outgoing {
            subject: prefix.subject(&event.stream_type, event.aggregate_id(), &event.event_type),
            payload: event.envelope_json().map_err(StoreError::from)?.into(),
            event_id: event.event_id.to_string(),
            position: event.position,
            trace: event.trace.clone(),
        });
    }
    Ok(Prepared {
        messages,
        last: last.position,
        recorded_at: last.recorded_at,
    })
}

/// The event id and position an envelope carries.
fn published_position(payload: &[u8]) -> Option<(uuid::Uuid, Position)> {
    #[derive(serde::Deserialize)]
    struct Published {
        id: uuid::Uuid,
        position: Position,
    }
    serde_json::from_slice::<Published>(payload)
        .ok()
        .map(|p| (p.id, p.position))
}

/// The relay's stored checkpoint for a stream (for `ordo status`).
pub async fn checkpoint<C: tokio_postgres::GenericClient>(
    client: &C,
    stream: &StreamName,
) -> Result<Option<RelayCheckpoint>, StoreError> {
    let row = client
        .query_opt(
            "select transaction_id::text, position, stream_sequence, updated_at
               from relay_checkpoints where stream_name = $1",
            &[&stream.as_str()],
        )
        .await?;
    Ok(row.map(|row| RelayCheckpoint {
        position: Position::new(row.get::<_, String>(0).parse().unwrap_or(0), row.get(1)),
        stream_sequence: row.get::<_, i64>(2) as u64,
        updated_at: row.get(3),
    }))
}

/// How far the relay has published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayCheckpoint {
    /// The last event published.
    pub position: Position,
    /// The JetStream sequence it landed at.
    pub stream_sequence: u64,
    /// When this was recorded.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}
