//! Events as projections receive them: the envelope's facts plus the decoded
//! domain event, from a NATS message (live) or a log row (rebuild).

use chrono::{DateTime, Utc};
use domain::event::AnyEvent;
use domain::ids::StreamType;
use eventstore::envelope::Envelope;
use eventstore::{Position, RecordedEvent};
use uuid::Uuid;

/// One event for the projections.
#[derive(Debug, Clone)]
pub struct ProjectionEvent {
    /// Where it is in the log.
    pub position: Position,
    /// Its id.
    pub event_id: Uuid,
    /// `order-<uuid>`.
    pub stream_id: String,
    /// Its stream type, if it is one ordo knows.
    pub stream_type: Option<StreamType>,
    /// The aggregate's id (the stream id without its prefix).
    pub aggregate_id: Option<Uuid>,
    /// Version in its stream.
    pub version: u64,
    /// `OrderPlaced`, ...
    pub event_type: String,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The domain event, or why it could not be decoded. A projection that
    /// handles this stream type stops on an undecodable event; the others
    /// pass it by.
    pub decoded: Result<AnyEvent, String>,
}

impl ProjectionEvent {
    /// From a NATS message's envelope.
    pub fn from_envelope(envelope: Envelope) -> ProjectionEvent {
        Self::build(
            envelope.position,
            envelope.id,
            envelope.subject,
            &envelope.streamtype,
            envelope.streamversion,
            envelope.event_type,
            envelope.time,
            envelope.schemaversion,
            envelope.data,
        )
    }

    /// From a row of the log (rebuild and check).
    pub fn from_recorded(event: RecordedEvent) -> ProjectionEvent {
        Self::build(
            event.position,
            event.event_id,
            event.stream_id,
            &event.stream_type,
            event.version,
            event.event_type,
            event.recorded_at,
            event.schema_version,
            event.data,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        position: Position,
        event_id: Uuid,
        stream_id: String,
        stream_type: &str,
        version: u64,
        event_type: String,
        recorded_at: DateTime<Utc>,
        schema_version: i32,
        data: serde_json::Value,
    ) -> ProjectionEvent {
        let parsed_type = stream_type.parse::<StreamType>().ok();
        let aggregate_id = stream_id
            .split_once('-')
            .and_then(|(_, id)| id.parse().ok());
        let decoded = match parsed_type {
            Some(st) => AnyEvent::from_stored(
                st,
                &event_type,
                u32::try_from(schema_version).unwrap_or(u32::MAX),
                data,
            )
            .map_err(|e| e.to_string()),
            None => Err(format!("unknown stream type {stream_type:?}")),
        };
        ProjectionEvent {
            position,
            event_id,
            stream_id,
            stream_type: parsed_type,
            aggregate_id,
            version,
            event_type,
            recorded_at,
            decoded,
        }
    }
}
