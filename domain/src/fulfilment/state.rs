//! The saga's state for one order: its phase, its lines and where their stock
//! is, and the commands it issued that are not yet answered.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{SagaCommand, SagaStep};
use crate::ids::{OrderId, ProductId};
use crate::order::{RejectReason, Rejection};
use crate::values::{CancelReason, Quantity};

/// Where the saga is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaPhase {
    /// No `OrderPlaced` seen yet.
    #[default]
    NotStarted,
    /// Waiting for every line's reservation reply.
    Reserving,
    /// Releasing stock after a refusal or a cancellation.
    Compensating,
    /// Every line reserved; the confirmation is issued.
    Confirming,
    /// Confirmed; the payment timer runs.
    AwaitingPayment,
    /// Paid; waiting for shipping.
    Paid,
    /// Shipped; the reservations are being shipped.
    Shipping,
    /// Every line shipped. Final.
    Completed,
    /// Rejected and compensated. Final.
    Rejected,
    /// Cancelled and compensated. Final.
    Cancelled,
    /// A compensation kept failing; a human must look (see the history).
    NeedsAttention,
}

impl SagaPhase {
    /// The snake_case name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            SagaPhase::NotStarted => "not_started",
            SagaPhase::Reserving => "reserving",
            SagaPhase::Compensating => "compensating",
            SagaPhase::Confirming => "confirming",
            SagaPhase::AwaitingPayment => "awaiting_payment",
            SagaPhase::Paid => "paid",
            SagaPhase::Shipping => "shipping",
            SagaPhase::Completed => "completed",
            SagaPhase::Rejected => "rejected",
            SagaPhase::Cancelled => "cancelled",
            SagaPhase::NeedsAttention => "needs_attention",
        }
    }
}

/// Where one order line's stock is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LineStatus {
    /// Reservation issued, no reply yet.
    Pending,
    /// Stock held for the order.
    Reserved,
    /// The product refused the reservation.
    Refused {
        /// Why.
        reason: RejectReason,
    },
    /// The reservation was given back.
    Released,
    /// The reserved units were shipped.
    Shipped,
}

/// One order line as the saga tracks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaLine {
    /// The product.
    pub product_id: ProductId,
    /// Units ordered.
    pub quantity: Quantity,
    /// Where its stock is.
    pub status: LineStatus,
}

/// A command issued and not yet answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCommand {
    /// The command, to re-issue after a restart.
    pub command: SagaCommand,
    /// How many times it has been issued (1 after the first issue).
    pub attempts: u32,
    /// When it was last issued.
    pub issued_at: DateTime<Utc>,
}

/// The saga's state for one order. `Default` is "not started".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaState {
    /// The order, once `OrderPlaced` was seen.
    pub order_id: Option<OrderId>,
    /// Where the saga is.
    pub phase: SagaPhase,
    /// The order's lines, in order (the line index is part of command ids).
    pub lines: Vec<SagaLine>,
    /// When the payment timer is due, while it runs.
    pub payment_due_at: Option<DateTime<Utc>>,
    /// Commands issued and not yet answered, in issue order.
    pub pending: Vec<PendingCommand>,
    /// The first refusal, which becomes the rejection.
    pub rejection: Option<Rejection>,
    /// Why the order was cancelled, once it was.
    pub cancel_reason: Option<CancelReason>,
    /// Everything the saga did and saw, oldest first. (The saga runner moves
    /// new steps out of the state as they come and stores them apart, so a
    /// stored state carries none.)
    #[serde(default)]
    pub history: Vec<SagaStep>,
}

impl SagaState {
    /// Commands issued and not yet answered, in issue order: what a restarted
    /// runner must issue again.
    pub fn pending_commands(&self) -> Vec<SagaCommand> {
        self.pending.iter().map(|p| p.command.clone()).collect()
    }

    /// True once the saga has reached a final phase with nothing outstanding.
    pub fn is_finished(&self) -> bool {
        matches!(
            self.phase,
            SagaPhase::Completed | SagaPhase::Rejected | SagaPhase::Cancelled
        ) && self.pending.is_empty()
    }

    /// True when a compensation was given up on.
    pub fn needs_attention(&self) -> bool {
        self.phase == SagaPhase::NeedsAttention
    }

    /// The status of the line for `product_id`, if the order has one.
    pub fn line_status(&self, product_id: ProductId) -> Option<LineStatus> {
        self.lines
            .iter()
            .find(|l| l.product_id == product_id)
            .map(|l| l.status)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::fulfilment::testing::*;
    use crate::fulfilment::*;

    #[test]
    fn pending_commands_are_what_a_restarted_runner_reissues() {
        let saga = Saga::new().after([placed(3), reserved(1)]);
        let ids: Vec<_> = saga
            .state
            .pending_commands()
            .into_iter()
            .map(|c| c.command_id)
            .collect();
        assert_eq!(ids, vec![id("reserve:0"), id("reserve:2")]);
    }

    #[test]
    fn state_round_trips_through_json_with_its_history() {
        let saga = confirmed().after([SagaInput::OrderPaid]);
        let json = serde_json::to_value(&saga.state).unwrap();
        assert_eq!(json["phase"], "paid");
        assert!(json["history"].as_array().unwrap().len() > 5);
        assert_eq!(
            serde_json::from_value::<SagaState>(json).unwrap(),
            saga.state
        );
    }
}
