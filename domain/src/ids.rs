//! Typed identifiers and stream ids.
//!
//! Every aggregate is keyed by a UUID, but a bare `Uuid` lets a product id be
//! passed where an order id is expected. One newtype per aggregate makes that a
//! compile error; they serialise as the plain UUID string, the form every id
//! takes in events and HTTP answers (`docs/reference/events.md#stream-ids`).
//!
//! Stream ids (`user-<uuid>`, `product-<uuid>`, `order-<uuid>`) name an
//! aggregate's stream in the event store and in the HTTP API.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a string could not be read as an id or stream id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The text is not a UUID.
    #[error("`{0}` is not a UUID")]
    InvalidUuid(String),
    /// The text is not of the form `<streamtype>-<uuid>`.
    #[error("`{0}` is not a stream id; expected user-<uuid>, product-<uuid> or order-<uuid>")]
    InvalidStreamId(String),
    /// The stream type is not one of `user`, `product`, `order`.
    #[error("unknown stream type `{0}`; expected user, product or order")]
    UnknownStreamType(String),
    /// A stream id of another stream type was given where this one was expected.
    #[error("expected a {expected} stream id, got `{got}`")]
    WrongStreamType {
        /// The stream type the caller asked for.
        expected: StreamType,
        /// The stream id that was given.
        got: String,
    },
}

/// The kind of aggregate a stream belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamType {
    /// A user's stream: `user-<uuid>`.
    User,
    /// A product's stream: `product-<uuid>`.
    Product,
    /// An order's stream: `order-<uuid>`.
    Order,
}

impl StreamType {
    /// Every stream type, in a stable order.
    pub const ALL: [StreamType; 3] = [StreamType::User, StreamType::Product, StreamType::Order];

    /// The lowercase name used in stream ids, NATS subjects, schema paths and
    /// the envelope's `streamtype`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamType::User => "user",
            StreamType::Product => "product",
            StreamType::Order => "order",
        }
    }

    /// The stream id of the aggregate `id` of this type.
    pub fn stream_id(self, id: Uuid) -> String {
        format!("{}-{}", self.as_str(), id.hyphenated())
    }
}

impl fmt::Display for StreamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StreamType {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(StreamType::User),
            "product" => Ok(StreamType::Product),
            "order" => Ok(StreamType::Order),
            other => Err(IdError::UnknownStreamType(other.to_owned())),
        }
    }
}

/// Splits a stream id such as `order-0192…` into its type and UUID.
///
/// Only the canonical form is accepted (lowercase, hyphenated UUID), because
/// stream ids are keys in the event store: two spellings of one stream would be
/// two streams.
pub fn parse_stream_id(s: &str) -> Result<(StreamType, Uuid), IdError> {
    let invalid = || IdError::InvalidStreamId(s.to_owned());
    let (prefix, rest) = s.split_once('-').ok_or_else(invalid)?;
    let stream_type = StreamType::from_str(prefix)?;
    let uuid = Uuid::try_parse(rest).map_err(|_| invalid())?;
    if uuid.hyphenated().to_string() != rest {
        return Err(invalid());
    }
    Ok((stream_type, uuid))
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $stream_type:expr) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// The stream type this id's aggregate lives in.
            pub const STREAM_TYPE: StreamType = $stream_type;

            /// Wraps a UUID chosen by the caller (ids come in on commands; the
            /// domain never generates them).
            pub const fn new(id: Uuid) -> Self {
                Self(id)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// The id of this aggregate's stream, e.g. `order-<uuid>`.
            pub fn stream_id(&self) -> String {
                Self::STREAM_TYPE.stream_id(self.0)
            }

            /// Reads a stream id of this aggregate's type back into the id.
            pub fn from_stream_id(s: &str) -> Result<Self, IdError> {
                match parse_stream_id(s)? {
                    (t, id) if t == Self::STREAM_TYPE => Ok(Self(id)),
                    _ => Err(IdError::WrongStreamType {
                        expected: Self::STREAM_TYPE,
                        got: s.to_owned(),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::try_parse(s.trim())
                    .map(Self)
                    .map_err(|_| IdError::InvalidUuid(s.to_owned()))
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    };
}

typed_id!(
    /// Identifies a user (stream `user-<uuid>`).
    UserId,
    StreamType::User
);
typed_id!(
    /// Identifies a product (stream `product-<uuid>`).
    ProductId,
    StreamType::Product
);
typed_id!(
    /// Identifies an order (stream `order-<uuid>`); also the saga's key.
    OrderId,
    StreamType::Order
);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const U: &str = "0192a8c4-7e1f-7000-8000-000000000001";

    #[test]
    fn stream_ids_round_trip() {
        let id = OrderId::from_str(U).unwrap();
        assert_eq!(id.stream_id(), format!("order-{U}"));
        assert_eq!(
            parse_stream_id(&id.stream_id()).unwrap(),
            (StreamType::Order, id.as_uuid())
        );
        assert_eq!(OrderId::from_stream_id(&id.stream_id()).unwrap(), id);
        assert_eq!(
            ProductId::from_stream_id(&id.stream_id()),
            Err(IdError::WrongStreamType {
                expected: StreamType::Product,
                got: id.stream_id()
            })
        );
    }

    #[test]
    fn bad_stream_ids_are_refused() {
        for bad in [
            "",
            "order",
            "order-",
            "order-nope",
            &format!("order-{}", U.to_uppercase()),
            &format!("order-{}", U.replace('-', "")),
        ] {
            assert!(
                matches!(parse_stream_id(bad), Err(IdError::InvalidStreamId(_))),
                "{bad}"
            );
        }
        assert_eq!(
            parse_stream_id(&format!("cart-{U}")),
            Err(IdError::UnknownStreamType("cart".into()))
        );
    }

    #[test]
    fn ids_serialise_as_plain_uuid_strings() {
        let id = UserId::from_str(U).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{U}\""));
        assert_eq!(id.to_string(), U);
        assert_eq!(UserId::from_str("x"), Err(IdError::InvalidUuid("x".into())));
    }

    #[test]
    fn stream_types_read_and_write_lowercase() {
        for t in StreamType::ALL {
            assert_eq!(StreamType::from_str(t.as_str()).unwrap(), t);
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::Value::String(t.as_str().into())
            );
        }
    }
}
