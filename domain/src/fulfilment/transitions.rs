//! The transitions: [`handle`] decides, for one input, the saga's next state
//! and the actions the runner must carry out.

use chrono::{DateTime, Utc};

use super::command::{cancel_id, confirm_id, reject_id, release_id, reserve_id, ship_id};
use super::{
    LineStatus, PendingCommand, SagaAction, SagaCommand, SagaCommandKind, SagaConfig, SagaInput,
    SagaLine, SagaPhase, SagaState, SagaStep, StepKind,
};
use crate::ids::{OrderId, ProductId};
use crate::order::{RejectDetails, Rejection};
use crate::values::{CancelReason, Quantity};

/// Decides the saga's next state and actions for one input.
///
/// `now` is the time of the input (the runner's clock), used for the timer's
/// due time and the history; `cfg` carries the tunables.
pub fn handle(
    state: SagaState,
    input: SagaInput,
    now: DateTime<Utc>,
    cfg: &SagaConfig,
) -> (SagaState, Vec<SagaAction>) {
    let mut run = Run {
        s: state,
        now,
        cfg,
        actions: Vec::new(),
    };
    run.apply(input);
    run.settle();
    (run.s, run.actions)
}

/// One call of [`handle`]: the state being changed and the actions so far.
struct Run<'a> {
    s: SagaState,
    now: DateTime<Utc>,
    cfg: &'a SagaConfig,
    actions: Vec<SagaAction>,
}

impl Run<'_> {
    fn apply(&mut self, input: SagaInput) {
        if let SagaInput::OrderPlaced { order_id, lines } = input {
            return self.start(order_id, lines);
        }
        // Anything before the saga started is for a saga that does not exist yet.
        let Some(order_id) = self.s.order_id else {
            return;
        };
        match input {
            SagaInput::OrderPlaced { .. } => {}
            SagaInput::ReservationSucceeded { product_id }
            | SagaInput::StockReserved { product_id } => {
                if let Some(i) = self.line(product_id) {
                    self.on_reserved(order_id, i, "reservation succeeded");
                }
            }
            SagaInput::ReservationRefused {
                product_id,
                reason,
                requested,
                available,
            } => {
                if let Some(i) = self.line(product_id) {
                    let details = RejectDetails {
                        product_id: Some(product_id),
                        requested: Some(requested),
                        available: Some(available),
                    };
                    self.on_refused(order_id, i, Rejection { reason, details });
                }
            }
            SagaInput::CommandSucceeded { command_id } => self.on_succeeded(order_id, &command_id),
            SagaInput::CommandFailed { command_id, error } => self.on_failed(&command_id, &error),
            SagaInput::OrderConfirmed => self.on_confirmed(order_id, "OrderConfirmed observed"),
            SagaInput::OrderRejected => self.on_rejected(order_id, "OrderRejected observed"),
            SagaInput::OrderPaid => self.on_paid(order_id),
            SagaInput::OrderCancelled { reason } => {
                self.on_cancelled(order_id, reason, "OrderCancelled observed")
            }
            SagaInput::OrderShipped => self.on_order_shipped(order_id),
            SagaInput::StockReleased { product_id } => {
                if let Some(i) = self.line(product_id) {
                    self.on_released(order_id, i, "StockReleased observed");
                }
            }
            SagaInput::StockShipped { product_id } => {
                if let Some(i) = self.line(product_id) {
                    self.on_stock_shipped(order_id, i, "StockShipped observed");
                }
            }
            SagaInput::PaymentTimerFired => self.on_timer_fired(order_id),
        }
    }

    fn start(&mut self, order_id: OrderId, lines: Vec<(ProductId, Quantity)>) {
        if self.s.phase != SagaPhase::NotStarted {
            return;
        }
        self.s.order_id = Some(order_id);
        self.s.lines = lines
            .into_iter()
            .map(|(product_id, quantity)| SagaLine {
                product_id,
                quantity,
                status: LineStatus::Pending,
            })
            .collect();
        let detail = format!("order {order_id} placed with {} lines", self.s.lines.len());
        self.record(StepKind::Started, None, false, detail);
        self.set_phase(SagaPhase::Reserving);
        for i in 0..self.s.lines.len() {
            let line = &self.s.lines[i];
            let command = SagaCommand {
                command_id: reserve_id(order_id, i),
                kind: SagaCommandKind::ReserveStock {
                    product_id: line.product_id,
                    order_id,
                    quantity: line.quantity,
                },
            };
            self.issue(command);
        }
        self.check_replies(order_id);
    }

    /// A line's stock is held: by a reply, an observed `StockReserved`, or
    /// the reserve command's success.
    fn on_reserved(&mut self, order_id: OrderId, i: usize, via: &str) {
        let id = reserve_id(order_id, i);
        let unsettled = matches!(
            self.s.lines[i].status,
            LineStatus::Pending | LineStatus::Refused { .. }
        );
        match self.s.phase {
            SagaPhase::Reserving if unsettled => {
                // A Refused line that turns out reserved keeps the rejection:
                // it will simply be released with the others.
                self.s.lines[i].status = LineStatus::Reserved;
                self.complete_or_observe(&id, via);
                self.check_replies(order_id);
            }
            SagaPhase::Compensating
            | SagaPhase::Rejected
            | SagaPhase::Cancelled
            | SagaPhase::NeedsAttention
                if unsettled =>
            {
                // A late reservation after the saga gave up on the order:
                // the stock must not stay held for a dead order.
                self.s.lines[i].status = LineStatus::Reserved;
                self.complete_or_observe(&id, via);
                self.record(
                    StepKind::Observed,
                    Some(&id),
                    true,
                    "late reservation after the order ended; releasing it".to_owned(),
                );
                self.issue_release(order_id, i);
                if matches!(self.s.phase, SagaPhase::Rejected | SagaPhase::Cancelled) {
                    self.set_phase(SagaPhase::Compensating);
                }
            }
            _ => {}
        }
    }

    fn on_refused(&mut self, order_id: OrderId, i: usize, refusal: Rejection) {
        if self.s.phase != SagaPhase::Reserving || self.s.lines[i].status != LineStatus::Pending {
            return;
        }
        let id = reserve_id(order_id, i);
        self.take_pending(&id);
        self.s.lines[i].status = LineStatus::Refused {
            reason: refusal.reason,
        };
        let detail = format!(
            "reservation refused: {} ({} requested, {} available)",
            refusal.reason,
            refusal.details.requested.unwrap_or_default(),
            refusal.details.available.unwrap_or_default()
        );
        self.record(StepKind::Refused, Some(&id), false, detail);
        // The first refusal received names the rejection.
        if self.s.rejection.is_none() {
            self.s.rejection = Some(refusal);
        }
        self.check_replies(order_id);
    }

    /// Once every line has a definitive reply: confirm, or compensate and reject.
    fn check_replies(&mut self, order_id: OrderId) {
        if self.s.phase != SagaPhase::Reserving
            || self.s.lines.iter().any(|l| l.status == LineStatus::Pending)
        {
            return;
        }
        match self.s.rejection.clone() {
            None => {
                self.set_phase(SagaPhase::Confirming);
                self.issue(SagaCommand {
                    command_id: confirm_id(order_id),
                    kind: SagaCommandKind::ConfirmOrder { order_id },
                });
            }
            Some(rejection) => {
                self.set_phase(SagaPhase::Compensating);
                // Every line that was issued and not refused holds stock.
                for i in 0..self.s.lines.len() {
                    if self.s.lines[i].status == LineStatus::Reserved {
                        self.issue_release(order_id, i);
                    }
                }
                self.issue(SagaCommand {
                    command_id: reject_id(order_id),
                    kind: SagaCommandKind::RejectOrder {
                        order_id,
                        reason: rejection.reason,
                        details: rejection.details,
                    },
                });
            }
        }
    }

    fn on_succeeded(&mut self, order_id: OrderId, command_id: &str) {
        let Some(kind) = self
            .s
            .pending
            .iter()
            .find(|p| p.command.command_id == command_id)
            .map(|p| p.command.kind.clone())
        else {
            // Not outstanding: a duplicate or late reply.
            return;
        };
        let via = "command succeeded";
        match kind {
            SagaCommandKind::ReserveStock { product_id, .. } => {
                if let Some(i) = self.line(product_id) {
                    self.on_reserved(order_id, i, via);
                }
            }
            SagaCommandKind::ReleaseStock { product_id, .. } => {
                if let Some(i) = self.line(product_id) {
                    self.on_released(order_id, i, via);
                }
            }
            SagaCommandKind::ShipStock { product_id, .. } => {
                if let Some(i) = self.line(product_id) {
                    self.on_stock_shipped(order_id, i, via);
                }
            }
            SagaCommandKind::ConfirmOrder { .. } => self.on_confirmed(order_id, via),
            SagaCommandKind::RejectOrder { .. } => self.on_rejected(order_id, via),
            SagaCommandKind::CancelOrder { reason, .. } => self.on_cancelled(order_id, reason, via),
        }
        // If the saga had moved on, the handler ignored it; it is answered all the same.
        self.complete(command_id, via);
    }

    fn on_failed(&mut self, command_id: &str, error: &str) {
        let Some(index) = self
            .s
            .pending
            .iter()
            .position(|p| p.command.command_id == command_id)
        else {
            return;
        };
        let command = self.s.pending[index].command.clone();
        let attempts = self.s.pending[index].attempts;
        let compensation = command.is_compensation();
        self.record(
            StepKind::Failed,
            Some(command_id),
            compensation,
            error.to_owned(),
        );
        if compensation && attempts >= self.cfg.max_compensation_attempts.max(1) {
            self.s.pending.remove(index);
            let detail = format!("gave up after {attempts} attempts; last error: {error}");
            self.record(StepKind::GaveUp, Some(command_id), true, detail);
            self.set_phase(SagaPhase::NeedsAttention);
        } else {
            // Forward steps are retried until they succeed; the runner backs off.
            if let Some(p) = self.s.pending.get_mut(index) {
                p.attempts = attempts.saturating_add(1);
                p.issued_at = self.now;
            }
            let detail = format!("attempt {}", attempts.saturating_add(1));
            self.record(StepKind::Retried, Some(command_id), compensation, detail);
            self.actions.push(SagaAction::Issue(command));
        }
    }

    fn on_confirmed(&mut self, order_id: OrderId, via: &str) {
        if self.s.phase != SagaPhase::Confirming {
            return;
        }
        self.complete_or_observe(&confirm_id(order_id), via);
        self.set_phase(SagaPhase::AwaitingPayment);
        let due_at = self.now + self.cfg.payment_timeout;
        self.s.payment_due_at = Some(due_at);
        self.actions.push(SagaAction::SetPaymentTimer { due_at });
        self.record(
            StepKind::TimerSet,
            None,
            false,
            format!("payment due at {due_at}"),
        );
    }

    fn on_rejected(&mut self, order_id: OrderId, via: &str) {
        // Only the saga rejects orders; all that is left is to note it is done.
        self.complete(&reject_id(order_id), via);
    }

    fn on_paid(&mut self, order_id: OrderId) {
        if !matches!(
            self.s.phase,
            SagaPhase::Confirming | SagaPhase::AwaitingPayment
        ) {
            return;
        }
        // Paid implies confirmed, even if that reply has not arrived yet.
        self.complete(&confirm_id(order_id), "OrderPaid observed");
        if self.take_pending(&cancel_id(order_id)).is_some() {
            self.record(
                StepKind::Observed,
                Some(&cancel_id(order_id)),
                false,
                "payment arrived before the timeout cancellation; dropping it".to_owned(),
            );
        }
        self.record(StepKind::Observed, None, false, "order paid".to_owned());
        self.set_phase(SagaPhase::Paid);
        self.clear_timer();
    }

    fn on_cancelled(&mut self, order_id: OrderId, reason: CancelReason, via: &str) {
        if !matches!(
            self.s.phase,
            SagaPhase::Confirming | SagaPhase::AwaitingPayment | SagaPhase::Paid
        ) {
            return;
        }
        self.complete(&confirm_id(order_id), via);
        if !self.complete(&cancel_id(order_id), via) {
            self.record(
                StepKind::Observed,
                None,
                false,
                format!("order cancelled: {reason}"),
            );
        }
        self.s.cancel_reason = Some(reason);
        self.clear_timer();
        self.set_phase(SagaPhase::Compensating);
        for i in 0..self.s.lines.len() {
            if self.s.lines[i].status == LineStatus::Reserved {
                self.issue_release(order_id, i);
            }
        }
    }

    fn on_order_shipped(&mut self, order_id: OrderId) {
        if self.s.phase != SagaPhase::Paid {
            return;
        }
        self.record(StepKind::Observed, None, false, "order shipped".to_owned());
        self.set_phase(SagaPhase::Shipping);
        for i in 0..self.s.lines.len() {
            if self.s.lines[i].status == LineStatus::Reserved {
                let product_id = self.s.lines[i].product_id;
                self.issue(SagaCommand {
                    command_id: ship_id(order_id, i),
                    kind: SagaCommandKind::ShipStock {
                        product_id,
                        order_id,
                    },
                });
            }
        }
    }

    fn on_released(&mut self, order_id: OrderId, i: usize, via: &str) {
        let releasing = matches!(
            self.s.phase,
            SagaPhase::Compensating
                | SagaPhase::NeedsAttention
                | SagaPhase::Rejected
                | SagaPhase::Cancelled
        );
        if !releasing || self.s.lines[i].status != LineStatus::Reserved {
            return;
        }
        self.s.lines[i].status = LineStatus::Released;
        self.complete_or_observe(&release_id(order_id, i), via);
    }

    fn on_stock_shipped(&mut self, order_id: OrderId, i: usize, via: &str) {
        if self.s.phase != SagaPhase::Shipping || self.s.lines[i].status != LineStatus::Reserved {
            return;
        }
        self.s.lines[i].status = LineStatus::Shipped;
        self.complete_or_observe(&ship_id(order_id, i), via);
    }

    fn on_timer_fired(&mut self, order_id: OrderId) {
        if self.s.phase != SagaPhase::AwaitingPayment {
            return;
        }
        // A timer that fires early (a sloppy or restarted runner) is ignored;
        // the runner fires it again at `payment_due_at`.
        match self.s.payment_due_at {
            Some(due_at) if self.now >= due_at => {}
            _ => return,
        }
        self.s.payment_due_at = None;
        self.record(
            StepKind::TimerFired,
            None,
            false,
            "payment timed out".to_owned(),
        );
        self.issue(SagaCommand {
            command_id: cancel_id(order_id),
            kind: SagaCommandKind::CancelOrder {
                order_id,
                reason: CancelReason::payment_timeout(),
            },
        });
    }

    /// Moves compensating sagas to their final phase, and shipping sagas to
    /// `Completed`, once nothing is outstanding.
    fn settle(&mut self) {
        if !self.s.pending.is_empty() {
            return;
        }
        match self.s.phase {
            SagaPhase::Compensating if self.s.cancel_reason.is_some() => {
                self.set_phase(SagaPhase::Cancelled)
            }
            SagaPhase::Compensating => self.set_phase(SagaPhase::Rejected),
            SagaPhase::Shipping => self.set_phase(SagaPhase::Completed),
            _ => {}
        }
    }

    fn line(&self, product_id: ProductId) -> Option<usize> {
        self.s.lines.iter().position(|l| l.product_id == product_id)
    }

    fn issue_release(&mut self, order_id: OrderId, i: usize) {
        let product_id = self.s.lines[i].product_id;
        self.issue(SagaCommand {
            command_id: release_id(order_id, i),
            kind: SagaCommandKind::ReleaseStock {
                product_id,
                order_id,
            },
        });
    }

    /// Issues a command unless the same id is already outstanding.
    fn issue(&mut self, command: SagaCommand) {
        if self
            .s
            .pending
            .iter()
            .any(|p| p.command.command_id == command.command_id)
        {
            return;
        }
        let compensation = command.is_compensation();
        let detail = command.kind.describe();
        self.record(
            StepKind::Issued,
            Some(&command.command_id),
            compensation,
            detail,
        );
        self.s.pending.push(PendingCommand {
            command: command.clone(),
            attempts: 1,
            issued_at: self.now,
        });
        self.actions.push(SagaAction::Issue(command));
    }

    fn take_pending(&mut self, command_id: &str) -> Option<PendingCommand> {
        let index = self
            .s
            .pending
            .iter()
            .position(|p| p.command.command_id == command_id)?;
        Some(self.s.pending.remove(index))
    }

    /// Marks an outstanding command answered; false if it was not outstanding.
    fn complete(&mut self, command_id: &str, via: &str) -> bool {
        match self.take_pending(command_id) {
            Some(p) => {
                let compensation = p.command.is_compensation();
                self.record(
                    StepKind::Succeeded,
                    Some(command_id),
                    compensation,
                    via.to_owned(),
                );
                true
            }
            None => false,
        }
    }

    fn complete_or_observe(&mut self, command_id: &str, via: &str) {
        if !self.complete(command_id, via) {
            self.record(StepKind::Observed, Some(command_id), false, via.to_owned());
        }
    }

    fn clear_timer(&mut self) {
        if self.s.payment_due_at.take().is_some() {
            self.actions.push(SagaAction::ClearPaymentTimer);
            self.record(
                StepKind::TimerCleared,
                None,
                false,
                "payment timer cleared".to_owned(),
            );
        }
    }

    fn set_phase(&mut self, phase: SagaPhase) {
        if self.s.phase != phase {
            self.s.phase = phase;
            self.record(
                StepKind::PhaseChanged,
                None,
                false,
                phase.as_str().to_owned(),
            );
        }
    }

    fn record(
        &mut self,
        kind: StepKind,
        command_id: Option<&str>,
        compensation: bool,
        detail: String,
    ) {
        self.s.history.push(SagaStep {
            at: self.now,
            kind,
            command_id: command_id.map(str::to_owned),
            compensation,
            detail,
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::fulfilment::testing::*;
    use crate::fulfilment::*;
    use crate::order::RejectReason;
    use crate::values::CancelReason;
    use chrono::Duration;

    #[test]
    fn order_placed_reserves_every_line_at_once() {
        let mut saga = Saga::new();
        assert_eq!(saga.on(placed(3)), vec![reserve(0), reserve(1), reserve(2)]);
        assert_eq!(saga.state.phase, SagaPhase::Reserving);
        assert_eq!(saga.state.pending_commands().len(), 3);
    }

    #[test]
    fn all_lines_reserved_confirms() {
        let mut saga = Saga::new().after([placed(2)]);
        assert_eq!(saga.on(reserved(1)), vec![]);
        assert_eq!(saga.on(reserved(0)), vec![confirm()]);
        assert_eq!(saga.state.phase, SagaPhase::Confirming);
    }

    #[test]
    fn reservations_can_also_be_learnt_from_events_or_command_outcomes() {
        let mut saga = Saga::new().after([placed(2)]);
        assert_eq!(
            saga.on(SagaInput::StockReserved { product_id: pid(0) }),
            vec![]
        );
        assert_eq!(saga.on(ok("reserve:1")), vec![confirm()]);
    }

    #[test]
    fn confirmation_sets_the_payment_timer() {
        let mut saga = Saga::new().after([placed(1), reserved(0)]).at(1);
        assert_eq!(saga.on(SagaInput::OrderConfirmed), vec![timer_at(16)]);
        assert_eq!(saga.state.phase, SagaPhase::AwaitingPayment);
        assert_eq!(
            saga.state.payment_due_at,
            Some(t0() + Duration::minutes(16))
        );
        // The command's own success, arriving later, is a duplicate.
        saga.ignores(ok("confirm"));
    }

    #[test]
    fn one_line_refused_releases_the_others_and_rejects() {
        let mut saga = Saga::new().after([placed(3), reserved(0)]);
        assert_eq!(saga.on(refused(1)), vec![]);
        // Releases first, then the rejection, issued together.
        assert_eq!(
            saga.on(reserved(2)),
            vec![release(0), release(2), reject(1)]
        );
        assert_eq!(saga.state.phase, SagaPhase::Compensating);
        assert_eq!(
            saga.state.line_status(pid(1)),
            Some(LineStatus::Refused {
                reason: RejectReason::InsufficientStock
            })
        );
        saga.on(ok("release:0"));
        saga.on(SagaInput::StockReleased { product_id: pid(2) });
        assert!(!saga.state.is_finished());
        assert_eq!(saga.on(SagaInput::OrderRejected), vec![]);
        assert_eq!(saga.state.phase, SagaPhase::Rejected);
        assert!(saga.state.is_finished());
        assert!(saga.state.pending_commands().is_empty());
    }

    #[test]
    fn the_first_refusal_names_the_rejection() {
        let mut saga = Saga::new().after([placed(3), refused(2)]);
        assert_eq!(
            saga.on(SagaInput::ReservationRefused {
                product_id: pid(0),
                reason: RejectReason::ProductDiscontinued,
                requested: 2,
                available: 0,
            }),
            vec![]
        );
        assert_eq!(saga.on(reserved(1)), vec![release(1), reject(2)]);
    }

    #[test]
    fn all_lines_refused_just_rejects() {
        let mut saga = Saga::new().after([placed(2), refused(0)]);
        assert_eq!(saga.on(refused(1)), vec![reject(0)]);
        saga.on(ok("reject"));
        assert!(saga.state.is_finished());
        assert_eq!(saga.state.phase, SagaPhase::Rejected);
    }

    #[test]
    fn cancel_after_confirm_releases_all() {
        let mut saga = confirmed();
        assert_eq!(
            saga.on(SagaInput::OrderCancelled {
                reason: CancelReason::customer_request()
            }),
            vec![SagaAction::ClearPaymentTimer, release(0), release(1)]
        );
        assert_eq!(saga.state.phase, SagaPhase::Compensating);
        saga.on(ok("release:0"));
        saga.on(ok("release:1"));
        assert_eq!(saga.state.phase, SagaPhase::Cancelled);
        assert!(saga.state.is_finished());
        assert_eq!(
            saga.state.cancel_reason,
            Some(CancelReason::customer_request())
        );
    }

    #[test]
    fn cancel_after_payment_releases_all() {
        let mut saga = confirmed().after([SagaInput::OrderPaid]);
        assert_eq!(
            saga.on(SagaInput::OrderCancelled {
                reason: CancelReason::customer_request()
            }),
            vec![release(0), release(1)]
        );
    }

    #[test]
    fn payment_timer_firing_while_confirmed_cancels_and_releases() {
        let mut saga = confirmed().at(15);
        assert_eq!(saga.on(SagaInput::PaymentTimerFired), vec![cancel()]);
        assert_eq!(saga.state.payment_due_at, None);
        // The cancellation's success (or the observed event) releases the stock.
        assert_eq!(
            saga.on(ok("cancel:payment_timeout")),
            vec![release(0), release(1)]
        );
        assert_eq!(
            saga.state.cancel_reason,
            Some(CancelReason::payment_timeout())
        );
        saga.ignores(SagaInput::OrderCancelled {
            reason: CancelReason::payment_timeout(),
        });
        saga.on(SagaInput::StockReleased { product_id: pid(0) });
        saga.on(SagaInput::StockReleased { product_id: pid(1) });
        assert_eq!(saga.state.phase, SagaPhase::Cancelled);
    }

    #[test]
    fn payment_timer_firing_early_does_nothing() {
        confirmed().at(14).ignores(SagaInput::PaymentTimerFired);
    }

    #[test]
    fn timer_firing_after_payment_does_nothing() {
        let mut saga = confirmed().at(5);
        assert_eq!(
            saga.on(SagaInput::OrderPaid),
            vec![SagaAction::ClearPaymentTimer]
        );
        assert_eq!(saga.state.phase, SagaPhase::Paid);
        saga.at(20).ignores(SagaInput::PaymentTimerFired);
    }

    #[test]
    fn timer_firing_after_cancellation_does_nothing() {
        let mut saga = confirmed()
            .after([SagaInput::OrderCancelled {
                reason: CancelReason::customer_request(),
            }])
            .at(20);
        saga.ignores(SagaInput::PaymentTimerFired);
    }

    #[test]
    fn payment_racing_the_timeout_wins_and_drops_the_cancellation() {
        let mut saga = confirmed().at(15).after([SagaInput::PaymentTimerFired]);
        assert_eq!(saga.on(SagaInput::OrderPaid), vec![]);
        assert_eq!(saga.state.phase, SagaPhase::Paid);
        assert!(saga.state.pending_commands().is_empty());
        // The cancellation's late failure (the order was paid) changes nothing.
        saga.ignores(failed("cancel:payment_timeout"));
    }

    #[test]
    fn shipping_ships_every_line_then_completes() {
        let mut saga = confirmed().after([SagaInput::OrderPaid]);
        assert_eq!(saga.on(SagaInput::OrderShipped), vec![ship(0), ship(1)]);
        assert_eq!(saga.state.phase, SagaPhase::Shipping);
        saga.on(ok("ship:0"));
        saga.on(SagaInput::StockShipped { product_id: pid(1) });
        assert_eq!(saga.state.phase, SagaPhase::Completed);
        assert!(saga.state.is_finished());
        saga.ignores(SagaInput::StockShipped { product_id: pid(0) });
        saga.ignores(ok("ship:1"));
    }

    #[test]
    fn duplicate_or_late_replies_issue_nothing() {
        let mut saga = Saga::new().after([placed(2), reserved(0)]);
        saga.ignores(placed(2));
        saga.ignores(reserved(0));
        saga.ignores(SagaInput::StockReserved { product_id: pid(0) });
        saga.ignores(ok("reserve:0"));
        saga.ignores(refused(0));
        saga.ignores(SagaInput::ReservationSucceeded { product_id: pid(9) });
        saga.on(reserved(1));
        saga.ignores(reserved(1));
        saga.ignores(refused(1));
        saga.on(SagaInput::OrderConfirmed);
        saga.ignores(SagaInput::OrderConfirmed);
        saga.ignores(ok("confirm"));
        saga.ignores(SagaInput::OrderRejected);
        saga.ignores(SagaInput::StockReleased { product_id: pid(0) });
        saga.ignores(SagaInput::OrderShipped);
        saga.ignores(ok("unknown"));
        saga.on(SagaInput::OrderPaid);
        saga.ignores(SagaInput::OrderPaid);
        saga.ignores(SagaInput::OrderConfirmed);
        saga.on(SagaInput::OrderShipped);
        saga.ignores(SagaInput::OrderShipped);
        saga.ignores(SagaInput::OrderCancelled {
            reason: CancelReason::customer_request(),
        });
    }

    #[test]
    fn inputs_before_the_order_is_placed_are_ignored() {
        let mut saga = Saga::new();
        saga.ignores(reserved(0));
        saga.ignores(SagaInput::PaymentTimerFired);
        saga.ignores(ok("confirm"));
        assert_eq!(saga.state, SagaState::default());
    }

    #[test]
    fn a_reservation_after_the_order_ended_is_released() {
        // Line 1 was refused; much later its reservation shows up after all
        // (a retried reserve that did go through).
        let mut saga = Saga::new().after([
            placed(2),
            reserved(0),
            refused(1),
            ok("release:0"),
            ok("reject"),
        ]);
        assert_eq!(saga.state.phase, SagaPhase::Rejected);
        assert_eq!(
            saga.on(SagaInput::StockReserved { product_id: pid(1) }),
            vec![release(1)]
        );
        assert_eq!(saga.state.phase, SagaPhase::Compensating);
        saga.on(ok("release:1"));
        assert_eq!(saga.state.phase, SagaPhase::Rejected);
        // Already released: seeing the reservation again changes nothing.
        saga.ignores(SagaInput::StockReserved { product_id: pid(0) });
        saga.ignores(SagaInput::StockReserved { product_id: pid(1) });
    }

    #[test]
    fn failing_releases_are_retried_then_need_attention() {
        let mut saga = Saga::new().after([placed(2), reserved(0), refused(1)]);
        assert_eq!(saga.on(failed("release:0")), vec![release(0)]);
        assert_eq!(saga.on(failed("release:0")), vec![release(0)]);
        assert_eq!(saga.state.pending[0].attempts, 3);
        assert_eq!(saga.on(failed("release:0")), vec![]);
        assert_eq!(saga.state.phase, SagaPhase::NeedsAttention);
        assert!(saga.state.needs_attention());
        assert!(saga.state.history.iter().any(|s| s.kind == StepKind::GaveUp
            && s.command_id.as_deref() == Some(id("release:0").as_str())));
        // The rejection still goes through, and the phase stays visible.
        saga.on(ok("reject"));
        assert_eq!(saga.state.phase, SagaPhase::NeedsAttention);
        assert!(!saga.state.is_finished());
        // A late success of the given-up release is still recorded.
        saga.on(SagaInput::StockReleased { product_id: pid(0) });
        assert_eq!(saga.state.line_status(pid(0)), Some(LineStatus::Released));
    }

    #[test]
    fn failing_forward_steps_are_reissued_with_the_same_id() {
        let mut saga = Saga::new().after([placed(1)]);
        for _ in 0..10 {
            assert_eq!(saga.on(failed("reserve:0")), vec![reserve(0)]);
        }
        assert_eq!(saga.state.phase, SagaPhase::Reserving);
        assert_eq!(saga.state.pending[0].attempts, 11);
        assert_eq!(saga.on(reserved(0)), vec![confirm()]);
        assert_eq!(saga.on(failed("confirm")), vec![confirm()]);
    }

    /// omicron-style: every input delivered twice gives the same actions and
    /// final phase as delivering it once.
    #[test]
    fn every_input_delivered_twice_changes_nothing_more() {
        for inputs in scenarios() {
            let (once_state, once) = run(&inputs, false);
            let (twice_state, twice) = run(&inputs, true);
            assert_eq!(once, twice);
            assert_eq!(once_state, twice_state);
            assert!(once_state.is_finished(), "{:?}", once_state.phase);
        }
    }
}
