//! The event log over HTTP.
#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_problem, Api};
use serde_json::json;

#[tokio::test]
async fn streams_and_the_global_log_page_in_order() {
    let api = Api::start().await;
    let user = api.user("Logger").await.id();
    api.post(
        &format!("/users/{user}/rename"),
        json!({ "name": "Logger 2" }),
    )
    .await;
    let product = api.product(1, "1.00").await.id();

    let stream = api.get(&format!("/streams/user-{user}/events")).await;
    let events = stream.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{stream:?}");
    assert_eq!(events[0]["type"], "UserRegistered");
    assert_eq!(events[0]["specversion"], "1.0");
    assert_eq!(events[0]["subject"], format!("user-{user}"));
    assert_eq!(events[1]["streamversion"], 2);
    let from_two = api
        .get(&format!("/streams/user-{user}/events?from_version=2"))
        .await;
    assert_eq!(from_two.body["events"].as_array().unwrap().len(), 1);
    assert_problem(&api.get("/streams/banana/events").await, 400, "bad_request");
    assert_problem(
        &api.get(&format!("/streams/order-{}/events", uuid::Uuid::new_v4()))
            .await,
        404,
        "not_found",
    );

    // Page the whole log two at a time. The log is read below the server's
    // oldest running transaction, which other tests' work may hold back for
    // a moment: an empty page then means "not yet", so the paging goes on
    // from the same place until the three events are in, then once more to
    // see that nothing follows.
    let mut all = Vec::new();
    let mut after = String::from("0.0");
    loop {
        let enough = all.len() >= 3;
        let (events, next) = test_support::wait_for(std::time::Duration::from_secs(20), || {
            let path = format!("/events?limit=2&after={after}");
            let api = &api;
            async move {
                let page = api.get(&path).await;
                assert_eq!(page.status, 200, "{page:?}");
                let events = page.body["events"].as_array().unwrap().clone();
                let next = page.body["next"].as_str().unwrap().to_owned();
                (!events.is_empty() || enough).then_some((events, next))
            }
        })
        .await;
        after = next;
        if events.is_empty() {
            break;
        }
        all.extend(events);
    }
    assert_eq!(all.len(), 3);
    let products = api.get("/events?stream_type=product").await;
    assert_eq!(
        products.body["events"][0]["subject"],
        format!("product-{product}")
    );
    let renames = api.get("/events?type=UserRenamed").await;
    assert_eq!(renames.body["events"].as_array().unwrap().len(), 1);
    assert_eq!(
        api.get("/events?since=2999-01-01T00:00:00Z").await.body["events"],
        json!([])
    );
    for bad in [
        "/events?type=%00",
        "/events?type=Order%20Placed",
        "/events?after=x",
        "/events?stream_type=planet",
        "/events?correlation_id=1",
        "/events?since=never",
        "/events?limit=5000",
    ] {
        assert_problem(&api.get(bad).await, 400, "bad_request");
    }
}

/// Reads have connections of their own: with every connection of commands
/// taken (a burst of orders waiting its turn), the log and the projections
/// still answer, and commands go on afterwards.
#[tokio::test]
async fn reads_do_not_wait_behind_commands() {
    let env = test_support::TestEnv::new().await;
    // One connection for commands, one of their own for reads.
    let mut settings = env.settings();
    settings.api_connections = 1;
    let state = env.system_with(settings).api().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let admin = common::token(&state, &[api::auth::Scope::Admin], None).await;
    let serving = state.clone();
    let server = test_support::Running::spawn(|stop| api::serve(listener, serving, stop));
    let http = common::Client::new(&base, Some(&admin)).http;

    let held = state.store.client().await.unwrap();
    for path in ["/events?limit=10", "/projections"] {
        let answer = http.get(format!("{base}{path}")).send().await;
        let answer = answer.unwrap_or_else(|e| panic!("GET {path} waited behind commands: {e}"));
        assert_eq!(answer.status(), 200, "GET {path}");
    }
    // A command waits for the connection, and gets it once it is free.
    let register = http
        .post(format!("{base}/users"))
        .json(&serde_json::json!({ "email": "reader@example.com", "name": "Reader" }))
        .send();
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        drop(held);
    };
    let (answer, ()) = tokio::join!(register, release);
    assert_eq!(answer.unwrap().status(), 201);
    server.stop().await.unwrap();
}
