//! `/products` through real HTTP.
#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_problem, Api};
use serde_json::json;

#[tokio::test]
async fn create_restock_reprice_discontinue_and_page() {
    let api = Api::start().await;
    // A price as a JSON number is read exactly from its text.
    let created = api
        .post(
            "/products",
            json!({ "sku": "abc-1", "name": "Widget", "price": 19.99, "stock": 5 }),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.id();
    let read = api
        .get_after(&format!("/products/{id}"), &created.position())
        .await;
    assert_eq!(read.status, 200, "{read:?}");
    for (field, value) in [
        ("sku", json!("ABC-1")),
        ("name", json!("Widget")),
        ("price", json!("19.99")),
        ("on_hand", json!(5)),
        ("reserved", json!(0)),
        ("available", json!(5)),
        ("discontinued", json!(false)),
        ("version", json!(1)),
    ] {
        assert_eq!(read.body[field], value, "{field}: {read:?}");
    }
    assert_eq!(
        api.post(&format!("/products/{id}/restock"), json!({ "quantity": 3 }))
            .await
            .status,
        200
    );
    let repriced = api
        .post(&format!("/products/{id}/price"), json!({ "price": "17.5" }))
        .await;
    assert_eq!(repriced.status, 200);
    let read = api
        .get_after(&format!("/products/{id}"), &repriced.position())
        .await;
    assert_eq!(
        (read.body["on_hand"].clone(), read.body["price"].clone()),
        (json!(8), json!("17.50"))
    );
    let gone = api.post_empty(&format!("/products/{id}/discontinue")).await;
    assert_eq!(gone.status, 200);
    assert_problem(
        &api.post_empty(&format!("/products/{id}/discontinue")).await,
        409,
        "invalid_transition",
    );
    let read = api
        .get_after(&format!("/products/{id}"), &gone.position())
        .await;
    assert_eq!(read.body["discontinued"], true);

    let mut last = String::new();
    for _ in 0..4 {
        last = api.product(1, "1.00").await.position();
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/products?limit=2&cursor={c}"),
            None => "/products?limit=2".to_owned(),
        };
        let page = api.get_after(&path, &last).await;
        assert_eq!(page.status, 200, "{page:?}");
        seen.extend(
            page.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_owned()),
        );
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 5);
}

#[tokio::test]
async fn product_rules_are_enforced() {
    let api = Api::start().await;
    let id = api.product(1, "2.00").await.id();
    let sku_taken = api
        .post(
            "/products",
            json!({ "sku": "DUP-1", "name": "A", "price": "1", "stock": 1 }),
        )
        .await;
    assert_eq!(sku_taken.status, 201);
    assert_problem(
        &api.post(
            "/products",
            json!({ "sku": "dup-1", "name": "B", "price": "1", "stock": 1 }),
        )
        .await,
        409,
        "duplicate",
    );
    for body in [
        json!({ "sku": "N-1", "name": "A", "price": "-1.00", "stock": 1 }),
        json!({ "sku": "N-2", "name": "A", "price": -1, "stock": 1 }),
        json!({ "sku": "N-3", "name": "A", "price": "1.00001", "stock": 1 }),
        json!({ "sku": "N-4", "name": "A", "price": "abc", "stock": 1 }),
        json!({ "sku": "N-5", "name": "A", "price": "1", "stock": -1 }),
        json!({ "sku": "", "name": "A", "price": "1", "stock": 1 }),
        json!({ "sku": "bad sku!", "name": "A", "price": "1", "stock": 1 }),
        json!({ "sku": "N-6", "name": "", "price": "1", "stock": 1 }),
    ] {
        assert_problem(&api.post("/products", body).await, 422, "validation");
    }
    for body in [
        json!({ "sku": "T-1", "name": "A", "price": true, "stock": 1 }),
        json!({ "sku": "T-2", "name": "A", "price": "1", "stock": "1" }),
        json!({ "sku": "T-3", "name": "A", "price": "1", "stock": 1, "color": "red" }),
    ] {
        assert_problem(&api.post("/products", body).await, 400, "bad_request");
    }
    assert_problem(
        &api.post(&format!("/products/{id}/restock"), json!({ "quantity": 0 }))
            .await,
        422,
        "validation",
    );
    assert_problem(
        &api.post(
            &format!("/products/{id}/restock"),
            json!({ "quantity": -3 }),
        )
        .await,
        422,
        "validation",
    );
    assert_problem(
        &api.post(&format!("/products/{id}/price"), json!({ "price": "-2" }))
            .await,
        422,
        "validation",
    );
    assert_problem(
        &api.post("/products/x/restock", json!({ "quantity": 1 }))
            .await,
        400,
        "bad_request",
    );
    assert_problem(&api.get("/products?limit=0").await, 400, "bad_request");
    assert_problem(&api.get("/products?cursor=zzz").await, 400, "bad_request");
    assert_problem(
        &api.get(&format!("/products/{}", uuid::Uuid::new_v4()))
            .await,
        404,
        "not_found",
    );
}
