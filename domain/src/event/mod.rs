//! Events as stored: type names, payloads, schema versions and decoding.
//!
//! An event in the store is `(stream type, event type, schema version, data)`
//! where `data` is the JSON object `docs/reference/events.md#event-types`
//! describes for each type. Each aggregate's event enum implements
//! [`DomainEvent`] to turn itself into that `data` and back. Reading goes
//! through [`upcast`] first, so payloads written by older code (a lower
//! `schema_version`) decode into today's types.
//!
//! The enums serialise with serde's internal tagging (`{"type": ..., fields}`);
//! `to_data` drops the tag because the envelope carries the type separately,
//! and `from_stored` puts it back before deserialising.

pub mod upcast;

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{StreamType, UserId};
use crate::order::OrderEvent;
use crate::product::ProductEvent;
use crate::user::UserEvent;

/// An aggregate's event type, as the event store, relay and projectors see it.
pub trait DomainEvent: Clone + Debug + PartialEq + Send + Sync + 'static {
    /// The stream type these events are stored in.
    const STREAM_TYPE: StreamType;
    /// Every event type name of this stream type, e.g.
    /// `["UserRegistered", "UserRenamed", "UserDeactivated"]`.
    const TYPES: &'static [&'static str];
    /// The schema version written today. All types are at version 1; when one
    /// changes incompatibly, bump this (or make `schema_version` per type) and
    /// register an upcaster from the old version in [`upcast::UPCASTERS`].
    const CURRENT_SCHEMA_VERSION: u32 = 1;

    /// This event's type name (the envelope's `type`).
    fn event_type(&self) -> &'static str;

    /// The schema version of the payload `to_data` writes.
    fn schema_version(&self) -> u32 {
        Self::CURRENT_SCHEMA_VERSION
    }

    /// The envelope's `data`: always a JSON object, `{}` for events without
    /// fields.
    fn to_data(&self) -> Value;

    /// Decodes a stored payload, upcasting it first if it was written at an
    /// older schema version.
    fn from_stored(event_type: &str, schema_version: u32, data: Value)
        -> Result<Self, DecodeError>;

    /// Values that must be unique across the store, taken (or released) in the
    /// same transaction that appends this event. The store refuses the append
    /// with a duplicate error when a `Take` collides.
    fn unique_claims(&self) -> Vec<UniqueClaim> {
        vec![]
    }
}

/// A stored event could not be turned into a domain event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No event of this type exists in this stream type.
    #[error("unknown event type `{event_type}` for stream type {stream_type}")]
    UnknownType {
        /// The stream type the event was read from.
        stream_type: StreamType,
        /// The unknown type name.
        event_type: String,
    },
    /// The payload's schema version cannot be brought to the current one:
    /// newer than this code, or older with no upcaster registered.
    #[error(
        "cannot read {event_type} schema version {version}; this build reads version {current}"
    )]
    UnsupportedVersion {
        /// The event type.
        event_type: String,
        /// The stored schema version.
        version: u32,
        /// The version this build writes.
        current: u32,
    },
    /// The payload does not match the type's schema.
    #[error("invalid {event_type} payload: {message}")]
    Invalid {
        /// The event type.
        event_type: String,
        /// What serde (or an upcaster) objected to.
        message: String,
    },
}

/// Which kind of unique value a claim is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClaimKind {
    /// A user's email (lowercased).
    Email,
    /// A product's SKU (uppercased).
    Sku,
    /// One of the slots of a user's unpaid orders: at most as many orders of
    /// the user are placed and not yet paid, cancelled or rejected as there
    /// are slots (the value is the slot's number).
    UnpaidOrder(UserId),
}

impl ClaimKind {
    /// `email`, `sku` or `unpaid:<user id>`, for a claims table's `kind`
    /// column.
    pub fn name(self) -> String {
        match self {
            ClaimKind::Email => "email".to_owned(),
            ClaimKind::Sku => "sku".to_owned(),
            ClaimKind::UnpaidOrder(user) => format!("unpaid:{}", user.as_uuid()),
        }
    }
}

/// Whether an event takes or gives up a unique value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClaimAction {
    /// The value becomes owned by this event's stream; fails if already taken.
    Take,
    /// The value becomes free again. An empty value releases whatever value
    /// of the kind the event's stream holds.
    Release,
}

/// A unique value an event takes or releases; see [`DomainEvent::unique_claims`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UniqueClaim {
    /// What kind of value it is (the namespace of uniqueness).
    pub kind: ClaimKind,
    /// The normalised value, so that case variants collide.
    pub value: String,
    /// Take or release.
    pub action: ClaimAction,
}

impl UniqueClaim {
    /// A claim that releases whatever value of `kind` the stream holds.
    pub fn release_any(kind: ClaimKind) -> UniqueClaim {
        UniqueClaim {
            kind,
            value: String::new(),
            action: ClaimAction::Release,
        }
    }

    /// A claim that takes `value`, of `kind`.
    pub fn take(kind: ClaimKind, value: &str) -> UniqueClaim {
        UniqueClaim {
            kind,
            value: value.to_owned(),
            action: ClaimAction::Take,
        }
    }
}

/// An event of any stream type: what the relay, projectors and the audit
/// query handle when they read the global log.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyEvent {
    /// A user event.
    User(UserEvent),
    /// A product event.
    Product(ProductEvent),
    /// An order event.
    Order(OrderEvent),
}

impl AnyEvent {
    /// Decodes a stored event of any stream type, upcasting older versions.
    pub fn from_stored(
        stream_type: StreamType,
        event_type: &str,
        schema_version: u32,
        data: Value,
    ) -> Result<Self, DecodeError> {
        Ok(match stream_type {
            StreamType::User => {
                AnyEvent::User(UserEvent::from_stored(event_type, schema_version, data)?)
            }
            StreamType::Product => {
                AnyEvent::Product(ProductEvent::from_stored(event_type, schema_version, data)?)
            }
            StreamType::Order => {
                AnyEvent::Order(OrderEvent::from_stored(event_type, schema_version, data)?)
            }
        })
    }

    /// The stream type the event belongs to.
    pub fn stream_type(&self) -> StreamType {
        match self {
            AnyEvent::User(_) => StreamType::User,
            AnyEvent::Product(_) => StreamType::Product,
            AnyEvent::Order(_) => StreamType::Order,
        }
    }

    /// The event's type name.
    pub fn event_type(&self) -> &'static str {
        match self {
            AnyEvent::User(e) => e.event_type(),
            AnyEvent::Product(e) => e.event_type(),
            AnyEvent::Order(e) => e.event_type(),
        }
    }

    /// The schema version `to_data` writes.
    pub fn schema_version(&self) -> u32 {
        match self {
            AnyEvent::User(e) => e.schema_version(),
            AnyEvent::Product(e) => e.schema_version(),
            AnyEvent::Order(e) => e.schema_version(),
        }
    }

    /// The envelope's `data`.
    pub fn to_data(&self) -> Value {
        match self {
            AnyEvent::User(e) => e.to_data(),
            AnyEvent::Product(e) => e.to_data(),
            AnyEvent::Order(e) => e.to_data(),
        }
    }

    /// Unique values the event takes or releases.
    pub fn unique_claims(&self) -> Vec<UniqueClaim> {
        match self {
            AnyEvent::User(e) => e.unique_claims(),
            AnyEvent::Product(e) => e.unique_claims(),
            AnyEvent::Order(e) => e.unique_claims(),
        }
    }

    /// The envelope's `dataschema`, e.g. `schemas/events/order/OrderPlaced.v1.json`.
    pub fn dataschema(&self) -> String {
        schema_path(self.stream_type(), self.event_type(), self.schema_version())
    }
}

impl From<UserEvent> for AnyEvent {
    fn from(e: UserEvent) -> Self {
        AnyEvent::User(e)
    }
}

impl From<ProductEvent> for AnyEvent {
    fn from(e: ProductEvent) -> Self {
        AnyEvent::Product(e)
    }
}

impl From<OrderEvent> for AnyEvent {
    fn from(e: OrderEvent) -> Self {
        AnyEvent::Order(e)
    }
}

/// Every `(stream type, event type)` pair, in a stable order.
pub fn all_event_types() -> Vec<(StreamType, &'static str)> {
    let user = UserEvent::TYPES.iter().map(|t| (StreamType::User, *t));
    let product = ProductEvent::TYPES
        .iter()
        .map(|t| (StreamType::Product, *t));
    let order = OrderEvent::TYPES.iter().map(|t| (StreamType::Order, *t));
    user.chain(product).chain(order).collect()
}

/// The current schema version of a type, or `None` for an unknown type.
pub fn current_schema_version(stream_type: StreamType, event_type: &str) -> Option<u32> {
    let (types, version) = match stream_type {
        StreamType::User => (UserEvent::TYPES, UserEvent::CURRENT_SCHEMA_VERSION),
        StreamType::Product => (ProductEvent::TYPES, ProductEvent::CURRENT_SCHEMA_VERSION),
        StreamType::Order => (OrderEvent::TYPES, OrderEvent::CURRENT_SCHEMA_VERSION),
    };
    types.contains(&event_type).then_some(version)
}

/// Path of a type's JSON Schema relative to the repository root (the
/// envelope's `dataschema`): `schemas/events/<streamtype>/<Type>.v<N>.json`.
pub fn schema_path(stream_type: StreamType, event_type: &str, version: u32) -> String {
    format!(
        "schemas/events/{}/{event_type}.v{version}.json",
        stream_type.as_str()
    )
}

/// Implements [`DomainEvent`] for an internally tagged event enum, given its
/// stream type and its variants in order. Each variant's name is its event
/// type, the same name serde writes as the `type` tag, so the two cannot
/// disagree. Items in an optional trailing block (`unique_claims`) go into
/// the impl as written.
macro_rules! tagged_domain_event {
    (
        $event:ty,
        $stream_type:expr,
        [$($variant:ident),+ $(,)?]
        $(, { $($item:tt)* })? $(,)?
    ) => {
        impl $crate::event::DomainEvent for $event {
            const STREAM_TYPE: $crate::ids::StreamType = $stream_type;
            const TYPES: &'static [&'static str] = &[$(stringify!($variant)),+];

            fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$variant { .. } => stringify!($variant),)+
                }
            }

            fn to_data(&self) -> ::serde_json::Value {
                $crate::event::data_without_tag(self)
            }

            fn from_stored(
                event_type: &str,
                schema_version: u32,
                data: ::serde_json::Value,
            ) -> Result<Self, $crate::event::DecodeError> {
                $crate::event::decode_tagged(event_type, schema_version, data)
            }

            $($($item)*)?
        }
    };
}
pub(crate) use tagged_domain_event;

/// `to_data` for the internally tagged event enums: the serialised event
/// minus its `type` tag.
pub(crate) fn data_without_tag<E: Serialize>(event: &E) -> Value {
    match serde_json::to_value(event) {
        Ok(Value::Object(mut fields)) => {
            fields.remove("type");
            Value::Object(fields)
        }
        // Unreachable for our enums: every variant is a struct or unit variant
        // of serialisable fields, which serde_json turns into an object. A
        // `null` would fail schema validation in tests, not pass silently.
        Ok(_) | Err(_) => Value::Null,
    }
}

/// `from_stored` for the internally tagged event enums: check the type,
/// upcast the payload to the current version, restore the tag, deserialise.
pub(crate) fn decode_tagged<E: DomainEvent + DeserializeOwned>(
    event_type: &str,
    schema_version: u32,
    data: Value,
) -> Result<E, DecodeError> {
    let Some(&known) = E::TYPES.iter().find(|t| **t == event_type) else {
        return Err(DecodeError::UnknownType {
            stream_type: E::STREAM_TYPE,
            event_type: event_type.to_owned(),
        });
    };
    let data = upcast::upcast(
        E::STREAM_TYPE,
        known,
        schema_version,
        E::CURRENT_SCHEMA_VERSION,
        data,
    )?;
    let mut fields = match data {
        Value::Object(fields) => fields,
        // Field-less events may have been stored with `null` data.
        Value::Null => Map::new(),
        other => {
            return Err(DecodeError::Invalid {
                event_type: known.to_owned(),
                message: format!("data must be a JSON object, got {other}"),
            })
        }
    };
    fields.insert("type".to_owned(), Value::String(known.to_owned()));
    serde_json::from_value(Value::Object(fields)).map_err(|e| DecodeError::Invalid {
        event_type: known.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn every_type_is_listed_once() {
        let all = all_event_types();
        assert_eq!(all.len(), 3 + 7 + 7);
        let mut names: Vec<_> = all.iter().map(|(_, t)| *t).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
    }

    #[test]
    fn unknown_types_and_versions_are_refused() {
        assert_eq!(
            AnyEvent::from_stored(StreamType::User, "OrderPlaced", 1, json!({})),
            Err(DecodeError::UnknownType {
                stream_type: StreamType::User,
                event_type: "OrderPlaced".into()
            })
        );
        assert_eq!(
            AnyEvent::from_stored(StreamType::User, "UserDeactivated", 2, json!({})),
            Err(DecodeError::UnsupportedVersion {
                event_type: "UserDeactivated".into(),
                version: 2,
                current: 1
            })
        );
        assert_eq!(
            AnyEvent::from_stored(StreamType::User, "UserDeactivated", 0, json!({})),
            Err(DecodeError::UnsupportedVersion {
                event_type: "UserDeactivated".into(),
                version: 0,
                current: 1
            })
        );
    }

    #[test]
    fn field_less_events_accept_empty_or_null_data() {
        for data in [json!({}), Value::Null] {
            assert_eq!(
                AnyEvent::from_stored(StreamType::User, "UserDeactivated", 1, data).unwrap(),
                AnyEvent::User(UserEvent::UserDeactivated)
            );
        }
        assert_eq!(UserEvent::UserDeactivated.to_data(), json!({}));
    }

    #[test]
    fn invalid_payloads_are_reported_not_panicked_on() {
        let err = AnyEvent::from_stored(StreamType::User, "UserRenamed", 1, json!({"name": ""}))
            .unwrap_err();
        assert!(matches!(err, DecodeError::Invalid { .. }), "{err:?}");
        let err =
            AnyEvent::from_stored(StreamType::User, "UserRenamed", 1, json!([1])).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid { .. }), "{err:?}");
    }

    #[test]
    fn dataschema_names_the_schema_file() {
        assert_eq!(
            AnyEvent::User(UserEvent::UserDeactivated).dataschema(),
            "schemas/events/user/UserDeactivated.v1.json"
        );
        assert_eq!(
            current_schema_version(StreamType::Order, "OrderPlaced"),
            Some(1)
        );
        assert_eq!(current_schema_version(StreamType::Order, "Nope"), None);
    }
}
