//! From a NATS message to what the saga of one order should be told.
//!
//! Every message body is a CloudEvents envelope
//! (`docs/reference/events.md#the-envelope`). The saga needs order events
//! (correlated by the stream id, `order-<uuid>`) and the stock events of
//! products (correlated by the `order_id` in their data); everything else
//! only moves the checkpoint.
//!
//! Nothing here may panic on what arrives: a body that is not an ordo
//! envelope is [`Classified::Malformed`] (logged, counted, skipped); an
//! envelope of a type the saga needs whose data cannot be decoded is
//! [`Classified::Unreadable`], which parks that order's saga and nothing else.

use chrono::{DateTime, Utc};
use domain::event::DecodeError;
use domain::fulfilment::SagaInput;
use domain::ids::{OrderId, ProductId, StreamType};
use domain::order::OrderEvent;
use domain::product::ProductEvent;
use domain::AnyEvent;
use eventstore::Position;
use serde::Deserialize;
use uuid::Uuid;

/// The envelope fields the saga reads. Lenient on purpose: fields it does
/// not need (or that later versions add) are not required.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Incoming {
    /// The event id, which is also the message's `Nats-Msg-Id`.
    pub id: Uuid,
    /// `OrderPlaced`, `StockReserved`, ...
    #[serde(rename = "type")]
    pub event_type: String,
    /// The stream id, `order-<uuid>`.
    pub subject: String,
    /// `user`, `product`, `order`.
    pub streamtype: String,
    /// Version of `data`'s layout.
    pub schemaversion: i32,
    /// The payload.
    #[serde(default)]
    pub data: serde_json::Value,
    /// Where the event is in the log.
    pub position: Position,
    /// The order's correlation id (or the request's).
    #[serde(default)]
    pub correlationid: Option<Uuid>,
    /// When the event was recorded; for the lag metric.
    #[serde(default)]
    pub time: Option<DateTime<Utc>>,
}

/// What one message means for the sagas.
#[derive(Debug, Clone)]
pub(crate) enum Classified {
    /// Not an ordo envelope at all.
    Malformed(String),
    /// An envelope no saga reacts to (user events, catalogue changes, types
    /// this build does not know).
    Irrelevant(Incoming),
    /// An input for one order's saga.
    Input {
        /// The envelope.
        incoming: Incoming,
        /// The saga.
        order_id: OrderId,
        /// What to tell it.
        input: SagaInput,
    },
    /// An envelope for one order's saga that this build cannot decode.
    Unreadable {
        /// The envelope.
        incoming: Incoming,
        /// The saga.
        order_id: OrderId,
        /// Why.
        reason: String,
    },
}

/// Event types some saga reacts to.
const ORDER_TYPES: &[&str] = &[
    "OrderPlaced",
    "OrderConfirmed",
    "OrderRejected",
    "OrderPaid",
    "OrderCancelled",
    "OrderShipped",
];
const STOCK_TYPES: &[&str] = &["StockReserved", "StockReleased", "StockShipped"];

/// Reads one message body.
pub(crate) fn classify(payload: &[u8]) -> Classified {
    let incoming: Incoming = match serde_json::from_slice(payload) {
        Ok(incoming) => incoming,
        Err(e) => return Classified::Malformed(format!("not an ordo envelope: {e}")),
    };
    let relevant = match incoming.streamtype.as_str() {
        "order" => ORDER_TYPES.contains(&incoming.event_type.as_str()),
        "product" => STOCK_TYPES.contains(&incoming.event_type.as_str()),
        _ => false,
    };
    if !relevant {
        return Classified::Irrelevant(incoming);
    }
    let stream_type = if incoming.streamtype == "order" {
        StreamType::Order
    } else {
        StreamType::Product
    };
    let decoded = AnyEvent::from_stored(
        stream_type,
        &incoming.event_type,
        u32::try_from(incoming.schemaversion).unwrap_or(u32::MAX),
        incoming.data.clone(),
    );
    match stream_type {
        StreamType::Order => order_input(incoming, decoded),
        _ => stock_input(incoming, decoded),
    }
}

fn order_input(incoming: Incoming, decoded: Result<AnyEvent, DecodeError>) -> Classified {
    let order_id = match OrderId::from_stream_id(&incoming.subject) {
        Ok(id) => id,
        Err(e) => return Classified::Malformed(format!("order event with subject: {e}")),
    };
    let event = match decoded {
        Ok(AnyEvent::Order(event)) => event,
        Ok(_) => return Classified::Irrelevant(incoming),
        Err(e) => {
            return Classified::Unreadable {
                incoming,
                order_id,
                reason: e.to_string(),
            }
        }
    };
    let input = match event {
        OrderEvent::OrderPlaced {
            order_id: placed,
            lines,
            ..
        } => {
            if placed != order_id {
                return Classified::Unreadable {
                    reason: format!(
                        "OrderPlaced in stream {} names order {placed}",
                        incoming.subject
                    ),
                    incoming,
                    order_id,
                };
            }
            SagaInput::OrderPlaced {
                order_id,
                lines: lines
                    .into_iter()
                    .map(|l| (l.product_id, l.quantity))
                    .collect(),
            }
        }
        OrderEvent::OrderConfirmed => SagaInput::OrderConfirmed,
        OrderEvent::OrderRejected { .. } => SagaInput::OrderRejected,
        OrderEvent::OrderPaid { .. } => SagaInput::OrderPaid,
        OrderEvent::OrderCancelled { reason } => SagaInput::OrderCancelled { reason },
        OrderEvent::OrderShipped => SagaInput::OrderShipped,
        OrderEvent::OrderDelivered => return Classified::Irrelevant(incoming),
    };
    Classified::Input {
        incoming,
        order_id,
        input,
    }
}

fn stock_input(incoming: Incoming, decoded: Result<AnyEvent, DecodeError>) -> Classified {
    let product_id = match ProductId::from_stream_id(&incoming.subject) {
        Ok(id) => id,
        Err(e) => return Classified::Malformed(format!("product event with subject: {e}")),
    };
    let (order_id, input) = match decoded {
        Ok(AnyEvent::Product(ProductEvent::StockReserved { order_id, .. })) => {
            (order_id, SagaInput::StockReserved { product_id })
        }
        Ok(AnyEvent::Product(ProductEvent::StockReleased { order_id, .. })) => {
            (order_id, SagaInput::StockReleased { product_id })
        }
        Ok(AnyEvent::Product(ProductEvent::StockShipped { order_id, .. })) => {
            (order_id, SagaInput::StockShipped { product_id })
        }
        Ok(_) => return Classified::Irrelevant(incoming),
        Err(e) => {
            // The saga is named inside the data; if even that is unreadable
            // there is no saga to park.
            let order_id = incoming
                .data
                .get("order_id")
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse::<OrderId>().ok());
            return match order_id {
                Some(order_id) => Classified::Unreadable {
                    incoming,
                    order_id,
                    reason: e.to_string(),
                },
                None => Classified::Malformed(format!(
                    "{} {} names no order: {e}",
                    incoming.event_type, incoming.id
                )),
            };
        }
    };
    Classified::Input {
        incoming,
        order_id,
        input,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn envelope(
        streamtype: &str,
        subject: &str,
        event_type: &str,
        data: serde_json::Value,
    ) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "specversion": "1.0",
            "id": Uuid::new_v4(),
            "source": format!("/ordo/{streamtype}"),
            "type": event_type,
            "subject": subject,
            "time": "2026-11-23T10:00:00.123456Z",
            "datacontenttype": "application/json",
            "dataschema": "x",
            "data": data,
            "streamtype": streamtype,
            "streamversion": 1,
            "position": "12.34",
            "schemaversion": 1,
        }))
        .unwrap()
    }

    #[test]
    fn order_placed_starts_a_saga_with_its_lines() {
        let order = Uuid::new_v4();
        let product = Uuid::new_v4();
        let body = envelope(
            "order",
            &format!("order-{order}"),
            "OrderPlaced",
            json!({
                "order_id": order, "user_id": Uuid::new_v4(),
                "lines": [{"product_id": product, "quantity": 2, "unit_price": "1.50"}],
                "total": "3.00"
            }),
        );
        match classify(&body) {
            Classified::Input {
                order_id, input, ..
            } => {
                assert_eq!(order_id, OrderId::new(order));
                let SagaInput::OrderPlaced { lines, .. } = input else {
                    panic!("{input:?}")
                };
                assert_eq!(lines[0].0, ProductId::new(product));
                assert_eq!(lines[0].1.get(), 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stock_events_are_correlated_by_the_order_in_their_data() {
        let order = Uuid::new_v4();
        let product = Uuid::new_v4();
        let body = envelope(
            "product",
            &format!("product-{product}"),
            "StockReserved",
            json!({"order_id": order, "quantity": 1}),
        );
        match classify(&body) {
            Classified::Input {
                order_id, input, ..
            } => {
                assert_eq!(order_id, OrderId::new(order));
                assert_eq!(
                    input,
                    SagaInput::StockReserved {
                        product_id: ProductId::new(product)
                    }
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_malformed_and_other_events_irrelevant() {
        assert!(matches!(classify(b"{nope"), Classified::Malformed(_)));
        assert!(matches!(classify(b"[1,2]"), Classified::Malformed(_)));
        let user = Uuid::new_v4();
        let body = envelope(
            "user",
            &format!("user-{user}"),
            "UserRenamed",
            json!({"name": "x"}),
        );
        assert!(matches!(classify(&body), Classified::Irrelevant(_)));
        let body = envelope(
            "order",
            &format!("order-{user}"),
            "OrderTeleported",
            json!({}),
        );
        assert!(matches!(classify(&body), Classified::Irrelevant(_)));
        let body = envelope("order", "order-nope", "OrderPaid", json!({"amount": "1"}));
        assert!(matches!(classify(&body), Classified::Malformed(_)));
    }

    #[test]
    fn an_undecodable_order_event_parks_its_saga_only() {
        let order = Uuid::new_v4();
        let body = envelope(
            "order",
            &format!("order-{order}"),
            "OrderPlaced",
            json!({"lines": 7}),
        );
        match classify(&body) {
            Classified::Unreadable { order_id, .. } => assert_eq!(order_id, OrderId::new(order)),
            other => panic!("{other:?}"),
        }
        let body = envelope(
            "product",
            &format!("product-{}", Uuid::new_v4()),
            "StockReleased",
            json!({"order_id": order, "quantity": "many"}),
        );
        assert!(matches!(classify(&body), Classified::Unreadable { .. }));
        let body = envelope(
            "product",
            &format!("product-{}", Uuid::new_v4()),
            "StockReleased",
            json!({"quantity": 1}),
        );
        assert!(matches!(classify(&body), Classified::Malformed(_)));
    }
}
