//! What the store is asked and what it answers: expected versions, claims,
//! append requests and their results, time-travel bounds, log filters; and
//! the position every answer carries, as the store's statements select it.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::event::{Metadata, NewEvent};
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
    /// Caused by this actor (`token:<id>`, `saga`, ...). Not indexed: an
    /// audit query by actor scans the range it is given.
    pub actor: Option<String>,
}
