//! Appending to and reading from the event log.
//!
//! An append is one SQL statement, so one short implicit transaction and one
//! round trip: data-modifying CTEs insert the events, record the command id,
//! and take or release unique claims together, all or nothing. Concurrency is
//! optimistic: `unique (stream_id, version)` lets only one of two writers at
//! the same version commit, and the loser gets [`StoreError::Conflict`].
//! No counter row, no table lock: writers to different streams never wait for
//! each other.

use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use crate::error::StoreError;
use crate::event::{Metadata, NewEvent, RecordedEvent};
use crate::group::{GroupAppender, GroupStats};
use crate::notify::Notifier;
use crate::position::Position;

/// What a writer expects the stream to be at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Whatever it is: append after the current last event.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version.
    Exact(u64),
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(n) => write!(f, "version {n}"),
        }
    }
}

/// A unique value taken or given back together with an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimChange {
    /// `email`, `sku`.
    pub kind: String,
    /// The normalised value.
    pub value: String,
    /// Take it (true) or release it (false).
    pub take: bool,
}

/// Everything one append writes.
#[derive(Debug, Clone, Copy)]
pub struct AppendRequest<'a> {
    /// `order-<uuid>`, ...
    pub stream_id: &'a str,
    /// `user`, `product`, `order`.
    pub stream_type: &'a str,
    /// Optimistic concurrency check.
    pub expected: ExpectedVersion,
    /// The events, in order.
    pub events: &'a [NewEvent],
    /// Stored with every event; its `command_id` makes the append idempotent.
    pub metadata: &'a Metadata,
    /// Unique values taken or released in the same transaction.
    pub claims: &'a [ClaimChange],
}

/// The result of an append (or of the first execution of a command id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The stream appended to.
    pub stream_id: String,
    /// Version of the first event written.
    pub first_version: u64,
    /// Version of the last event written: the stream's version afterwards.
    pub last_version: u64,
    /// Position of the last event written.
    pub position: Position,
    /// When it was written.
    pub recorded_at: DateTime<Utc>,
    /// True when the command id had already been executed: nothing was
    /// appended and this is the first execution's result.
    pub replayed: bool,
}

/// How far back to fold a stream for time travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Up to and including this position.
    Position(Position),
    /// Up to and including this time.
    Time(DateTime<Utc>),
}

/// Filters of the audit query over the log (`ordo events`, `GET /events`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// One stream.
    pub stream_id: Option<String>,
    /// One stream type.
    pub stream_type: Option<String>,
    /// One event type.
    pub event_type: Option<String>,
    /// One correlation id.
    pub correlation_id: Option<Uuid>,
    /// Recorded at or after.
    pub since: Option<DateTime<Utc>>,
    /// Recorded before.
    pub until: Option<DateTime<Utc>>,
}

/// What holds the log's horizon back: the oldest transaction still running.
#[derive(Debug, Clone, PartialEq)]
pub struct Horizon {
    /// Transactions below this id are finished; readers read below it.
    pub xmin: u64,
    /// The oldest transaction holding a transaction id, if any.
    pub holder: Option<HorizonHolder>,
}

/// The backend whose transaction is the oldest in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct HorizonHolder {
    /// Its process id (`pg_terminate_backend(pid)` ends it).
    pub pid: i32,
    /// Its database.
    pub database: Option<String>,
    /// How long its transaction has been open.
    pub age_seconds: f64,
    /// `active`, `idle in transaction`, ...
    pub state: Option<String>,
    /// True when it may append events (it holds a lock on `events` that
    /// lets it write). Followers wait for such a transaction until it ends;
    /// one that cannot append they pass over after
    /// [`crate::follow::LOOK_PAST_OTHERS_AFTER`].
    pub may_append: bool,
    /// The start of what it is running.
    pub query: Option<String>,
}

/// The event store: a pool plus the notifier that wakes readers after appends.
#[derive(Clone)]
pub struct EventStore {
    pool: deadpool_postgres::Pool,
    notifier: Notifier,
    group: GroupAppender,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore").finish_non_exhaustive()
    }
}

/// How many times an `Any` append re-reads the stream's version after losing a
/// race before reporting the conflict.
const ANY_RETRIES: usize = 16;

impl EventStore {
    /// A store on `pool`. Must be called inside a tokio runtime (it starts the
    /// notifier task).
    pub fn new(pool: deadpool_postgres::Pool) -> EventStore {
        let notifier = Notifier::spawn(pool.clone());
        let group = GroupAppender::spawn(pool.clone(), notifier.clone());
        EventStore {
            pool,
            notifier,
            group,
        }
    }

    /// The pool, for queries of other crates.
    pub fn pool(&self) -> &deadpool_postgres::Pool {
        &self.pool
    }

    /// A pooled connection.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// Appends events to a stream in one transaction; see the module docs.
    ///
    /// With a `command_id` in the metadata that was already executed, nothing
    /// is appended and the first result comes back with `replayed: true`.
    #[tracing::instrument(level = "debug", skip_all, fields(stream_id = request.stream_id, events = request.events.len()))]
    pub async fn append(&self, request: AppendRequest<'_>) -> Result<Appended, StoreError> {
        if request.events.is_empty() {
            return Err(StoreError::Internal(
                "an append needs at least one event".into(),
            ));
        }
        if GroupAppender::takes(&request) {
            return self.group.append(&request).await;
        }
        let client = self.pool.get().await?;
        let appended = append_alone(&client, &request).await?;
        if !appended.replayed {
            self.notifier.poke();
        }
        Ok(appended)
    }

    /// How the grouping of appends went so far (see [`crate::group`]).
    pub fn group_stats(&self) -> &GroupStats {
        self.group.stats()
    }

    /// The result of a command id already executed, if it was.
    pub async fn executed_command(&self, command_id: &str) -> Result<Option<Appended>, StoreError> {
        let client = self.pool.get().await?;
        find_command(&client, command_id).await
    }

    /// The current version of a stream (0 when it does not exist).
    pub async fn stream_version(&self, stream_id: &str) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached("select coalesce(max(version), 0) from events where stream_id = $1")
            .await?;
        let row = client.query_one(&statement, &[&stream_id]).await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// The position of a stream's last event (`None`: no such stream).
    pub async fn stream_head(&self, stream_id: &str) -> Result<Option<Position>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "select transaction_id::text, position from events
                  where stream_id = $1 order by version desc limit 1",
            )
            .await?;
        match client.query_opt(&statement, &[&stream_id]).await? {
            Some(row) => Ok(Some(position_from(&row, 0, 1)?)),
            None => Ok(None),
        }
    }

    /// Events of one stream with a version above `after_version`, in order, at
    /// most `limit`.
    pub async fn read_stream(
        &self,
        stream_id: &str,
        after_version: u64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(&READ_STREAM_SQL).await?;
        let rows = client
            .query(&statement, &[&stream_id, &(after_version as i64), &limit])
            .await?;
        rows.iter().map(RecordedEvent::from_row).collect()
    }

    /// The events of several streams after a version each, in one round
    /// trip: ordered by stream (as given) and version. Loading what a
    /// decision needs from many streams then costs one query, however many
    /// streams it spans.
    pub async fn read_stream_tails(
        &self,
        tails: &[(&str, u64)],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if tails.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.pool.get().await?;
        let streams: Vec<&str> = tails.iter().map(|(stream_id, _)| *stream_id).collect();
        let after: Vec<i64> = tails
            .iter()
            .map(|(_, v)| i64::try_from(*v).unwrap_or(i64::MAX))
            .collect();
        // One statement for all the streams, each read as the single-stream
        // read is: a lateral subquery with a limit is never merged into a
        // join, so its plan stays the stream's index range whatever the
        // table's size when the statement was prepared. (A plain join over
        // `unnest`, prepared while `events` is small, would keep a scan of
        // the whole table.) One statement instead of one per stream: an
        // order's user and products are read by every `POST /orders`.
        let statement = client.prepare_cached(&READ_STREAM_TAILS_SQL).await?;
        let rows = client
            .query(&statement, &[&streams, &after, &i64::MAX])
            .await?;
        rows.iter().map(RecordedEvent::from_row).collect()
    }

    /// Events of one stream as it stood at a position or time, in order.
    pub async fn read_stream_as_of(
        &self,
        stream_id: &str,
        as_of: AsOf,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.pool.get().await?;
        let rows = match as_of {
            AsOf::Position(p) => {
                let sql = format!(
                    "select {} from events where stream_id = $1
                       and (transaction_id, position) <= ($2::text::xid8, $3)
                     order by version",
                    RecordedEvent::COLUMNS
                );
                client
                    .query(&sql, &[&stream_id, &p.transaction_sql(), &p.position])
                    .await?
            }
            AsOf::Time(t) => {
                let sql = format!(
                    "select {} from events where stream_id = $1 and recorded_at <= $2 order by version",
                    RecordedEvent::COLUMNS
                );
                client.query(&sql, &[&stream_id, &t]).await?
            }
        };
        rows.iter().map(RecordedEvent::from_row).collect()
    }

    /// Events after `after` in log order, at most `limit`, only below the
    /// transaction horizon: what this returns never changes, and an event
    /// committing later always sorts after it. See [`crate::position`].
    pub async fn read_log(
        &self,
        after: Position,
        filter: &LogFilter,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_log_as(after, filter, limit).await
    }

    /// [`EventStore::read_log`], decoding rows as `T` (the relay reads
    /// payloads as raw JSON text, never parsing them).
    pub async fn read_log_as<T: LogRow>(
        &self,
        after: Position,
        filter: &LogFilter,
        limit: i64,
    ) -> Result<Vec<T>, StoreError> {
        self.read_log_pooled(after, filter, limit, Below::Oldest)
            .await
            .map(|(rows, _)| rows)
    }

    /// [`EventStore::read_log_as`] waiting only for transactions that may
    /// append events (`schemas/sql/0007_log_horizon.sql`): one that holds
    /// the plain horizon back but cannot append, however long it runs, is
    /// passed over. It looks at the lock table, so followers use it only
    /// while the plain horizon has been held for a while. Also returns the
    /// plain horizon at the time of the read, when any event was read.
    pub async fn read_log_past_others_as<T: LogRow>(
        &self,
        after: Position,
        filter: &LogFilter,
        limit: i64,
    ) -> Result<(Vec<T>, Option<u64>), StoreError> {
        self.read_log_pooled(after, filter, limit, Below::OldestAppender)
            .await
    }

    /// [`read_log_below`] on a pooled connection, whose statement cache
    /// keeps the unfiltered read prepared.
    async fn read_log_pooled<T: LogRow>(
        &self,
        after: Position,
        filter: &LogFilter,
        limit: i64,
        below: Below,
    ) -> Result<(Vec<T>, Option<u64>), StoreError> {
        let client = self.pool.get().await?;
        read_log_below(&**client, Some(&client), after, filter, limit, below).await
    }

    /// True when events have committed beyond the horizon: a reader that found
    /// nothing should look again soon rather than wait for a notification.
    pub async fn pending_beyond_horizon(&self) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                // The newest visible event against the horizon: one step
                // down the primary key. (`exists (... where transaction_id
                // >= horizon)` reads like the same question, but the planner
                // answers it with a scan of the whole table.)
                "select coalesce((select transaction_id from events
                                   order by transaction_id desc limit 1)
                                 >= pg_snapshot_xmin(pg_current_snapshot()), false)",
            )
            .await?;
        Ok(client.query_one(&statement, &[]).await?.get(0))
    }

    /// The last position of the whole log (committed, below the horizon or not).
    pub async fn head(&self) -> Result<Position, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "select transaction_id::text as transaction_text, position from events
                  order by transaction_id desc, position desc limit 1",
                &[],
            )
            .await?;
        Ok(match row {
            Some(row) => position_from(&row, 0, 1)?,
            None => Position::START,
        })
    }

    /// Where the horizon is and who holds it.
    pub async fn horizon(&self) -> Result<Horizon, StoreError> {
        let client = self.pool.get().await?;
        let xmin: String = client
            .query_one("select pg_snapshot_xmin(pg_current_snapshot())::text", &[])
            .await?
            .get(0);
        let holder = client
            .query_opt(
                "select pid, datname::text, extract(epoch from now() - xact_start)::float8,
                        state, left(query, 200),
                        exists (select 1 from pg_locks l
                                 where l.pid = a.pid
                                   and l.locktype = 'relation'
                                   and l.database = (select oid from pg_database
                                                      where datname = current_database())
                                   and l.relation = 'events'::regclass
                                   and l.mode in ('RowExclusiveLock', 'ShareRowExclusiveLock',
                                                  'ExclusiveLock', 'AccessExclusiveLock'))
                   from pg_stat_activity a
                  where backend_xid is not null and pid <> pg_backend_pid()
                  order by age(backend_xid) desc
                  limit 1",
                &[],
            )
            .await?
            .map(|row| HorizonHolder {
                pid: row.get(0),
                database: row.get(1),
                age_seconds: row.get::<_, Option<f64>>(2).unwrap_or(0.0),
                state: row.get(3),
                query: row.get(4),
                may_append: row.get(5),
            });
        Ok(Horizon {
            xmin: xmin.parse().unwrap_or(0),
            holder,
        })
    }

    /// The id of the event at a position, if there is one.
    pub async fn event_at(&self, position: Position) -> Result<Option<Uuid>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "select event_id from events where transaction_id = $1::text::xid8 and position = $2",
            )
            .await?;
        Ok(client
            .query_opt(
                &statement,
                &[&position.transaction_sql(), &position.position],
            )
            .await?
            .map(|row| row.get(0)))
    }

    /// The stored snapshot of a stream in the given layout, if any.
    pub async fn load_snapshot(
        &self,
        stream_id: &str,
        state_format: &str,
    ) -> Result<Option<(u64, serde_json::Value)>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "select version, state from snapshots where stream_id = $1 and state_format = $2",
            )
            .await?;
        Ok(client
            .query_opt(&statement, &[&stream_id, &state_format])
            .await?
            .map(|row| (row.get::<_, i64>(0) as u64, row.get(1))))
    }

    /// Stores a snapshot unless a newer one is there.
    pub async fn save_snapshot(
        &self,
        stream_id: &str,
        version: u64,
        state_format: &str,
        state: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "insert into snapshots (stream_id, version, state_format, state)
                 values ($1, $2, $3, $4)
                 on conflict (stream_id) do update
                   set version = excluded.version, state_format = excluded.state_format,
                       state = excluded.state, taken_at = now()
                 where snapshots.version < excluded.version
                    or snapshots.state_format <> excluded.state_format",
            )
            .await?;
        client
            .execute(
                &statement,
                &[&stream_id, &(version as i64), &state_format, state],
            )
            .await?;
        Ok(())
    }
}

pub(crate) fn position_from(
    row: &tokio_postgres::Row,
    tx: usize,
    pos: usize,
) -> Result<Position, StoreError> {
    let transaction: String = row.try_get(tx)?;
    let transaction_id = transaction
        .parse()
        .map_err(|_| StoreError::Internal(format!("unexpected transaction id {transaction:?}")))?;
    Ok(Position::new(transaction_id, row.try_get(pos)?))
}

/// `metadata` as stored: [`Metadata`] without the correlation id, which has
/// a column of its own.
#[derive(Debug, serde::Serialize)]
pub(crate) struct StoredMetadata<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    causation_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
}

/// Which append statement a request needs. Every variant is one statement;
/// they differ in what they bind and what rides along.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Shape {
    /// One event: scalars instead of unnested arrays.
    single: bool,
    /// `Any`: the version comes from the stream itself.
    any: bool,
    /// Record the command id.
    command: bool,
    /// Take unique claims.
    takes: bool,
    /// Release unique claims.
    releases: bool,
}

/// The append statement of a shape. Parameters: `$1` stream id, `$2` stream
/// type, `$3` expected version (ignored for `Any`), `$4..$7` event ids,
/// types, schema versions and payloads, `$8` metadata, `$9` correlation id,
/// then the command id and the claim arrays when present.
///
/// Versions: with `Exact(n)` (or `NoStream`, n = 0) the events become
/// n+1, n+2, ...; the unique `(stream_id, version)` index refuses them when
/// the stream has moved past n. The stream's current version is *not* looked
/// up: that probe cost an eighth of the append rate, and `n` always comes from
/// reading the stream (the executor loads before it decides), so the stream
/// cannot be behind it. `Any` looks the version up and retries on a race.
fn append_sql(shape: Shape) -> String {
    let base = if shape.any {
        "(select coalesce(max(version), 0) from events where stream_id = $1)"
    } else {
        "$3::bigint"
    };
    if shape.single && !shape.command && !shape.takes && !shape.releases {
        // The common case, and the cheapest statement PostgreSQL runs.
        let check = if shape.any {
            " where $3::bigint is not null"
        } else {
            ""
        };
        return format!(
            "insert into events (event_id, stream_id, stream_type, version, type, schema_version,
                                 data, metadata, correlation_id)
             select $4, $1, $2, {base} + 1, $5, $6, $7, $8, $9{check}
             returning version, position, transaction_id::text, recorded_at"
        );
    }
    let source = if shape.single {
        "(select $4::uuid as event_id, $5::text as type, $6::int4 as schema_version,
                 $7::jsonb as data, 1::bigint as n) as e"
    } else {
        "unnest($4::uuid[], $5::text[], $6::int4[], $7::jsonb[])
                 with ordinality as e(event_id, type, schema_version, data, n)"
    };
    // `$3` must appear in every variant so its type is known.
    let mut sql = format!(
        "with appended as (
             insert into events (event_id, stream_id, stream_type, version, type, schema_version,
                                 data, metadata, correlation_id)
             select e.event_id, $1, $2, {base} + e.n, e.type, e.schema_version, e.data, $8, $9
               from {source}
              where $3::bigint is not null
             returning position, version, transaction_id, recorded_at
         )"
    );
    let mut next = 10;
    if shape.command {
        sql.push_str(&format!(
            ",
         recorded as (
             insert into commands (command_id, stream_id, first_version, last_version, last_position)
             select ${next}, $1, min(version), max(version), max(position) from appended
             having count(*) > 0
             returning 1
         )"
        ));
        next += 1;
    }
    if shape.takes {
        let (kinds, values) = (next, next + 1);
        sql.push_str(&format!(
            ",
         claimed as (
             insert into unique_claims (kind, value, stream_id)
             select c.kind, c.value, $1 from unnest(${kinds}::text[], ${values}::text[]) as c(kind, value)
             returning 1
         )"
        ));
        next += 2;
    }
    if shape.releases {
        let (kinds, values) = (next, next + 1);
        sql.push_str(&format!(
            ",
         released as (
             delete from unique_claims u
              using unnest(${kinds}::text[], ${values}::text[]) as c(kind, value)
              where u.kind = c.kind and u.value = c.value and u.stream_id = $1
             returning 1
         )"
        ));
    }
    sql.push_str(
        "
         select version, position, transaction_id::text, recorded_at from appended order by position",
    );
    sql
}

/// The statement text of every shape, built once.
fn cached_sql(shape: Shape) -> &'static str {
    static CACHE: std::sync::OnceLock<std::collections::HashMap<Shape, String>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        let mut all = std::collections::HashMap::new();
        for bits in 0u8..32 {
            let shape = Shape {
                single: bits & 1 != 0,
                any: bits & 2 != 0,
                command: bits & 4 != 0,
                takes: bits & 8 != 0,
                releases: bits & 16 != 0,
            };
            all.insert(shape, append_sql(shape));
        }
        all
    });
    cache.get(&shape).map(String::as_str).unwrap_or_default()
}

impl<'a> StoredMetadata<'a> {
    pub(crate) fn of(metadata: &'a Metadata) -> StoredMetadata<'a> {
        StoredMetadata {
            causation_id: metadata.causation_id,
            command_id: metadata.command_id.as_deref(),
            trace_id: metadata.trace_id.as_deref(),
        }
    }
}

/// One append in its own statement, on `client`: `Any` appends retry a lost
/// race, and a command id already executed answers with its first result.
pub(crate) async fn append_alone(
    client: &deadpool_postgres::Object,
    request: &AppendRequest<'_>,
) -> Result<Appended, StoreError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match append_once(client, request).await {
            Err(StoreError::Conflict { .. })
                if request.expected == ExpectedVersion::Any && attempts < ANY_RETRIES =>
            {
                continue
            }
            Err(StoreError::AlreadyExecuted(done)) => return Ok(*done),
            other => return other,
        }
    }
}

async fn append_once(
    client: &deadpool_postgres::Object,
    request: &AppendRequest<'_>,
) -> Result<Appended, StoreError> {
    // No look-up of the command id first (it would cost every append a
    // round trip): a command id already executed makes the append fail on
    // `commands_pkey`, or on the stream's version when it moved on, and both
    // failures look the command up (see `append_error` and below).
    let command_id = request.metadata.command_id.as_deref();
    let takes: Vec<&ClaimChange> = request.claims.iter().filter(|c| c.take).collect();
    let releases: Vec<&ClaimChange> = request.claims.iter().filter(|c| !c.take).collect();
    let single = request.events.len() == 1;
    let shape = Shape {
        single,
        any: request.expected == ExpectedVersion::Any,
        command: command_id.is_some(),
        takes: !takes.is_empty(),
        releases: !releases.is_empty(),
    };
    let statement = client.prepare_cached(cached_sql(shape)).await?;

    let expected: i64 = match request.expected {
        ExpectedVersion::Any | ExpectedVersion::NoStream => 0,
        ExpectedVersion::Exact(n) => n as i64,
    };
    // Arrays are only bound for batches; a single event binds its fields.
    let batch = if single { &[][..] } else { request.events };
    let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
    let types: Vec<&str> = batch.iter().map(|e| e.event_type.as_str()).collect();
    let versions: Vec<i32> = batch.iter().map(|e| e.schema_version).collect();
    let data: Vec<&serde_json::Value> = batch.iter().map(|e| &e.data).collect();
    // The correlation id has its own column; the rest goes to `metadata`,
    // serialised straight into the statement's buffer.
    let metadata = tokio_postgres::types::Json(StoredMetadata::of(request.metadata));
    let take_kinds: Vec<&str> = takes.iter().map(|c| c.kind.as_str()).collect();
    let take_values: Vec<&str> = takes.iter().map(|c| c.value.as_str()).collect();
    let release_kinds: Vec<&str> = releases.iter().map(|c| c.kind.as_str()).collect();
    let release_values: Vec<&str> = releases.iter().map(|c| c.value.as_str()).collect();

    let first = &request.events[0];
    let mut params: Vec<&(dyn ToSql + Sync)> = if single {
        vec![
            &request.stream_id,
            &request.stream_type,
            &expected,
            &first.event_id,
            &first.event_type,
            &first.schema_version,
            &first.data,
            &metadata,
            &request.metadata.correlation_id,
        ]
    } else {
        vec![
            &request.stream_id,
            &request.stream_type,
            &expected,
            &ids,
            &types,
            &versions,
            &data,
            &metadata,
            &request.metadata.correlation_id,
        ]
    };
    if let Some(command_id) = &command_id {
        params.push(command_id);
    }
    if !takes.is_empty() {
        params.push(&take_kinds);
        params.push(&take_values);
    }
    if !releases.is_empty() {
        params.push(&release_kinds);
        params.push(&release_values);
    }

    let rows = match client.query(&statement, &params).await {
        Ok(rows) => rows,
        Err(e) => return Err(append_error(client, request, e).await),
    };
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        // The version check filtered every row: the stream is elsewhere,
        // perhaps because this very command moved it.
        return Err(conflict_or_executed(client, request).await);
    };
    Ok(Appended {
        stream_id: request.stream_id.to_owned(),
        first_version: first.get::<_, i64>(0) as u64,
        last_version: last.get::<_, i64>(0) as u64,
        position: position_from(last, 2, 1)?,
        recorded_at: last.get(3),
        replayed: false,
    })
}

/// Turns a failed append into the error its cause deserves.
async fn append_error(
    client: &deadpool_postgres::Object,
    request: &AppendRequest<'_>,
    e: tokio_postgres::Error,
) -> StoreError {
    if e.code() != Some(&SqlState::UNIQUE_VIOLATION) {
        return StoreError::Database(e);
    }
    let constraint = e
        .as_db_error()
        .and_then(|db| db.constraint())
        .unwrap_or_default()
        .to_owned();
    match constraint.as_str() {
        "events_stream_version_key" => conflict_or_executed(client, request).await,
        "commands_pkey" => {
            // The same command committed concurrently: answer with its result.
            let command_id = request.metadata.command_id.as_deref().unwrap_or_default();
            match find_command(client, command_id).await {
                Ok(Some(done)) => StoreError::AlreadyExecuted(Box::new(done)),
                Ok(None) => StoreError::Database(e),
                Err(other) => other,
            }
        }
        "unique_claims_pkey" => {
            let taken = request.claims.iter().filter(|c| c.take);
            for claim in taken {
                let holder = client
                    .query_opt(
                        "select stream_id from unique_claims where kind = $1 and value = $2",
                        &[&claim.kind, &claim.value],
                    )
                    .await;
                if let Ok(Some(row)) = holder {
                    if row.get::<_, String>(0) != request.stream_id {
                        return StoreError::Duplicate {
                            kind: claim.kind.clone(),
                            value: claim.value.clone(),
                        };
                    }
                }
            }
            // Taken by this very stream, or released again since: retryable.
            StoreError::Conflict {
                stream_id: request.stream_id.to_owned(),
                expected: request.expected.to_string(),
            }
        }
        _ => StoreError::Database(e),
    }
}

/// A version conflict, unless the request's command id was executed
/// already (a retry whose first attempt moved the stream): then its result.
async fn conflict_or_executed(
    client: &deadpool_postgres::Object,
    request: &AppendRequest<'_>,
) -> StoreError {
    if let Some(command_id) = request.metadata.command_id.as_deref() {
        match find_command(client, command_id).await {
            Ok(Some(done)) => return StoreError::AlreadyExecuted(Box::new(done)),
            Ok(None) => {}
            Err(e) => return e,
        }
    }
    StoreError::Conflict {
        stream_id: request.stream_id.to_owned(),
        expected: request.expected.to_string(),
    }
}

async fn find_command(
    client: &deadpool_postgres::Object,
    command_id: &str,
) -> Result<Option<Appended>, StoreError> {
    let statement = client
        .prepare_cached(
            "select stream_id, first_version, last_version, transaction_id::text, last_position, recorded_at
               from commands where command_id = $1",
        )
        .await?;
    match client.query_opt(&statement, &[&command_id]).await? {
        None => Ok(None),
        Some(row) => Ok(Some(Appended {
            stream_id: row.get(0),
            first_version: row.get::<_, i64>(1) as u64,
            last_version: row.get::<_, i64>(2) as u64,
            position: position_from(&row, 3, 4)?,
            recorded_at: row.get(5),
            replayed: true,
        })),
    }
}

/// The log query behind [`EventStore::read_log`], on a given connection.
pub async fn read_log<T: LogRow, C: tokio_postgres::GenericClient>(
    client: &C,
    after: Position,
    filter: &LogFilter,
    limit: i64,
) -> Result<Vec<T>, StoreError> {
    read_log_below(client, None, after, filter, limit, Below::Oldest)
        .await
        .map(|(rows, _)| rows)
}

/// Which transactions a read of the log waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Below {
    /// Every transaction of the server holding an id: the plain horizon,
    /// one comparison with the statement's snapshot.
    Oldest,
    /// Only transactions that may append events (`ordo_log_horizon()`,
    /// migration 0007): it looks at the lock table, so it costs more.
    OldestAppender,
}

/// [`read_log`] below the chosen horizon; with [`Below::OldestAppender`]
/// also the plain horizon of the same snapshot, as a transaction id.
/// `cached`, the pooled connection `client` is, keeps the statement of an
/// unfiltered read prepared.
async fn read_log_below<T: LogRow, C: tokio_postgres::GenericClient>(
    client: &C,
    cached: Option<&deadpool_postgres::ClientWrapper>,
    after: Position,
    filter: &LogFilter,
    limit: i64,
    below: Below,
) -> Result<(Vec<T>, Option<u64>), StoreError> {
    let after_tx = after.transaction_sql();
    let (horizon, plain) = match below {
        Below::Oldest => ("pg_snapshot_xmin(pg_current_snapshot())", ""),
        Below::OldestAppender => (
            "(select ordo_log_horizon())",
            ", pg_snapshot_xmin(pg_current_snapshot())::text",
        ),
    };
    let mut sql = format!(
        "select {}{plain} from events
          where (transaction_id, position) > ($1::text::xid8, $2)
            and transaction_id < {horizon}",
        T::COLUMNS
    );
    let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![
        (&after_tx, Type::TEXT),
        (&after.position, Type::INT8),
        (&limit, Type::INT8),
    ];
    if let Some(stream_id) = &filter.stream_id {
        params.push((stream_id, Type::TEXT));
        sql.push_str(&format!(" and stream_id = ${}", params.len()));
    }
    if let Some(stream_type) = &filter.stream_type {
        params.push((stream_type, Type::TEXT));
        sql.push_str(&format!(" and stream_type = ${}", params.len()));
    }
    if let Some(event_type) = &filter.event_type {
        params.push((event_type, Type::TEXT));
        sql.push_str(&format!(" and type = ${}", params.len()));
    }
    if let Some(correlation_id) = &filter.correlation_id {
        params.push((correlation_id, Type::UUID));
        sql.push_str(&format!(" and correlation_id = ${}", params.len()));
    }
    if let Some(since) = &filter.since {
        params.push((since, Type::TIMESTAMPTZ));
        sql.push_str(&format!(" and recorded_at >= ${}", params.len()));
    }
    if let Some(until) = &filter.until {
        params.push((until, Type::TIMESTAMPTZ));
        sql.push_str(&format!(" and recorded_at < ${}", params.len()));
    }
    sql.push_str(" order by transaction_id, position limit $3");
    // The whole log in order (the relay, a rebuild, an unfiltered page) is
    // a prepared statement: its plan is the primary key's range whatever
    // the log's size when it was prepared, and planning it on every call
    // cost the relay about 90 µs a read. A filtered read is planned for
    // the values at hand, in one round trip (an unnamed statement: parse,
    // bind and execute sent together): planned generically it becomes,
    // while the log is small, a scan of every row past the cursor sorted
    // at the end, which a reader far behind would pay in full.
    let rows = match cached {
        Some(cached) if params.len() == 3 => {
            let statement = cached.prepare_cached(&sql).await?;
            cached
                .query(&statement, &[&after_tx, &after.position, &limit])
                .await?
        }
        _ => client.query_typed(&sql, &params).await?,
    };
    let plain =
        match (below, rows.first()) {
            (Below::OldestAppender, Some(row)) => {
                let text: String = row.try_get(row.len() - 1)?;
                Some(text.parse().map_err(|_| {
                    StoreError::Internal(format!("unreadable transaction id {text:?}"))
                })?)
            }
            _ => None,
        };
    let rows = rows.iter().map(T::from_row).collect::<Result<_, _>>()?;
    Ok((rows, plain))
}

/// A way of reading rows of the log.
pub trait LogRow: Sized + Send + 'static {
    /// The select list.
    const COLUMNS: &'static str;
    /// Decodes one row selected with [`LogRow::COLUMNS`].
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, StoreError>;
    /// Its position.
    fn position(&self) -> Position;
}

impl LogRow for RecordedEvent {
    const COLUMNS: &'static str = RecordedEvent::COLUMNS;

    fn from_row(row: &tokio_postgres::Row) -> Result<Self, StoreError> {
        RecordedEvent::from_row(row)
    }

    fn position(&self) -> Position {
        self.position
    }
}

/// The events of several streams (`$1`), each after its version (`$2`), at
/// most `$3` a stream: grouped by stream in the order given, each stream's
/// in order.
static READ_STREAM_TAILS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "select e.* from unnest($1::text[], $2::bigint[]) with ordinality as t(stream_id, after, n)
           cross join lateral (
             select {} from events
              where stream_id = t.stream_id and version > t.after
              order by version limit $3
           ) e
          order by t.n, e.version",
        RecordedEvent::COLUMNS
    )
});

/// One stream's events after a version, in order, at most `$3`.
static READ_STREAM_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "select {} from events where stream_id = $1 and version > $2 order by version limit $3",
        RecordedEvent::COLUMNS
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_statements_number_their_parameters_in_order() {
        let shape = |single, any, command, takes, releases| Shape {
            single,
            any,
            command,
            takes,
            releases,
        };
        let all = append_sql(shape(false, false, true, true, true));
        for n in 1..=14 {
            assert!(all.contains(&format!("${n}")), "${n} missing");
        }
        assert!(!all.contains("$15"));
        let takes_only = append_sql(shape(true, true, false, true, false));
        assert!(takes_only.contains("$10::text[], $11::text[]"));
        assert!(!takes_only.contains("$12"));
        let plain = cached_sql(shape(true, false, false, false, false));
        assert!(plain.trim_start().starts_with("insert into events") && plain.contains("$9"));
    }
}
