//! `ordo events`: the audit query from the command line.

use std::process::Command;

use eventstore::{AppendRequest, EventStore, ExpectedVersion, Metadata, NewEvent};
use serde_json::json;
use test_support::TestEnv;
use uuid::Uuid;

fn ordo(env: &TestEnv, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ordo"))
        .arg("--database-url")
        .arg(env.database_url.expose())
        .args(args)
        .output()
        .expect("run ordo")
}

#[tokio::test]
async fn lists_filters_and_pages_the_log() {
    let env = TestEnv::new().await;
    let store = EventStore::new(env.pool.clone());
    let correlation = Uuid::new_v4();
    let order = format!("order-{}", Uuid::new_v4());
    for (i, event_type) in ["OrderPlaced", "OrderConfirmed", "OrderPaid"]
        .iter()
        .enumerate()
    {
        store
            .append(AppendRequest {
                stream_id: &order,
                stream_type: "order",
                expected: ExpectedVersion::Exact(i as u64),
                events: &[NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: (*event_type).into(),
                    schema_version: 1,
                    data: json!({ "n": i }),
                }],
                metadata: &Metadata {
                    correlation_id: Some(correlation),
                    ..Metadata::default()
                },
                claims: &[],
            })
            .await
            .expect("append");
    }
    let other = format!("product-{}", Uuid::new_v4());
    store
        .append(AppendRequest {
            stream_id: &other,
            stream_type: "product",
            expected: ExpectedVersion::NoStream,
            events: &[NewEvent {
                event_id: Uuid::now_v7(),
                event_type: "ProductDiscontinued".into(),
                schema_version: 1,
                data: json!({}),
            }],
            metadata: &Metadata::default(),
            claims: &[],
        })
        .await
        .expect("append");

    let out = ordo(&env, &["events", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one envelope per line"))
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["type"], "OrderPlaced");
    assert_eq!(lines[0]["specversion"], "1.0");

    let by_type = ordo(&env, &["events", "--json", "--type", "OrderConfirmed"]);
    assert_eq!(String::from_utf8_lossy(&by_type.stdout).lines().count(), 1);
    let by_stream_type = ordo(&env, &["events", "--json", "--stream-type", "product"]);
    assert_eq!(
        String::from_utf8_lossy(&by_stream_type.stdout)
            .lines()
            .count(),
        1
    );
    let by_correlation = ordo(
        &env,
        &[
            "events",
            "--json",
            "--correlation",
            &correlation.to_string(),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&by_correlation.stdout)
            .lines()
            .count(),
        3
    );
    let by_stream = ordo(
        &env,
        &["events", "--json", "--stream", &order, "--limit", "2"],
    );
    assert_eq!(
        String::from_utf8_lossy(&by_stream.stdout).lines().count(),
        2
    );
    let after = lines[1]["position"].as_str().expect("position");
    let rest = ordo(&env, &["events", "--json", "--after", after]);
    assert_eq!(String::from_utf8_lossy(&rest.stdout).lines().count(), 2);
    let future = ordo(
        &env,
        &["events", "--json", "--since", "2999-01-01T00:00:00Z"],
    );
    assert_eq!(String::from_utf8_lossy(&future.stdout).lines().count(), 0);

    let table = ordo(&env, &["events"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("position"), "{text}");
    assert!(text.contains(&order) && text.contains("ProductDiscontinued"));
    assert!(text.contains("(4 events; continue with --after"));

    for bad in [
        &["events", "--after", "yesterday"][..],
        &["events", "--correlation", "nope"],
        &["events", "--since", "monday"],
    ] {
        let out = ordo(&env, bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
}
