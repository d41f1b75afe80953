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

/// Sagas awaiting payment, stored with their timers, as the runner would
/// have left them.
async fn confirmed_sagas(
    env: &test_support::TestEnv,
    machine: &domain::fulfilment::SagaConfig,
    now: chrono::DateTime<chrono::Utc>,
    count: usize,
) -> Vec<domain::ids::OrderId> {
    use domain::fulfilment::SagaInput;
    use domain::ids::{OrderId, ProductId};
    use domain::values::Quantity;
    use sagas::store::{self, SagaRow};
    use uuid::Uuid;

    let mut client = env.client().await;
    let tx = client.transaction().await.unwrap();
    let mut orders = Vec::new();
    for _ in 0..count {
        let order_id = OrderId::new(Uuid::new_v4());
        let mut saga = SagaRow::new(order_id);
        let product_id = ProductId::new(Uuid::new_v4());
        let inputs = [
            SagaInput::OrderPlaced {
                order_id,
                lines: vec![(product_id, Quantity::new(1).unwrap())],
            },
            SagaInput::ReservationSucceeded { product_id },
            SagaInput::CommandSucceeded {
                command_id: format!("{order_id}:confirm"),
            },
        ];
        for input in &inputs {
            saga.apply(input, now, machine, 1, None);
        }
        assert_eq!(saga.state.phase, SagaPhase::AwaitingPayment);
        store::save(&tx, &saga, now).await.unwrap();
        orders.push(order_id);
    }
    tx.commit().await.unwrap();
    orders
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pollers_at_once_never_fire_one_timer_twice() {
    let env = test_support::TestEnv::new().await;
    let machine = sagas::RunnerConfig::new(
        env.stream.clone(),
        env.prefix.clone(),
        Duration::from_secs(60),
    )
    .machine();
    // PostgreSQL's resolution, as the runner's clock gives it.
    let now = chrono::Utc::now().trunc_subsecs(6);
    let orders = confirmed_sagas(&env, &machine, now, 40).await;

    // Not due yet: nothing fires.
    let mut client = env.client().await;
    assert!(
        sagas::runner::timers::fire_due(&mut client, now, &machine, 1)
            .await
            .unwrap()
            .is_empty()
    );
    let later = now + chrono::Duration::seconds(61);
    let pollers: Vec<_> = (0..3)
        .map(|_| {
            let pool = env.pool.clone();
            let machine = machine.clone();
            tokio::spawn(async move {
                let mut client = pool.get().await.unwrap();
                let mut fired = Vec::new();
                loop {
                    let round = sagas::runner::timers::fire_due(&mut client, later, &machine, 1)
                        .await
                        .unwrap();
                    if round.is_empty() {
                        return fired;
                    }
                    fired.extend(round);
                }
            })
        })
        .collect();
    let mut fired = Vec::new();
    for poller in pollers {
        fired.extend(poller.await.unwrap());
    }
    let mut fired_orders: Vec<_> = fired.iter().map(|(saga, _)| saga.order_id).collect();
    fired_orders.sort();
    let mut expected = orders.clone();
    expected.sort();
    assert_eq!(fired_orders, expected, "each timer fired exactly once");
    // Each firing issued the cancellation, once.
    assert!(fired.iter().all(|(saga, commands)| commands.len() == 1
        && commands[0].command_id == format!("{}:cancel:payment_timeout", saga.order_id)));
    let left: i64 = client
        .query_one("select count(*) from saga.timers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}
