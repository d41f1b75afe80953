//! Events as the store sees them: what is appended, what is read back, and the
//! metadata every event carries.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::position::Position;

/// Where an event came from, stored with it (`metadata` jsonb).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Shared by everything one request or one order causes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The event or command that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The command's idempotency id, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// The request's trace id (W3C `traceparent` trace id or `X-Request-Id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// W3C `traceparent` of the span that appended it (its command's
    /// `append`), when the command came with a trace or tracing is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// W3C `tracestate` that came with `traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    /// Who caused it: `token:<id>`, `jwt:<issuer>#<sub>`, `saga`, `system`
    /// or `anonymous` (authentication off). Events written before actors
    /// were recorded have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Its id; also the `Nats-Msg-Id` it is published with.
    pub event_id: Uuid,
    /// `OrderPlaced`, ...
    pub event_type: String,
    /// Version of the payload layout.
    pub schema_version: i32,
    /// The payload (the envelope's `data`).
    pub data: serde_json::Value,
}

/// An event read back from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Where it is in the global log.
    pub position: Position,
    /// Its id.
    pub event_id: Uuid,
    /// `order-<uuid>`, ...
    pub stream_id: String,
    /// `user`, `product` or `order`.
    pub stream_type: String,
    /// Its version within the stream, from 1.
    pub version: u64,
    /// `OrderPlaced`, ...
    pub event_type: String,
    /// Version of the payload layout as stored.
    pub schema_version: i32,
    /// The payload.
    pub data: serde_json::Value,
    /// Correlation, causation, command and trace ids.
    pub metadata: Metadata,
    /// When its transaction wrote it.
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// The columns [`RecordedEvent::from_row`] expects, in order.
    ///
    /// The transaction id is read as text under another name: an output
    /// column named `transaction_id` would make `order by transaction_id`
    /// sort by its text ("100001" before "99999").
    pub const COLUMNS: &'static str =
        "transaction_id::text as transaction_text, position, event_id, stream_id, \
        stream_type, version, type, schema_version, data, metadata, recorded_at, correlation_id";

    /// Reads a row selected with [`RecordedEvent::COLUMNS`].
    pub fn from_row(row: &tokio_postgres::Row) -> Result<Self, crate::StoreError> {
        let metadata: serde_json::Value = row.try_get(9)?;
        Ok(RecordedEvent {
            position: Position::from_row(row, 0, 1)?,
            event_id: row.try_get(2)?,
            stream_id: row.try_get(3)?,
            stream_type: row.try_get(4)?,
            version: row.try_get::<_, i64>(5)? as u64,
            event_type: row.try_get(6)?,
            schema_version: row.try_get(7)?,
            data: row.try_get(8)?,
            metadata: Metadata {
                correlation_id: row.try_get(11)?,
                ..serde_json::from_value(metadata).unwrap_or_default()
            },
            recorded_at: row.try_get(10)?,
        })
    }

    /// The aggregate's uuid: the stream id after its `<type>-` prefix.
    pub fn aggregate_id(&self) -> &str {
        aggregate_id(&self.stream_id)
    }
}

/// The aggregate's uuid in a stream id: what follows its `<type>-` prefix
/// (the whole id when it has none).
pub fn aggregate_id(stream_id: &str) -> &str {
    stream_id.split_once('-').map_or(stream_id, |(_, id)| id)
}
