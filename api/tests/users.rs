//! `/users` through real HTTP.
#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_problem, Api};
use serde_json::json;

#[tokio::test]
async fn register_read_rename_deactivate() {
    let api = Api::start().await;
    let created = api
        .post(
            "/users",
            json!({ "email": "  Ada@Example.COM ", "name": "Ada" }),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["version"], 1);
    assert!(created.headers.contains_key("x-request-id"));
    let id = created.id();

    let read = api
        .get_after(&format!("/users/{id}"), &created.position())
        .await;
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(read.body["email"], "ada@example.com");
    assert_eq!(read.body["name"], "Ada");
    assert_eq!(read.body["active"], true);
    assert_eq!(read.body["orders_placed"], 0);
    assert_eq!(read.body["total_spent"], "0.00");
    assert_eq!(read.body["version"], 1);

    let found = api
        .get_after("/users?email=ADA@example.com", &created.position())
        .await;
    assert_eq!(
        found.body["items"].as_array().unwrap().len(),
        1,
        "{found:?}"
    );
    let none = api.get("/users?email=nobody@example.com").await;
    assert_eq!(none.body["items"], json!([]));

    let renamed = api
        .post(&format!("/users/{id}/rename"), json!({ "name": "Ada L." }))
        .await;
    assert_eq!(
        (renamed.status, renamed.body["version"].as_u64()),
        (200, Some(2)),
        "{renamed:?}"
    );
    let deactivated = api.post_empty(&format!("/users/{id}/deactivate")).await;
    assert_eq!(deactivated.status, 200, "{deactivated:?}");
    let read = api
        .get_after(&format!("/users/{id}"), &deactivated.position())
        .await;
    assert_eq!(
        (read.body["name"].as_str(), read.body["active"].as_bool()),
        (Some("Ada L."), Some(false))
    );
    assert_problem(
        &api.post_empty(&format!("/users/{id}/deactivate")).await,
        409,
        "invalid_transition",
    );

    let orders = api
        .get_after(&format!("/users/{id}/orders"), &deactivated.position())
        .await;
    assert_eq!(orders.body, json!({ "items": [] }));
}

#[tokio::test]
async fn emails_are_unique_case_insensitively() {
    let api = Api::start().await;
    assert_eq!(
        api.post(
            "/users",
            json!({ "email": "bob@example.com", "name": "Bob" })
        )
        .await
        .status,
        201
    );
    let again = api
        .post(
            "/users",
            json!({ "email": "BOB@example.com", "name": "Other Bob" }),
        )
        .await;
    assert_problem(&again, 409, "duplicate");
}

#[tokio::test]
async fn bad_input_gets_the_documented_status_and_code() {
    let api = Api::start().await;
    let id = api.user("Valid").await.id();
    for (body, status, code) in [
        (
            json!({ "email": "not-an-email", "name": "X" }),
            422,
            "validation",
        ),
        (
            json!({ "email": "x@example.com", "name": "" }),
            422,
            "validation",
        ),
        (
            json!({ "email": "x@example.com", "name": "   " }),
            422,
            "validation",
        ),
        (
            json!({ "email": "x@example.com", "name": "X", "admin": true }),
            400,
            "bad_request",
        ),
        (json!({ "email": 42, "name": "X" }), 400, "bad_request"),
        (json!({ "name": "X" }), 400, "bad_request"),
        (
            json!({ "email": "x@example.com", "name": "X", "id": "not-a-uuid" }),
            400,
            "bad_request",
        ),
        (json!([1, 2]), 400, "bad_request"),
    ] {
        assert_problem(&api.post("/users", body).await, status, code);
    }
    assert_problem(
        &api.post_raw("/users", Some("application/json"), b"{\"email\": ".to_vec())
            .await,
        400,
        "bad_request",
    );
    assert_problem(
        &api.post_raw("/users", Some("text/plain"), b"{}".to_vec())
            .await,
        415,
        "unsupported_media_type",
    );
    assert_problem(
        &api.post_raw("/users", None, b"{}".to_vec()).await,
        415,
        "unsupported_media_type",
    );
    let huge = format!(
        "{{\"email\": \"a@b.c\", \"name\": \"{}\"}}",
        "x".repeat(70 * 1024)
    );
    assert_eq!(
        api.post_raw("/users", Some("application/json"), huge.into_bytes())
            .await
            .status,
        413
    );

    assert_problem(&api.get("/users/not-a-uuid").await, 400, "bad_request");
    assert_problem(
        &api.get(&format!("/users/{}", uuid::Uuid::new_v4())).await,
        404,
        "not_found",
    );
    assert_problem(
        &api.post(
            &format!("/users/{}/rename", uuid::Uuid::new_v4()),
            json!({ "name": "N" }),
        )
        .await,
        404,
        "not_found",
    );
    assert_problem(
        &api.post(&format!("/users/{id}/rename"), json!({ "name": "" }))
            .await,
        422,
        "validation",
    );
    assert_problem(
        &api.get(&format!("/users/{id}?min_position=banana")).await,
        400,
        "bad_request",
    );
    assert_problem(
        &api.get(&format!("/users/{id}?unknown=1")).await,
        400,
        "bad_request",
    );
    assert_problem(&api.get("/nowhere").await, 404, "not_found");
    assert_eq!(
        api.http
            .delete(format!("{}/users", api.base))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
}

#[tokio::test]
async fn idempotency_keys_replay_and_refuse_reuse() {
    let api = Api::start().await;
    let body = json!({ "email": "key@example.com", "name": "Key" });
    let first = api.post_with_key("/users", "k-1", body.clone()).await;
    let again = api.post_with_key("/users", "k-1", body.clone()).await;
    assert_eq!(first.status, 201);
    assert_eq!(
        (again.status, &again.body),
        (201, &first.body),
        "the first answer, again"
    );
    assert_eq!(
        again
            .headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let other = api
        .post_with_key(
            "/users",
            "k-1",
            json!({ "email": "other@example.com", "name": "Other" }),
        )
        .await;
    assert_problem(&other, 409, "idempotency_mismatch");

    // Concurrent retries of one request: one execution.
    let body = json!({ "email": "race@example.com", "name": "Race" });
    let attempts = futures::future::join_all(
        (0..6).map(|_| api.post_with_key("/users", "k-race", body.clone())),
    )
    .await;
    assert!(
        attempts
            .iter()
            .all(|a| a.status == 201 && a.body == attempts[0].body),
        "{attempts:?}"
    );

    // A create with a client id, repeated: a retry; with another body: refused.
    let id = uuid::Uuid::new_v4();
    let body = json!({ "email": "cid@example.com", "name": "Cid", "id": id });
    let first = api.post("/users", body.clone()).await;
    let second = api.post("/users", body).await;
    assert_eq!((first.status, second.status), (201, 201));
    assert_eq!(first.body, second.body);
    let changed = api
        .post(
            "/users",
            json!({ "email": "cid2@example.com", "name": "Cid", "id": id }),
        )
        .await;
    assert_eq!(changed.status, 409, "{changed:?}");

    let events = api.get(&format!("/streams/user-{id}/events")).await;
    assert_eq!(
        events.body["events"].as_array().unwrap().len(),
        1,
        "executed once: {events:?}"
    );
    let bad_key = api
        .http
        .post(format!("{}/users", api.base))
        .header("Idempotency-Key", "")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_key.status(), 400);
}
