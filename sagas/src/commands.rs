//! Running the saga's commands through the event store's executor, and
//! turning what happened into inputs for the state machine.
//!
//! Each command carries its deterministic id (`<order>:reserve:<line>`) as the
//! executor's command id, so running it again (after a crash, a retry, a
//! redelivery hours later) appends nothing: the event store remembers the id
//! forever, not just for JetStream's two-minute duplicate window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use domain::aggregate::Aggregate;
use domain::fulfilment::{DomainCommand, SagaCommand, SagaCommandKind, SagaInput};
use domain::order::{Order, OrderCommand, OrderError, OrderEvent, OrderState, OrderStatus};
use domain::product::{Product, ProductError};
use domain::values::CancelReason;
use eventstore::executor::{CommandContext, ExecuteError, Executor};
use eventstore::{Position, StoreError};

/// What running a command once came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It took effect, now or before (a replayed id), or nothing was left to do.
    Succeeded {
        /// Position of the last event it wrote (or first wrote, for a replay).
        position: Option<Position>,
        /// Ids of the events it wrote now, in order (none for a replay or
        /// a no-op).
        events: Vec<uuid::Uuid>,
    },
    /// A product refused a reservation: the business answer the saga waits for.
    Refused(SagaInput),
    /// The order refused the command because it has moved on; these inputs
    /// tell the saga where the order is now.
    OrderMovedOn {
        /// What the order's current state says happened.
        observed: Vec<SagaInput>,
        /// The refusal, for the history if the saga cannot use the news.
        refusal: String,
    },
    /// A refusal no input of the state machine describes; retrying cannot help.
    Permanent(String),
    /// Worth trying again: the store was away, or writers kept conflicting.
    Transient(String),
}

/// The order, but only while it is still confirmed and unpaid.
///
/// The payment timer's cancellation must not cancel an order that was paid
/// a moment earlier, even if the saga has not seen `OrderPaid` yet. The
/// lifecycle allows cancelling a paid order (the customer may), so the plain
/// order aggregate would accept it. Deciding through this wrapper makes the
/// check part of the optimistic append: a payment committed concurrently makes
/// the append conflict, the executor re-decides, and the refusal wins.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UnpaidOrder;

impl Aggregate for UnpaidOrder {
    type State = OrderState;
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;

    fn claims(state: &OrderState, event: &OrderEvent) -> Vec<domain::event::UniqueClaim> {
        domain::order::order_claims(state, event)
    }

    fn decide(state: &OrderState, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        match state.status() {
            Some(OrderStatus::Confirmed) => Order::decide(state, command),
            Some(from) => Err(OrderError::InvalidTransition {
                from,
                action: command.action(),
            }),
            None => Err(OrderError::NotFound),
        }
    }

    fn evolve(state: OrderState, event: &OrderEvent) -> OrderState {
        Order::evolve(state, event)
    }
}

/// Runs one saga command once.
#[tracing::instrument(level = "debug", skip_all, fields(command_id = %command.command_id))]
pub(crate) async fn execute(
    executor: &Executor,
    command: &SagaCommand,
    ctx: &CommandContext,
) -> Outcome {
    match command.to_domain() {
        DomainCommand::Product {
            product_id,
            command: product_command,
        } => {
            let result = executor
                .execute::<Product>(&product_id.stream_id(), product_command, ctx)
                .await;
            match result {
                Ok(done) => Outcome::Succeeded {
                    position: done.position,
                    events: done.event_ids,
                },
                Err(ExecuteError::Rejected(e)) => product_refusal(command, e),
                Err(e) => failure(e),
            }
        }
        DomainCommand::Order {
            order_id,
            command: order_command,
        } => {
            let stream = order_id.stream_id();
            let timeout = matches!(
                &command.kind,
                SagaCommandKind::CancelOrder { reason, .. }
                    if reason.as_str() == CancelReason::PAYMENT_TIMEOUT
            );
            let result = if timeout {
                executor
                    .execute::<UnpaidOrder>(&stream, order_command, ctx)
                    .await
                    .map(|done| (done.position, done.event_ids))
            } else {
                executor
                    .execute::<Order>(&stream, order_command, ctx)
                    .await
                    .map(|done| (done.position, done.event_ids))
            };
            match result {
                Ok((position, events)) => Outcome::Succeeded { position, events },
                Err(ExecuteError::Rejected(e)) => match executor.load::<Order>(&stream).await {
                    Ok(loaded) => Outcome::OrderMovedOn {
                        observed: observations(&loaded.state),
                        refusal: e.to_string(),
                    },
                    Err(load) => Outcome::Transient(format!("{e}; then reading the order: {load}")),
                },
                Err(e) => failure(e),
            }
        }
    }
}

/// A product's refusal: a refused reservation is an answer, anything else is
/// something the saga cannot fix by asking again.
fn product_refusal(command: &SagaCommand, e: ProductError) -> Outcome {
    let SagaCommandKind::ReserveStock {
        product_id,
        quantity,
        ..
    } = &command.kind
    else {
        return Outcome::Permanent(e.to_string());
    };
    let Some(reason) = e.reject_reason() else {
        return Outcome::Permanent(e.to_string());
    };
    let (requested, available) = match e {
        ProductError::InsufficientStock {
            requested,
            available,
        } => (requested, available),
        _ => (quantity.get(), 0),
    };
    Outcome::Refused(SagaInput::ReservationRefused {
        product_id: *product_id,
        reason,
        requested,
        available,
    })
}

/// Transient or permanent, by what failed: the store being away, a database
/// error or writers that kept conflicting may pass; anything else (an
/// undecodable stream, a command id used elsewhere, whatever the store learns
/// to report next) will not, and parks the saga rather than looping.
fn failure<E: std::error::Error>(e: ExecuteError<E>) -> Outcome {
    match &e {
        ExecuteError::Conflict { .. }
        | ExecuteError::Store(
            StoreError::Unreachable { .. } | StoreError::Pool(_) | StoreError::Database(_),
        ) => Outcome::Transient(e.to_string()),
        _ => Outcome::Permanent(e.to_string()),
    }
}

/// What an order's current state says happened to it, as saga inputs: the
/// same inputs its events would give, only sooner. Duplicates are harmless,
/// the state machine ignores what it already knows.
fn observations(state: &OrderState) -> Vec<SagaInput> {
    let Some(order) = state.order() else {
        return Vec::new();
    };
    match order.status {
        OrderStatus::Pending => vec![],
        OrderStatus::Confirmed => vec![SagaInput::OrderConfirmed],
        OrderStatus::Rejected => vec![SagaInput::OrderRejected],
        OrderStatus::Paid => vec![SagaInput::OrderConfirmed, SagaInput::OrderPaid],
        OrderStatus::Shipped | OrderStatus::Delivered => vec![
            SagaInput::OrderConfirmed,
            SagaInput::OrderPaid,
            SagaInput::OrderShipped,
        ],
        OrderStatus::Cancelled => vec![
            SagaInput::OrderConfirmed,
            SagaInput::OrderCancelled {
                reason: order
                    .cancel_reason
                    .clone()
                    .unwrap_or_else(CancelReason::customer_request),
            },
        ],
    }
}

/// The aggregate stream a command writes to.
pub(crate) fn target_stream(command: &SagaCommand) -> String {
    match command.to_domain() {
        DomainCommand::Product { product_id, .. } => product_id.stream_id(),
        DomainCommand::Order { order_id, .. } => order_id.stream_id(),
    }
}

/// One async mutex per aggregate stream, taken around each command.
///
/// Twenty orders for one product reserve at the same moment; left alone they
/// would all load version n, all try to append n+1, and all but one would
/// conflict and retry, again and again. Queueing them in-process costs
/// nothing and leaves the executor's optimistic check for what it is for:
/// writers in other processes (the API).
#[derive(Debug, Default)]
pub(crate) struct StreamLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while a command runs on one stream.
#[derive(Debug)]
pub(crate) struct StreamGuard {
    locks: Arc<StreamLocks>,
    stream: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl StreamLocks {
    /// Waits for `stream`'s turn.
    pub async fn lock(self: &Arc<Self>, stream: String) -> StreamGuard {
        let mutex = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(stream.clone()).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        StreamGuard {
            locks: self.clone(),
            stream,
            guard: Some(guard),
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let guard = self.guard.take();
        let mut locks = self.locks.locks.lock().unwrap_or_else(|p| p.into_inner());
        drop(guard);
        // Only the map holds it now: nobody waits, forget the stream. Others
        // only clone it under the map's lock, which is held here.
        if locks
            .get(&self.stream)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            locks.remove(&self.stream);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use domain::ids::{OrderId, ProductId, UserId};
    use domain::order::OrderLine;
    use domain::values::{Money, Quantity};
    use uuid::Uuid;

    fn placed() -> OrderState {
        let order_id = OrderId::new(Uuid::from_u128(1));
        let events = [OrderEvent::OrderPlaced {
            order_id,
            user_id: UserId::new(Uuid::from_u128(2)),
            lines: vec![OrderLine {
                product_id: ProductId::new(Uuid::from_u128(3)),
                quantity: Quantity::new(1).unwrap(),
                unit_price: Money::parse("2.00").unwrap(),
            }],
            total: Money::parse("2.00").unwrap(),
        }];
        Order::fold(events.iter())
    }

    #[test]
    fn the_timeout_cancels_only_a_confirmed_unpaid_order() {
        let cancel = || OrderCommand::Cancel {
            reason: CancelReason::payment_timeout(),
        };
        let pending = placed();
        assert!(UnpaidOrder::decide(&pending, cancel()).is_err());
        let confirmed = Order::evolve(pending, &OrderEvent::OrderConfirmed);
        assert_eq!(UnpaidOrder::decide(&confirmed, cancel()).unwrap().len(), 1);
        let paid = Order::evolve(
            confirmed,
            &OrderEvent::OrderPaid {
                amount: Money::parse("2.00").unwrap(),
            },
        );
        // The plain order would allow it; the timer must not.
        assert!(Order::decide(&paid, cancel()).is_ok());
        assert_eq!(
            UnpaidOrder::decide(&paid, cancel()),
            Err(OrderError::InvalidTransition {
                from: OrderStatus::Paid,
                action: "cancel"
            })
        );
        assert_eq!(
            observations(&paid),
            vec![SagaInput::OrderConfirmed, SagaInput::OrderPaid]
        );
    }

    #[tokio::test]
    async fn stream_locks_queue_one_stream_and_forget_it_after() {
        let locks = Arc::new(StreamLocks::default());
        let first = locks.lock("product-a".into()).await;
        let waiting = {
            let locks = locks.clone();
            tokio::spawn(async move { drop(locks.lock("product-a".into()).await) })
        };
        // Another stream does not wait.
        drop(locks.lock("product-b".into()).await);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(first);
        waiting.await.unwrap();
        assert!(locks.locks.lock().unwrap().is_empty());
    }
}
