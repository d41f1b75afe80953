//! What the saga reacts to (its inputs) and what it asks the runner to do
//! (its actions).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::SagaCommand;
use crate::ids::{OrderId, ProductId};
use crate::order::RejectReason;
use crate::values::{CancelReason, Quantity};

/// Something the saga reacts to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SagaInput {
    /// The order was placed (starts the saga).
    OrderPlaced {
        /// The order.
        order_id: OrderId,
        /// Its lines, in order.
        lines: Vec<(ProductId, Quantity)>,
    },
    /// A `ReserveStock` command succeeded.
    ReservationSucceeded {
        /// The line's product.
        product_id: ProductId,
    },
    /// A `ReserveStock` command was refused by the product.
    ReservationRefused {
        /// The line's product.
        product_id: ProductId,
        /// Why.
        reason: RejectReason,
        /// Units asked for.
        requested: u32,
        /// Units available.
        available: u32,
    },
    /// A command succeeded.
    CommandSucceeded {
        /// Its id.
        command_id: String,
    },
    /// A command failed transiently, after the runner's own retries.
    CommandFailed {
        /// Its id.
        command_id: String,
        /// What went wrong, for the history.
        error: String,
    },
    /// `OrderConfirmed` was observed.
    OrderConfirmed,
    /// `OrderRejected` was observed.
    OrderRejected,
    /// `OrderPaid` was observed.
    OrderPaid,
    /// `OrderCancelled` was observed.
    OrderCancelled {
        /// Its reason.
        reason: CancelReason,
    },
    /// `OrderShipped` was observed.
    OrderShipped,
    /// `StockReserved` for this order was observed.
    StockReserved {
        /// The product.
        product_id: ProductId,
    },
    /// `StockReleased` for this order was observed.
    StockReleased {
        /// The product.
        product_id: ProductId,
    },
    /// `StockShipped` for this order was observed.
    StockShipped {
        /// The product.
        product_id: ProductId,
    },
    /// The payment timer fired.
    PaymentTimerFired,
}

/// What the runner must do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SagaAction {
    /// Run a command (again, if its id was issued before).
    Issue(SagaCommand),
    /// (Re)arm the payment timer to fire at `due_at`.
    SetPaymentTimer {
        /// When it fires.
        due_at: DateTime<Utc>,
    },
    /// Disarm the payment timer.
    ClearPaymentTimer,
}
