//! `/orders` through real HTTP (confirmation done as the saga would, through
//! the shop, so these tests do not depend on the saga).
#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_problem, Api};
use domain::ids::OrderId;
use serde_json::json;

#[tokio::test]
async fn an_order_through_its_lifecycle_with_as_of_and_timeline() {
    let api = Api::start().await;
    let user = api.user("Buyer").await.id();
    let widget = api.product(10, "19.99").await.id();
    let gadget = api.product(10, "2.50").await.id();

    let placed = api
        .post(
            "/orders",
            json!({ "user_id": user, "lines": [
            { "product_id": widget, "quantity": 2 }, { "product_id": gadget, "quantity": 1 } ] }),
        )
        .await;
    assert_eq!(
        (placed.status, placed.body["status"].as_str()),
        (202, Some("pending")),
        "{placed:?}"
    );
    let id = placed.id();
    let order = api
        .get_after(&format!("/orders/{id}"), &placed.position())
        .await;
    assert_eq!(order.status, 200, "{order:?}");
    assert_eq!(order.body["status"], "pending");
    assert_eq!(order.body["total"], "42.48");
    assert_eq!(order.body["user_id"], json!(user));
    assert_eq!(order.body["lines"][0]["unit_price"], "19.99");
    assert_eq!(order.body["lines"][0]["line_total"], "39.98");
    assert!(order.body["placed_at"].is_string() && order.body["updated_at"].is_string());

    // Not confirmed yet: paying, shipping, cancelling are refused.
    assert_problem(
        &api.post(&format!("/orders/{id}/pay"), json!({ "amount": "42.48" }))
            .await,
        409,
        "invalid_transition",
    );
    assert_problem(
        &api.post_empty(&format!("/orders/{id}/ship")).await,
        409,
        "invalid_transition",
    );

    let order_id = OrderId::new(id.parse().unwrap());
    api.shop.reserve_and_confirm(order_id).await;
    assert_problem(
        &api.post(&format!("/orders/{id}/pay"), json!({ "amount": "42.47" }))
            .await,
        422,
        "validation",
    );
    let paid = api
        .post(&format!("/orders/{id}/pay"), json!({ "amount": 42.48 }))
        .await;
    assert_eq!(
        (paid.status, paid.body["status"].as_str()),
        (200, Some("paid")),
        "{paid:?}"
    );
    assert_problem(
        &api.post(&format!("/orders/{id}/pay"), json!({ "amount": "42.48" }))
            .await,
        409,
        "invalid_transition",
    );
    let shipped = api.post_empty(&format!("/orders/{id}/ship")).await;
    assert_eq!(shipped.body["status"], "shipped");
    assert_problem(
        &api.post_empty(&format!("/orders/{id}/cancel")).await,
        409,
        "invalid_transition",
    );
    let delivered = api.post_empty(&format!("/orders/{id}/deliver")).await;
    assert_eq!(delivered.body["status"], "delivered");

    let now = api
        .get_after(&format!("/orders/{id}"), &delivered.position())
        .await;
    assert_eq!(now.body["status"], "delivered");
    let then = api
        .get(&format!("/orders/{id}?as_of={}", paid.position()))
        .await;
    assert_eq!(
        (then.body["status"].as_str(), then.body["total"].as_str()),
        (Some("paid"), Some("42.48")),
        "{then:?}"
    );
    let at_placing = api
        .get(&format!("/orders/{id}?as_of={}", placed.position()))
        .await;
    assert_eq!(at_placing.body["status"], "pending");
    let by_time = api
        .get(&format!(
            "/orders/{id}?as_of={}",
            now.body["updated_at"].as_str().unwrap()
        ))
        .await;
    assert_eq!(by_time.body["status"], "delivered", "{by_time:?}");
    let before = api
        .get(&format!("/orders/{id}?as_of=2000-01-01T00:00:00Z"))
        .await;
    assert_problem(&before, 404, "not_found");
    assert_problem(
        &api.get(&format!("/orders/{id}?as_of=yesterday")).await,
        400,
        "bad_request",
    );

    let timeline = api.get(&format!("/orders/{id}/timeline")).await;
    let types: Vec<&str> = timeline.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types[0], "OrderPlaced");
    assert!(
        types.contains(&"OrderPaid") && types.contains(&"OrderDelivered"),
        "{types:?}"
    );
    let positions: Vec<eventstore::Position> = timeline.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "log order");

    let mine = api
        .get_after(&format!("/users/{user}/orders"), &delivered.position())
        .await;
    assert_eq!(mine.body["items"][0]["id"], json!(id));
    let user_view = api
        .get_after(&format!("/users/{user}"), &delivered.position())
        .await;
    assert_eq!(
        (
            user_view.body["orders_placed"].as_i64(),
            user_view.body["total_spent"].as_str()
        ),
        (Some(1), Some("42.48"))
    );
}

#[tokio::test]
async fn placing_rules_are_enforced() {
    let api = Api::start().await;
    let user = api.user("Buyer").await.id();
    let product = api.product(5, "1.00").await.id();
    let gone = api.user("Gone").await.id();
    api.post_empty(&format!("/users/{gone}/deactivate")).await;
    let line = |q: i64| json!({ "product_id": product, "quantity": q });
    let many: Vec<_> = (0..101)
        .map(|_| json!({ "product_id": uuid::Uuid::new_v4(), "quantity": 1 }))
        .collect();
    for body in [
        json!({ "user_id": user, "lines": [] }),
        json!({ "user_id": user, "lines": many }),
        json!({ "user_id": user, "lines": [line(1), line(2)] }),
        json!({ "user_id": user, "lines": [line(0)] }),
        json!({ "user_id": user, "lines": [line(-1)] }),
        json!({ "user_id": uuid::Uuid::new_v4(), "lines": [line(1)] }),
        json!({ "user_id": gone, "lines": [line(1)] }),
        json!({ "user_id": user, "lines": [{ "product_id": uuid::Uuid::new_v4(), "quantity": 1 }] }),
    ] {
        assert_problem(&api.post("/orders", body).await, 422, "validation");
    }
    for body in [
        json!({ "user_id": "nope", "lines": [line(1)] }),
        json!({ "user_id": user, "lines": [{ "product_id": product, "quantity": 1, "note": "x" }] }),
        json!({ "user_id": user }),
    ] {
        assert_problem(&api.post("/orders", body).await, 400, "bad_request");
    }
    let unknown = uuid::Uuid::new_v4();
    assert_problem(
        &api.post(&format!("/orders/{unknown}/pay"), json!({ "amount": "1" }))
            .await,
        404,
        "not_found",
    );
    assert_problem(
        &api.get(&format!("/orders/{unknown}")).await,
        404,
        "not_found",
    );
    assert_problem(
        &api.get(&format!("/orders/{unknown}/timeline")).await,
        404,
        "not_found",
    );
    assert_problem(
        &api.post_raw(
            &format!("/orders/{unknown}/cancel"),
            Some("text/plain"),
            b"x".to_vec(),
        )
        .await,
        415,
        "unsupported_media_type",
    );
    let placed = api
        .post("/orders", json!({ "user_id": user, "lines": [line(1)] }))
        .await;
    api.shop
        .reserve_and_confirm(OrderId::new(placed.id().parse().unwrap()))
        .await;
    let long = "x".repeat(300);
    assert_problem(
        &api.post(
            &format!("/orders/{}/cancel", placed.id()),
            json!({ "reason": long }),
        )
        .await,
        422,
        "validation",
    );
    let cancelled = api
        .post(
            &format!("/orders/{}/cancel", placed.id()),
            json!({ "reason": "changed my mind" }),
        )
        .await;
    assert_eq!(cancelled.body["status"], "cancelled");
    let read = api
        .get_after(&format!("/orders/{}", placed.id()), &cancelled.position())
        .await;
    assert_eq!(read.body["reason"], "changed my mind");
}

#[tokio::test]
async fn a_subscriber_receives_the_envelope_of_a_confirmed_order() {
    use futures::StreamExt as _;
    let api = Api::start().await;
    let subject = format!("{}.order.*.OrderConfirmed", api.env.prefix);
    let mut subscription = api.env.nats.subscribe(subject).await.unwrap();
    let user = api.user("Subscriber").await.id();
    let product = api.product(3, "7.00").await.id();
    let placed = api
        .post(
            "/orders",
            json!({ "user_id": user, "lines": [{ "product_id": product, "quantity": 1 }] }),
        )
        .await;
    let id = placed.id();
    api.shop
        .reserve_and_confirm(OrderId::new(id.parse().unwrap()))
        .await;

    let message = tokio::time::timeout(std::time::Duration::from_secs(15), subscription.next())
        .await
        .expect("a message within 15 s")
        .unwrap();
    assert_eq!(
        message.subject.as_str(),
        format!("{}.order.{id}.OrderConfirmed", api.env.prefix)
    );
    let envelope: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(envelope["specversion"], "1.0");
    assert_eq!(envelope["type"], "OrderConfirmed");
    assert_eq!(envelope["source"], "/ordo/order");
    assert_eq!(envelope["subject"], format!("order-{id}"));
    assert_eq!(envelope["streamtype"], "order");
    assert_eq!(envelope["streamversion"], 2);
    assert_eq!(envelope["datacontenttype"], "application/json");
    assert_eq!(
        envelope["dataschema"],
        "schemas/events/order/OrderConfirmed.v1.json"
    );
    assert_eq!(envelope["schemaversion"], 1);
    assert!(
        envelope["position"].is_string()
            && envelope["time"].is_string()
            && envelope["data"].is_object()
    );
    let msg_id = message
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.as_str().to_owned());
    assert_eq!(msg_id.as_deref(), envelope["id"].as_str());
}
