//! omicron-style saga tests (nexus/src/app/sagas/test_helpers.rs): the runner
//! is killed at every step of a saga and restarted, and every step is run
//! twice; either way each order must end as if nothing had happened.
//!
//! "Killed" means the failure hook answers `Crash`: `run` returns at once and
//! every task of the runner is aborted where it stands, between a commit and
//! the next command, between a command and the record of its outcome, and
//! so on. A fresh runner then takes over from what PostgreSQL holds.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Harness, PAYMENT_TIMEOUT};
use domain::fulfilment::{LineStatus, SagaPhase};
use domain::ids::{OrderId, ProductId};
use domain::order::{OrderCommand, OrderStatus};
use domain::values::CancelReason;
use sagas::{Hooks, Injected, SagaError, Step};

/// One kind of order the tests crash through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// Three lines, all in stock: confirmed.
    Confirmed,
    /// Three lines, the second short: rejected, the others released.
    Rejected,
    /// Confirmed, never paid: the payment timer cancels it and releases.
    TimedOut,
}

/// An order of a scenario, with fresh products.
struct Case {
    order: Option<OrderId>,
    lines: Vec<(ProductId, u32)>,
    stock: Vec<u32>,
}

async fn prepare(h: &Harness, scenario: Scenario) -> Case {
    let stock = match scenario {
        Scenario::Rejected => vec![5, 1, 5],
        Scenario::Confirmed | Scenario::TimedOut => vec![5, 5, 5],
    };
    let mut lines = Vec::new();
    for (i, s) in stock.iter().enumerate() {
        lines.push((h.product(*s).await, i as u32 + 2));
    }
    Case {
        order: None,
        lines,
        stock,
    }
}

/// Starts the case's order. A timed-out order is first confirmed by a
/// runner of its own, then the clock passes its payment timeout: the runner
/// under test only sees the timeout's part.
async fn begin(h: &Harness, scenario: Scenario, case: &mut Case, user: domain::ids::UserId) {
    let order = if scenario == Scenario::TimedOut {
        let sagas = h.start_sagas();
        let order = h.place(user, &case.lines).await;
        h.wait_phase(order, SagaPhase::AwaitingPayment).await;
        h.caught_up().await;
        sagas.stop().await;
        h.clock.advance(
            chrono::Duration::from_std(PAYMENT_TIMEOUT).unwrap() + chrono::Duration::minutes(1),
        );
        order
    } else {
        h.place(user, &case.lines).await
    };
    case.order = Some(order);
}

/// The order ended as its scenario says, with exactly one effective
/// reservation per line while it holds stock.
async fn check(h: &Harness, scenario: Scenario, case: &Case) {
    let order = case.order.unwrap();
    let view = match scenario {
        Scenario::TimedOut => h.wait_phase(order, SagaPhase::Cancelled).await,
        _ => h.settled(order).await,
    };
    let state = h.order(order).await;
    match scenario {
        Scenario::Confirmed => {
            assert_eq!(state.status(), Some(OrderStatus::Confirmed));
            assert_eq!(view.phase, SagaPhase::AwaitingPayment);
            for (product, quantity) in &case.lines {
                let stock = h.stock(*product).await;
                assert_eq!(stock.reservation(order), Some(*quantity));
                assert_eq!(stock.reserved(), *quantity);
                assert_eq!(
                    h.events(&product.stream_id()).await,
                    ["ProductCreated", "StockReserved"]
                );
            }
        }
        Scenario::Rejected => {
            assert_eq!(state.status(), Some(OrderStatus::Rejected));
            assert_eq!(state.reason(), Some("insufficient_stock"));
            assert_eq!(view.phase, SagaPhase::Rejected);
            for (i, (product, _)) in case.lines.iter().enumerate() {
                let stock = h.stock(*product).await;
                assert_eq!((stock.on_hand(), stock.reserved()), (case.stock[i], 0));
                let expected: &[&str] = if i == 1 {
                    &["ProductCreated"]
                } else {
                    &["ProductCreated", "StockReserved", "StockReleased"]
                };
                assert_eq!(h.events(&product.stream_id()).await, expected);
            }
        }
        Scenario::TimedOut => {
            assert_eq!(state.status(), Some(OrderStatus::Cancelled));
            assert_eq!(state.reason(), Some(CancelReason::PAYMENT_TIMEOUT));
            assert_eq!(view.phase, SagaPhase::Cancelled);
            assert!(view.timers.is_empty());
            let cancels = h
                .events(&order.stream_id())
                .await
                .into_iter()
                .filter(|t| t == "OrderCancelled")
                .count();
            assert_eq!(cancels, 1);
            for (product, _) in &case.lines {
                let stock = h.stock(*product).await;
                assert_eq!(stock.reserved(), 0);
                assert_eq!(
                    h.events(&product.stream_id()).await,
                    ["ProductCreated", "StockReserved", "StockReleased"]
                );
            }
        }
    }
    assert!(view.lines.iter().all(|l| l.status != LineStatus::Pending));
    assert!(view.pending.is_empty());
    assert!(!view.needs_attention);
}

/// True for the handling of an event that a command of the saga writes:
/// an echo, which the runner may skip (see `sagas::echoes`).
fn is_echo(label: &str) -> bool {
    label.strip_prefix("committed ").is_some_and(|event_type| {
        [
            "StockReserved",
            "StockReleased",
            "StockShipped",
            "OrderConfirmed",
            "OrderRejected",
            "OrderCancelled",
        ]
        .contains(&event_type)
    })
}

/// A step of one order, told apart from its repetitions: `("committed
/// StockReserved", 1)` is the second such step.
type StepId = (String, usize);

/// A hook that records the steps of one order, and crashes at `crash_at`.
fn hook(
    order: Arc<Mutex<Option<OrderId>>>,
    crash_at: Option<StepId>,
    seen: Arc<Mutex<Vec<StepId>>>,
) -> Hooks {
    Hooks {
        fail: Some(Arc::new(move |step: &Step| {
            if Some(step.order_id()) != *order.lock().unwrap() {
                return Ok(());
            }
            let mut seen = seen.lock().unwrap();
            let label = step.label();
            let n = seen.iter().filter(|(l, _)| *l == label).count();
            seen.push((label.clone(), n));
            if crash_at.as_ref() == Some(&(label, n)) {
                return Err(Injected::Crash);
            }
            Ok(())
        })),
        repeat: false,
    }
}

async fn crash_at_every_step(scenario: Scenario) {
    let h = Harness::new().await;
    let user = h.user().await;

    // A run without failures lists the steps.
    let target = Arc::new(Mutex::new(None));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut case = prepare(&h, scenario).await;
    begin(&h, scenario, &mut case, user).await;
    *target.lock().unwrap() = case.order;
    let sagas = h.start(h.runner(hook(target.clone(), None, seen.clone())));
    check(&h, scenario, &case).await;
    h.caught_up().await;
    sagas.stop().await;
    let steps = seen.lock().unwrap().clone();
    assert!(steps.len() >= 10, "too few steps recorded: {steps:?}");

    for step in &steps {
        let mut case = prepare(&h, scenario).await;
        let target = Arc::new(Mutex::new(None));
        begin(&h, scenario, &mut case, user).await;
        *target.lock().unwrap() = case.order;
        let doomed = h.start(h.runner(hook(target.clone(), Some(step.clone()), Arc::default())));
        if is_echo(&step.0) {
            // The message of an event the runner's own command wrote is
            // skipped when the command's outcome was fed first, which is
            // a race: this step may not come again. Then the order simply
            // goes its way.
            match doomed.crashed_or_running(Duration::from_secs(5)).await {
                Ok(result) => assert!(
                    matches!(result, Err(SagaError::Injected)),
                    "{step:?}: {result:?}"
                ),
                Err(running) => {
                    check(&h, scenario, &case).await;
                    h.caught_up().await;
                    running.stop().await;
                    continue;
                }
            }
        } else {
            let result = doomed.crashed(Duration::from_secs(20)).await;
            assert!(
                matches!(result, Err(SagaError::Injected)),
                "{step:?}: {result:?}"
            );
        }
        let sagas = h.start_sagas();
        check(&h, scenario, &case).await;
        h.caught_up().await;
        sagas.stop().await;
    }
    println!(
        "{scenario:?}: crashed and recovered at {} steps",
        steps.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_order_survives_a_crash_at_every_step() {
    crash_at_every_step(Scenario::Confirmed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_order_survives_a_crash_at_every_step() {
    crash_at_every_step(Scenario::Rejected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_order_survives_a_crash_at_every_step() {
    crash_at_every_step(Scenario::TimedOut).await;
}

/// What an order's run left behind, independent of ids and timing.
#[derive(Debug, PartialEq)]
struct Outcome {
    phase: SagaPhase,
    lines: Vec<LineStatus>,
    order_events: Vec<String>,
    product_events: Vec<Vec<String>>,
}

async fn outcome(h: &Harness, case: &Case) -> Outcome {
    let order = case.order.unwrap();
    let view = h.settled(order).await;
    assert!(view.pending.is_empty());
    let mut product_events = Vec::new();
    for (product, _) in &case.lines {
        product_events.push(h.events(&product.stream_id()).await);
    }
    Outcome {
        phase: view.phase,
        lines: view.lines.iter().map(|l| l.status).collect(),
        order_events: h.events(&order.stream_id()).await,
        product_events,
    }
}

/// Runs a shipped order, a rejected one and a timed-out one; returns what
/// each left behind and how many commands the state machine issued.
async fn three_orders(h: &Harness, hooks: Hooks) -> (Vec<Outcome>, u64) {
    let user = h.user().await;
    let sagas = h.start(h.runner(hooks));

    let mut shipped = prepare(h, Scenario::Confirmed).await;
    shipped.order = Some(h.place(user, &shipped.lines).await);
    let mut rejected = prepare(h, Scenario::Rejected).await;
    rejected.order = Some(h.place(user, &rejected.lines).await);
    let mut timed_out = prepare(h, Scenario::TimedOut).await;
    timed_out.order = Some(h.place(user, &timed_out.lines).await);

    let order = shipped.order.unwrap();
    h.wait_phase(order, SagaPhase::AwaitingPayment).await;
    h.pay(order).await;
    h.wait_phase(order, SagaPhase::Paid).await;
    h.order_command(order, OrderCommand::Ship).await;
    h.wait_phase(order, SagaPhase::Completed).await;

    h.wait_phase(timed_out.order.unwrap(), SagaPhase::AwaitingPayment)
        .await;
    h.clock.advance(
        chrono::Duration::from_std(PAYMENT_TIMEOUT).unwrap() + chrono::Duration::minutes(1),
    );
    h.wait_phase(timed_out.order.unwrap(), SagaPhase::Cancelled)
        .await;
    h.wait_phase(rejected.order.unwrap(), SagaPhase::Rejected)
        .await;
    h.caught_up().await;

    let outcomes = vec![
        outcome(h, &shipped).await,
        outcome(h, &rejected).await,
        outcome(h, &timed_out).await,
    ];
    let issued = sagas.stats.issued.load(std::sync::atomic::Ordering::SeqCst);
    sagas.stop().await;
    (outcomes, issued)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_run_twice_gives_the_same_state_and_no_extra_commands() {
    let h = Harness::new().await;
    let (once, issued_once) = three_orders(&h, Hooks::default()).await;
    let (twice, issued_twice) = three_orders(
        &h,
        Hooks {
            fail: None,
            repeat: true,
        },
    )
    .await;
    assert_eq!(once, twice);
    // 3 reserves, confirm, 3 ships; 3 reserves, 2 releases, reject;
    // 3 reserves, confirm, cancel, 3 releases.
    assert_eq!(issued_once, 7 + 6 + 8);
    assert_eq!(issued_twice, issued_once, "a repeated step issued more");
    assert_eq!(
        once[0].order_events,
        ["OrderPlaced", "OrderConfirmed", "OrderPaid", "OrderShipped"]
    );
}
