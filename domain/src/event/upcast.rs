//! Upcasting: reading payloads written at an older schema version.
//!
//! Events are immutable, so when a payload's shape changes the old events stay
//! as they were stored. Instead of migrating the log, each incompatible change
//! registers a function that turns a payload of version `n` into version
//! `n + 1`; [`upcast`] chains them until the current version. Upcasters work
//! on JSON rather than on Rust types so that old shapes need no Rust type of
//! their own, and each has a schema file (`<Type>.v<n>.json`) documenting the
//! shape it reads.
//!
//! The one real example: `OrderPlaced` v0 had no `total`; v1 carries it,
//! because an event carries what its readers need rather than leaving each of
//! them to recompute it. The upcaster computes it from the lines with exact
//! decimals.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::DecodeError;
use crate::ids::StreamType;
use crate::values::{Money, Quantity};

/// Turns a payload of one version into the next version's shape.
pub type UpcastFn = fn(Value) -> Result<Value, DecodeError>;

/// One registered step: `(stream type, event type, from_version)` → `from_version + 1`.
#[derive(Debug, Clone, Copy)]
pub struct Upcaster {
    /// The stream type of the event.
    pub stream_type: StreamType,
    /// The event type the step applies to.
    pub event_type: &'static str,
    /// The version the step reads; it writes `from_version + 1`.
    pub from_version: u32,
    /// The conversion.
    pub upcast: UpcastFn,
}

/// Every upcasting step, in no particular order.
pub const UPCASTERS: &[Upcaster] = &[Upcaster {
    stream_type: StreamType::Order,
    event_type: "OrderPlaced",
    from_version: 0,
    upcast: order_placed_v0_to_v1,
}];

/// Brings `data` from `version` to `current` by chaining registered steps.
///
/// Fails with `UnsupportedVersion` for a payload newer than this build (it
/// must not be guessed at) or an old version with a missing step.
pub fn upcast(
    stream_type: StreamType,
    event_type: &str,
    version: u32,
    current: u32,
    mut data: Value,
) -> Result<Value, DecodeError> {
    let unsupported = || DecodeError::UnsupportedVersion {
        event_type: event_type.to_owned(),
        version,
        current,
    };
    if version > current {
        return Err(unsupported());
    }
    for from in version..current {
        let step = UPCASTERS
            .iter()
            .find(|u| {
                u.stream_type == stream_type && u.event_type == event_type && u.from_version == from
            })
            .ok_or_else(unsupported)?;
        data = (step.upcast)(data)?;
    }
    Ok(data)
}

/// `OrderPlaced` v0 → v1: add `total`, the exact sum of `quantity × unit_price`.
fn order_placed_v0_to_v1(data: Value) -> Result<Value, DecodeError> {
    let invalid = |message: String| DecodeError::Invalid {
        event_type: "OrderPlaced".to_owned(),
        message: format!("schema version 0: {message}"),
    };
    let Value::Object(mut fields) = data else {
        return Err(invalid("data must be a JSON object".to_owned()));
    };
    let lines = fields
        .get("lines")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("`lines` must be an array".to_owned()))?;
    let mut total = Money::ZERO;
    for (i, line) in lines.iter().enumerate() {
        let quantity: Quantity = line_field(line, i, "quantity").map_err(invalid)?;
        let unit_price: Money = line_field(line, i, "unit_price").map_err(invalid)?;
        total = unit_price
            .checked_mul(quantity)
            .and_then(|line_total| total.checked_add(line_total))
            .map_err(|e| invalid(format!("line {i}: {e}")))?;
    }
    fields.insert("total".to_owned(), Value::String(total.to_string()));
    Ok(Value::Object(fields))
}

/// Field `name` of line `i` of a payload, or what is wrong with it.
fn line_field<T: DeserializeOwned>(line: &Value, i: usize, name: &str) -> Result<T, String> {
    let value = line
        .get(name)
        .cloned()
        .ok_or_else(|| format!("line {i} has no {name}"))?;
    serde_json::from_value(value).map_err(|e| format!("line {i}: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::event::{AnyEvent, DomainEvent};
    use crate::ids::{OrderId, ProductId, UserId};
    use crate::order::{OrderEvent, OrderLine};
    use serde_json::json;
    use std::str::FromStr;

    const ORDER: &str = "0192a8c4-7e1f-7000-8000-0000000000a1";
    const USER: &str = "0192a8c4-7e1f-7000-8000-0000000000b1";
    const P1: &str = "0192a8c4-7e1f-7000-8000-0000000000c1";
    const P2: &str = "0192a8c4-7e1f-7000-8000-0000000000c2";

    fn v0_payload() -> Value {
        json!({
            "order_id": ORDER,
            "user_id": USER,
            "lines": [
                {"product_id": P1, "quantity": 3, "unit_price": "0.10"},
                {"product_id": P2, "quantity": 1, "unit_price": "19.99"}
            ]
        })
    }

    #[test]
    fn order_placed_v0_is_upcast_with_its_computed_total() {
        let event = OrderEvent::from_stored("OrderPlaced", 0, v0_payload()).unwrap();
        let expected = OrderEvent::OrderPlaced {
            order_id: OrderId::from_str(ORDER).unwrap(),
            user_id: UserId::from_str(USER).unwrap(),
            lines: vec![
                OrderLine {
                    product_id: ProductId::from_str(P1).unwrap(),
                    quantity: Quantity::new(3).unwrap(),
                    unit_price: Money::parse("0.10").unwrap(),
                },
                OrderLine {
                    product_id: ProductId::from_str(P2).unwrap(),
                    quantity: Quantity::new(1).unwrap(),
                    unit_price: Money::parse("19.99").unwrap(),
                },
            ],
            // 0.1 × 3 + 19.99, exactly: no float would give 20.29 here reliably.
            total: Money::parse("20.29").unwrap(),
        };
        assert_eq!(event, expected);
        // Once read, it is written back at the current version, total included.
        assert_eq!(event.schema_version(), 1);
        assert_eq!(event.to_data()["total"], json!("20.29"));
    }

    #[test]
    fn any_event_upcasts_too() {
        let event =
            AnyEvent::from_stored(StreamType::Order, "OrderPlaced", 0, v0_payload()).unwrap();
        assert_eq!(event.event_type(), "OrderPlaced");
    }

    #[test]
    fn a_broken_v0_payload_is_an_error() {
        let mut bad = v0_payload();
        bad["lines"][1]["unit_price"] = json!("-1");
        let err = OrderEvent::from_stored("OrderPlaced", 0, bad).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid { .. }), "{err}");
        let err = OrderEvent::from_stored("OrderPlaced", 0, json!({"lines": 1})).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid { .. }), "{err}");
    }

    #[test]
    fn versions_newer_than_this_build_are_refused() {
        assert_eq!(
            upcast(StreamType::Order, "OrderPlaced", 2, 1, v0_payload()),
            Err(DecodeError::UnsupportedVersion {
                event_type: "OrderPlaced".into(),
                version: 2,
                current: 1
            })
        );
    }
}
