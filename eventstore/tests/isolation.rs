//! Tests run in parallel against one PostgreSQL and one NATS server: each gets
//! its own database, stream and subject prefix, and sees only its own data.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use test_support::{poll, TestEnv};

/// How many of the two tests below have reached the rendezvous.
static ARRIVED: AtomicUsize = AtomicUsize::new(0);

/// Waits (a while) for the other test so both write at the same time.
async fn rendezvous() {
    ARRIVED.fetch_add(1, Ordering::SeqCst);
    // Not an assertion: run alone, a test simply goes on after the wait.
    poll(
        Duration::from_secs(10),
        || async { ARRIVED.load(Ordering::SeqCst) },
        |arrived| *arrived >= 2,
    )
    .await;
}

/// Writes `n` events to the test's own database and stream, then checks it
/// sees exactly those.
async fn write_and_read_own_events(n: usize) {
    let env = TestEnv::new().await;
    let stream = env.create_stream().await;
    rendezvous().await;

    let client = env.client().await;
    let aggregate = uuid::Uuid::new_v4();
    for version in 1..=n as i64 {
        client
            .execute(
                "insert into events (event_id, stream_id, stream_type, version, type, schema_version, data)
                 values ($1, $2, 'order', $3, 'OrderConfirmed', 1, '{}')",
                &[&uuid::Uuid::new_v4(), &format!("order-{aggregate}"), &version],
            )
            .await
            .expect("insert");
        let subject = env
            .prefix
            .subject("order", &aggregate.to_string(), "OrderConfirmed");
        env.jetstream
            .publish(subject, format!("{version}").into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }

    let rows = client
        .query("select distinct stream_id from events", &[])
        .await
        .expect("select");
    assert_eq!(
        rows.len(),
        1,
        "only this test's stream is in this test's database"
    );
    let count: i64 = client
        .query_one("select count(*) from events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, n as i64);

    let mut stream = stream;
    let info = stream.info().await.expect("stream info");
    assert_eq!(
        info.state.messages, n as u64,
        "only this test's messages are on its stream"
    );
    assert_eq!(info.config.subjects, vec![env.prefix.wildcard()]);

    // And nothing of ours leaks onto a subject the other test listens on.
    let other: Vec<String> = jetstream::new(env.nats.clone())
        .stream_names()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .filter_map(Result::ok)
        .filter(|name| name.starts_with("ORDO_TEST_") && name != env.stream.as_str())
        .collect();
    for name in other {
        let Ok(mut s) = env.jetstream.get_stream(&name).await else {
            continue;
        };
        let Ok(info) = s.info().await else { continue };
        assert!(
            !info
                .config
                .subjects
                .iter()
                .any(|subject| subject == &env.prefix.wildcard()),
            "stream {name} must not capture this test's subjects"
        );
    }
}

use futures::StreamExt as _;

#[tokio::test]
async fn first_test_sees_only_its_own_events() {
    write_and_read_own_events(25).await;
}

#[tokio::test]
async fn second_test_sees_only_its_own_events() {
    write_and_read_own_events(40).await;
}
