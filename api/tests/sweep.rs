//! Regressions found by the schemathesis sweep (`scripts/sweep`,
//! docs/SWEEP.md): each test is one problem it found, fixed.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{assert_problem, Api};
use serde_json::json;

/// A body over 64 KiB was refused with axum's plain-text 413.
#[tokio::test]
async fn an_oversized_body_is_a_problem_json_413_on_every_command() {
    let api = Api::start().await;
    let big = json!({ "email": "big@example.com", "name": "x".repeat(70_000) });
    let answer = api.post("/users", big).await;
    assert_problem(&answer, 413, "payload_too_large");
    let id = uuid::Uuid::new_v4();
    // Commands without a body read it too (for the idempotency key's hash).
    let answer = api
        .post_raw(&format!("/orders/{id}/ship"), None, vec![b' '; 65 * 1024])
        .await;
    assert_problem(&answer, 413, "payload_too_large");
}

/// The 405 answer said `"status": 400, "code": "bad_request"` in its body.
#[tokio::test]
async fn a_wrong_method_is_a_405_problem_that_says_so_and_lists_the_methods() {
    let api = Api::start().await;
    let answer = api
        .http
        .delete(format!("{}/users", api.base))
        .send()
        .await
        .unwrap();
    let allow = answer.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    assert_eq!(answer.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(
        (body["status"].as_u64(), body["code"].as_str()),
        (Some(405), Some("method_not_allowed")),
        "{body}"
    );
}

/// Amount strings went through a library parser that rounded long fractions
/// and skipped underscores: "19.99999999999999999999999999999" became 20.00
/// and "1_000" became 1000.00.
#[tokio::test]
async fn amounts_are_exact_or_refused_never_rounded() {
    let api = Api::start().await;
    for (price, why) in [
        ("19.99999999999999999999999999999", "rounded"),
        ("1_000", "underscore"),
        ("1e3", "exponent in a string"),
        ("1000000000000000000000000", "10^24"),
    ] {
        let answer = api
            .post(
                "/products",
                json!({ "sku": format!("R-{}", why.len()), "name": why, "price": price, "stock": 1 }),
            )
            .await;
        assert_problem(&answer, 422, "validation");
    }
    // JSON numbers are read from their text, exponents included.
    let answer = api
        .post(
            "/products",
            json!({ "sku": "EXP", "name": "Exp", "price": 1.5e2, "stock": 2.0 }),
        )
        .await;
    assert_eq!(answer.status, 201, "{answer:?}");
    let product = api
        .get_after(&format!("/products/{}", answer.id()), &answer.position())
        .await;
    assert_eq!(
        (&product.body["price"], &product.body["on_hand"]),
        (&json!("150.00"), &json!(2))
    );
}

/// A `min_position` past the end of the log waited 5 s and answered 503
/// `projection_lagging`; no answer ever carried such a token.
#[tokio::test]
async fn a_min_position_past_the_end_of_the_log_is_a_bad_request_at_once() {
    let api = Api::start().await;
    let user = api.user("Reader").await;
    let started = Instant::now();
    let answer = api
        .get(&format!("/users/{}?min_position=999999999999.1", user.id()))
        .await;
    assert_problem(&answer, 400, "bad_request");
    assert!(started.elapsed() < Duration::from_secs(3));
    // A real token still reads the write.
    let answer = api
        .get_after(&format!("/users/{}", user.id()), &user.position())
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

/// With `as_of`, `min_position` was not read at all, so garbage passed.
#[tokio::test]
async fn min_position_is_checked_even_beside_as_of() {
    let api = Api::start().await;
    let id = uuid::Uuid::new_v4();
    let answer = api
        .get(&format!("/orders/{id}?as_of=1.1&min_position=nonsense"))
        .await;
    assert_problem(&answer, 400, "bad_request");
}

/// `from_version` past 2^63 wrapped to a negative version and returned the
/// whole stream.
#[tokio::test]
async fn from_version_beyond_any_version_is_refused_not_wrapped() {
    let api = Api::start().await;
    let user = api.user("Versioned").await;
    let stream = format!("/streams/user-{}/events", user.id());
    let answer = api
        .get(&format!("{stream}?from_version=9223372036854775809"))
        .await;
    assert_problem(&answer, 400, "bad_request");
    let answer = api.get(&format!("{stream}?from_version=2")).await;
    assert_eq!(answer.body["events"], json!([]), "{answer:?}");
}

/// Ids in other spellings than the hyphenated one (braced, URN, bare hex)
/// were taken, though the document says `format: uuid`.
#[tokio::test]
async fn only_hyphenated_uuids_are_ids() {
    let api = Api::start().await;
    let id = uuid::Uuid::new_v4();
    for spelling in [
        id.simple().to_string(),
        id.braced().to_string(),
        id.urn().to_string(),
    ] {
        assert_problem(
            &api.get(&format!("/users/{spelling}")).await,
            400,
            "bad_request",
        );
        assert_problem(
            &api.post(
                "/users",
                json!({ "email": "id@example.com", "name": "Id", "id": spelling }),
            )
            .await,
            400,
            "bad_request",
        );
    }
    let upper = id.hyphenated().to_string().to_uppercase();
    assert_problem(&api.get(&format!("/users/{upper}")).await, 404, "not_found");
}

/// `POST /orders/{id}/cancel` documents its body as optional: a JSON `null`
/// is no body.
#[tokio::test]
async fn a_null_cancel_body_means_no_reason() {
    let api = Api::start().await;
    let id = uuid::Uuid::new_v4();
    let answer = api
        .post_raw(
            &format!("/orders/{id}/cancel"),
            Some("application/json"),
            b"null".to_vec(),
        )
        .await;
    assert_problem(&answer, 404, "not_found");
}

/// Every error the document describes is served as problem+json, and the
/// document says so.
#[tokio::test]
async fn the_document_declares_problem_json_for_every_error() {
    let api = Api::start().await;
    let spec = api.get("/openapi.json").await.body;
    let mut offenders = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                if !status.starts_with('4') && !status.starts_with('5') || path == "/ready" {
                    continue;
                }
                let response = match response.get("$ref").and_then(|r| r.as_str()) {
                    Some(r) => &spec["components"]["responses"][r.rsplit('/').next().unwrap()],
                    None => response,
                };
                if response["content"]
                    .get("application/problem+json")
                    .is_none()
                {
                    offenders.push(format!("{method} {path} {status}"));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:?}");
    let unavailable = &spec["components"]["responses"]["Unavailable"];
    assert!(
        unavailable["headers"].get("Retry-After").is_some(),
        "{unavailable}"
    );
}

/// chrono's RFC 3339 parser also takes a space for the `T` and a leap second
/// at any minute; the document's `date-time` (and JSON Schema's) does not.
#[tokio::test]
async fn times_are_rfc_3339_date_times_as_documented() {
    let api = Api::start().await;
    for bad in [
        "2026-01-01%2000:00:00Z",
        "2026-01-01T10:00:60Z",
        "2026-01-01",
    ] {
        assert_problem(
            &api.get(&format!("/events?since={bad}")).await,
            400,
            "bad_request",
        );
    }
    for good in [
        "2026-01-01T00:00:00Z",
        "2016-12-31T23:59:60Z",
        "2026-01-01t01:00:00.5%2B01:00",
    ] {
        let answer = api.get(&format!("/events?until={good}")).await;
        assert_eq!(answer.status, 200, "{good}: {answer:?}");
    }
}
