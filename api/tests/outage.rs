//! PostgreSQL going away mid-run: commands get 503 with Retry-After, /ready
//! says so, and everything recovers by itself when it comes back. A TCP proxy
//! the test controls stands between the API and the shared server.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{assert_problem, Api};
use serde_json::json;
use test_support::servers::TcpProxy;
use test_support::TestEnv;

#[tokio::test]
async fn postgres_unreachable_means_503_and_recovery_without_restart() {
    let env = TestEnv::new().await;
    let config = env.database_url.config();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let proxy = TcpProxy::start(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let through_proxy: eventstore::DatabaseUrl = format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or("postgres"),
        proxy.addr(),
        env.database_url.database()
    )
    .parse()
    .unwrap();
    let api = Api::start_on(env, through_proxy).await;

    let first = api
        .post(
            "/users",
            json!({ "email": "before@example.com", "name": "Before" }),
        )
        .await;
    assert_eq!(first.status, 201, "{first:?}");

    proxy.cut();
    let during = api
        .post(
            "/users",
            json!({ "email": "during@example.com", "name": "During" }),
        )
        .await;
    assert_problem(&during, 503, "unavailable");
    assert_eq!(
        during
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let read = api.get(&format!("/users/{}", first.id())).await;
    assert_problem(&read, 503, "unavailable");
    let ready = api.get("/ready").await;
    assert_eq!(
        (ready.status, ready.body["postgres"].as_str()),
        (503, Some("unavailable")),
        "{ready:?}"
    );
    assert!(ready.headers.contains_key("retry-after"));
    assert_eq!(api.get("/health").await.status, 200, "alive all along");

    proxy.restore();
    let after = test_support::poll(
        Duration::from_secs(20),
        || {
            api.post(
                "/users",
                json!({ "email": "after@example.com", "name": "After" }),
            )
        },
        |answer| answer.status != 503,
    )
    .await;
    assert_eq!(after.status, 201, "recovered without a restart: {after:?}");
    assert_eq!(api.get("/ready").await.status, 200);
}
