//! Test helpers shared by the saga's unit tests: fixed ids, times and
//! tunables, inputs and expected actions by line number, and [`Saga`], which
//! drives a saga through inputs.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use uuid::Uuid;

use super::*;
use crate::ids::{OrderId, ProductId};
use crate::order::{RejectDetails, RejectReason};
use crate::values::{CancelReason, Quantity};

pub(super) fn oid() -> OrderId {
    OrderId::new(Uuid::from_u128(0xA1))
}
pub(super) fn pid(n: u128) -> ProductId {
    ProductId::new(Uuid::from_u128(0xC0 + n))
}
pub(super) fn q(n: u32) -> Quantity {
    Quantity::new(n).unwrap()
}
pub(super) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
}
pub(super) fn cfg() -> SagaConfig {
    SagaConfig {
        payment_timeout: Duration::minutes(15),
        max_compensation_attempts: 3,
    }
}
pub(super) fn id(suffix: &str) -> String {
    format!("{}:{suffix}", oid())
}
pub(super) fn placed(lines: u128) -> SagaInput {
    SagaInput::OrderPlaced {
        order_id: oid(),
        lines: (0..lines).map(|n| (pid(n), q(2))).collect(),
    }
}
pub(super) fn ok(suffix: &str) -> SagaInput {
    SagaInput::CommandSucceeded {
        command_id: id(suffix),
    }
}
pub(super) fn failed(suffix: &str) -> SagaInput {
    SagaInput::CommandFailed {
        command_id: id(suffix),
        error: "connection reset".into(),
    }
}
pub(super) fn reserved(n: u128) -> SagaInput {
    SagaInput::ReservationSucceeded { product_id: pid(n) }
}
pub(super) fn refused(n: u128) -> SagaInput {
    SagaInput::ReservationRefused {
        product_id: pid(n),
        reason: RejectReason::InsufficientStock,
        requested: 2,
        available: 1,
    }
}
pub(super) fn reserve(n: usize) -> SagaAction {
    SagaAction::Issue(SagaCommand {
        command_id: id(&format!("reserve:{n}")),
        kind: SagaCommandKind::ReserveStock {
            product_id: pid(n as u128),
            order_id: oid(),
            quantity: q(2),
        },
    })
}
pub(super) fn release(n: usize) -> SagaAction {
    SagaAction::Issue(SagaCommand {
        command_id: id(&format!("release:{n}")),
        kind: SagaCommandKind::ReleaseStock {
            product_id: pid(n as u128),
            order_id: oid(),
        },
    })
}
pub(super) fn ship(n: usize) -> SagaAction {
    SagaAction::Issue(SagaCommand {
        command_id: id(&format!("ship:{n}")),
        kind: SagaCommandKind::ShipStock {
            product_id: pid(n as u128),
            order_id: oid(),
        },
    })
}
pub(super) fn confirm() -> SagaAction {
    SagaAction::Issue(SagaCommand {
        command_id: id("confirm"),
        kind: SagaCommandKind::ConfirmOrder { order_id: oid() },
    })
}
pub(super) fn reject(n: u128) -> SagaAction {
    SagaAction::Issue(SagaCommand {
        command_id: id("reject"),
        kind: SagaCommandKind::RejectOrder {
            order_id: oid(),
            reason: RejectReason::InsufficientStock,
            details: RejectDetails {
                product_id: Some(pid(n)),
                requested: Some(2),
                available: Some(1),
            },
        },
    })
}
pub(super) fn cancel() -> SagaAction {
    SagaAction::Issue(SagaCommand {
        command_id: id("cancel:payment_timeout"),
        kind: SagaCommandKind::CancelOrder {
            order_id: oid(),
            reason: CancelReason::payment_timeout(),
        },
    })
}
pub(super) fn timer_at(minutes: i64) -> SagaAction {
    SagaAction::SetPaymentTimer {
        due_at: t0() + Duration::minutes(minutes),
    }
}

/// Drives a saga through inputs, all at `t0` unless a step says otherwise.
pub(super) struct Saga {
    pub(super) state: SagaState,
    now: DateTime<Utc>,
}

impl Saga {
    pub(super) fn new() -> Self {
        Saga {
            state: SagaState::default(),
            now: t0(),
        }
    }
    pub(super) fn at(mut self, minutes: i64) -> Self {
        self.now = t0() + Duration::minutes(minutes);
        self
    }
    /// Feeds an input and returns the actions.
    pub(super) fn on(&mut self, input: SagaInput) -> Vec<SagaAction> {
        let (state, actions) = handle(self.state.clone(), input, self.now, &cfg());
        self.state = state;
        actions
    }
    /// Feeds inputs whose actions do not matter to the test.
    pub(super) fn after(mut self, inputs: impl IntoIterator<Item = SagaInput>) -> Self {
        for input in inputs {
            self.on(input);
        }
        self
    }
    /// Asserts the input changes nothing at all: no actions, same state.
    #[track_caller]
    pub(super) fn ignores(&mut self, input: SagaInput) {
        let before = self.state.clone();
        assert_eq!(self.on(input.clone()), vec![], "{input:?} produced actions");
        assert_eq!(self.state, before, "{input:?} changed the state");
    }
}

/// A two-line order, confirmed, with its payment timer running.
pub(super) fn confirmed() -> Saga {
    Saga::new().after([placed(2), reserved(0), reserved(1), ok("confirm")])
}

/// The full happy path plus a rejected and a timed-out order.
pub(super) fn scenarios() -> Vec<Vec<SagaInput>> {
    vec![
        vec![
            placed(2),
            reserved(0),
            reserved(1),
            SagaInput::OrderConfirmed,
            SagaInput::OrderPaid,
            SagaInput::OrderShipped,
            ok("ship:0"),
            ok("ship:1"),
        ],
        vec![
            placed(3),
            reserved(0),
            refused(1),
            reserved(2),
            ok("release:0"),
            ok("release:2"),
            ok("reject"),
        ],
        vec![
            placed(2),
            reserved(0),
            reserved(1),
            ok("confirm"),
            SagaInput::PaymentTimerFired,
            ok("cancel:payment_timeout"),
            ok("release:0"),
            ok("release:1"),
        ],
    ]
}

pub(super) fn run(inputs: &[SagaInput], twice: bool) -> (SagaState, Vec<SagaAction>) {
    let mut state = SagaState::default();
    let mut all = Vec::new();
    for (n, input) in inputs.iter().enumerate() {
        // 20 minutes apart, so a timer input comes after the 15-minute timeout.
        let now = t0() + Duration::minutes(n as i64 * 20);
        let repeats = if twice { 2 } else { 1 };
        for _ in 0..repeats {
            let (next, actions) = handle(state, input.clone(), now, &cfg());
            state = next;
            all.extend(actions);
        }
    }
    (state, all)
}
