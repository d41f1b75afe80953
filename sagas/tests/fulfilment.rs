//! The fulfilment saga end to end against real PostgreSQL and JetStream:
//! orders placed through the executor, events published by the relay, the
//! saga runner reserving, confirming, rejecting, releasing and shipping.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{wait_for, Harness};
use domain::fulfilment::{LineStatus, SagaPhase, StepKind};
use domain::ids::OrderId;
use domain::order::{OrderCommand, OrderStatus, RejectReason};
use domain::values::CancelReason;
use eventstore::executor::Executor;
use eventstore::{AppendRequest, EventStore, ExpectedVersion, Metadata, NewEvent};
use sagas::{Hooks, Injected, SagaRunner, Step};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_in_stock_and_twenty_orders_of_one_unit_confirm_exactly_five() {
    let h = Harness::new().await;
    let sagas = h.start_sagas();
    let user = h.user().await;
    let product = h.product(5).await;

    // Placed concurrently, as twenty customers would.
    let orders =
        futures::future::join_all((0..20).map(|_| async { h.place(user, &[(product, 1)]).await }))
            .await;

    let mut confirmed = 0;
    let mut rejected = 0;
    for order in &orders {
        let view = h.settled(*order).await;
        match h.status(*order).await {
            Some(OrderStatus::Confirmed) => {
                confirmed += 1;
                assert_eq!(view.phase, SagaPhase::AwaitingPayment);
                assert_eq!(view.timers.len(), 1, "a payment timer runs");
            }
            Some(OrderStatus::Rejected) => {
                rejected += 1;
                let state = h.order(*order).await;
                assert_eq!(state.reason(), Some("insufficient_stock"));
                assert_eq!(view.phase, SagaPhase::Rejected);
                assert!(view.finished);
            }
            other => panic!("order {order} ended {other:?}"),
        }
    }
    assert_eq!((confirmed, rejected), (5, 15));
    let stock = h.stock(product).await;
    assert_eq!(stock.reserved(), 5);
    assert_eq!(stock.available(), 0);
    assert_eq!(stock.on_hand(), 5);
    sagas.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_confirmation_runs_straight_after_the_reservations_and_is_recorded_with_them() {
    let h = Harness::new().await;
    let sagas = h.start_sagas();
    let user = h.user().await;
    let (a, b) = (h.product(50).await, h.product(50).await);
    let mut written_twice = 0;
    for _ in 0..5 {
        let order = h.place(user, &[(a, 2), (b, 1)]).await;
        let view = h.settled(order).await;
        assert_eq!(h.status(order).await, Some(OrderStatus::Confirmed));
        assert_eq!(view.phase, SagaPhase::AwaitingPayment);
        assert_eq!(view.timers.len(), 1, "a payment timer runs");
        // Written when the order was placed, then with the three outcomes
        // together (not once for the reservations and again for the
        // confirmation). An event of the saga's own command that overtakes
        // the command's answer is handled as any message, and writes the
        // saga once more: hence "mostly".
        if view.version == 2 {
            written_twice += 1;
        }
        // The history tells the same story as ever: the confirmation
        // issued once the reservations succeeded, then its success.
        let confirm = format!("{order}:confirm");
        let steps: Vec<(StepKind, Option<&str>)> = view
            .history
            .iter()
            .map(|s| (s.kind, s.command_id.as_deref()))
            .collect();
        let issued = steps
            .iter()
            .position(|s| *s == (StepKind::Issued, Some(confirm.as_str())))
            .unwrap_or_else(|| panic!("confirmation issued: {steps:?}"));
        let succeeded = steps
            .iter()
            .position(|s| s.0 == StepKind::Succeeded && s.1 == Some(confirm.as_str()))
            .unwrap_or_else(|| panic!("confirmation succeeded: {steps:?}"));
        let reserved = steps
            .iter()
            .rposition(|s| {
                s.0 == StepKind::Succeeded && s.1.is_some_and(|c| c.contains(":reserve:"))
            })
            .unwrap_or_else(|| panic!("reservations succeeded: {steps:?}"));
        assert!(reserved < issued && issued < succeeded, "{steps:?}");
    }
    assert!(written_twice >= 1, "no saga was written only twice");
    let ahead = sagas.stats.ahead.load(Ordering::SeqCst);
    let dropped = sagas.stats.ahead_dropped.load(Ordering::SeqCst);
    assert!(
        ahead >= 1 && dropped < ahead,
        "ran ahead {ahead}, dropped {dropped}"
    );
    sagas.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_second_of_three_lines_is_short_releases_the_others_and_is_rejected() {
    let h = Harness::new().await;
    let sagas = h.start_sagas();
    let user = h.user().await;
    let (a, b, c) = (h.product(10).await, h.product(1).await, h.product(10).await);
    let before = [h.stock(a).await, h.stock(b).await, h.stock(c).await];

    let order = h.place(user, &[(a, 2), (b, 3), (c, 4)]).await;
    let view = h.wait_phase(order, SagaPhase::Rejected).await;

    let state = h.order(order).await;
    assert_eq!(state.status(), Some(OrderStatus::Rejected));
    assert_eq!(state.reason(), Some("insufficient_stock"));
    let rejection = view.rejection.clone().unwrap();
    assert_eq!(rejection.reason, RejectReason::InsufficientStock);
    assert_eq!(rejection.details.product_id, Some(b));
    assert_eq!(rejection.details.requested, Some(3));
    assert_eq!(rejection.details.available, Some(1));
    // Stock is back where it was.
    assert_eq!(
        [h.stock(a).await, h.stock(b).await, h.stock(c).await],
        before
    );
    // The first and third lines were reserved, then released.
    let statuses: Vec<_> = view.lines.iter().map(|l| l.status).collect();
    assert_eq!(
        statuses,
        vec![
            LineStatus::Released,
            LineStatus::Refused {
                reason: RejectReason::InsufficientStock
            },
            LineStatus::Released
        ]
    );
    assert_eq!(
        h.events(&a.stream_id()).await,
        ["ProductCreated", "StockReserved", "StockReleased"]
    );
    assert_eq!(h.events(&b.stream_id()).await, ["ProductCreated"]);
    // What GET /sagas/{order_id} serves.
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(json["phase"], "rejected");
    assert_eq!(json["needs_attention"], false);
    assert_eq!(json["lines"][0]["status"], "released");
    assert_eq!(json["lines"][1]["status"], "refused");
    assert_eq!(json["lines"][1]["reason"], "insufficient_stock");
    assert_eq!(json["rejection"]["reason"], "insufficient_stock");
    assert_eq!(json["pending"], serde_json::json!([]));
    assert_eq!(json["timers"], serde_json::json!([]));
    assert!(json["history"].as_array().unwrap().len() > 10);
    // The history shows the compensations as such.
    let compensations: Vec<_> = view
        .history
        .iter()
        .filter(|s| s.compensation && s.kind == domain::fulfilment::StepKind::Issued)
        .filter_map(|s| s.command_id.clone())
        .collect();
    assert_eq!(
        compensations,
        [format!("{order}:release:0"), format!("{order}:release:2")]
    );
    sagas.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discontinued_product_rejects_the_order_as_such() {
    let h = Harness::new().await;
    let sagas = h.start_sagas();
    let user = h.user().await;
    let (a, b) = (h.product(10).await, h.product(10).await);
    h.discontinue(b).await;
    let order = h.place(user, &[(a, 1), (b, 1)]).await;
    h.wait_phase(order, SagaPhase::Rejected).await;
    assert_eq!(h.order(order).await.reason(), Some("product_discontinued"));
    assert_eq!(h.stock(a).await.reserved(), 0);
    sagas.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_orders_ship_every_reservation_and_cancelled_ones_release_it() {
    let h = Harness::new().await;
    let sagas = h.start_sagas();
    let user = h.user().await;
    let (a, b) = (h.product(10).await, h.product(10).await);

    let shipped = h.place(user, &[(a, 2), (b, 3)]).await;
    let cancelled = h.place(user, &[(a, 1), (b, 1)]).await;
    h.wait_phase(shipped, SagaPhase::AwaitingPayment).await;
    h.wait_phase(cancelled, SagaPhase::AwaitingPayment).await;
    assert_eq!(h.stock(a).await.reserved(), 3);

    h.pay(shipped).await;
    h.wait_phase(shipped, SagaPhase::Paid).await;
    h.order_command(shipped, OrderCommand::Ship).await;
    let view = h.wait_phase(shipped, SagaPhase::Completed).await;
    assert!(view.finished);
    assert!(view.timers.is_empty(), "payment cleared the timer");
    assert!(view.lines.iter().all(|l| l.status == LineStatus::Shipped));

    h.order_command(
        cancelled,
        OrderCommand::Cancel {
            reason: CancelReason::customer_request(),
        },
    )
    .await;
    let view = h.wait_phase(cancelled, SagaPhase::Cancelled).await;
    assert_eq!(view.cancel_reason, Some(CancelReason::customer_request()));
    assert!(view.timers.is_empty());

    // Everything the saga did carries the order's correlation id, and says
    // which event caused it.
    let store = h.executor.store();
    let order_events = store
        .read_stream(&shipped.stream_id(), 0, 100)
        .await
        .unwrap();
    let placed = &order_events[0];
    let correlation = placed.metadata.correlation_id.unwrap();
    let reserved = store.read_stream(&a.stream_id(), 1, 100).await.unwrap();
    let ours: Vec<_> = reserved
        .iter()
        .filter(|e| e.data["order_id"] == serde_json::json!(shipped))
        .collect();
    assert_eq!(ours.len(), 2, "reserved, then shipped");
    assert_eq!(ours[0].event_type, "StockReserved");
    assert_eq!(ours[0].metadata.causation_id, Some(placed.event_id));
    assert_eq!(
        ours[0].metadata.command_id.as_deref(),
        Some(format!("{shipped}:reserve:0").as_str())
    );
    assert_eq!(
        ours[1].metadata.causation_id,
        Some(order_events[3].event_id)
    );
    assert!(ours
        .iter()
        .all(|e| e.metadata.correlation_id == Some(correlation)));
    let confirmed = &order_events[1];
    assert_eq!(confirmed.event_type, "OrderConfirmed");
    assert_eq!(confirmed.metadata.correlation_id, Some(correlation));
    let cause = confirmed.metadata.causation_id.unwrap();
    let stock_events: Vec<_> = store
        .read_stream(&b.stream_id(), 0, 100)
        .await
        .unwrap()
        .into_iter()
        .chain(reserved.iter().cloned())
        .filter(|e| e.event_type == "StockReserved")
        .map(|e| e.event_id)
        .collect();
    assert!(
        stock_events.contains(&cause),
        "confirmed because of a reservation"
    );

    // Shipping took the units out of on_hand and reserved together;
    // the cancellation gave its units back.
    let (sa, sb) = (h.stock(a).await, h.stock(b).await);
    assert_eq!((sa.on_hand(), sa.reserved(), sa.available()), (8, 0, 8));
    assert_eq!((sb.on_hand(), sb.reserved(), sb.available()), (7, 0, 7));
    sagas.stop().await;
}

/// The history is stored apart from the saga row, which is rewritten several
/// times per order and so stays small; a row stored before that, with its
/// history inside, reads the same and moves its steps out with its next save.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_is_stored_apart_and_a_row_with_its_history_inside_still_reads() {
    let h = Harness::new().await;
    let sagas = h.start_sagas();
    let user = h.user().await;
    let product = h.product(10).await;
    let order = h.place(user, &[(product, 1)]).await;
    let confirmed = h.wait_phase(order, SagaPhase::AwaitingPayment).await;
    assert!(confirmed.history.len() > 4, "{:?}", confirmed.history);

    let client = h.env.client().await;
    let id = order.as_uuid();
    let stored = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[&id]).await.unwrap() }
    };
    let row = stored(
        "select coalesce(state->'history', '[]'::jsonb),
                (select count(*) from saga.history where order_id = $1),
                (select jsonb_agg(s order by h.version, n)
                   from saga.history h, jsonb_array_elements(h.steps) with ordinality as e(s, n)
                  where h.order_id = $1)
           from saga.sagas where order_id = $1",
    )
    .await;
    assert_eq!(row.get::<_, serde_json::Value>(0), serde_json::json!([]));
    assert!(
        row.get::<_, i64>(1) >= 2,
        "one history row per save that added steps"
    );
    let apart: Vec<domain::fulfilment::SagaStep> = serde_json::from_value(row.get(2)).unwrap();
    assert_eq!(
        apart, confirmed.history,
        "the view is the stored steps, in order"
    );

    // Back to how rows were stored before: history inside the state.
    sagas.stop().await;
    client
        .execute(
            "update saga.sagas set state = jsonb_set(state, '{history}', (
                 select jsonb_agg(s order by h.version, n)
                   from saga.history h, jsonb_array_elements(h.steps) with ordinality as e(s, n)
                  where h.order_id = $1))
              where order_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    client
        .execute("delete from saga.history where order_id = $1", &[&id])
        .await
        .unwrap();
    let legacy = h.saga(order).await.unwrap();
    assert_eq!(legacy.history, confirmed.history);

    let sagas = h.start_sagas();
    h.pay(order).await;
    let paid = h.wait_phase(order, SagaPhase::Paid).await;
    assert!(paid.history.len() > confirmed.history.len());
    assert_eq!(
        paid.history[..confirmed.history.len()],
        confirmed.history[..],
        "the old steps first"
    );
    let row = stored(
        "select coalesce(state->'history', '[]'::jsonb),
                (select count(*) from saga.history where order_id = $1)
           from saga.sagas where order_id = $1",
    )
    .await;
    assert_eq!(
        row.get::<_, serde_json::Value>(0),
        serde_json::json!([]),
        "the save moved the steps out"
    );
    assert!(row.get::<_, i64>(1) >= 1);
    sagas.stop().await;
}

/// The saga consumer's stream sequence.
async fn checkpoint_sequence(h: &Harness) -> i64 {
    h.env
        .client()
        .await
        .query_opt("select stream_sequence from saga.checkpoint", &[])
        .await
        .unwrap()
        .map_or(0, |r| r.get(0))
}

async fn last_sequence(h: &Harness) -> i64 {
    let mut stream = h
        .env
        .jetstream
        .get_stream(h.env.stream.as_str())
        .await
        .unwrap();
    stream.info().await.unwrap().state.last_sequence as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_placed_delivered_twice_and_again_much_later_starts_one_saga() {
    let h = Harness::new().await;
    let sagas = h.start_sagas();
    let user = h.user().await;
    let (a, b) = (h.product(10).await, h.product(10).await);
    let order = h.place(user, &[(a, 2), (b, 1)]).await;
    let first = h.wait_phase(order, SagaPhase::AwaitingPayment).await;
    h.caught_up().await;
    let product_events = h.events(&a.stream_id()).await;
    let order_events = h.events(&order.stream_id()).await;

    // The OrderPlaced message as the relay published it.
    let messages =
        test_support::servers::read_stream_messages(&h.env.jetstream, h.env.stream.as_str()).await;
    let placed = messages
        .iter()
        .find(|m| m.subject.ends_with(".OrderPlaced") && m.subject.contains(&order.to_string()))
        .unwrap()
        .clone();
    let republish = |msg_id: String| {
        let (js, subject, payload) = (
            h.env.jetstream.clone(),
            placed.subject.clone(),
            placed.payload.clone(),
        );
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", msg_id.as_str());
            js.publish_with_headers(subject, headers, payload)
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    // Delivered twice: within the window JetStream drops it by its id...
    republish(placed.msg_id.clone().unwrap()).await;
    // ...and long after (the clock moves past the 2-minute window; a new
    // message id stands for the window having passed) it is a new message.
    h.clock.advance(chrono::Duration::minutes(3));
    republish(uuid::Uuid::new_v4().to_string()).await;
    let last = last_sequence(&h).await;
    common::wait_for(Duration::from_secs(10), || async {
        (checkpoint_sequence(&h).await >= last).then_some(())
    })
    .await;
    assert!(sagas.stats.duplicates.load(Ordering::SeqCst) >= 1);
    // The events of its own commands (two reservations, the confirmation)
    // came back as echoes of successes it had fed already, mostly: one that
    // overtook its command's answer is handled like any message.
    let echoes = sagas.stats.echoes.load(Ordering::SeqCst);
    assert!((1..=3).contains(&echoes), "{echoes}");
    sagas.stop().await;

    // Even with the checkpoint gone the whole stream is read again, and the
    // handled message ids make every message a no-op; with those gone too,
    // the state machine itself ignores what it has seen.
    for reset in [
        "delete from saga.checkpoint",
        "delete from saga.checkpoint; delete from saga.processed",
    ] {
        h.env.client().await.batch_execute(reset).await.unwrap();
        let sagas = h.start_sagas();
        common::wait_for(Duration::from_secs(10), || async {
            (checkpoint_sequence(&h).await >= last).then_some(())
        })
        .await;
        let (handled, skipped) = (
            sagas.stats.messages.load(Ordering::SeqCst),
            sagas.stats.duplicates.load(Ordering::SeqCst),
        );
        if reset.contains("processed") {
            assert!(handled >= 4, "the messages were handled again: {handled}");
        } else {
            // Echoes were skipped, not recorded as handled: read again, they
            // go to the state machine, which has seen them.
            assert_eq!(
                handled, echoes,
                "handled ids make every other message a no-op"
            );
            assert!(skipped + echoes >= 4, "{skipped}");
        }
        sagas.stop().await;
        let view = h.saga(order).await.unwrap();
        assert_eq!(view.version, first.version, "{reset}");
        assert_eq!(view.history, first.history, "{reset}");
        assert_eq!(h.events(&a.stream_id()).await, product_events);
        assert_eq!(h.events(&order.stream_id()).await, order_events);
        assert_eq!(h.stock(a).await.reserved(), 2);
    }
    let count: i64 = h
        .env
        .client()
        .await
        .query_one("select count(*) from saga.sagas", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensation_that_always_fails_needs_attention_while_other_orders_flow() {
    let h = Harness::new().await;
    let user = h.user().await;
    let (a, short, c) = (h.product(10).await, h.product(0).await, h.product(10).await);
    let doomed = h.place(user, &[(a, 1), (short, 1)]).await;
    let release = format!("{doomed}:release:0");
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = attempts.clone();
    let failing = release.clone();
    let hooks = Hooks {
        fail: Some(Arc::new(move |step: &Step| match step {
            Step::BeforeCommand { command_id, .. } if *command_id == failing => {
                counted.fetch_add(1, Ordering::SeqCst);
                Err(Injected::FailCommand)
            }
            _ => Ok(()),
        })),
        repeat: false,
    };
    let sagas = h.start(h.runner(hooks));
    let others: Vec<_> = futures::future::join_all((1..=3).map(|n| {
        let h = &h;
        async move { h.place(user, &[(c, n)]).await }
    }))
    .await;

    let view = common::wait_for(Duration::from_secs(20), || async {
        h.saga(doomed)
            .await
            .filter(|v| v.phase == SagaPhase::NeedsAttention && v.pending.is_empty())
    })
    .await;
    assert!(view.needs_attention);
    assert!(!view.finished);
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "max_compensation_attempts"
    );
    let gave_up = view
        .history
        .iter()
        .find(|s| s.kind == StepKind::GaveUp)
        .unwrap();
    assert_eq!(gave_up.command_id.as_deref(), Some(release.as_str()));
    // The rejection does not wait for the release: the order is not left pending.
    assert_eq!(h.status(doomed).await, Some(OrderStatus::Rejected));
    // The stock is still held, for a human to release.
    assert_eq!(h.stock(a).await.reservation(doomed), Some(1));

    for order in others {
        h.wait_phase(order, SagaPhase::AwaitingPayment).await;
        assert_eq!(h.status(order).await, Some(OrderStatus::Confirmed));
    }
    assert_eq!(h.stock(c).await.reserved(), 6);

    h.caught_up().await;
    let client = h.env.client().await;
    let status = sagas::status(&client, &h.env.stream).await.unwrap();
    assert_eq!(status.needs_attention, 1);
    assert_eq!(status.lag_events, 0);
    assert_eq!(status.timers, 3);
    assert!(status.position.is_some());
    assert_eq!(
        sagas::query::needing_attention(&client, 10).await.unwrap(),
        vec![doomed]
    );
    sagas.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_skipped_and_an_unreadable_event_parks_only_its_saga() {
    let h = Harness::new().await;
    h.env.create_stream().await;
    let sagas = h.start_sagas();
    let user = h.user().await;
    let product = h.product(10).await;

    // Not an ordo envelope at all.
    let junk = uuid::Uuid::new_v4();
    h.env
        .jetstream
        .publish(
            h.env
                .prefix
                .subject("order", &junk.to_string(), "OrderPlaced"),
            "{ this is not json".into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // A real event in the log whose data this build cannot read.
    let broken = OrderId::new(uuid::Uuid::new_v4());
    h.executor
        .store()
        .append(AppendRequest {
            stream_id: &broken.stream_id(),
            stream_type: "order",
            expected: ExpectedVersion::NoStream,
            events: &[NewEvent {
                event_id: uuid::Uuid::now_v7(),
                event_type: "OrderPlaced".into(),
                schema_version: 1,
                data: serde_json::json!({ "lines": "several" }),
            }],
            metadata: &Metadata::default(),
            claims: &[],
        })
        .await
        .unwrap();
    let good = h.place(user, &[(product, 1)]).await;

    h.wait_phase(good, SagaPhase::AwaitingPayment).await;
    let view = common::wait_for(Duration::from_secs(10), || async { h.saga(broken).await }).await;
    assert!(view.needs_attention);
    assert!(
        view.parked.as_deref().unwrap().contains("OrderPlaced"),
        "{view:?}"
    );
    assert_eq!(view.phase, SagaPhase::NotStarted);
    assert!(sagas.stats.malformed.load(Ordering::SeqCst) >= 1);
    assert!(!sagas.running.is_finished());
    sagas.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_state_this_build_cannot_read_parks_its_saga_and_is_kept_as_it_was() {
    let h = Harness::new().await;
    let sagas = h.start_sagas();
    let user = h.user().await;
    let product = h.product(10).await;
    let order = h.place(user, &[(product, 1)]).await;
    h.wait_phase(order, SagaPhase::AwaitingPayment).await;
    let other = h.place(user, &[(product, 1)]).await;
    h.wait_phase(other, SagaPhase::AwaitingPayment).await;

    // As a later build might have written it.
    let later = serde_json::json!({ "phase": "from_a_later_build", "lines": 3 });
    let client = h.env.client().await;
    client
        .execute(
            "update saga.sagas set state = $2 where order_id = $1",
            &[&order.as_uuid(), &later],
        )
        .await
        .unwrap();
    h.pay(order).await;
    h.pay(other).await;

    let parked: String = common::wait_for(Duration::from_secs(10), || async {
        client
            .query_one(
                "select parked from saga.sagas where order_id = $1",
                &[&order.as_uuid()],
            )
            .await
            .unwrap()
            .get::<_, Option<String>>(0)
    })
    .await;
    assert!(parked.contains("stored saga state unreadable"), "{parked}");
    let row = client
        .query_one(
            "select state, attention from saga.sagas where order_id = $1",
            &[&order.as_uuid()],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, serde_json::Value>(0),
        later,
        "the state is kept"
    );
    assert!(row.get::<_, bool>(1), "it needs attention");
    // Only that saga: the other order's payment is handled.
    h.wait_phase(other, SagaPhase::Paid).await;
    assert!(!sagas.running.is_finished());
    sagas.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_coordinator_at_a_time_and_a_standby_takes_over() {
    let h = Harness::new().await;
    let user = h.user().await;
    let product = h.product(10).await;
    let first = h.start_sagas();
    common::wait_for(Duration::from_secs(10), || async {
        first.stats.active.load(Ordering::SeqCst).then_some(())
    })
    .await;
    let second = h.start_sagas();
    let order = h.place(user, &[(product, 1)]).await;
    h.wait_phase(order, SagaPhase::AwaitingPayment).await;
    assert!(!second.stats.active.load(Ordering::SeqCst));
    assert_eq!(second.stats.messages.load(Ordering::SeqCst), 0);

    first.stop().await;
    common::wait_for(Duration::from_secs(5), || async {
        second.stats.active.load(Ordering::SeqCst).then_some(())
    })
    .await;
    let order = h.place(user, &[(product, 2)]).await;
    h.wait_phase(order, SagaPhase::AwaitingPayment).await;
    assert_eq!(h.stock(product).await.reserved(), 3);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_placed_while_nats_is_down_are_handled_when_it_returns() {
    let mut nats = test_support::servers::PrivateNats::start();
    let h = Harness::on(test_support::TestEnv::with_nats(nats.url()).await);
    let sagas = h.start_sagas();
    let user = h.user().await;
    let product = h.product(10).await;
    let before = h.place(user, &[(product, 1)]).await;
    h.wait_phase(before, SagaPhase::AwaitingPayment).await;

    nats.kill();
    // Committed in PostgreSQL; nobody can hear of it until NATS is back.
    let during = h.place(user, &[(product, 2)]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.status(during).await, Some(OrderStatus::Pending));
    nats.restart();

    h.wait_phase(during, SagaPhase::AwaitingPayment).await;
    assert_eq!(h.status(during).await, Some(OrderStatus::Confirmed));
    assert_eq!(h.stock(product).await.reserved(), 3);
    sagas.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sagas_own_transactions_never_wait_for_its_commands_connections() {
    let h = Harness::new().await;
    let user = h.user().await;
    let product = h.product(5).await;
    // The runner's commands get one connection, and it is taken (as by a
    // burst of running commands): its consumer must still record what it
    // is handed, on connections of its own.
    let commands = h.env.database_url.pool(1).unwrap();
    let busy = commands.get().await.unwrap();
    let runner = SagaRunner::new(
        Executor::new(EventStore::new(commands.clone())),
        h.env.database_url.pool(4).unwrap(),
        h.env.database_url.clone(),
        h.env.jetstream.clone(),
        h.config(),
    )
    .with_clock(h.clock.clone());
    let sagas = h.start(runner);
    let order = h.place(user, &[(product, 1)]).await;
    let view = wait_for(Duration::from_secs(10), || async {
        h.saga(order).await.filter(|v| !v.pending.is_empty())
    })
    .await;
    assert_eq!(
        view.phase,
        SagaPhase::Reserving,
        "the order's saga is stored, its reservation waiting for a connection"
    );
    drop(busy);
    let view = h.settled(order).await;
    assert_eq!(view.phase, SagaPhase::AwaitingPayment);
    sagas.stop().await;
}
