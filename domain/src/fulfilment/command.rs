//! The commands the saga issues, what each one runs on which aggregate, and
//! the deterministic command ids that make issuing one again harmless.

use serde::{Deserialize, Serialize};

use crate::ids::{OrderId, ProductId};
use crate::order::{OrderCommand, RejectDetails, RejectReason};
use crate::product::ProductCommand;
use crate::values::{CancelReason, Quantity};

/// A command the saga wants run, with the id that makes re-running it safe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaCommand {
    /// Deterministic per logical step; the same step always has the same id.
    pub command_id: String,
    /// What to do.
    pub kind: SagaCommandKind,
}

/// What a saga command does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SagaCommandKind {
    /// Reserve a line's stock.
    ReserveStock {
        /// The product.
        product_id: ProductId,
        /// The order.
        order_id: OrderId,
        /// Units.
        quantity: Quantity,
    },
    /// Release a line's reservation (a compensation).
    ReleaseStock {
        /// The product.
        product_id: ProductId,
        /// The order.
        order_id: OrderId,
    },
    /// Ship a line's reservation.
    ShipStock {
        /// The product.
        product_id: ProductId,
        /// The order.
        order_id: OrderId,
    },
    /// Confirm the order.
    ConfirmOrder {
        /// The order.
        order_id: OrderId,
    },
    /// Reject the order.
    RejectOrder {
        /// The order.
        order_id: OrderId,
        /// The first refusal's reason.
        reason: RejectReason,
        /// The first refusal's line.
        details: RejectDetails,
    },
    /// Cancel the unpaid order.
    CancelOrder {
        /// The order.
        order_id: OrderId,
        /// Always `payment_timeout`.
        reason: CancelReason,
    },
}

impl SagaCommandKind {
    /// What the command does, in a few words, for the history.
    pub fn describe(&self) -> String {
        match self {
            SagaCommandKind::ReserveStock {
                product_id,
                quantity,
                ..
            } => format!("reserve {quantity} of product {product_id}"),
            SagaCommandKind::ReleaseStock { product_id, .. } => {
                format!("release the stock held on product {product_id}")
            }
            SagaCommandKind::ShipStock { product_id, .. } => {
                format!("ship the stock held on product {product_id}")
            }
            SagaCommandKind::ConfirmOrder { .. } => "confirm the order".to_owned(),
            SagaCommandKind::RejectOrder { reason, .. } => format!("reject the order: {reason}"),
            SagaCommandKind::CancelOrder { reason, .. } => format!("cancel the order: {reason}"),
        }
    }
}

/// A saga command as a command on one aggregate, for the runner to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainCommand {
    /// Run `command` on product `product_id`.
    Product {
        /// The target product.
        product_id: ProductId,
        /// The command.
        command: ProductCommand,
    },
    /// Run `command` on order `order_id`.
    Order {
        /// The target order.
        order_id: OrderId,
        /// The command.
        command: OrderCommand,
    },
}

impl SagaCommand {
    /// True for compensations (releases), which are retried a bounded number
    /// of times; forward steps are retried until they succeed.
    pub fn is_compensation(&self) -> bool {
        matches!(self.kind, SagaCommandKind::ReleaseStock { .. })
    }

    /// The aggregate command to run.
    pub fn to_domain(&self) -> DomainCommand {
        match &self.kind {
            SagaCommandKind::ReserveStock {
                product_id,
                order_id,
                quantity,
            } => DomainCommand::Product {
                product_id: *product_id,
                command: ProductCommand::ReserveStock {
                    order_id: *order_id,
                    quantity: *quantity,
                },
            },
            SagaCommandKind::ReleaseStock {
                product_id,
                order_id,
            } => DomainCommand::Product {
                product_id: *product_id,
                command: ProductCommand::ReleaseStock {
                    order_id: *order_id,
                },
            },
            SagaCommandKind::ShipStock {
                product_id,
                order_id,
            } => DomainCommand::Product {
                product_id: *product_id,
                command: ProductCommand::ShipStock {
                    order_id: *order_id,
                },
            },
            SagaCommandKind::ConfirmOrder { order_id } => DomainCommand::Order {
                order_id: *order_id,
                command: OrderCommand::Confirm,
            },
            SagaCommandKind::RejectOrder {
                order_id,
                reason,
                details,
            } => DomainCommand::Order {
                order_id: *order_id,
                command: OrderCommand::Reject {
                    reason: *reason,
                    details: details.clone(),
                },
            },
            SagaCommandKind::CancelOrder { order_id, reason } => DomainCommand::Order {
                order_id: *order_id,
                command: OrderCommand::Cancel {
                    reason: reason.clone(),
                },
            },
        }
    }
}

// Command ids, every format written once. The event store absorbs a command
// whose id it has already seen, so an id names one logical step of one order
// and the same step always gets the same id, however often it is issued.

/// `<order>:reserve:<line>`: reserve the stock of line `index`.
pub(super) fn reserve_id(order_id: OrderId, index: usize) -> String {
    line_step_id(order_id, "reserve", index)
}

/// `<order>:release:<line>`: give back the stock held for line `index`.
pub(super) fn release_id(order_id: OrderId, index: usize) -> String {
    line_step_id(order_id, "release", index)
}

/// `<order>:ship:<line>`: ship the stock held for line `index`.
pub(super) fn ship_id(order_id: OrderId, index: usize) -> String {
    line_step_id(order_id, "ship", index)
}

/// `<order>:confirm`.
pub(super) fn confirm_id(order_id: OrderId) -> String {
    format!("{order_id}:confirm")
}

/// `<order>:reject`.
pub(super) fn reject_id(order_id: OrderId) -> String {
    format!("{order_id}:reject")
}

/// `<order>:cancel:payment_timeout`: the only cancellation the saga issues.
pub(super) fn cancel_id(order_id: OrderId) -> String {
    format!("{order_id}:cancel:{}", CancelReason::PAYMENT_TIMEOUT)
}

/// A per-line step's id: `<order>:<step>:<line index>`, the index being the
/// line's place in the order as placed.
fn line_step_id(order_id: OrderId, step: &str, index: usize) -> String {
    format!("{order_id}:{step}:{index}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::fulfilment::testing::*;
    use crate::fulfilment::*;
    use crate::ids::{OrderId, ProductId};
    use crate::order::OrderCommand;
    use crate::product::ProductCommand;
    use crate::values::{CancelReason, Quantity};

    #[test]
    fn command_ids_are_deterministic_across_runs() {
        for inputs in scenarios() {
            let (_, first) = run(&inputs, false);
            let (_, second) = run(&inputs, false);
            assert_eq!(first, second);
            for action in first {
                if let SagaAction::Issue(c) = action {
                    let suffix = c.command_id.strip_prefix(&format!("{}:", oid())).unwrap();
                    let expected = match &c.kind {
                        SagaCommandKind::ConfirmOrder { .. } => "confirm".to_owned(),
                        SagaCommandKind::RejectOrder { .. } => "reject".to_owned(),
                        SagaCommandKind::CancelOrder { .. } => "cancel:payment_timeout".to_owned(),
                        SagaCommandKind::ReserveStock { product_id, .. }
                        | SagaCommandKind::ReleaseStock { product_id, .. }
                        | SagaCommandKind::ShipStock { product_id, .. } => {
                            let step = suffix.split(':').next().unwrap();
                            let line = inputs_line(&inputs, *product_id);
                            format!("{step}:{line}")
                        }
                    };
                    assert_eq!(suffix, expected);
                }
            }
        }
    }

    fn inputs_line(inputs: &[SagaInput], product_id: ProductId) -> usize {
        match &inputs[0] {
            SagaInput::OrderPlaced { lines, .. } => {
                lines.iter().position(|(p, _)| *p == product_id).unwrap()
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn saga_commands_map_to_aggregate_commands() {
        let SagaAction::Issue(reserve) = reserve(0) else {
            unreachable!()
        };
        let DomainCommand::Product {
            product_id,
            command,
        } = reserve.to_domain()
        else {
            panic!("expected a product command")
        };
        assert_eq!(product_id, pid(0));
        assert_eq!(
            command,
            ProductCommand::ReserveStock {
                order_id: oid(),
                quantity: q(2)
            }
        );
        match cancel() {
            SagaAction::Issue(c) => assert_eq!(
                c.to_domain(),
                DomainCommand::Order {
                    order_id: oid(),
                    command: OrderCommand::Cancel {
                        reason: CancelReason::payment_timeout()
                    }
                }
            ),
            _ => unreachable!(),
        }
    }

    #[test]
    fn issued_commands_are_described_in_a_few_words() {
        let order_id = OrderId::new(uuid::Uuid::nil());
        let product_id = ProductId::new(uuid::Uuid::max());
        let reserve = SagaCommandKind::ReserveStock {
            product_id,
            order_id,
            quantity: Quantity::new(3).unwrap(),
        };
        assert_eq!(
            reserve.describe(),
            format!("reserve 3 of product {product_id}")
        );
        assert_eq!(
            SagaCommandKind::ConfirmOrder { order_id }.describe(),
            "confirm the order"
        );
    }
}
