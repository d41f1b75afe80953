//! The event store: [`EventStore`], the one handle appends and reads go
//! through, and the modules behind it, one job each.
//!
//! - `request`: what the store is asked and answers ([`AppendRequest`],
//!   [`Appended`], [`ExpectedVersion`], [`ClaimChange`], [`AsOf`],
//!   [`LogFilter`]).
//! - `append`: the SQL of an append and an append written alone: one
//!   statement, so one short transaction, all or nothing, optimistic on
//!   `unique (stream_id, version)`.
//! - [`group`]: group commit: concurrent appends written in one statement,
//!   falling back to single appends.
//! - `stream`: reading streams: versions, heads, tails, as of a position or
//!   time.
//! - `log`: reading the global log in order below the horizon ([`read_log`],
//!   [`LogRow`]), the log's head, the event at a position ([`event_at`]).
//! - `horizon`: the log's horizon: what reads of the log wait for, who
//!   holds it back ([`Horizon`]), whether events wait beyond it. The
//!   argument that no event is skipped is in
//!   `schemas/sql/0007_log_horizon.sql`.
//! - `snapshots`: stored states of streams.
//!
//! Dependencies run one way: this module uses the others; `group` uses
//! `append`; `append`, `group`, `stream` and `log` use `request`; `log` uses
//! `horizon`; none of them uses this module.

mod append;
pub mod group;
mod horizon;
mod log;
mod request;
mod snapshots;
mod stream;

use uuid::Uuid;

use crate::error::StoreError;
use crate::event::RecordedEvent;
use crate::notify::Notifier;
use crate::position::Position;

use self::group::GroupAppender;
pub use self::group::GroupStats;
use self::horizon::Below;
pub use self::horizon::{Horizon, HorizonHolder};
pub use self::log::{event_at, read_log, LogRow};
pub use self::request::{AppendRequest, Appended, AsOf, ClaimChange, ExpectedVersion, LogFilter};

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

    /// Appends events to a stream in one transaction: one statement, all or
    /// nothing, refused with [`StoreError::Conflict`] when the stream is not
    /// at the expected version (the `append` module has the details).
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
        let appended = append::append_alone(&client, &request).await?;
        if !appended.replayed {
            self.notifier.poke();
        }
        Ok(appended)
    }

    /// How the grouping of appends went so far (see [`group`]).
    pub fn group_stats(&self) -> &GroupStats {
        self.group.stats()
    }

    /// The result of a command id already executed, if it was.
    pub async fn executed_command(&self, command_id: &str) -> Result<Option<Appended>, StoreError> {
        let client = self.pool.get().await?;
        append::find_command(&client, command_id).await
    }

    /// Every value of claim `kind` held now, with the stream holding it.
    pub async fn claims_of_kind(&self, kind: &str) -> Result<Vec<(String, String)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "select value, stream_id from unique_claims where kind = $1",
                &[&kind],
            )
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// The current version of a stream (0 when it does not exist).
    pub async fn stream_version(&self, stream_id: &str) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        stream::stream_version(&client, stream_id).await
    }

    /// The position of a stream's last event (`None`: no such stream).
    pub async fn stream_head(&self, stream_id: &str) -> Result<Option<Position>, StoreError> {
        let client = self.pool.get().await?;
        stream::stream_head(&client, stream_id).await
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
        stream::read_stream(&client, stream_id, after_version, limit).await
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
        stream::read_stream_tails(&client, tails).await
    }

    /// Events of one stream as it stood at a position or time, in order.
    pub async fn read_stream_as_of(
        &self,
        stream_id: &str,
        as_of: AsOf,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.pool.get().await?;
        stream::read_stream_as_of(&client, stream_id, as_of).await
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

    /// [`log::read_log_below`] on a pooled connection, whose statement
    /// cache keeps the unfiltered read prepared.
    async fn read_log_pooled<T: LogRow>(
        &self,
        after: Position,
        filter: &LogFilter,
        limit: i64,
        below: Below,
    ) -> Result<(Vec<T>, Option<u64>), StoreError> {
        let client = self.pool.get().await?;
        log::read_log_below(&**client, Some(&client), after, filter, limit, below).await
    }

    /// True when events have committed beyond the horizon: a reader that found
    /// nothing should look again soon rather than wait for a notification.
    pub async fn pending_beyond_horizon(&self) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        horizon::pending_beyond_horizon(&client).await
    }

    /// The last position of the whole log (committed, below the horizon or not).
    pub async fn head(&self) -> Result<Position, StoreError> {
        let client = self.pool.get().await?;
        log::head(&client).await
    }

    /// Where the horizon is and who holds it.
    pub async fn horizon(&self) -> Result<Horizon, StoreError> {
        let client = self.pool.get().await?;
        horizon::horizon(&client).await
    }

    /// The id of the event at a position, if there is one.
    pub async fn event_at(&self, position: Position) -> Result<Option<Uuid>, StoreError> {
        let client = self.pool.get().await?;
        log::event_at(&client, position).await
    }

    /// The stored snapshot of a stream in the given layout, if any.
    pub async fn load_snapshot(
        &self,
        stream_id: &str,
        state_format: &str,
    ) -> Result<Option<(u64, serde_json::Value)>, StoreError> {
        let client = self.pool.get().await?;
        snapshots::load_snapshot(&client, stream_id, state_format).await
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
        snapshots::save_snapshot(&client, stream_id, version, state_format, state).await
    }
}
