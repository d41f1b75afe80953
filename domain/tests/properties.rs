//! Property tests: invariants that must hold for any sequence of commands.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use domain::aggregate::Aggregate;
use domain::event::AnyEvent;
use domain::ids::{OrderId, UserId};
use domain::order::{Order, OrderCommand, OrderError, OrderStatus, RejectDetails, RejectReason};
use domain::product::{Product, ProductCommand, ProductEvent, ProductState};
use domain::user::{User, UserCommand};
use domain::values::{CancelReason, Money, Name, Quantity, Sku};
use proptest::prelude::*;

fn small_quantity() -> impl Strategy<Value = Quantity> {
    (1u32..=30).prop_map(|n| Quantity::new(n).unwrap())
}

/// Product commands over one product and a pool of four orders, so that
/// reservations collide, repeat, and get released and shipped.
fn product_command() -> impl Strategy<Value = ProductCommand> {
    let order = (0u128..4).prop_map(common::oid);
    prop_oneof![
        1 => (0u32..50).prop_map(|stock| ProductCommand::Create {
            product_id: common::pid(1),
            sku: Sku::parse("SKU-1").unwrap(),
            name: Name::parse("Widget").unwrap(),
            price: Money::parse("1.00").unwrap(),
            stock,
        }),
        2 => small_quantity().prop_map(|quantity| ProductCommand::Restock { quantity }),
        1 => common::any_money().prop_map(|price| ProductCommand::ChangePrice { price }),
        1 => Just(ProductCommand::Discontinue),
        6 => (order.clone(), small_quantity())
            .prop_map(|(order_id, quantity)| ProductCommand::ReserveStock { order_id, quantity }),
        3 => order.clone().prop_map(|order_id| ProductCommand::ReleaseStock { order_id }),
        3 => order.prop_map(|order_id| ProductCommand::ShipStock { order_id }),
    ]
}

/// Stock levels replayed with signed arithmetic, so an underflow shows up as
/// a negative number instead of being hidden by the state's saturating `u32`s.
#[derive(Default)]
struct StockModel {
    on_hand: i64,
    reserved: i64,
    reservations: BTreeMap<OrderId, i64>,
}

impl StockModel {
    fn apply(&mut self, event: &ProductEvent) {
        match event {
            ProductEvent::ProductCreated { stock, .. } => self.on_hand = i64::from(*stock),
            ProductEvent::ProductRestocked { quantity } => {
                self.on_hand += i64::from(quantity.get())
            }
            ProductEvent::StockReserved { order_id, quantity } => {
                self.reserved += i64::from(quantity.get());
                *self.reservations.entry(*order_id).or_default() += i64::from(quantity.get());
            }
            ProductEvent::StockReleased { order_id, quantity } => {
                self.reserved -= i64::from(quantity.get());
                assert_eq!(
                    self.reservations.remove(order_id),
                    Some(i64::from(quantity.get()))
                );
            }
            ProductEvent::StockShipped { order_id, quantity } => {
                self.reserved -= i64::from(quantity.get());
                self.on_hand -= i64::from(quantity.get());
                assert_eq!(
                    self.reservations.remove(order_id),
                    Some(i64::from(quantity.get()))
                );
            }
            ProductEvent::ProductPriceChanged { .. } | ProductEvent::ProductDiscontinued => {}
        }
    }
}

/// An order operation; `Pay` decides at run time whether to pay the right total.
#[derive(Debug, Clone)]
enum OrderOp {
    Place(u8),
    Confirm,
    Reject(RejectReason),
    Pay { exact: bool, amount: Money },
    Ship,
    Deliver,
    Cancel(CancelReason),
}

fn order_op() -> impl Strategy<Value = OrderOp> {
    prop_oneof![
        (1u8..=5).prop_map(OrderOp::Place),
        Just(OrderOp::Confirm),
        common::any_reject_reason().prop_map(OrderOp::Reject),
        (any::<bool>(), common::any_money())
            .prop_map(|(exact, amount)| OrderOp::Pay { exact, amount }),
        Just(OrderOp::Ship),
        Just(OrderOp::Deliver),
        common::any_cancel_reason().prop_map(OrderOp::Cancel),
    ]
}

fn order_command(op: OrderOp, total: Option<Money>) -> OrderCommand {
    match op {
        OrderOp::Place(n) => OrderCommand::Place {
            order_id: common::oid(1),
            user_id: common::uid(1),
            lines: (0..u128::from(n))
                .map(|i| domain::order::OrderLine {
                    product_id: common::pid(i),
                    quantity: Quantity::new(2).unwrap(),
                    unit_price: Money::parse("1.25").unwrap(),
                })
                .collect(),
        },
        OrderOp::Confirm => OrderCommand::Confirm,
        OrderOp::Reject(reason) => OrderCommand::Reject {
            reason,
            details: RejectDetails::default(),
        },
        OrderOp::Pay { exact, amount } => OrderCommand::Pay {
            amount: match (exact, total) {
                (true, Some(total)) => total,
                _ => amount,
            },
        },
        OrderOp::Ship => OrderCommand::Ship,
        OrderOp::Deliver => OrderCommand::Deliver,
        OrderOp::Cancel(reason) => OrderCommand::Cancel { reason },
    }
}

fn user_command() -> impl Strategy<Value = UserCommand> {
    prop_oneof![
        (common::any_email(), common::any_name()).prop_map(|(email, name)| UserCommand::Register {
            user_id: UserId::new(uuid::Uuid::from_u128(7)),
            email,
            name
        }),
        common::any_name().prop_map(|name| UserCommand::Rename { name }),
        Just(UserCommand::Deactivate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn products_never_oversell_or_go_negative(commands in prop::collection::vec(product_command(), 1..80)) {
        let mut state = ProductState::default();
        let mut model = StockModel::default();
        for command in commands {
            let Ok(events) = Product::decide(&state, command) else { continue };
            for event in &events {
                state = Product::evolve(state, event);
                model.apply(event);
            }
            prop_assert!(model.on_hand >= 0 && model.reserved >= 0, "negative stock");
            prop_assert!(model.reserved <= model.on_hand, "reserved {} > on_hand {}", model.reserved, model.on_hand);
            if let Some(p) = state.product() {
                prop_assert_eq!(i64::from(p.on_hand), model.on_hand);
                prop_assert_eq!(i64::from(p.reserved), model.reserved);
                prop_assert_eq!(p.reserved, p.reservations.values().sum::<u32>());
                prop_assert!(p.reservations.values().all(|n| *n > 0));
                prop_assert_eq!(p.available(), p.on_hand - p.reserved);
            }
        }
    }

    #[test]
    fn orders_only_pass_through_lifecycle_transitions(ops in prop::collection::vec(order_op(), 1..40)) {
        let mut state = <Order as Aggregate>::State::default();
        for op in ops {
            let before = state.status();
            let command = order_command(op, state.total());
            let (target, action) = (command.target_status(), command.action());
            let is_place = matches!(command, OrderCommand::Place { .. });
            let result = Order::decide(&state, command);
            match (before, &result) {
                (None, Ok(_)) => prop_assert!(is_place, "only placing creates an order"),
                (None, Err(e)) => {
                    prop_assert!(!is_place, "placing failed: {}", e);
                    prop_assert_eq!(e, &OrderError::NotFound);
                }
                (Some(_), Ok(_)) => prop_assert!(!is_place, "placed twice"),
                (Some(_), Err(e)) if is_place => prop_assert_eq!(e, &OrderError::AlreadyPlaced),
                (Some(from), Err(e)) if from.can_transition_to(target) => {
                    // Only a wrong amount may stop an allowed transition.
                    let is_mismatch = matches!(e, OrderError::AmountMismatch { .. });
                    prop_assert!(is_mismatch, "allowed {} -> {} refused: {}", from, target, e);
                }
                (Some(from), Err(e)) => {
                    prop_assert_eq!(e, &OrderError::InvalidTransition { from, action })
                }
            }
            if let Ok(events) = result {
                state = events.iter().fold(state, Order::evolve);
                let after = state.status();
                match (before, after) {
                    (None, Some(OrderStatus::Pending)) => {}
                    (Some(a), Some(b)) => prop_assert!(a == b || a.can_transition_to(b), "{} -> {}", a, b),
                    (a, b) => prop_assert!(false, "{:?} -> {:?}", a, b),
                }
            }
        }
    }

    #[test]
    fn user_commands_fold_without_panicking(commands in prop::collection::vec(user_command(), 1..20)) {
        let mut state = <User as Aggregate>::State::default();
        for command in commands {
            if let Ok(events) = User::decide(&state, command) {
                state = events.iter().fold(state, User::evolve);
            }
        }
    }

    /// `evolve` is total: even event sequences `decide` would never produce
    /// (a corrupted or hand-edited stream) fold without panicking.
    #[test]
    fn evolve_never_panics_on_arbitrary_streams(
        users in prop::collection::vec(common::any_user_event(), 0..20),
        products in prop::collection::vec(common::any_product_event(), 0..40),
        orders in prop::collection::vec(common::any_order_event(), 0..20),
    ) {
        let _ = User::fold(&users);
        let _ = Product::fold(&products);
        let _ = Order::fold(&orders);
    }

    #[test]
    fn every_event_round_trips_through_json(event in common::any_event()) {
        let text = serde_json::to_string(&event.to_data()).unwrap();
        let data: serde_json::Value = serde_json::from_str(&text).unwrap();
        let back = AnyEvent::from_stored(event.stream_type(), event.event_type(), event.schema_version(), data).unwrap();
        prop_assert_eq!(back, event);
    }

}
