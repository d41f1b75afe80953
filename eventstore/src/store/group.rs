//! Group commit of appends.
//!
//! Every append used to be a transaction of its own: one statement, one
//! commit, one WAL flush, one round trip. Under load most of PostgreSQL's
//! time went to that per-transaction overhead, not to inserting rows (one
//! append of many events writes far more events per second than as many
//! single ones). So appends that arrive while others are being written wait
//! for a free slot and then go together: the events of several streams in
//! one statement, hence one transaction.
//!
//! - A slot is free: the append is written at once, alone. An idle system
//!   adds no latency.
//! - Every slot is busy: appends queue, and the next free slot takes them all
//!   (at most [`MAX_EVENTS`] events), one request per stream. A second
//!   request for a stream already in the batch waits for the next one, so a
//!   batch never conflicts with itself.
//! - The version checks are the ones of a single append: each stream's events
//!   get the versions its request expects, and `unique (stream_id, version)`
//!   refuses them when the stream moved on. Command ids go to `commands`
//!   the same way, so replays are caught by `commands_pkey`.
//! - The batch is all or nothing. When it fails (a conflict, a replay, a
//!   deadlock), nothing of it was written, and each request is then appended
//!   on its own, so each gets its own answer: success, conflict, replay. That
//!   costs a wasted statement, which is rare when the executor's cache is
//!   warm.
//! - Rows are inserted in stream-id order, so two batches that share streams
//!   take their index locks in the same order and never deadlock.
//!
//! Only the common case is grouped: a few events ([`MAX_REQUEST_EVENTS`]),
//! an exact expected version (or no stream) and no unique claims. `Any`
//! appends (which read the stream's version), appends that take or release
//! claims, and large appends go alone, as before.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_postgres::types::{Json, ToSql};
use uuid::Uuid;

use super::append::{append_alone, StoredMetadata};
use super::request::{AppendRequest, Appended, ExpectedVersion};
use crate::error::StoreError;
use crate::event::{Metadata, NewEvent};
use crate::notify::Notifier;
use crate::position::Position;

/// Batches written at the same time, each on its own connection.
pub(crate) const SLOTS: usize = 4;
/// At most this many events in one batch (a request is never split).
pub(crate) const MAX_EVENTS: usize = 256;
/// Requests with more events than this go alone: they already spread the
/// cost of their transaction over many events, and grouping them would only
/// take away their parallelism.
pub(crate) const MAX_REQUEST_EVENTS: usize = 8;

/// An append waiting for a slot, with everything it writes owned.
struct Queued {
    stream_id: String,
    stream_type: String,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    metadata: Metadata,
    reply: oneshot::Sender<Result<Appended, StoreError>>,
}

impl Queued {
    fn request(&self) -> AppendRequest<'_> {
        AppendRequest {
            stream_id: &self.stream_id,
            stream_type: &self.stream_type,
            expected: self.expected,
            events: &self.events,
            metadata: &self.metadata,
            claims: &[],
        }
    }

    /// The version the stream must be at before this append.
    fn base_version(&self) -> i64 {
        match self.expected {
            ExpectedVersion::Exact(n) => n as i64,
            ExpectedVersion::NoStream | ExpectedVersion::Any => 0,
        }
    }
}

/// How the grouping went so far (for tests and `/metrics`).
#[derive(Debug, Default)]
pub struct GroupStats {
    /// Statements that wrote appends of more than one request.
    pub batches: AtomicU64,
    /// Requests those statements carried.
    pub grouped: AtomicU64,
    /// Batches that failed and were appended request by request.
    pub split: AtomicU64,
    /// The most requests one batch carried.
    pub largest: AtomicU64,
}

/// The handle appends are queued on; the task ends when the last is dropped.
#[derive(Debug, Clone)]
pub(crate) struct GroupAppender {
    queue: mpsc::UnboundedSender<Queued>,
    stats: Arc<GroupStats>,
}

impl GroupAppender {
    /// Starts the task that writes the queue.
    pub(crate) fn spawn(pool: deadpool_postgres::Pool, notifier: Notifier) -> GroupAppender {
        let (queue, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(GroupStats::default());
        tokio::spawn(run(pool, notifier, rx, stats.clone()));
        GroupAppender { queue, stats }
    }

    /// True for the requests this module writes; the rest go alone.
    pub(crate) fn takes(request: &AppendRequest<'_>) -> bool {
        request.expected != ExpectedVersion::Any
            && request.claims.is_empty()
            && request.events.len() <= MAX_REQUEST_EVENTS
    }

    pub(crate) fn stats(&self) -> &GroupStats {
        &self.stats
    }

    /// Appends `request` together with whatever else is waiting.
    pub(crate) async fn append(&self, request: &AppendRequest<'_>) -> Result<Appended, StoreError> {
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            stream_id: request.stream_id.to_owned(),
            stream_type: request.stream_type.to_owned(),
            expected: request.expected,
            events: request.events.to_vec(),
            metadata: request.metadata.clone(),
            reply,
        };
        self.queue
            .send(queued)
            .map_err(|_| StoreError::Internal("the append queue is gone".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Internal("an append was dropped unanswered".into()))?
    }
}

async fn run(
    pool: deadpool_postgres::Pool,
    notifier: Notifier,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    stats: Arc<GroupStats>,
) {
    let slots = Arc::new(Semaphore::new(SLOTS));
    // Requests whose stream was already in the batch being formed, in the
    // order they came.
    let mut deferred: VecDeque<Queued> = VecDeque::new();
    loop {
        // A slot first: while none is free, the queue fills, and the next
        // batch takes it all.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match deferred.pop_front() {
            Some(first) => first,
            None => match rx.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut batch = Batch::new(first);
        for queued in std::mem::take(&mut deferred) {
            if let Some(queued) = batch.offer(queued) {
                deferred.push_back(queued);
            }
        }
        while !batch.full {
            let Ok(queued) = rx.try_recv() else { break };
            if let Some(queued) = batch.offer(queued) {
                deferred.push_back(queued);
            }
        }
        let batch = batch.requests;
        let (pool, notifier, stats) = (pool.clone(), notifier.clone(), stats.clone());
        tokio::spawn(async move {
            write(&pool, &notifier, &stats, batch).await;
            drop(slot);
        });
    }
}

/// A batch being formed: one request per stream, at most [`MAX_EVENTS`].
struct Batch {
    requests: Vec<Queued>,
    streams: HashSet<String>,
    events: usize,
    /// A request did not fit: the batch takes no more, so later requests
    /// cannot overtake it.
    full: bool,
}

impl Batch {
    fn new(first: Queued) -> Batch {
        Batch {
            streams: HashSet::from([first.stream_id.clone()]),
            events: first.events.len(),
            requests: vec![first],
            full: false,
        }
    }

    /// Takes `queued`, or gives it back for a later batch.
    fn offer(&mut self, queued: Queued) -> Option<Queued> {
        if self.full || self.events + queued.events.len() > MAX_EVENTS {
            self.full = true;
            return Some(queued);
        }
        if !self.streams.insert(queued.stream_id.clone()) {
            return Some(queued);
        }
        self.events += queued.events.len();
        self.requests.push(queued);
        None
    }
}

/// Writes one batch and answers each of its requests.
async fn write(
    pool: &deadpool_postgres::Pool,
    notifier: &Notifier,
    stats: &GroupStats,
    mut batch: Vec<Queued>,
) {
    let client = match pool.get().await {
        Ok(client) => client,
        Err(e) => {
            // The first request gets the error itself, the others its text.
            let mut first = Some(StoreError::from(e));
            let reason = first.as_ref().map(ToString::to_string).unwrap_or_default();
            for queued in batch {
                let error = first
                    .take()
                    .unwrap_or_else(|| StoreError::Pool(reason.clone()));
                let _ = queued.reply.send(Err(error));
            }
            return;
        }
    };
    if batch.len() > 1 {
        batch.sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .grouped
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats
            .largest
            .fetch_max(batch.len() as u64, Ordering::Relaxed);
        match append_together(&client, &batch).await {
            Ok(mut written) => {
                notifier.poke();
                for queued in batch {
                    let answer = written.remove(&queued.stream_id).ok_or_else(|| {
                        StoreError::Internal(format!(
                            "a grouped append wrote nothing to {}",
                            queued.stream_id
                        ))
                    });
                    let _ = queued.reply.send(answer);
                }
                return;
            }
            Err(e) => {
                // Nothing was written: each request on its own says why.
                tracing::debug!(error = %e, requests = batch.len(), "grouped append failed; appending one by one");
                stats.split.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    for queued in batch {
        let answer = append_alone(&client, &queued.request()).await;
        if matches!(&answer, Ok(appended) if !appended.replayed) {
            notifier.poke();
        }
        let _ = queued.reply.send(answer);
    }
}

/// The statement of a batch. Parameters are one array per column, one
/// element per event (`$1` event ids ... `$9` correlation ids), then one
/// element per command id (`$10` command ids, `$11` their streams).
const TOGETHER_SQL: &str = "with appended as (
     insert into events (event_id, stream_id, stream_type, version, type, schema_version,
                         data, metadata, correlation_id)
     select * from unnest($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::text[],
                          $6::int4[], $7::jsonb[], $8::jsonb[], $9::uuid[])
     returning stream_id, version, position, transaction_id, recorded_at
 ),
 recorded as (
     insert into commands (command_id, stream_id, first_version, last_version, last_position)
     select c.command_id, c.stream_id, min(a.version), max(a.version), max(a.position)
       from unnest($10::text[], $11::text[]) as c(command_id, stream_id)
       join appended a on a.stream_id = c.stream_id
      group by c.command_id, c.stream_id
     returning 1
 )
 select stream_id, version, position, transaction_id::text, recorded_at from appended";

/// Appends every request of `batch` (one per stream) in one statement.
/// Returns each stream's result; any failure means nothing was written.
async fn append_together(
    client: &deadpool_postgres::Object,
    batch: &[Queued],
) -> Result<HashMap<String, Appended>, StoreError> {
    let statement = client.prepare_cached(TOGETHER_SQL).await?;
    let events: usize = batch.iter().map(|q| q.events.len()).sum();
    let mut ids: Vec<Uuid> = Vec::with_capacity(events);
    let mut streams: Vec<&str> = Vec::with_capacity(events);
    let mut stream_types: Vec<&str> = Vec::with_capacity(events);
    let mut versions: Vec<i64> = Vec::with_capacity(events);
    let mut types: Vec<&str> = Vec::with_capacity(events);
    let mut schema_versions: Vec<i32> = Vec::with_capacity(events);
    let mut data: Vec<&serde_json::Value> = Vec::with_capacity(events);
    let mut metadata: Vec<Json<StoredMetadata<'_>>> = Vec::with_capacity(events);
    let mut correlations: Vec<Option<Uuid>> = Vec::with_capacity(events);
    let mut command_ids: Vec<&str> = Vec::new();
    let mut command_streams: Vec<&str> = Vec::new();
    for queued in batch {
        let base = queued.base_version();
        for (n, event) in queued.events.iter().enumerate() {
            ids.push(event.event_id);
            streams.push(&queued.stream_id);
            stream_types.push(&queued.stream_type);
            versions.push(base + 1 + n as i64);
            types.push(&event.event_type);
            schema_versions.push(event.schema_version);
            data.push(&event.data);
            metadata.push(Json(StoredMetadata::of(&queued.metadata)));
            correlations.push(queued.metadata.correlation_id);
        }
        if let Some(command_id) = queued.metadata.command_id.as_deref() {
            command_ids.push(command_id);
            command_streams.push(&queued.stream_id);
        }
    }
    let params: [&(dyn ToSql + Sync); 11] = [
        &ids,
        &streams,
        &stream_types,
        &versions,
        &types,
        &schema_versions,
        &data,
        &metadata,
        &correlations,
        &command_ids,
        &command_streams,
    ];
    let rows = client.query(&statement, &params).await?;

    let mut written: HashMap<String, Appended> = HashMap::with_capacity(batch.len());
    for row in rows {
        let stream_id: String = row.try_get(0)?;
        let version = row.try_get::<_, i64>(1)? as u64;
        let position = Position::from_row(&row, 3, 2)?;
        let recorded_at: DateTime<Utc> = row.try_get(4)?;
        let entry = written.entry(stream_id.clone()).or_insert(Appended {
            stream_id,
            first_version: version,
            last_version: version,
            position,
            recorded_at,
            replayed: false,
        });
        entry.first_version = entry.first_version.min(version);
        if version >= entry.last_version {
            entry.last_version = version;
            entry.position = position;
            entry.recorded_at = recorded_at;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_binds_eleven_parameters_in_order() {
        for n in 1..=11 {
            assert!(TOGETHER_SQL.contains(&format!("${n}::")), "${n} missing");
        }
        assert!(!TOGETHER_SQL.contains("$12"));
    }

    #[test]
    fn only_exact_appends_without_claims_are_grouped() {
        let metadata = Metadata::default();
        let events = [NewEvent {
            event_id: Uuid::nil(),
            event_type: "X".into(),
            schema_version: 1,
            data: serde_json::json!({}),
        }];
        let claims = [super::super::request::ClaimChange {
            kind: "email".into(),
            value: "a@b".into(),
            take: true,
        }];
        let request = |expected, claims| AppendRequest {
            stream_id: "s",
            stream_type: "t",
            expected,
            events: &events,
            metadata: &metadata,
            claims,
        };
        assert!(GroupAppender::takes(&request(
            ExpectedVersion::Exact(3),
            &[]
        )));
        assert!(GroupAppender::takes(&request(
            ExpectedVersion::NoStream,
            &[]
        )));
        assert!(!GroupAppender::takes(&request(ExpectedVersion::Any, &[])));
        assert!(!GroupAppender::takes(&request(
            ExpectedVersion::Exact(3),
            &claims
        )));
    }
}
