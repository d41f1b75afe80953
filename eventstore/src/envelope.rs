//! The CloudEvents 1.0 structured-mode envelope (CONTRACT.md section 3): how
//! every event looks in HTTP answers and as the body of its NATS message.

use chrono::{DateTime, SecondsFormat, Utc};
use domain::ids::StreamType;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{Metadata, RecordedEvent};
use crate::position::Position;

/// One event as users see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Always `"1.0"`.
    pub specversion: String,
    /// The event id.
    pub id: Uuid,
    /// `/ordo/<streamtype>`.
    pub source: String,
    /// The event type, e.g. `OrderPlaced`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The stream id, e.g. `order-<uuid>`.
    pub subject: String,
    /// When it was recorded, RFC 3339 UTC with microseconds.
    #[serde(with = "rfc3339_micros")]
    pub time: DateTime<Utc>,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// `schemas/events/<streamtype>/<Type>.v<N>.json`.
    pub dataschema: String,
    /// The payload, at `schemaversion`.
    pub data: serde_json::Value,
    /// `user`, `product` or `order`.
    pub streamtype: String,
    /// The event's version within its stream.
    pub streamversion: u64,
    /// Position token in the global log.
    pub position: Position,
    /// Version of `data`'s layout.
    pub schemaversion: i32,
    /// Shared by everything one order (or request) causes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlationid: Option<Uuid>,
    /// The event or command that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causationid: Option<Uuid>,
}

impl Envelope {
    /// The envelope of a stored event. Payloads stored at an older schema
    /// version are upcast to the current one; a payload that cannot be upcast
    /// (unknown type, newer than this build) is passed on as stored, with its
    /// stored version, rather than holding back everything behind it.
    pub fn from_recorded(event: &RecordedEvent) -> Envelope {
        let (schema_version, data) = current_payload(event);
        Envelope {
            specversion: "1.0".to_owned(),
            id: event.event_id,
            source: format!("/ordo/{}", event.stream_type),
            event_type: event.event_type.clone(),
            subject: event.stream_id.clone(),
            time: event.recorded_at,
            datacontenttype: "application/json".to_owned(),
            dataschema: format!(
                "schemas/events/{}/{}.v{}.json",
                event.stream_type, event.event_type, schema_version
            ),
            data,
            streamtype: event.stream_type.clone(),
            streamversion: event.version,
            position: event.position,
            schemaversion: schema_version,
            correlationid: event.metadata.correlation_id,
            causationid: event.metadata.causation_id,
        }
    }

    /// The metadata carried by the envelope.
    pub fn metadata(&self) -> Metadata {
        Metadata {
            correlation_id: self.correlationid,
            causation_id: self.causationid,
            command_id: None,
            trace_id: None,
        }
    }
}

/// The event's payload at the current schema version, with that version.
pub fn current_payload(event: &RecordedEvent) -> (i32, serde_json::Value) {
    let Ok(stream_type) = event.stream_type.parse::<StreamType>() else {
        return (event.schema_version, event.data.clone());
    };
    let Some(current) = domain::event::current_schema_version(stream_type, &event.event_type)
    else {
        return (event.schema_version, event.data.clone());
    };
    let stored = u32::try_from(event.schema_version).unwrap_or(u32::MAX);
    if stored == current {
        return (event.schema_version, event.data.clone());
    }
    match domain::event::upcast::upcast(
        stream_type,
        &event.event_type,
        stored,
        current,
        event.data.clone(),
    ) {
        Ok(data) => (current as i32, data),
        Err(e) => {
            tracing::warn!(event_id = %event.event_id, error = %e, "cannot upcast; passing on as stored");
            (event.schema_version, event.data.clone())
        }
    }
}

mod rfc3339_micros {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// RFC 3339 UTC with microseconds, as in every envelope.
pub fn format_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}
