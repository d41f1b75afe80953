//! The order aggregate and its lifecycle.
//!
//! ```text
//! pending ──▶ confirmed ──pay──▶ paid ──ship──▶ shipped ──deliver──▶ delivered
//!    │            │                │
//!    └─▶ rejected └─▶ cancelled ◀──┘
//! ```
//!
//! Confirmation and rejection are issued by the fulfilment saga once stock is
//! reserved or refused; payment, shipping, delivery and cancellation come from
//! the API (and cancellation also from the saga's payment timer). Every other
//! transition is refused with `InvalidTransition`, which the API answers 409.
//!
//! Placing an order needs facts from other aggregates (the user is active,
//! the products exist, their current prices): [`place_order`] checks them and
//! builds the `Place` command with the prices captured, so `decide` itself
//! stays a function of the order's own state.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, ErrorKind, ErrorKindOf};
use crate::event;
use crate::ids::{OrderId, ProductId, StreamType, UserId};
use crate::product::ProductState;
use crate::user::UserState;
use crate::values::{CancelReason, Money, Quantity, ValueError};

/// The order aggregate (see [`Aggregate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order;

/// The most lines one order may have.
pub const MAX_LINES: usize = 100;

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The product ordered.
    pub product_id: ProductId,
    /// How many units.
    pub quantity: Quantity,
    /// The product's price when the order was placed; later price changes do
    /// not affect the order.
    pub unit_price: Money,
}

impl OrderLine {
    /// `quantity × unit_price`, exactly.
    pub fn line_total(&self) -> Result<Money, ValueError> {
        self.unit_price.checked_mul(self.quantity)
    }
}

/// The exact sum of the lines' totals.
pub fn order_total(lines: &[OrderLine]) -> Result<Money, OrderError> {
    lines
        .iter()
        .try_fold(Money::ZERO, |total, line| {
            total.checked_add(line.line_total()?)
        })
        .map_err(|_| OrderError::TotalOverflow)
}

/// Where an order is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    /// Placed; stock is being reserved.
    Pending,
    /// Every line reserved; waiting for payment.
    Confirmed,
    /// Some line could not be reserved. Final.
    Rejected,
    /// Paid; waiting to ship.
    Paid,
    /// Left the warehouse.
    Shipped,
    /// Arrived. Final.
    Delivered,
    /// Cancelled by the customer or for want of payment. Final.
    Cancelled,
}

impl OrderStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [OrderStatus; 7] = [
        OrderStatus::Pending,
        OrderStatus::Confirmed,
        OrderStatus::Rejected,
        OrderStatus::Paid,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
    ];

    /// The status named `text` ([`OrderStatus::as_str`]), if there is one.
    pub fn parse(text: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The lowercase name used in the API and read models.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Rejected => "rejected",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the lifecycle (`docs/reference/http-api.md#order-lifecycle`)
    /// has an arrow from `self` to `next`.
    pub fn can_transition_to(self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (Pending, Confirmed)
                | (Pending, Rejected)
                | (Confirmed, Paid)
                | (Confirmed, Cancelled)
                | (Paid, Shipped)
                | (Paid, Cancelled)
                | (Shipped, Delivered)
        )
    }

    /// True when no transition leaves this status.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrderStatus::Rejected | OrderStatus::Delivered | OrderStatus::Cancelled
        )
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an order was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// A line asked for more units than were available.
    InsufficientStock,
    /// A line's product was discontinued.
    ProductDiscontinued,
}

impl RejectReason {
    /// `insufficient_stock` or `product_discontinued`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InsufficientStock => "insufficient_stock",
            RejectReason::ProductDiscontinued => "product_discontinued",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rejection is about, so the customer can be told which line failed.
/// All optional: a discontinued product has no meaningful `available`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectDetails {
    /// The product whose reservation was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<ProductId>,
    /// Units the line asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<u32>,
    /// Units available when it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<u32>,
}

/// What can be asked of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    /// Place the order; build it with [`place_order`] to capture prices.
    Place {
        /// The new order's id, chosen by the caller.
        order_id: OrderId,
        /// Who ordered.
        user_id: UserId,
        /// 1 to 100 lines, each product at most once.
        lines: Vec<OrderLine>,
    },
    /// Every line is reserved (issued by the saga).
    Confirm,
    /// A line could not be reserved (issued by the saga).
    Reject {
        /// Why.
        reason: RejectReason,
        /// Which line and how much was missing.
        details: RejectDetails,
    },
    /// The customer paid.
    Pay {
        /// The amount paid; must equal the total exactly.
        amount: Money,
    },
    /// The order left the warehouse.
    Ship,
    /// The order arrived.
    Deliver,
    /// Cancel a confirmed or paid order.
    Cancel {
        /// Why (the API defaults it to `customer_request`).
        reason: CancelReason,
    },
}

impl OrderCommand {
    /// The verb used in `InvalidTransition` errors.
    pub fn action(&self) -> &'static str {
        match self {
            OrderCommand::Place { .. } => "place",
            OrderCommand::Confirm => "confirm",
            OrderCommand::Reject { .. } => "reject",
            OrderCommand::Pay { .. } => "pay",
            OrderCommand::Ship => "ship",
            OrderCommand::Deliver => "deliver",
            OrderCommand::Cancel { .. } => "cancel",
        }
    }

    /// The status the command moves the order to.
    pub fn target_status(&self) -> OrderStatus {
        match self {
            OrderCommand::Place { .. } => OrderStatus::Pending,
            OrderCommand::Confirm => OrderStatus::Confirmed,
            OrderCommand::Reject { .. } => OrderStatus::Rejected,
            OrderCommand::Pay { .. } => OrderStatus::Paid,
            OrderCommand::Ship => OrderStatus::Shipped,
            OrderCommand::Deliver => OrderStatus::Delivered,
            OrderCommand::Cancel { .. } => OrderStatus::Cancelled,
        }
    }
}

/// What happened to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OrderEvent {
    /// The order was placed, with prices captured and the total computed.
    OrderPlaced {
        /// The order's id.
        order_id: OrderId,
        /// Who ordered.
        user_id: UserId,
        /// The lines, with unit prices.
        lines: Vec<OrderLine>,
        /// The exact sum of the lines, so readers need not recompute it.
        total: Money,
    },
    /// Every line was reserved.
    OrderConfirmed,
    /// A line could not be reserved.
    OrderRejected {
        /// Why.
        reason: RejectReason,
        /// Which line and how much was missing (flattened into the payload).
        #[serde(flatten)]
        details: RejectDetails,
    },
    /// The order was paid.
    OrderPaid {
        /// The amount paid (equal to the total).
        amount: Money,
    },
    /// The order left the warehouse.
    OrderShipped,
    /// The order arrived.
    OrderDelivered,
    /// The order was cancelled.
    OrderCancelled {
        /// Why: the caller's reason, `customer_request` or `payment_timeout`.
        reason: CancelReason,
    },
}

/// A rejection as recorded in the order's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Why.
    pub reason: RejectReason,
    /// Which line and how much was missing.
    pub details: RejectDetails,
}

/// A placed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedOrder {
    /// The order's id.
    pub order_id: OrderId,
    /// Who ordered.
    pub user_id: UserId,
    /// The lines, with captured unit prices.
    pub lines: Vec<OrderLine>,
    /// The exact total; `Pay` must match it.
    pub total: Money,
    /// Where the order is in its lifecycle.
    pub status: OrderStatus,
    /// Set when rejected.
    pub rejection: Option<Rejection>,
    /// Set when cancelled.
    pub cancel_reason: Option<CancelReason>,
}

/// An order's state: nothing until placed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum OrderState {
    /// No `OrderPlaced` yet.
    #[default]
    NotPlaced,
    /// Placed, in any status.
    Placed(PlacedOrder),
}

impl OrderState {
    /// The order, if placed.
    pub fn order(&self) -> Option<&PlacedOrder> {
        match self {
            OrderState::NotPlaced => None,
            OrderState::Placed(o) => Some(o),
        }
    }

    /// The status, if placed.
    pub fn status(&self) -> Option<OrderStatus> {
        self.order().map(|o| o.status)
    }

    /// The lines (empty when not placed).
    pub fn lines(&self) -> &[OrderLine] {
        self.order().map_or(&[], |o| o.lines.as_slice())
    }

    /// The total, if placed.
    pub fn total(&self) -> Option<Money> {
        self.order().map(|o| o.total)
    }

    /// Who ordered, if placed.
    pub fn user_id(&self) -> Option<UserId> {
        self.order().map(|o| o.user_id)
    }

    /// The rejection or cancellation reason, as the API's `reason` shows it.
    pub fn reason(&self) -> Option<&str> {
        let o = self.order()?;
        match (&o.rejection, &o.cancel_reason) {
            (Some(r), _) => Some(r.reason.as_str()),
            (None, Some(c)) => Some(c.as_str()),
            (None, None) => None,
        }
    }
}

/// Why an order command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// `Place` with no lines.
    #[error("an order needs at least one line")]
    NoLines,
    /// `Place` with more than [`MAX_LINES`] lines.
    #[error("an order may have at most {max} lines")]
    TooManyLines {
        /// The maximum.
        max: usize,
    },
    /// `Place` with the same product on two lines.
    #[error("product {0} appears on more than one line")]
    DuplicateProduct(ProductId),
    /// The total does not fit in a decimal.
    #[error("order total is too large")]
    TotalOverflow,
    /// `Place` on an order that exists.
    #[error("order already placed")]
    AlreadyPlaced,
    /// Any other command on an order that does not exist.
    #[error("order not found")]
    NotFound,
    /// The lifecycle has no such transition from the current status.
    #[error("cannot {action} an order that is {from}")]
    InvalidTransition {
        /// The current status.
        from: OrderStatus,
        /// What was attempted (`pay`, `ship`, …).
        action: &'static str,
    },
    /// `Pay` with an amount other than the total.
    #[error("amount {got} does not match the order total {expected}")]
    AmountMismatch {
        /// The order total.
        expected: Money,
        /// The amount given.
        got: Money,
    },
    /// The ordering user does not exist.
    #[error("user not found")]
    UnknownUser,
    /// The ordering user is deactivated.
    #[error("user is deactivated")]
    InactiveUser,
    /// A line's product does not exist.
    #[error("product {0} not found")]
    UnknownProduct(ProductId),
    /// The user already has as many orders placed and not yet paid,
    /// cancelled or rejected as allowed.
    #[error("the user already has {cap} unpaid orders; pay or cancel one first")]
    TooManyUnpaid {
        /// The most allowed.
        cap: u32,
    },
}

impl ErrorKindOf for OrderError {
    fn kind(&self) -> ErrorKind {
        match self {
            OrderError::AlreadyPlaced => ErrorKind::Duplicate,
            OrderError::NotFound => ErrorKind::NotFound,
            OrderError::InvalidTransition { .. } => ErrorKind::InvalidTransition,
            OrderError::TooManyUnpaid { .. } => ErrorKind::LimitReached,
            OrderError::NoLines
            | OrderError::TooManyLines { .. }
            | OrderError::DuplicateProduct(_)
            | OrderError::TotalOverflow
            | OrderError::AmountMismatch { .. }
            | OrderError::UnknownUser
            | OrderError::InactiveUser
            | OrderError::UnknownProduct(_) => ErrorKind::Validation,
        }
    }
}

/// Checks the shape of an order's lines: 1–100 of them, no product twice.
fn check_lines(products: impl ExactSizeIterator<Item = ProductId>) -> Result<(), OrderError> {
    match products.len() {
        0 => return Err(OrderError::NoLines),
        n if n > MAX_LINES => return Err(OrderError::TooManyLines { max: MAX_LINES }),
        _ => {}
    }
    let mut seen = BTreeSet::new();
    for product_id in products {
        if !seen.insert(product_id) {
            return Err(OrderError::DuplicateProduct(product_id));
        }
    }
    Ok(())
}

/// The cross-aggregate rule for placing an order, as a pure function.
///
/// Given the user's state and, for each requested line, the product's state,
/// checks that the user exists and is active and that every product exists,
/// and builds `Place` with each line's unit price captured from the product's
/// current price. A discontinued product is *not* refused here: the saga
/// rejects the order with `product_discontinued` when it tries to reserve, so
/// the rule lives in one place and races with discontinuation end the same way.
pub fn place_order(
    order_id: OrderId,
    user: &UserState,
    products: &[(ProductId, Quantity, &ProductState)],
) -> Result<OrderCommand, OrderError> {
    let user = user.user().ok_or(OrderError::UnknownUser)?;
    if !user.active {
        return Err(OrderError::InactiveUser);
    }
    check_lines(products.iter().map(|(id, _, _)| *id))?;
    let lines = products
        .iter()
        .map(|(product_id, quantity, state)| match state.product() {
            Some(p) if p.product_id == *product_id => Ok(OrderLine {
                product_id: *product_id,
                quantity: *quantity,
                unit_price: p.price,
            }),
            _ => Err(OrderError::UnknownProduct(*product_id)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(OrderCommand::Place {
        order_id,
        user_id: user.user_id,
        lines,
    })
}

/// The claims an order event takes or releases in `state`: an order that
/// stops being unpaid (paid, cancelled, rejected) gives back the slot of its
/// user's unpaid orders it holds, if it holds one (see
/// [`ClaimKind::UnpaidOrder`]; the slot is taken when the order is placed).
pub fn order_claims(state: &OrderState, event: &OrderEvent) -> Vec<crate::event::UniqueClaim> {
    let ends_unpaid = matches!(
        event,
        OrderEvent::OrderPaid { .. }
            | OrderEvent::OrderCancelled { .. }
            | OrderEvent::OrderRejected { .. }
    );
    match (ends_unpaid, state.order()) {
        (true, Some(order)) => vec![crate::event::UniqueClaim::release_any(
            crate::event::ClaimKind::UnpaidOrder(order.user_id),
        )],
        _ => crate::event::DomainEvent::unique_claims(event),
    }
}

impl Aggregate for Order {
    type State = OrderState;
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;

    fn claims(state: &OrderState, event: &OrderEvent) -> Vec<crate::event::UniqueClaim> {
        order_claims(state, event)
    }

    fn decide(state: &OrderState, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        let order = match state {
            OrderState::NotPlaced => {
                return match command {
                    OrderCommand::Place {
                        order_id,
                        user_id,
                        lines,
                    } => {
                        check_lines(lines.iter().map(|l| l.product_id))?;
                        let total = order_total(&lines)?;
                        Ok(vec![OrderEvent::OrderPlaced {
                            order_id,
                            user_id,
                            lines,
                            total,
                        }])
                    }
                    _ => Err(OrderError::NotFound),
                }
            }
            OrderState::Placed(order) => order,
        };
        if let OrderCommand::Place { .. } = command {
            return Err(OrderError::AlreadyPlaced);
        }
        // The lifecycle check comes first: paying a paid order is a 409
        // whatever the amount.
        if !order.status.can_transition_to(command.target_status()) {
            return Err(OrderError::InvalidTransition {
                from: order.status,
                action: command.action(),
            });
        }
        let event = match command {
            OrderCommand::Place { .. } => return Err(OrderError::AlreadyPlaced),
            OrderCommand::Confirm => OrderEvent::OrderConfirmed,
            OrderCommand::Reject { reason, details } => {
                OrderEvent::OrderRejected { reason, details }
            }
            OrderCommand::Pay { amount } if amount != order.total => {
                return Err(OrderError::AmountMismatch {
                    expected: order.total,
                    got: amount,
                })
            }
            OrderCommand::Pay { amount } => OrderEvent::OrderPaid { amount },
            OrderCommand::Ship => OrderEvent::OrderShipped,
            OrderCommand::Deliver => OrderEvent::OrderDelivered,
            OrderCommand::Cancel { reason } => OrderEvent::OrderCancelled { reason },
        };
        Ok(vec![event])
    }

    fn evolve(state: OrderState, event: &OrderEvent) -> OrderState {
        let mut order = match (state, event) {
            (
                OrderState::NotPlaced,
                OrderEvent::OrderPlaced {
                    order_id,
                    user_id,
                    lines,
                    total,
                },
            ) => {
                return OrderState::Placed(PlacedOrder {
                    order_id: *order_id,
                    user_id: *user_id,
                    lines: lines.clone(),
                    total: *total,
                    status: OrderStatus::Pending,
                    rejection: None,
                    cancel_reason: None,
                });
            }
            (OrderState::Placed(order), _) => order,
            (state, _) => return state,
        };
        match event {
            OrderEvent::OrderPlaced { .. } => {}
            OrderEvent::OrderConfirmed => order.status = OrderStatus::Confirmed,
            OrderEvent::OrderRejected { reason, details } => {
                order.status = OrderStatus::Rejected;
                order.rejection = Some(Rejection {
                    reason: *reason,
                    details: details.clone(),
                });
            }
            OrderEvent::OrderPaid { .. } => order.status = OrderStatus::Paid,
            OrderEvent::OrderShipped => order.status = OrderStatus::Shipped,
            OrderEvent::OrderDelivered => order.status = OrderStatus::Delivered,
            OrderEvent::OrderCancelled { reason } => {
                order.status = OrderStatus::Cancelled;
                order.cancel_reason = Some(reason.clone());
            }
        }
        OrderState::Placed(order)
    }
}

event::tagged_domain_event!(
    OrderEvent,
    StreamType::Order,
    [
        OrderPlaced,
        OrderConfirmed,
        OrderRejected,
        OrderPaid,
        OrderShipped,
        OrderDelivered,
        OrderCancelled,
    ],
);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::event::DomainEvent;
    use crate::product::{Product, ProductEvent};
    use crate::testing::given;
    use crate::user::{User, UserEvent};
    use crate::values::{Email, Name, Sku};
    use serde_json::json;
    use uuid::Uuid;

    fn oid() -> OrderId {
        OrderId::new(Uuid::from_u128(1))
    }
    fn uid() -> UserId {
        UserId::new(Uuid::from_u128(2))
    }
    fn pid(n: u128) -> ProductId {
        ProductId::new(Uuid::from_u128(100 + n))
    }
    fn money(s: &str) -> Money {
        Money::parse(s).unwrap()
    }
    fn line(n: u128, quantity: u32, price: &str) -> OrderLine {
        OrderLine {
            product_id: pid(n),
            quantity: Quantity::new(quantity).unwrap(),
            unit_price: money(price),
        }
    }
    fn lines() -> Vec<OrderLine> {
        vec![line(1, 3, "0.10"), line(2, 1, "19.99")]
    }
    fn place() -> OrderCommand {
        OrderCommand::Place {
            order_id: oid(),
            user_id: uid(),
            lines: lines(),
        }
    }
    fn placed() -> OrderEvent {
        OrderEvent::OrderPlaced {
            order_id: oid(),
            user_id: uid(),
            lines: lines(),
            total: money("20.29"),
        }
    }
    fn paid() -> OrderEvent {
        OrderEvent::OrderPaid {
            amount: money("20.29"),
        }
    }
    fn pay() -> OrderCommand {
        OrderCommand::Pay {
            amount: money("20.29"),
        }
    }
    fn reason(r: &str) -> CancelReason {
        CancelReason::parse(r).unwrap()
    }
    fn cancelled(r: &str) -> OrderEvent {
        OrderEvent::OrderCancelled { reason: reason(r) }
    }
    fn rejected() -> OrderEvent {
        OrderEvent::OrderRejected {
            reason: RejectReason::InsufficientStock,
            details: RejectDetails {
                product_id: Some(pid(1)),
                requested: Some(3),
                available: Some(1),
            },
        }
    }
    fn reject() -> OrderCommand {
        OrderCommand::Reject {
            reason: RejectReason::InsufficientStock,
            details: RejectDetails {
                product_id: Some(pid(1)),
                requested: Some(3),
                available: Some(1),
            },
        }
    }
    fn invalid(from: OrderStatus, action: &'static str) -> OrderError {
        OrderError::InvalidTransition { from, action }
    }

    /// Histories that bring an order to each status.
    fn history(status: OrderStatus) -> Vec<OrderEvent> {
        use OrderStatus::*;
        let mut h = vec![placed()];
        match status {
            Pending => {}
            Confirmed => h.push(OrderEvent::OrderConfirmed),
            Rejected => h.push(rejected()),
            Paid => h.extend([OrderEvent::OrderConfirmed, paid()]),
            Shipped => h.extend([OrderEvent::OrderConfirmed, paid(), OrderEvent::OrderShipped]),
            Delivered => h.extend([
                OrderEvent::OrderConfirmed,
                paid(),
                OrderEvent::OrderShipped,
                OrderEvent::OrderDelivered,
            ]),
            Cancelled => h.extend([OrderEvent::OrderConfirmed, cancelled("changed my mind")]),
        }
        h
    }

    // Place

    #[test]
    fn place_computes_the_total_exactly() {
        let s = given::<Order>([]).when(place()).then([placed()]);
        assert_eq!(s.status(), Some(OrderStatus::Pending));
        assert_eq!(s.total(), Some(money("20.29")));
        assert_eq!(s.user_id(), Some(uid()));
        assert_eq!(s.lines(), lines().as_slice());
    }

    #[test]
    fn place_without_lines_is_refused() {
        given::<Order>([])
            .when(OrderCommand::Place {
                order_id: oid(),
                user_id: uid(),
                lines: vec![],
            })
            .then_err(OrderError::NoLines);
    }

    #[test]
    fn place_with_more_than_100_lines_is_refused() {
        let many: Vec<_> = (0..101).map(|n| line(n, 1, "1")).collect();
        given::<Order>([])
            .when(OrderCommand::Place {
                order_id: oid(),
                user_id: uid(),
                lines: many,
            })
            .then_err(OrderError::TooManyLines { max: 100 });
        let hundred: Vec<_> = (0..100).map(|n| line(n, 1, "1")).collect();
        let result = given::<Order>([])
            .when(OrderCommand::Place {
                order_id: oid(),
                user_id: uid(),
                lines: hundred,
            })
            .result()
            .clone();
        assert!(result.is_ok());
    }

    #[test]
    fn place_with_a_product_twice_is_refused() {
        given::<Order>([])
            .when(OrderCommand::Place {
                order_id: oid(),
                user_id: uid(),
                lines: vec![line(1, 1, "1"), line(2, 1, "1"), line(1, 2, "1")],
            })
            .then_err(OrderError::DuplicateProduct(pid(1)));
    }

    #[test]
    fn place_with_an_overflowing_total_is_refused() {
        let huge = Money::new(rust_decimal::Decimal::MAX).unwrap();
        let l = |n| OrderLine {
            product_id: pid(n),
            quantity: Quantity::new(2).unwrap(),
            unit_price: huge,
        };
        given::<Order>([])
            .when(OrderCommand::Place {
                order_id: oid(),
                user_id: uid(),
                lines: vec![l(1)],
            })
            .then_err(OrderError::TotalOverflow);
    }

    #[test]
    fn place_twice_is_a_duplicate() {
        given::<Order>([placed()])
            .when(place())
            .then_err(OrderError::AlreadyPlaced);
    }

    // Confirm

    #[test]
    fn confirm_a_pending_order() {
        let s = given::<Order>([placed()])
            .when(OrderCommand::Confirm)
            .then([OrderEvent::OrderConfirmed]);
        assert_eq!(s.status(), Some(OrderStatus::Confirmed));
    }

    #[test]
    fn confirm_twice_is_an_invalid_transition() {
        given::<Order>(history(OrderStatus::Confirmed))
            .when(OrderCommand::Confirm)
            .then_err(invalid(OrderStatus::Confirmed, "confirm"));
    }

    #[test]
    fn confirm_unknown_order_is_not_found() {
        given::<Order>([])
            .when(OrderCommand::Confirm)
            .then_err(OrderError::NotFound);
    }

    // Reject

    #[test]
    fn reject_a_pending_order_with_its_reason() {
        let s = given::<Order>([placed()]).when(reject()).then([rejected()]);
        assert_eq!(s.status(), Some(OrderStatus::Rejected));
        assert_eq!(s.reason(), Some("insufficient_stock"));
    }

    #[test]
    fn reject_a_confirmed_order_is_an_invalid_transition() {
        given::<Order>(history(OrderStatus::Confirmed))
            .when(reject())
            .then_err(invalid(OrderStatus::Confirmed, "reject"));
    }

    #[test]
    fn reject_unknown_order_is_not_found() {
        given::<Order>([])
            .when(reject())
            .then_err(OrderError::NotFound);
    }

    // Pay

    #[test]
    fn pay_a_confirmed_order_with_its_total() {
        let s = given::<Order>(history(OrderStatus::Confirmed))
            .when(OrderCommand::Pay {
                amount: money("20.2900"),
            })
            .then([paid()]);
        assert_eq!(s.status(), Some(OrderStatus::Paid));
    }

    #[test]
    fn pay_a_wrong_amount_is_refused() {
        given::<Order>(history(OrderStatus::Confirmed))
            .when(OrderCommand::Pay {
                amount: money("20.28"),
            })
            .then_err(OrderError::AmountMismatch {
                expected: money("20.29"),
                got: money("20.28"),
            });
    }

    #[test]
    fn pay_twice_is_an_invalid_transition() {
        given::<Order>(history(OrderStatus::Paid))
            .when(pay())
            .then_err(invalid(OrderStatus::Paid, "pay"));
    }

    #[test]
    fn pay_a_pending_order_is_an_invalid_transition() {
        given::<Order>([placed()])
            .when(pay())
            .then_err(invalid(OrderStatus::Pending, "pay"));
    }

    #[test]
    fn pay_unknown_order_is_not_found() {
        given::<Order>([])
            .when(pay())
            .then_err(OrderError::NotFound);
    }

    // Ship

    #[test]
    fn ship_a_paid_order() {
        let s = given::<Order>(history(OrderStatus::Paid))
            .when(OrderCommand::Ship)
            .then([OrderEvent::OrderShipped]);
        assert_eq!(s.status(), Some(OrderStatus::Shipped));
    }

    #[test]
    fn ship_an_unpaid_order_is_an_invalid_transition() {
        given::<Order>(history(OrderStatus::Confirmed))
            .when(OrderCommand::Ship)
            .then_err(invalid(OrderStatus::Confirmed, "ship"));
    }

    #[test]
    fn ship_unknown_order_is_not_found() {
        given::<Order>([])
            .when(OrderCommand::Ship)
            .then_err(OrderError::NotFound);
    }

    // Deliver

    #[test]
    fn deliver_a_shipped_order() {
        let s = given::<Order>(history(OrderStatus::Shipped))
            .when(OrderCommand::Deliver)
            .then([OrderEvent::OrderDelivered]);
        assert_eq!(s.status(), Some(OrderStatus::Delivered));
    }

    #[test]
    fn deliver_an_unshipped_order_is_an_invalid_transition() {
        given::<Order>(history(OrderStatus::Paid))
            .when(OrderCommand::Deliver)
            .then_err(invalid(OrderStatus::Paid, "deliver"));
    }

    #[test]
    fn deliver_unknown_order_is_not_found() {
        given::<Order>([])
            .when(OrderCommand::Deliver)
            .then_err(OrderError::NotFound);
    }

    // Cancel

    #[test]
    fn cancel_a_confirmed_order() {
        let s = given::<Order>(history(OrderStatus::Confirmed))
            .when(OrderCommand::Cancel {
                reason: CancelReason::customer_request(),
            })
            .then([cancelled("customer_request")]);
        assert_eq!(s.status(), Some(OrderStatus::Cancelled));
        assert_eq!(s.reason(), Some("customer_request"));
    }

    #[test]
    fn cancel_a_paid_order() {
        given::<Order>(history(OrderStatus::Paid))
            .when(OrderCommand::Cancel {
                reason: CancelReason::payment_timeout(),
            })
            .then([cancelled("payment_timeout")]);
    }

    #[test]
    fn cancel_after_shipping_is_an_invalid_transition() {
        given::<Order>(history(OrderStatus::Shipped))
            .when(OrderCommand::Cancel {
                reason: reason("too late"),
            })
            .then_err(invalid(OrderStatus::Shipped, "cancel"));
    }

    #[test]
    fn cancel_a_pending_order_is_an_invalid_transition() {
        given::<Order>([placed()])
            .when(OrderCommand::Cancel {
                reason: reason("x"),
            })
            .then_err(invalid(OrderStatus::Pending, "cancel"));
    }

    #[test]
    fn cancel_unknown_order_is_not_found() {
        given::<Order>([])
            .when(OrderCommand::Cancel {
                reason: reason("x"),
            })
            .then_err(OrderError::NotFound);
    }

    /// Every (status, command) pair: allowed exactly when the lifecycle has the arrow.
    #[test]
    fn only_lifecycle_transitions_are_allowed() {
        use OrderStatus::*;
        let commands = [
            OrderCommand::Confirm,
            reject(),
            pay(),
            OrderCommand::Ship,
            OrderCommand::Deliver,
            OrderCommand::Cancel {
                reason: reason("x"),
            },
        ];
        for from in [
            Pending, Confirmed, Rejected, Paid, Shipped, Delivered, Cancelled,
        ] {
            let state = Order::fold(&history(from));
            assert_eq!(state.status(), Some(from));
            for command in &commands {
                let to = command.target_status();
                let result = Order::decide(&state, command.clone());
                if from.can_transition_to(to) {
                    let events = result.unwrap();
                    let after = events.iter().fold(state.clone(), Order::evolve);
                    assert_eq!(after.status(), Some(to));
                } else {
                    assert_eq!(
                        result,
                        Err(invalid(from, command.action())),
                        "{from} -> {to}"
                    );
                }
            }
        }
    }

    // place_order

    fn user_state(active: bool) -> UserState {
        let mut h = vec![UserEvent::UserRegistered {
            user_id: uid(),
            email: Email::parse("a@example.com").unwrap(),
            name: Name::parse("A").unwrap(),
        }];
        if !active {
            h.push(UserEvent::UserDeactivated);
        }
        User::fold(&h)
    }
    fn product_state(n: u128, price: &str, discontinued: bool) -> ProductState {
        let mut h = vec![ProductEvent::ProductCreated {
            product_id: pid(n),
            sku: Sku::parse(&format!("SKU-{n}")).unwrap(),
            name: Name::parse("P").unwrap(),
            price: money("1"),
            stock: 10,
        }];
        h.push(ProductEvent::ProductPriceChanged {
            price: money(price),
        });
        if discontinued {
            h.push(ProductEvent::ProductDiscontinued);
        }
        Product::fold(&h)
    }
    fn q(n: u32) -> Quantity {
        Quantity::new(n).unwrap()
    }

    #[test]
    fn place_order_captures_current_prices() {
        let (p1, p2) = (
            product_state(1, "0.10", false),
            product_state(2, "19.99", false),
        );
        let command = place_order(
            oid(),
            &user_state(true),
            &[(pid(1), q(3), &p1), (pid(2), q(1), &p2)],
        )
        .unwrap();
        assert_eq!(command, place());
    }

    #[test]
    fn place_order_accepts_discontinued_products() {
        let p = product_state(1, "1", true);
        assert!(place_order(oid(), &user_state(true), &[(pid(1), q(1), &p)]).is_ok());
    }

    #[test]
    fn place_order_refuses_unknown_or_inactive_users() {
        let p = product_state(1, "1", false);
        assert_eq!(
            place_order(oid(), &UserState::NotRegistered, &[(pid(1), q(1), &p)]),
            Err(OrderError::UnknownUser)
        );
        assert_eq!(
            place_order(oid(), &user_state(false), &[(pid(1), q(1), &p)]),
            Err(OrderError::InactiveUser)
        );
    }

    #[test]
    fn place_order_refuses_unknown_products() {
        let p = product_state(1, "1", false);
        let missing = ProductState::NotCreated;
        assert_eq!(
            place_order(
                oid(),
                &user_state(true),
                &[(pid(1), q(1), &p), (pid(2), q(1), &missing)]
            ),
            Err(OrderError::UnknownProduct(pid(2)))
        );
        // A state that belongs to another product is as good as missing.
        assert_eq!(
            place_order(oid(), &user_state(true), &[(pid(3), q(1), &p)]),
            Err(OrderError::UnknownProduct(pid(3)))
        );
    }

    #[test]
    fn place_order_checks_the_lines_first() {
        let p = product_state(1, "1", false);
        assert_eq!(
            place_order(oid(), &user_state(true), &[]),
            Err(OrderError::NoLines)
        );
        assert_eq!(
            place_order(
                oid(),
                &user_state(true),
                &[(pid(1), q(1), &p), (pid(1), q(2), &p)]
            ),
            Err(OrderError::DuplicateProduct(pid(1)))
        );
    }

    #[test]
    fn error_kinds_map_to_the_api_statuses() {
        assert_eq!(OrderError::AlreadyPlaced.kind(), ErrorKind::Duplicate);
        assert_eq!(OrderError::NotFound.kind(), ErrorKind::NotFound);
        assert_eq!(
            invalid(OrderStatus::Paid, "pay").kind(),
            ErrorKind::InvalidTransition
        );
        assert_eq!(OrderError::InactiveUser.kind(), ErrorKind::Validation);
        assert_eq!(
            OrderError::AmountMismatch {
                expected: money("1"),
                got: money("2")
            }
            .kind(),
            ErrorKind::Validation
        );
        assert_eq!(
            invalid(OrderStatus::Shipped, "cancel").to_string(),
            "cannot cancel an order that is shipped"
        );
    }

    #[test]
    fn payloads_carry_what_readers_need() {
        assert_eq!(
            placed().to_data(),
            json!({
                "order_id": oid().to_string(),
                "user_id": uid().to_string(),
                "lines": [
                    {"product_id": pid(1).to_string(), "quantity": 3, "unit_price": "0.10"},
                    {"product_id": pid(2).to_string(), "quantity": 1, "unit_price": "19.99"}
                ],
                "total": "20.29"
            })
        );
        assert_eq!(
            rejected().to_data(),
            json!({"reason": "insufficient_stock", "product_id": pid(1).to_string(), "requested": 3, "available": 1})
        );
        let bare = OrderEvent::OrderRejected {
            reason: RejectReason::ProductDiscontinued,
            details: RejectDetails::default(),
        };
        assert_eq!(bare.to_data(), json!({"reason": "product_discontinued"}));
        assert_eq!(
            OrderEvent::from_stored("OrderRejected", 1, bare.to_data()).unwrap(),
            bare
        );
        assert_eq!(
            OrderEvent::from_stored("OrderRejected", 1, rejected().to_data()).unwrap(),
            rejected()
        );
        assert_eq!(OrderEvent::OrderShipped.to_data(), json!({}));
    }

    #[test]
    fn status_serialises_lowercase() {
        assert_eq!(
            serde_json::to_value(OrderStatus::Cancelled).unwrap(),
            json!("cancelled")
        );
        assert_eq!(OrderStatus::Paid.as_str(), "paid");
    }

    /// An order gives back its user's unpaid-order slot when it is paid,
    /// cancelled or rejected, and at no other step.
    #[test]
    fn an_order_that_stops_being_unpaid_releases_its_users_slot() {
        use crate::event::{ClaimAction, ClaimKind};
        let user = UserId::new(uuid::Uuid::now_v7());
        let placed = OrderEvent::OrderPlaced {
            order_id: OrderId::new(uuid::Uuid::now_v7()),
            user_id: user,
            lines: vec![OrderLine {
                product_id: ProductId::new(uuid::Uuid::now_v7()),
                quantity: Quantity::new(1).unwrap(),
                unit_price: "2.00".parse().unwrap(),
            }],
            total: "2.00".parse().unwrap(),
        };
        let state = Order::evolve(OrderState::default(), &placed);
        assert!(order_claims(&OrderState::default(), &placed).is_empty());
        let paid = OrderEvent::OrderPaid {
            amount: "2.00".parse().unwrap(),
        };
        let claims = order_claims(&state, &paid);
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].kind, ClaimKind::UnpaidOrder(user));
        assert_eq!(claims[0].action, ClaimAction::Release);
        assert_eq!(claims[0].value, "");
        assert_eq!(
            ClaimKind::UnpaidOrder(user).name(),
            format!("unpaid:{}", user.as_uuid())
        );
        assert!(order_claims(&state, &OrderEvent::OrderConfirmed).is_empty());
        assert!(order_claims(&OrderState::default(), &paid).is_empty());
    }
}
