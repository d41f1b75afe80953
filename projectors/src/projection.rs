//! The projections ordo keeps, what each owns, and applying a batch of events
//! to one of them.
//!
//! Every projection applies a batch the same way: load the rows the batch
//! touches (one query per table), fold the events into them in memory, write
//! the changed rows back (one upsert per table). A live batch of hundreds of
//! events and a rebuild batch of tens of thousands cost a handful of
//! statements either way. Each row carries its aggregate's version and every
//! event must be the next one: an event applied twice or skipped is caught,
//! never silently absorbed.

use domain::ids::StreamType;
use uuid::Uuid;

use crate::event::ProjectionEvent;
use crate::model;
use crate::writes::Writes;

/// A read model and the code that keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Projection {
    /// Users, with their order count and spend.
    Users,
    /// Products with stock on hand, reserved and available.
    Products,
    /// Orders with their lines and status (also each user's orders).
    Orders,
}

impl Projection {
    /// Every projection.
    pub const ALL: [Projection; 3] = [Projection::Users, Projection::Products, Projection::Orders];

    /// Its name: the CLI's `NAME`, the checkpoint's key.
    pub fn name(self) -> &'static str {
        match self {
            Projection::Users => "users",
            Projection::Products => "products",
            Projection::Orders => "orders",
        }
    }

    /// The name of its role in a process (`projector:users`).
    pub fn role(self) -> &'static str {
        match self {
            Projection::Users => "projector:users",
            Projection::Products => "projector:products",
            Projection::Orders => "projector:orders",
        }
    }

    /// The tables it owns (in schema `read`), in creation order.
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            Projection::Users => &["users", "user_orders"],
            Projection::Products => &["products"],
            Projection::Orders => &["orders"],
        }
    }

    /// Whether events of this stream type concern it.
    pub fn handles(self, stream_type: StreamType) -> bool {
        match self {
            Projection::Users => matches!(stream_type, StreamType::User | StreamType::Order),
            Projection::Products => stream_type == StreamType::Product,
            Projection::Orders => stream_type == StreamType::Order,
        }
    }

    /// Reads the rows `events` (in log order) touch in this projection's
    /// tables in `schema` (`read`, or a rebuild's shadow schema), folds the
    /// events into them and adds the writes of the changed rows to `writes`.
    /// Nothing is written: the caller sends `writes` in the transaction
    /// that also moves the checkpoint.
    pub async fn plan(
        self,
        reader: &impl tokio_postgres::GenericClient,
        schema: &str,
        events: &[ProjectionEvent],
        writes: &mut Writes,
    ) -> Result<(), ApplyError> {
        match self {
            Projection::Users => model::users::plan(reader, schema, events, writes).await,
            Projection::Products => model::products::plan(reader, schema, events, writes).await,
            Projection::Orders => model::orders::plan(reader, schema, events, writes).await,
        }
    }

    /// Applies `events` (in log order) to the tables of this projection in
    /// `schema`, inside `tx`: [`Projection::plan`], then the writes.
    pub async fn apply(
        self,
        tx: &deadpool_postgres::Transaction<'_>,
        schema: &str,
        events: &[ProjectionEvent],
    ) -> Result<(), ApplyError> {
        let mut writes = Writes::default();
        self.plan(&**tx, schema, events, &mut writes).await?;
        writes.execute(tx).await?;
        Ok(())
    }
}

impl std::fmt::Display for Projection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Projection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Projection::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Projection::ALL.iter().map(|p| p.name()).collect();
                format!("no projection named {s:?}; there are: {}", names.join(", "))
            })
    }
}

/// Why a batch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// This event cannot be applied: the projection must stop on it.
    #[error("event {event_id} ({event_type} at {position}) cannot be applied: {reason}")]
    Poison {
        /// Its index in the batch.
        index: usize,
        /// Its id.
        event_id: Uuid,
        /// Its type.
        event_type: String,
        /// Its position token.
        position: String,
        /// What is wrong.
        reason: String,
    },
    /// Someone else moved the checkpoint (a rebuild swapped the tables):
    /// nothing was applied; resume from the new checkpoint.
    #[error("the checkpoint moved under the projector")]
    CheckpointMoved,
    /// The database failed; retrying may help.
    #[error(transparent)]
    Store(#[from] eventstore::StoreError),
}

impl From<tokio_postgres::Error> for ApplyError {
    fn from(e: tokio_postgres::Error) -> Self {
        ApplyError::Store(e.into())
    }
}

impl ApplyError {
    /// A poison error for `events[index]`.
    pub fn poison(events: &[ProjectionEvent], index: usize, reason: impl Into<String>) -> Self {
        let event = &events[index.min(events.len().saturating_sub(1))];
        ApplyError::Poison {
            index,
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            position: event.position.to_string(),
            reason: reason.into(),
        }
    }
}

/// Checks that `version` follows `current` (0: the row does not exist yet).
pub(crate) fn expect_next(current: i64, version: u64) -> Result<(), String> {
    if version as i64 == current + 1 {
        Ok(())
    } else if (version as i64) <= current {
        Err(format!(
            "version {version} was already applied (row is at {current})"
        ))
    } else {
        Err(format!(
            "version {version} skips ahead of {current}: events are missing"
        ))
    }
}
