//! Durable payment timers: set with the state that confirmed the order,
//! fired by the coordinator's poller against the (manual) clock, checked
//! against the order's current state before acting.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::SubsecRound as _;
use common::{Harness, PAYMENT_TIMEOUT};
use domain::fulfilment::{SagaPhase, StepKind};
use domain::order::OrderStatus;
use domain::values::CancelReason;
use sagas::Clock as _;

fn past_timeout() -> chrono::Duration {
    chrono::Duration::from_std(PAYMENT_TIMEOUT).unwrap() + chrono::Duration::minutes(1)
}

fn fired(view: &sagas::SagaView) -> usize {
    view.history
        .iter()
        .filter(|s| s.kind == StepKind::TimerFired)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_due_while_the_runner_is_down_fires_once_after_restart() {
    let h = Harness::new().await;
    let user = h.user().await;
    let (a, b) = (h.product(5).await, h.product(5).await);
    let sagas = h.start_sagas();
    let order = h.place(user, &[(a, 2), (b, 1)]).await;
    let view = h.wait_phase(order, SagaPhase::AwaitingPayment).await;
    let due = view.timers[0].due_at;
    // Due one payment timeout after the confirmation, at PostgreSQL's
    // microsecond resolution.
    let expected = h.clock.now() + chrono::Duration::from_std(PAYMENT_TIMEOUT).unwrap();
    assert_eq!(due, expected.trunc_subsecs(6));
    h.caught_up().await;
    sagas.stop().await;

    // The payment timeout passes while no runner is up.
    h.clock.advance(past_timeout());
    // Two runners come up at once; one coordinates and fires the timer.
    let (one, two) = (h.start_sagas(), h.start_sagas());
    let view = h.wait_phase(order, SagaPhase::Cancelled).await;
    let state = h.order(order).await;
    assert_eq!(state.status(), Some(OrderStatus::Cancelled));
    assert_eq!(state.reason(), Some(CancelReason::PAYMENT_TIMEOUT));
    assert_eq!(view.cancel_reason, Some(CancelReason::payment_timeout()));
    assert!(view.timers.is_empty());
    assert_eq!(h.stock(a).await.reserved(), 0);
    assert_eq!(h.stock(b).await.reserved(), 0);
    h.caught_up().await;

    // The coordinator goes away; the other takes over and fires nothing more.
    let (leader, standby) = if one.stats.active.load(Ordering::SeqCst) {
        (one, two)
    } else {
        (two, one)
    };
    leader.stop().await;
    common::wait_for(Duration::from_secs(5), || async {
        standby.stats.active.load(Ordering::SeqCst).then_some(())
    })
    .await;
    h.clock.advance(past_timeout());
    tokio::time::sleep(Duration::from_millis(200)).await;
    standby.stop().await;

    let view = h.saga(order).await.unwrap();
    assert_eq!(fired(&view), 1);
    let cancellations = h
        .events(&order.stream_id())
        .await
        .into_iter()
        .filter(|t| t == "OrderCancelled")
        .count();
    assert_eq!(cancellations, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_seen_before_the_timer_fires_clears_it() {
    let h = Harness::new().await;
    let user = h.user().await;
    let product = h.product(5).await;
    let sagas = h.start_sagas();
    let order = h.place(user, &[(product, 2)]).await;
    h.wait_phase(order, SagaPhase::AwaitingPayment).await;
    h.pay(order).await;
    let view = h.wait_phase(order, SagaPhase::Paid).await;
    assert!(view.timers.is_empty());

    h.clock.advance(past_timeout());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let view = h.saga(order).await.unwrap();
    assert_eq!(view.phase, SagaPhase::Paid);
    assert_eq!(fired(&view), 0);
    assert_eq!(h.status(order).await, Some(OrderStatus::Paid));
    assert_eq!(h.stock(product).await.reserved(), 2);
    sagas.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_just_before_the_timer_wins_even_unseen() {
    let mut h = Harness::new().await;
    let user = h.user().await;
    let product = h.product(5).await;
    let sagas = h.start_sagas();
    let order = h.place(user, &[(product, 2)]).await;
    h.wait_phase(order, SagaPhase::AwaitingPayment).await;
    h.caught_up().await;

    // The payment commits, but the saga cannot have seen it: nothing is
    // published while the relay is down. Then the timer comes due.
    h.stop_relay().await;
    h.pay(order).await;
    h.clock.advance(past_timeout());

    // The timer fires; the cancellation is refused because the order is
    // paid, and what the order says happened reaches the saga at once.
    let view = h.wait_phase(order, SagaPhase::Paid).await;
    assert_eq!(fired(&view), 1);
    assert!(view.timers.is_empty());
    assert_eq!(h.status(order).await, Some(OrderStatus::Paid));
    assert!(!h
        .events(&order.stream_id())
        .await
        .contains(&"OrderCancelled".to_owned()));
    assert_eq!(h.stock(product).await.reserved(), 2);

    // When OrderPaid does arrive, it changes nothing.
    h.start_relay();
    h.caught_up().await;
    let after = h.saga(order).await.unwrap();
    assert_eq!(after.version, view.version);
    assert_eq!(after.phase, SagaPhase::Paid);
    sagas.stop().await;
}
