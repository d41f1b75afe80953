//! The CloudEvents 1.0 structured-mode envelope
//! (`docs/reference/events.md#the-envelope`): how every event looks in HTTP
//! answers and as the body of its NATS message.

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
    /// Who caused it (extension attribute): `token:<id>`,
    /// `jwt:<issuer>#<sub>`, `saga`, `system`, `anonymous`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
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
            source: source(&event.stream_type),
            event_type: event.event_type.clone(),
            subject: event.stream_id.clone(),
            time: event.recorded_at,
            datacontenttype: "application/json".to_owned(),
            dataschema: dataschema(&event.stream_type, &event.event_type, schema_version),
            data,
            streamtype: event.stream_type.clone(),
            streamversion: event.version,
            position: event.position,
            schemaversion: schema_version,
            correlationid: event.metadata.correlation_id,
            causationid: event.metadata.causation_id,
            actor: event.metadata.actor.clone(),
        }
    }

    /// The metadata carried by the envelope.
    pub fn metadata(&self) -> Metadata {
        Metadata {
            correlation_id: self.correlationid,
            causation_id: self.causationid,
            command_id: None,
            trace_id: None,
            traceparent: None,
            tracestate: None,
            actor: self.actor.clone(),
        }
    }
}

/// The envelope's `source`: `/ordo/<streamtype>`.
fn source(stream_type: &str) -> String {
    format!("/ordo/{stream_type}")
}

/// The envelope's `dataschema`: `schemas/events/<streamtype>/<Type>.v<N>.json`.
fn dataschema(stream_type: &str, event_type: &str, schema_version: i32) -> String {
    format!("schemas/events/{stream_type}/{event_type}.v{schema_version}.json")
}

/// The event's payload at the current schema version, with that version.
pub fn current_payload(event: &RecordedEvent) -> (i32, serde_json::Value) {
    match upcast_payload(
        &event.stream_type,
        &event.event_type,
        event.schema_version,
        || Ok(event.data.clone()),
    ) {
        Some((version, data)) => (version, data),
        None => (event.schema_version, event.data.clone()),
    }
}

/// The payload upcast to the current version, or `None` when it already is
/// current or cannot be upcast (unknown type, newer than this build): then it
/// is passed on as stored rather than holding back everything behind it.
fn upcast_payload(
    stream_type: &str,
    event_type: &str,
    schema_version: i32,
    data: impl FnOnce() -> Result<serde_json::Value, serde_json::Error>,
) -> Option<(i32, serde_json::Value)> {
    let stream_type = stream_type.parse::<StreamType>().ok()?;
    let current = domain::event::current_schema_version(stream_type, event_type)?;
    let stored = u32::try_from(schema_version).unwrap_or(u32::MAX);
    if stored == current {
        return None;
    }
    let data = data().ok()?;
    match domain::event::upcast::upcast(stream_type, event_type, stored, current, data) {
        Ok(data) => Some((current as i32, data)),
        Err(e) => {
            tracing::warn!(event_type, schema_version, error = %e, "cannot upcast; passing on as stored");
            None
        }
    }
}

/// An event read for publishing: the payload stays the JSON text PostgreSQL
/// sent, spliced into the envelope without being parsed (unless it must be
/// upcast). This is most of what makes the relay fast.
#[derive(Debug, Clone)]
pub struct PublishableEvent {
    /// Where it is in the log.
    pub position: Position,
    /// Its id.
    pub event_id: Uuid,
    /// `order-<uuid>`.
    pub stream_id: String,
    /// `order`.
    pub stream_type: String,
    /// Version in its stream.
    pub version: u64,
    /// `OrderPlaced`.
    pub event_type: String,
    /// Stored payload version.
    pub schema_version: i32,
    /// The payload as JSON text.
    pub data: Box<serde_json::value::RawValue>,
    /// Correlation id.
    pub correlation_id: Option<Uuid>,
    /// Causation id.
    pub causation_id: Option<Uuid>,
    /// Who caused it.
    pub actor: Option<String>,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The trace context of the append that wrote it (its metadata's).
    pub trace: crate::telemetry::TraceParent,
}

impl PublishableEvent {
    /// The aggregate's uuid: the stream id after its `<type>-` prefix.
    pub fn aggregate_id(&self) -> &str {
        crate::event::aggregate_id(&self.stream_id)
    }

    /// The envelope as JSON bytes, the same document as
    /// `serde_json::to_vec(&Envelope::from_recorded(..))`.
    pub fn envelope_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let upcast = upcast_payload(
            &self.stream_type,
            &self.event_type,
            self.schema_version,
            || serde_json::from_str(self.data.get()),
        );
        let upcast_text;
        let (schema_version, data) = match upcast {
            Some((version, value)) => {
                upcast_text = serde_json::value::to_raw_value(&value)?;
                (version, upcast_text.as_ref())
            }
            None => (self.schema_version, self.data.as_ref()),
        };
        let envelope = EnvelopeOut {
            specversion: "1.0",
            id: self.event_id,
            source: source(&self.stream_type),
            event_type: &self.event_type,
            subject: &self.stream_id,
            time: format_time(&self.recorded_at),
            datacontenttype: "application/json",
            dataschema: dataschema(&self.stream_type, &self.event_type, schema_version),
            data,
            streamtype: &self.stream_type,
            streamversion: self.version,
            position: self.position,
            schemaversion: schema_version,
            correlationid: self.correlation_id,
            causationid: self.causation_id,
            actor: self.actor.as_deref(),
        };
        serde_json::to_vec(&envelope)
    }
}

impl crate::store::LogRow for PublishableEvent {
    const COLUMNS: &'static str = "transaction_id::text as transaction_text, position, event_id, \
        stream_id, stream_type, version, type, schema_version, data::text, \
        (metadata->>'causation_id')::uuid, correlation_id, recorded_at, metadata->>'actor', \
        metadata->>'traceparent', metadata->>'tracestate'";

    fn from_row(row: &tokio_postgres::Row) -> Result<Self, crate::StoreError> {
        let data: String = row.try_get(8)?;
        Ok(PublishableEvent {
            position: Position::from_row(row, 0, 1)?,
            event_id: row.try_get(2)?,
            stream_id: row.try_get(3)?,
            stream_type: row.try_get(4)?,
            version: row.try_get::<_, i64>(5)? as u64,
            event_type: row.try_get(6)?,
            schema_version: row.try_get(7)?,
            data: serde_json::value::RawValue::from_string(data)?,
            causation_id: row.try_get(9)?,
            correlation_id: row.try_get(10)?,
            recorded_at: row.try_get(11)?,
            actor: row.try_get(12)?,
            trace: crate::telemetry::TraceParent::new(
                row.try_get::<_, Option<&str>>(13)?,
                row.try_get::<_, Option<&str>>(14)?,
            ),
        })
    }

    fn position(&self) -> Position {
        self.position
    }
}

/// The envelope's serialised form, field for field as [`Envelope`].
#[derive(Serialize)]
struct EnvelopeOut<'a> {
    specversion: &'static str,
    id: Uuid,
    source: String,
    #[serde(rename = "type")]
    event_type: &'a str,
    subject: &'a str,
    time: String,
    datacontenttype: &'static str,
    dataschema: String,
    data: &'a serde_json::value::RawValue,
    streamtype: &'a str,
    streamversion: u64,
    position: Position,
    schemaversion: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlationid: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    causationid: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<&'a str>,
}

mod rfc3339_micros {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(time))
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
