//! Health, readiness, metrics, projections, and the OpenAPI document.
#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_problem, Api};
use serde_json::json;

/// Every route the HTTP reference (docs/reference/http-api.md) documents.
const DOCUMENTED_ROUTES: &[(&str, &str)] = &[
    ("post", "/users"),
    ("post", "/users/{id}/rename"),
    ("post", "/users/{id}/deactivate"),
    ("get", "/users/{id}"),
    ("get", "/users"),
    ("get", "/users/{id}/orders"),
    ("post", "/products"),
    ("post", "/products/{id}/restock"),
    ("post", "/products/{id}/price"),
    ("post", "/products/{id}/discontinue"),
    ("get", "/products/{id}"),
    ("get", "/products"),
    ("post", "/orders"),
    ("post", "/orders/{id}/pay"),
    ("post", "/orders/{id}/ship"),
    ("post", "/orders/{id}/deliver"),
    ("post", "/orders/{id}/cancel"),
    ("get", "/orders/{id}"),
    ("get", "/orders/{id}/timeline"),
    ("get", "/streams/{stream_id}/events"),
    ("get", "/events"),
    ("get", "/sagas/{order_id}"),
    ("get", "/projections"),
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("post", "/tokens"),
    ("get", "/tokens"),
    ("delete", "/tokens/{id}"),
];

#[tokio::test]
async fn every_route_is_in_the_openapi_document_and_every_documented_route_is_served() {
    let api = Api::start().await;
    let spec = api.get("/openapi.json").await;
    assert_eq!(spec.status, 200);
    assert!(
        spec.body["openapi"].as_str().unwrap().starts_with("3.1"),
        "OpenAPI 3.1"
    );
    let paths = spec.body["paths"].as_object().unwrap();
    let mut missing = Vec::new();
    for (method, path) in DOCUMENTED_ROUTES {
        if paths.get(*path).and_then(|p| p.get(*method)).is_none() {
            missing.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    assert!(
        missing.is_empty(),
        "routes missing from /openapi.json: {missing:?}"
    );
    // And everything documented answers (anything but "no such route").
    let id = uuid::Uuid::new_v4();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let url = format!(
                "{}{}",
                api.base,
                path.replace("{stream_id}", &format!("order-{id}"))
                    .replace(['{', '}'], "")
                    .replace("order_id", &id.to_string())
                    .replace("/id", &format!("/{id}"))
            );
            let response = match method.as_str() {
                "get" => api.http.get(&url).send().await.unwrap(),
                "delete" => api.http.delete(&url).send().await.unwrap(),
                _ => api.http.post(&url).json(&json!({})).send().await.unwrap(),
            };
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            assert!(
                !body.contains("no such route") && status != 405,
                "{method} {path} ({url}) is not served: {status} {body}"
            );
            assert!(
                status < 500 || path == "/ready",
                "{method} {path}: {status} {body}"
            );
        }
    }
    let docs = api.get("/docs").await;
    assert_eq!(docs.status, 200);
    assert!(docs.body.as_str().unwrap().contains("/openapi.json"));
}

#[tokio::test]
async fn health_ready_metrics_and_projections() {
    let api = Api::start().await;
    assert_eq!(api.get("/health").await.body, json!({ "status": "ok" }));
    let ready = api.get("/ready").await;
    assert_eq!(
        (ready.status, ready.body["status"].as_str()),
        (200, Some("ready")),
        "{ready:?}"
    );

    let created = api.user("Metered").await;
    api.get(&format!(
        "/users/{}?min_position={}",
        created.id(),
        created.position()
    ))
    .await;
    assert_problem(
        &api.post("/users", json!({ "email": "bad", "name": "x" }))
            .await,
        422,
        "validation",
    );
    let metrics = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap();
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let mut text = metrics.text().await.unwrap();
    // The pipeline's hop histograms appear once the relay has published and
    // the projections applied a batch.
    for _ in 0..100 {
        if text.contains("ordo_projection_apply_seconds_count")
            && text.contains("ordo_relay_publish_delay_seconds_count")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        text = api.metrics().await;
    }
    for needle in [
        "ordo_relay_publish_delay_seconds_bucket",
        "ordo_projection_receive_delay_seconds_bucket{projection=\"users\"",
        "ordo_projection_apply_seconds_count{projection=\"users\"}",
        "ordo_http_requests_total",
        "ordo_http_request_duration_seconds_bucket",
        "route=\"/users/{id}\"",
        "ordo_commands_total",
        "outcome=\"ok\"",
        "ordo_projection_lag_events",
        "ordo_relay_published_total",
    ] {
        assert!(text.contains(needle), "/metrics has {needle}");
    }

    let projections = api.get("/projections").await;
    let list = projections.body.as_array().unwrap();
    assert_eq!(list.len(), 3);
    for item in list {
        for field in ["name", "position", "lag_events", "lag_seconds", "status"] {
            assert!(item.get(field).is_some(), "{field} in {item}");
        }
    }
    let request_id = "0192a8c4-7e1f-7000-8000-00000000abcd";
    let echoed = api
        .http
        .get(format!("{}/health", api.base))
        .header("x-request-id", request_id)
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], request_id);
}

#[tokio::test]
async fn one_projection_answers_once_it_has_applied_a_position() {
    let api = Api::start().await;
    let created = api.user("Waited").await;
    let written: eventstore::Position = created.position().parse().unwrap();
    let users = api
        .get(&format!(
            "/projections/users?min_position={}",
            created.position()
        ))
        .await;
    assert_eq!(users.status, 200, "{users:?}");
    assert_eq!(users.body["name"], "users");
    let applied: eventstore::Position = users.body["position"].as_str().unwrap().parse().unwrap();
    assert!(applied >= written, "{applied} has {written}");
    for field in ["lag_events", "lag_seconds", "status", "updated_at"] {
        assert!(users.body.get(field).is_some(), "{field} in {}", users.body);
    }
    // The users projection does not write products: the products one got
    // there on its own, and says so.
    let products = api.get("/projections/products").await;
    assert_eq!(products.status, 200, "{products:?}");
    assert_eq!(products.body["name"], "products");

    assert_problem(&api.get("/projections/nope").await, 404, "not_found");
    assert_problem(
        &api.get("/projections/users?min_position=12x").await,
        400,
        "bad_request",
    );
    assert_problem(
        &api.get("/projections/users?min_position=99999999.99999999")
            .await,
        400,
        "bad_request",
    );
    assert_problem(
        &api.get("/projections/users?since=1").await,
        400,
        "bad_request",
    );
}

#[tokio::test]
async fn the_request_id_and_trace_become_event_metadata() {
    let api = Api::start().await;
    let request_id = uuid::Uuid::new_v4();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = api
        .http
        .post(format!("{}/users", api.base))
        .header("x-request-id", request_id.to_string())
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({ "email": "traced@example.com", "name": "Traced" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-request-id"],
        request_id.to_string().as_str()
    );
    let body: serde_json::Value = response.json().await.unwrap();
    let stream = format!("user-{}", body["id"].as_str().unwrap());
    let events = api.shop.store.read_stream(&stream, 0, 10).await.unwrap();
    assert_eq!(events[0].metadata.causation_id, Some(request_id));
    assert_eq!(events[0].metadata.correlation_id, Some(request_id));
    assert_eq!(events[0].metadata.trace_id.as_deref(), Some(trace));
}
