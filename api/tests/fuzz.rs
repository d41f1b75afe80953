//! A thousand random and malformed requests: never a 5xx, and the server
//! still answers afterwards.
#![allow(clippy::unwrap_used)]

mod common;

use common::Api;
use rand::prelude::*;
use serde_json::{json, Value};

fn random_string(rng: &mut impl Rng) -> String {
    let pool = [
        "",
        " ",
        "a",
        "ü",
        "😀",
        "\u{0}",
        "\n",
        "\\",
        "'",
        "\"",
        "%00",
        "../..",
        "null",
        "-1",
        "0",
        "1e400",
        "19.999999",
        "NaN",
        "Infinity",
        "<script>",
        "DROP TABLE events;",
        "x@y",
        "a@b.c",
    ];
    match rng.random_range(0..4) {
        0 => pool.choose(rng).unwrap().to_string(),
        1 => "x".repeat(rng.random_range(0..400)),
        2 => uuid::Uuid::new_v4().to_string(),
        _ => (0..rng.random_range(0..20))
            .map(|_| char::from(rng.random_range(1u8..127)))
            .collect(),
    }
}

fn random_value(rng: &mut impl Rng, depth: u32) -> Value {
    match rng.random_range(0..if depth > 3 { 6 } else { 9 }) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random_range(-1_000_000_000i64..1_000_000_000)),
        3 => json!(rng.random::<f64>() * 1e6),
        4 => json!(random_string(rng)),
        5 => json!(u64::MAX),
        6 => Value::Array(
            (0..rng.random_range(0..5))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "email",
                "name",
                "id",
                "sku",
                "price",
                "stock",
                "quantity",
                "user_id",
                "lines",
                "product_id",
                "amount",
                "reason",
                "extra",
            ];
            let mut map = serde_json::Map::new();
            for _ in 0..rng.random_range(0..6) {
                map.insert(
                    keys.choose(rng).unwrap().to_string(),
                    random_value(rng, depth + 1),
                );
            }
            Value::Object(map)
        }
    }
}

#[tokio::test]
async fn a_thousand_bad_requests_get_no_server_error() {
    let api = Api::start().await;
    let user = api.user("Real").await.id();
    let product = api.product(5, "3.00").await.id();
    let ids = [
        user.clone(),
        product.clone(),
        uuid::Uuid::new_v4().to_string(),
        "not-a-uuid".into(),
        "%20".into(),
        "..".into(),
    ];
    let paths = [
        "/users",
        "/users/{}",
        "/users/{}/rename",
        "/users/{}/deactivate",
        "/users/{}/orders",
        "/products",
        "/products/{}",
        "/products/{}/restock",
        "/products/{}/price",
        "/products/{}/discontinue",
        "/orders",
        "/orders/{}",
        "/orders/{}/pay",
        "/orders/{}/ship",
        "/orders/{}/deliver",
        "/orders/{}/cancel",
        "/orders/{}/timeline",
        "/streams/{}/events",
        "/streams/order-{}/events",
        "/events",
        "/sagas/{}",
        "/projections",
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
        "/nothing/{}",
    ];
    let queries = [
        "",
        "?min_position=1.1",
        "?min_position=x",
        "?as_of=2020-01-01T00:00:00Z",
        "?as_of=zz",
        "?limit=-5",
        "?limit=99999999999999999999",
        "?cursor=abc",
        "?email=%00",
        "?type=%00",
        "?after=1.2.3",
        "?since=x&until=y",
        "?stream_type=order",
        "?correlation_id=123",
        "?from_version=-1",
        "?email=a%40b.c",
    ];
    let content_types = [
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("text/plain"),
        None,
        Some("application/x-www-form-urlencoded"),
    ];
    let mut rng = StdRng::seed_from_u64(0x0bd0);
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..1000 {
        let id = ids.choose(&mut rng).unwrap();
        let path = format!(
            "{}{}",
            paths.choose(&mut rng).unwrap().replace("{}", id),
            queries.choose(&mut rng).unwrap()
        );
        let url = format!("{}{path}", api.base);
        let method = ["GET", "POST", "POST", "POST", "PUT", "DELETE", "PATCH"]
            .choose(&mut rng)
            .unwrap()
            .to_owned();
        let mut request = api.http.request(method.parse().unwrap(), &url);
        if let Some(content_type) = content_types.choose(&mut rng).unwrap() {
            request = request.header("content-type", *content_type);
        }
        if rng.random_bool(0.2) {
            request = request.header(
                "idempotency-key",
                format!("fuzz-{}", rng.random_range(0..20)),
            );
        }
        let body: Vec<u8> = match rng.random_range(0..6) {
            0 => Vec::new(),
            1 => (0..rng.random_range(1..200))
                .map(|_| rng.random::<u8>())
                .collect(),
            2 => {
                let text = serde_json::to_string(&random_value(&mut rng, 0)).unwrap();
                let cut = rng.random_range(0..=text.len());
                text.as_bytes()[..cut].to_vec()
            }
            3 => "[".repeat(300).into_bytes(),
            _ => serde_json::to_vec(&random_value(&mut rng, 0)).unwrap(),
        };
        let response = request.body(body.clone()).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        *statuses.entry(status).or_insert(0) += 1;
        assert!(
            status < 500 || (status == 503 && path.starts_with("/ready")),
            "request {i}: {method} {path} with {:?} answered {status}: {text}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(api.get("/health").await.status, 200);
    assert!(statuses.keys().any(|s| *s >= 400), "{statuses:?}");
}
