//! The relay against real PostgreSQL and JetStream: every committed event on
//! the stream exactly once, in log order, through crashes, NATS restarts and
//! leader changes.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use eventstore::envelope::Envelope;
use eventstore::notify::LogListener;
use eventstore::relay::{Relay, RelayConfig};
use eventstore::{AppendRequest, EventStore, ExpectedVersion, Metadata, NewEvent};
use rand::Rng as _;
use serde_json::json;
use test_support::log::whole_log;
use test_support::servers::{read_stream_messages, PrivateNats};
use test_support::shop::{spawn_relay_with, RunningRelay};
use test_support::{poll, wait_for, TestEnv};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A relay built as `ordo up` builds it, publishing `batch` events a batch.
fn spawn_relay(env: &TestEnv, batch: i64) -> RunningRelay {
    let mut config = RelayConfig::new(env.stream.clone(), env.prefix.clone());
    config.batch_size = batch;
    spawn_relay_with(env, config)
}

/// `count` events from `writers` concurrent writers on a handful of streams each.
fn spawn_writers(
    store: &EventStore,
    writers: usize,
    count: usize,
    pause: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let store = store.clone();
            let share = count * (w + 1) / writers - count * w / writers;
            tokio::spawn(async move {
                let streams: Vec<String> = (0..5)
                    .map(|_| format!("order-{}", Uuid::new_v4()))
                    .collect();
                for i in 0..share {
                    let stream = &streams[rand::rng().random_range(0..streams.len())];
                    let events = [NewEvent {
                        event_id: Uuid::new_v4(),
                        event_type: "OrderCancelled".into(),
                        schema_version: 1,
                        data: json!({ "reason": format!("r{i}") }),
                    }];
                    store
                        .append(AppendRequest {
                            stream_id: stream,
                            stream_type: "order",
                            expected: ExpectedVersion::Any,
                            events: &events,
                            metadata: &Metadata {
                                correlation_id: Some(Uuid::new_v4()),
                                ..Metadata::default()
                            },
                            claims: &[],
                        })
                        .await
                        .expect("append");
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            })
        })
        .collect()
}

async fn wait_for_messages(
    js: &jetstream::Context,
    stream: &str,
    count: u64,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    wait_for(within, || async {
        let mut s = js.get_stream(stream).await.ok()?;
        let info = s.info().await.ok()?;
        (info.state.messages >= count).then_some(())
    })
    .await;
    started.elapsed()
}

/// The stream holds exactly the log, once each, in log order, as envelopes.
async fn assert_stream_is_the_log(env: &TestEnv, js: &jetstream::Context, store: &EventStore) {
    let log = whole_log(store).await;
    let messages = read_stream_messages(js, env.stream.as_str()).await;
    let ids: Vec<String> = messages
        .iter()
        .map(|m| m.msg_id.clone().expect("Nats-Msg-Id"))
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no event is on the stream twice");
    let expected: Vec<String> = log.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(ids.len(), expected.len(), "every event is on the stream");
    assert_eq!(ids, expected, "the stream is in log order");
    for (message, event) in messages.iter().zip(&log) {
        assert_eq!(
            message.subject,
            format!(
                "{}.{}.{}.{}",
                env.prefix,
                event.stream_type,
                event.aggregate_id(),
                event.event_type
            )
        );
        let envelope: Envelope = serde_json::from_slice(&message.payload).expect("envelope");
        assert_eq!(envelope, Envelope::from_recorded(event));
    }
}

#[tokio::test]
async fn publishes_every_event_once_in_log_order_as_cloudevents() {
    let env = TestEnv::new().await;
    let store = EventStore::new(env.pool.clone());
    let js = env.jetstream.clone();
    let relay = spawn_relay(&env, 500);
    for writer in spawn_writers(&store, 8, 3000, Duration::ZERO) {
        writer.await.expect("writer");
    }
    wait_for_messages(&js, env.stream.as_str(), 3000, Duration::from_secs(30)).await;
    assert_stream_is_the_log(&env, &js, &store).await;

    // The checkpoint pairs the last event published with its stream sequence.
    let last = whole_log(&store).await.last().expect("events").position;
    let client = env.client().await;
    let checkpoint = poll(
        Duration::from_secs(5),
        || async {
            eventstore::relay::checkpoint(&**client, &env.stream)
                .await
                .expect("checkpoint")
                .expect("recorded")
        },
        |checkpoint| checkpoint.position == last,
    )
    .await;
    assert_eq!(
        (checkpoint.position, checkpoint.stream_sequence),
        (last, 3000)
    );

    let message = &read_stream_messages(&js, env.stream.as_str()).await[0];
    let body: serde_json::Value = serde_json::from_slice(&message.payload).expect("json");
    for field in [
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "dataschema",
        "data",
        "streamtype",
        "streamversion",
        "position",
        "schemaversion",
        "correlationid",
    ] {
        assert!(body.get(field).is_some(), "envelope has {field}: {body}");
    }
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["source"], "/ordo/order");
    assert_eq!(
        body["dataschema"],
        "schemas/events/order/OrderCancelled.v1.json"
    );
    relay.running.stop().await;
}

#[tokio::test]
async fn a_relay_killed_mid_batch_and_restarted_loses_and_repeats_nothing() {
    let env = TestEnv::new().await;
    let store = EventStore::new(env.pool.clone());
    let js = env.jetstream.clone();
    let writers = spawn_writers(&store, 4, 4000, Duration::from_micros(500));
    // Kill it (abort: no chance to checkpoint) a dozen times while writers append.
    for _ in 0..12 {
        let relay = spawn_relay(&env, 50);
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(30..200))).await;
        relay.running.kill().await;
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let relay = spawn_relay(&env, 50);
    wait_for_messages(&js, env.stream.as_str(), 4000, Duration::from_secs(60)).await;
    // Give a wrongly repeating relay the chance to show itself.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_stream_is_the_log(&env, &js, &store).await;
    relay.running.stop().await;
}

#[tokio::test]
async fn nats_restarted_while_events_are_appended() {
    let mut nats = PrivateNats::start();
    let env = TestEnv::with_nats(nats.url()).await;
    let store = EventStore::new(env.pool.clone());
    let js = env.jetstream.clone();
    let relay = spawn_relay(&env, 200);
    let writers = spawn_writers(&store, 4, 3000, Duration::from_millis(2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    nats.restart();
    for writer in writers {
        writer.await.expect("writer");
    }
    wait_for_messages(&js, env.stream.as_str(), 3000, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_stream_is_the_log(&env, &js, &store).await;
    relay.running.stop().await;
}

#[tokio::test]
async fn of_two_relays_one_publishes_and_the_other_takes_over_within_5s() {
    let env = TestEnv::new().await;
    let store = EventStore::new(env.pool.clone());
    let js = env.jetstream.clone();
    let a = spawn_relay(&env, 100);
    let b = spawn_relay(&env, 100);
    for writer in spawn_writers(&store, 2, 200, Duration::ZERO) {
        writer.await.expect("writer");
    }
    wait_for_messages(&js, env.stream.as_str(), 200, Duration::from_secs(30)).await;
    let (active, standby) = if a.stats.active.load(Ordering::SeqCst) {
        (a, b)
    } else {
        (b, a)
    };
    assert!(active.stats.active.load(Ordering::SeqCst));
    assert!(
        !standby.stats.active.load(Ordering::SeqCst),
        "only one relay is active"
    );
    assert_eq!(
        standby.stats.published.load(Ordering::SeqCst),
        0,
        "the standby publishes nothing"
    );
    // The stream may hold the messages a moment before the relay counts them
    // (it counts after checkpointing).
    let published = poll(
        Duration::from_secs(5),
        || async { active.stats.published.load(Ordering::SeqCst) },
        |published| *published >= 200,
    )
    .await;
    assert_eq!(published, 200);
    assert_eq!(standby.stats.published.load(Ordering::SeqCst), 0);

    // The active one dies (its session, and with it the lock, goes away).
    active.running.kill().await;
    for writer in spawn_writers(&store, 2, 100, Duration::ZERO) {
        writer.await.expect("writer");
    }
    let took = wait_for_messages(&js, env.stream.as_str(), 300, Duration::from_secs(10)).await;
    assert!(
        took < Duration::from_secs(5),
        "standby took over in {took:?}"
    );
    assert!(standby.stats.active.load(Ordering::SeqCst));
    assert_stream_is_the_log(&env, &js, &store).await;
    standby.running.stop().await;
}

#[tokio::test]
async fn a_stream_with_foreign_subjects_is_refused() {
    let env = TestEnv::new().await;
    js_create(&env.jetstream, env.stream.as_str(), "elsewhere.>").await;
    let store = EventStore::new(env.pool.clone());
    let relay = Relay::new(
        store,
        env.database_url.clone(),
        env.jetstream.clone(),
        LogListener::spawn(env.database_url.clone()),
        RelayConfig::new(env.stream.clone(), env.prefix.clone()),
    );
    let err = tokio::time::timeout(Duration::from_secs(10), relay.run(CancellationToken::new()))
        .await
        .expect("refuses at once")
        .expect_err("a mismatched stream is an error");
    let text = err.to_string();
    assert!(
        text.contains("elsewhere.>") && text.contains("ORDO_SUBJECT_PREFIX"),
        "{text}"
    );
}

async fn js_create(js: &jetstream::Context, name: &str, subject: &str) {
    js.create_stream(jetstream::stream::Config {
        name: name.to_owned(),
        subjects: vec![subject.to_owned()],
        ..Default::default()
    })
    .await
    .expect("create stream");
}

#[tokio::test]
async fn a_batch_size_above_the_ack_window_cannot_stall_the_relay() {
    // async-nats lets 5,000 acks be outstanding; batches of 5,000 with several
    // in flight would make the relay wait on itself without the clamp.
    let env = TestEnv::new().await;
    let store = EventStore::new(env.pool.clone());
    let js = env.jetstream.clone();
    for writer in spawn_writers(&store, 8, 12_000, Duration::ZERO) {
        writer.await.expect("writer");
    }
    let relay = spawn_relay(&env, 5000);
    wait_for_messages(&js, env.stream.as_str(), 12_000, Duration::from_secs(60)).await;
    assert_stream_is_the_log(&env, &js, &store).await;
    relay.running.stop().await;
}
