//! A whole order journey through the API, with the saga confirming.
#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_problem, Api};
use serde_json::json;

#[tokio::test]
async fn register_stock_place_confirm_pay_ship_deliver() {
    let api = Api::start_with_saga().await;
    let user = api.user("Journey").await.id();
    let widget = api.product(5, "19.99").await.id();
    let gadget = api.product(1, "2.50").await;
    let gadget_id = gadget.id();

    let placed = api
        .post("/orders", json!({ "user_id": user, "lines": [
            { "product_id": widget, "quantity": 2 }, { "product_id": gadget_id, "quantity": 1 } ] }))
        .await;
    assert_eq!(placed.status, 202, "{placed:?}");
    let id = placed.id();
    let pending = api
        .get_after(&format!("/orders/{id}"), &placed.position())
        .await;
    assert_eq!(
        pending.status, 200,
        "min_position makes the new order visible at once"
    );

    let confirmed = api.settled_order(&id).await;
    assert_eq!(confirmed.body["status"], "confirmed", "{confirmed:?}");
    let product = api.get(&format!("/products/{gadget_id}")).await;
    assert_eq!(
        (
            product.body["reserved"].as_i64(),
            product.body["available"].as_i64()
        ),
        (Some(1), Some(0))
    );

    // Nothing left of the gadget: a second order is rejected, stock untouched.
    let second = api
        .post(
            "/orders",
            json!({ "user_id": user, "lines": [{ "product_id": gadget_id, "quantity": 1 }] }),
        )
        .await;
    let rejected = api.settled_order(&second.id()).await;
    assert_eq!(
        (
            rejected.body["status"].as_str(),
            rejected.body["reason"].as_str()
        ),
        (Some("rejected"), Some("insufficient_stock"))
    );

    let paid = api
        .post(&format!("/orders/{id}/pay"), json!({ "amount": "42.48" }))
        .await;
    assert_eq!(paid.status, 200, "{paid:?}");
    let shipped = api.post_empty(&format!("/orders/{id}/ship")).await;
    assert_eq!(shipped.body["status"], "shipped");
    let delivered = api.post_empty(&format!("/orders/{id}/deliver")).await;
    assert_eq!(delivered.body["status"], "delivered");
    assert_problem(
        &api.post_empty(&format!("/orders/{id}/cancel")).await,
        409,
        "invalid_transition",
    );

    let order = api
        .get_after(&format!("/orders/{id}"), &delivered.position())
        .await;
    assert_eq!(order.body["status"], "delivered");
    let earlier = api
        .get(&format!("/orders/{id}?as_of={}", paid.position()))
        .await;
    assert_eq!(earlier.body["status"], "paid");

    // The saga ships the reservation when the order ships.
    let gadget = format!("/products/{gadget_id}");
    let gadget_now = test_support::poll(
        std::time::Duration::from_secs(20),
        || api.get(&gadget),
        |product| product.body["on_hand"] == 0,
    )
    .await;
    assert_eq!(
        (
            gadget_now.body["on_hand"].as_i64(),
            gadget_now.body["reserved"].as_i64()
        ),
        (Some(0), Some(0))
    );

    // The timeline: the order's events, its stock reservations and the
    // saga's steps, in log order.
    let timeline = api.get(&format!("/orders/{id}/timeline")).await;
    let events = timeline.body["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for expected in [
        "OrderPlaced",
        "StockReserved",
        "OrderConfirmed",
        "OrderPaid",
        "OrderShipped",
        "StockShipped",
        "OrderDelivered",
    ] {
        assert!(
            types.contains(&expected),
            "timeline has {expected}: {types:?}"
        );
    }
    assert_eq!(types.iter().filter(|t| **t == "StockReserved").count(), 2);
    assert_eq!(types[0], "OrderPlaced");
    let positions: Vec<eventstore::Position> = events
        .iter()
        .map(|e| e["position"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "log order: {types:?}"
    );
    assert!(
        events.iter().all(|e| e["correlationid"] == json!(id)),
        "one correlation id"
    );

    let saga = api.get(&format!("/sagas/{id}")).await;
    assert_eq!(saga.status, 200, "{saga:?}");
    assert!(
        saga.body["history"]
            .as_array()
            .is_some_and(|h| !h.is_empty()),
        "{saga:?}"
    );
    assert_problem(
        &api.get(&format!("/sagas/{}", uuid::Uuid::new_v4())).await,
        404,
        "not_found",
    );

    let user_view = api
        .get_after(&format!("/users/{user}"), &delivered.position())
        .await;
    assert_eq!(
        (
            user_view.body["orders_placed"].as_i64(),
            user_view.body["total_spent"].as_str()
        ),
        (Some(2), Some("42.48"))
    );

    // Each hop of the pipeline has its latency histogram, the saga's included.
    let text = api.metrics().await;
    for needle in [
        "ordo_relay_publish_delay_seconds_count",
        "ordo_saga_receive_delay_seconds_count",
        "ordo_projection_receive_delay_seconds_count{projection=\"orders\"}",
        "ordo_projection_apply_seconds_count{projection=\"orders\"}",
    ] {
        assert!(text.contains(needle), "/metrics has {needle}");
    }
}
