//! Shared test data: hand-written example events and proptest strategies for
//! values, events and commands. Used by `schemas.rs` and `properties.rs`.
#![allow(clippy::unwrap_used, dead_code)]

use domain::event::AnyEvent;
use domain::ids::{OrderId, ProductId, UserId};
use domain::order::{order_total, OrderEvent, OrderLine, RejectDetails, RejectReason};
use domain::product::ProductEvent;
use domain::user::UserEvent;
use domain::values::{CancelReason, Email, Money, Name, Quantity, Sku};
use proptest::prelude::*;
use rust_decimal::Decimal;
use uuid::Uuid;

pub fn uid(n: u128) -> UserId {
    UserId::new(Uuid::from_u128(
        0x0192_0000_0000_7000_8000_0000_0000_0000 + n,
    ))
}
pub fn pid(n: u128) -> ProductId {
    ProductId::new(Uuid::from_u128(
        0x0192_0000_0000_7000_8000_0000_0001_0000 + n,
    ))
}
pub fn oid(n: u128) -> OrderId {
    OrderId::new(Uuid::from_u128(
        0x0192_0000_0000_7000_8000_0000_0002_0000 + n,
    ))
}
pub fn money(s: &str) -> Money {
    Money::parse(s).unwrap()
}
pub fn q(n: u32) -> Quantity {
    Quantity::new(n).unwrap()
}

/// At least one example of every event type, covering optional fields both
/// present and absent.
pub fn examples() -> Vec<AnyEvent> {
    let lines = vec![
        OrderLine {
            product_id: pid(1),
            quantity: q(3),
            unit_price: money("0.10"),
        },
        OrderLine {
            product_id: pid(2),
            quantity: q(1),
            unit_price: money("19.99"),
        },
    ];
    vec![
        UserEvent::UserRegistered {
            user_id: uid(1),
            email: Email::parse("Alice@Example.com").unwrap(),
            name: Name::parse("Alice Liddell").unwrap(),
        }
        .into(),
        UserEvent::UserRenamed {
            name: Name::parse("Ålice ✓").unwrap(),
        }
        .into(),
        UserEvent::UserDeactivated.into(),
        ProductEvent::ProductCreated {
            product_id: pid(1),
            sku: Sku::parse("wid-get_1.0").unwrap(),
            name: Name::parse("Widget").unwrap(),
            price: money("9.99"),
            stock: 0,
        }
        .into(),
        ProductEvent::ProductRestocked {
            quantity: q(1_000_000),
        }
        .into(),
        ProductEvent::ProductPriceChanged { price: money("0") }.into(),
        ProductEvent::ProductPriceChanged {
            price: money("1234567.8901"),
        }
        .into(),
        ProductEvent::ProductDiscontinued.into(),
        ProductEvent::StockReserved {
            order_id: oid(1),
            quantity: q(2),
        }
        .into(),
        ProductEvent::StockReleased {
            order_id: oid(1),
            quantity: q(2),
        }
        .into(),
        ProductEvent::StockShipped {
            order_id: oid(1),
            quantity: q(2),
        }
        .into(),
        OrderEvent::OrderPlaced {
            order_id: oid(1),
            user_id: uid(1),
            total: order_total(&lines).unwrap(),
            lines,
        }
        .into(),
        OrderEvent::OrderConfirmed.into(),
        OrderEvent::OrderRejected {
            reason: RejectReason::InsufficientStock,
            details: RejectDetails {
                product_id: Some(pid(1)),
                requested: Some(3),
                available: Some(1),
            },
        }
        .into(),
        OrderEvent::OrderRejected {
            reason: RejectReason::ProductDiscontinued,
            details: RejectDetails {
                product_id: Some(pid(2)),
                requested: None,
                available: None,
            },
        }
        .into(),
        OrderEvent::OrderPaid {
            amount: money("20.29"),
        }
        .into(),
        OrderEvent::OrderShipped.into(),
        OrderEvent::OrderDelivered.into(),
        OrderEvent::OrderCancelled {
            reason: CancelReason::customer_request(),
        }
        .into(),
        OrderEvent::OrderCancelled {
            reason: CancelReason::payment_timeout(),
        }
        .into(),
    ]
}

// Value strategies.

pub fn any_uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

pub fn any_money() -> impl Strategy<Value = Money> {
    prop_oneof![
        (0i64..10_000, 0u32..=4),
        (0i64..1_000_000_000_000_000, 0u32..=4),
    ]
    .prop_map(|(mantissa, scale)| Money::new(Decimal::new(mantissa, scale)).unwrap())
}

pub fn any_quantity() -> impl Strategy<Value = Quantity> {
    prop_oneof![1u32..=20, 1u32..=Quantity::MAX].prop_map(|n| Quantity::new(n).unwrap())
}

pub fn any_name() -> impl Strategy<Value = Name> {
    "[^\\p{Cc}]{1,60}".prop_filter_map("blank name", |s| Name::parse(&s).ok())
}

pub fn any_email() -> impl Strategy<Value = Email> {
    "[A-Za-z0-9._%+-]{1,20}@[A-Za-z0-9-]{1,15}(\\.[A-Za-z]{2,6}){1,2}"
        .prop_map(|s| Email::parse(&s).unwrap())
}

pub fn any_sku() -> impl Strategy<Value = Sku> {
    "[A-Za-z0-9._-]{1,64}".prop_map(|s| Sku::parse(&s).unwrap())
}

pub fn any_cancel_reason() -> impl Strategy<Value = CancelReason> {
    prop_oneof![
        Just(CancelReason::customer_request()),
        Just(CancelReason::payment_timeout()),
        "[^\\p{Cc}]{1,100}".prop_filter_map("blank reason", |s| CancelReason::parse(&s).ok()),
    ]
}

pub fn any_reject_reason() -> impl Strategy<Value = RejectReason> {
    prop_oneof![
        Just(RejectReason::InsufficientStock),
        Just(RejectReason::ProductDiscontinued)
    ]
}

pub fn any_lines(max: usize) -> impl Strategy<Value = Vec<OrderLine>> {
    prop::collection::vec((any_uuid(), any_quantity(), any_money()), 1..=max).prop_map(|lines| {
        lines
            .into_iter()
            .map(|(p, quantity, unit_price)| OrderLine {
                product_id: ProductId::new(p),
                quantity,
                unit_price,
            })
            .collect()
    })
}

// Event strategies.

pub fn any_user_event() -> impl Strategy<Value = UserEvent> {
    prop_oneof![
        (any_uuid(), any_email(), any_name()).prop_map(|(u, email, name)| {
            UserEvent::UserRegistered {
                user_id: UserId::new(u),
                email,
                name,
            }
        }),
        any_name().prop_map(|name| UserEvent::UserRenamed { name }),
        Just(UserEvent::UserDeactivated),
    ]
}

pub fn any_product_event() -> impl Strategy<Value = ProductEvent> {
    prop_oneof![
        (any_uuid(), any_sku(), any_name(), any_money(), any::<u32>()).prop_map(
            |(p, sku, name, price, stock)| ProductEvent::ProductCreated {
                product_id: ProductId::new(p),
                sku,
                name,
                price,
                stock
            }
        ),
        any_quantity().prop_map(|quantity| ProductEvent::ProductRestocked { quantity }),
        any_money().prop_map(|price| ProductEvent::ProductPriceChanged { price }),
        Just(ProductEvent::ProductDiscontinued),
        (any_uuid(), any_quantity()).prop_map(|(o, quantity)| ProductEvent::StockReserved {
            order_id: OrderId::new(o),
            quantity
        }),
        (any_uuid(), any_quantity()).prop_map(|(o, quantity)| ProductEvent::StockReleased {
            order_id: OrderId::new(o),
            quantity
        }),
        (any_uuid(), any_quantity()).prop_map(|(o, quantity)| ProductEvent::StockShipped {
            order_id: OrderId::new(o),
            quantity
        }),
    ]
}

pub fn any_order_event() -> impl Strategy<Value = OrderEvent> {
    prop_oneof![
        (any_uuid(), any_uuid(), any_lines(100)).prop_map(|(o, u, lines)| {
            OrderEvent::OrderPlaced {
                order_id: OrderId::new(o),
                user_id: UserId::new(u),
                total: order_total(&lines).unwrap(),
                lines,
            }
        }),
        Just(OrderEvent::OrderConfirmed),
        (
            any_reject_reason(),
            proptest::option::of(any_uuid()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>())
        )
            .prop_map(
                |(reason, p, requested, available)| OrderEvent::OrderRejected {
                    reason,
                    details: RejectDetails {
                        product_id: p.map(ProductId::new),
                        requested,
                        available
                    },
                }
            ),
        any_money().prop_map(|amount| OrderEvent::OrderPaid { amount }),
        Just(OrderEvent::OrderShipped),
        Just(OrderEvent::OrderDelivered),
        any_cancel_reason().prop_map(|reason| OrderEvent::OrderCancelled { reason }),
    ]
}

pub fn any_event() -> impl Strategy<Value = AnyEvent> {
    prop_oneof![
        any_user_event().prop_map(AnyEvent::User),
        any_product_event().prop_map(AnyEvent::Product),
        any_order_event().prop_map(AnyEvent::Order),
    ]
}
