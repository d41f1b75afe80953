//! The event store against a real PostgreSQL: optimistic concurrency, unique
//! claims, idempotent commands, and a reader that never skips under load.

use std::collections::HashSet;
use std::sync::Arc;

use eventstore::follow::LogFollower;
use eventstore::notify::LogListener;
use eventstore::store::{ClaimChange, LogFilter};
use eventstore::{
    AppendRequest, EventStore, ExpectedVersion, Metadata, NewEvent, Position, StoreError,
};
use serde_json::json;
use test_support::log::{horizon_clears, whole_log};
use test_support::{wait_for, TestEnv};
use uuid::Uuid;

fn event(n: usize) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "ProductRestocked".into(),
        schema_version: 1,
        data: json!({ "quantity": n }),
    }
}

async fn append(
    store: &EventStore,
    stream: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
    metadata: &Metadata,
    claims: &[ClaimChange],
) -> Result<eventstore::Appended, StoreError> {
    store
        .append(AppendRequest {
            stream_id: stream,
            stream_type: "product",
            expected,
            events,
            metadata,
            claims,
        })
        .await
}

#[tokio::test]
async fn appends_and_reads_back_in_order() {
    let env = TestEnv::new().await;
    let store = EventStore::new(env.pool.clone());
    let stream = format!("product-{}", Uuid::new_v4());
    let none = Metadata::default();

    let first = append(
        &store,
        &stream,
        ExpectedVersion::NoStream,
        &[event(1), event(2)],
        &none,
        &[],
    )
    .await
    .expect("first append");
    assert_eq!((first.first_version, first.last_version), (1, 2));
    let again = append(
        &store,
        &stream,
        ExpectedVersion::NoStream,
        &[event(3)],
        &none,
        &[],
    )
    .await;
    assert!(
        matches!(again, Err(StoreError::Conflict { .. })),
        "{again:?}"
    );
    let third = append(
        &store,
        &stream,
        ExpectedVersion::Exact(2),
        &[event(3)],
        &none,
        &[],
    )
    .await
    .expect("exact append");
    assert_eq!(third.last_version, 3);
    let fourth = append(
        &store,
        &stream,
        ExpectedVersion::Any,
        &[event(4)],
        &none,
        &[],
    )
    .await
    .expect("any append");
    assert_eq!(fourth.last_version, 4);
    assert!(fourth.position > third.position && third.position > first.position);

    let events = store.read_stream(&stream, 0, 100).await.expect("read");
    let quantities: Vec<_> = events.iter().map(|e| e.data["quantity"].as_u64()).collect();
    assert_eq!(quantities, vec![Some(1), Some(2), Some(3), Some(4)]);
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(
        store
            .read_stream(&stream, 2, 100)
            .await
            .expect("read")
            .len(),
        2
    );
    assert_eq!(store.stream_version(&stream).await.expect("version"), 4);

    let as_of = store
        .read_stream_as_of(&stream, eventstore::store::AsOf::Position(first.position))
        .await
        .expect("as of");
    assert_eq!(
        as_of.len(),
        2,
        "the stream as it stood after the first append"
    );
}

#[tokio::test]
async fn sixteen_writers_at_one_version_each_version_is_taken_once() {
    let env = TestEnv::new().await;
    let store = EventStore::new(env.pool.clone());
    let stream = format!("product-{}", Uuid::new_v4());
    append(
        &store,
        &stream,
        ExpectedVersion::NoStream,
        &[event(0)],
        &Metadata::default(),
        &[],
    )
    .await
    .expect("seed");

    // Each task keeps trying to append at the version it last saw, 5 times.
    let mut tasks = Vec::new();
    for writer in 0..16 {
        let store = store.clone();
        let stream = stream.clone();
        tasks.push(tokio::spawn(async move {
            let (mut won, mut conflicts) = (Vec::new(), 0);
            for _ in 0..5 {
                let version = store.stream_version(&stream).await.expect("version");
                match append(
                    &store,
                    &stream,
                    ExpectedVersion::Exact(version),
                    &[event(writer)],
                    &Metadata::default(),
                    &[],
                )
                .await
                {
                    Ok(appended) => won.push(appended.last_version),
                    Err(StoreError::Conflict { .. }) => conflicts += 1,
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            (won, conflicts)
        }));
    }
    let mut versions = Vec::new();
    let mut conflicts = 0;
    for task in tasks {
        let (won, lost) = task.await.expect("task");
        versions.extend(won);
        conflicts += lost;
    }
    versions.sort_unstable();
    let expected: Vec<u64> = (2..2 + versions.len() as u64).collect();
    assert_eq!(
        versions, expected,
        "every version taken exactly once, no gaps"
    );
    assert_eq!(
        versions.len() + conflicts,
        80,
        "every attempt either won or got Conflict"
    );
    assert!(conflicts > 0, "16 writers on one stream must collide");
    let stored = store.read_stream(&stream, 0, 1000).await.expect("read");
    assert_eq!(stored.len(), versions.len() + 1);
}

#[tokio::test]
async fn a_unique_value_claimed_twice_at_once_goes_to_exactly_one() {
    let env = TestEnv::new().await;
    let store = EventStore::new(env.pool.clone());
    for round in 0..20 {
        let email = format!("someone{round}@example.com");
        let claim = vec![ClaimChange {
            kind: "email".into(),
            value: email.clone(),
            take: true,
        }];
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let attempt = |store: EventStore,
                       claim: Vec<ClaimChange>,
                       barrier: Arc<tokio::sync::Barrier>| async move {
            let stream = format!("user-{}", Uuid::new_v4());
            barrier.wait().await;
            append(
                &store,
                &stream,
                ExpectedVersion::NoStream,
                &[event(1)],
                &Metadata::default(),
                &claim,
            )
            .await
        };
        let (a, b) = tokio::join!(
            tokio::spawn(attempt(store.clone(), claim.clone(), barrier.clone())),
            tokio::spawn(attempt(store.clone(), claim.clone(), barrier.clone())),
        );
        let results = [a.expect("task"), b.expect("task")];
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "round {round}: {results:?}");
        let duplicate = results
            .iter()
            .find_map(|r| r.as_ref().err())
            .expect("one failed");
        assert!(
            matches!(duplicate, StoreError::Duplicate { kind, value } if kind == "email" && *value == email),
            "{duplicate:?}"
        );
    }
    // A failed claim appended nothing.
    let count: i64 = env
        .client()
        .await
        .query_one("select count(*) from events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 20);
}

#[tokio::test]
async fn releasing_a_claim_frees_the_value() {
    let env = TestEnv::new().await;
    let store = EventStore::new(env.pool.clone());
    let (a, b) = (
        format!("user-{}", Uuid::new_v4()),
        format!("user-{}", Uuid::new_v4()),
    );
    let take = |t| {
        vec![ClaimChange {
            kind: "email".into(),
            value: "x@y.z".into(),
            take: t,
        }]
    };
    let none = Metadata::default();
    append(
        &store,
        &a,
        ExpectedVersion::NoStream,
        &[event(1)],
        &none,
        &take(true),
    )
    .await
    .expect("a takes");
    let refused = append(
        &store,
        &b,
        ExpectedVersion::NoStream,
        &[event(1)],
        &none,
        &take(true),
    )
    .await;
    assert!(matches!(refused, Err(StoreError::Duplicate { .. })));
    // Only the holder can release it.
    append(
        &store,
        &b,
        ExpectedVersion::NoStream,
        &[event(1)],
        &none,
        &take(false),
    )
    .await
    .expect("b appends");
    let still = append(
        &store,
        &b,
        ExpectedVersion::Any,
        &[event(2)],
        &none,
        &take(true),
    )
    .await;
    assert!(matches!(still, Err(StoreError::Duplicate { .. })));
    append(
        &store,
        &a,
        ExpectedVersion::Any,
        &[event(2)],
        &none,
        &take(false),
    )
    .await
    .expect("a releases");
    append(
        &store,
        &b,
        ExpectedVersion::Any,
        &[event(3)],
        &none,
        &take(true),
    )
    .await
    .expect("b takes");
}

#[tokio::test]
async fn the_same_command_id_twice_appends_once() {
    let env = TestEnv::new().await;
    let store = EventStore::new(env.pool.clone());
    let stream = format!("product-{}", Uuid::new_v4());
    append(
        &store,
        &stream,
        ExpectedVersion::NoStream,
        &[event(0)],
        &Metadata::default(),
        &[],
    )
    .await
    .expect("seed");

    // Sequentially: the retry returns the first result.
    let metadata = Metadata {
        command_id: Some("cmd-1".into()),
        ..Metadata::default()
    };
    let first = append(
        &store,
        &stream,
        ExpectedVersion::Exact(1),
        &[event(1)],
        &metadata,
        &[],
    )
    .await
    .expect("first");
    let retry = append(
        &store,
        &stream,
        ExpectedVersion::Exact(1),
        &[event(1)],
        &metadata,
        &[],
    )
    .await
    .expect("retry");
    assert!(!first.replayed && retry.replayed);
    assert_eq!(
        (retry.first_version, retry.last_version, retry.position),
        (2, 2, first.position)
    );

    // Concurrently, 8 at once with `Any` (no version conflict to hide behind).
    for round in 0..10 {
        let metadata = Metadata {
            command_id: Some(format!("cmd-c{round}")),
            ..Metadata::default()
        };
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (store, stream, metadata, barrier) = (
                store.clone(),
                stream.clone(),
                metadata.clone(),
                barrier.clone(),
            );
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                append(
                    &store,
                    &stream,
                    ExpectedVersion::Any,
                    &[event(7), event(8)],
                    &metadata,
                    &[],
                )
                .await
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(
                task.await
                    .expect("task")
                    .expect("every caller gets a result"),
            );
        }
        assert_eq!(
            results.iter().filter(|r| !r.replayed).count(),
            1,
            "round {round}"
        );
        assert!(results
            .windows(2)
            .all(|w| w[0].position == w[1].position && w[0].last_version == w[1].last_version));
    }
    let stored = store.read_stream(&stream, 0, 1000).await.expect("read");
    assert_eq!(
        stored.len(),
        1 + 1 + 10 * 2,
        "one set of events per command id"
    );
}

#[tokio::test]
async fn a_follower_never_skips_events_that_commit_late() {
    const WRITERS: usize = 32;
    const EVENTS: usize = 20_000;
    let env = TestEnv::new().await;
    let pool = env.database_url.pool(WRITERS + 4).expect("pool");
    let store = EventStore::new(pool);
    let listener = LogListener::spawn(env.database_url.clone());

    let reader = {
        let mut follower: LogFollower =
            LogFollower::new(store.clone(), &listener, Position::START, 500);
        tokio::spawn(async move {
            let mut seen = Vec::with_capacity(EVENTS);
            while seen.len() < EVENTS {
                let batch =
                    tokio::time::timeout(std::time::Duration::from_secs(60), follower.next_batch())
                        .await
                        .expect("the follower keeps up")
                        .expect("read");
                seen.extend(batch.into_iter().map(|e| (e.position, e.event_id)));
            }
            seen
        })
    };

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        // Shares that add up to EVENTS exactly.
        let count = EVENTS * (w + 1) / WRITERS - EVENTS * w / WRITERS;
        writers.push(tokio::spawn(async move {
            use rand::Rng as _;
            let streams: Vec<String> = (0..20)
                .map(|_| format!("product-{}", Uuid::new_v4()))
                .collect();
            for i in 0..count {
                let stream = &streams[rand::rng().random_range(0..streams.len())];
                append(
                    &store,
                    stream,
                    ExpectedVersion::Any,
                    &[event(i)],
                    &Metadata::default(),
                    &[],
                )
                .await
                .expect("append");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let seen = reader.await.expect("reader");

    let ids: HashSet<Uuid> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids.len(), EVENTS, "every event seen exactly once");
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "positions strictly increase"
    );

    // A later full read gives the same order. (Below the server's oldest
    // running transaction, which other tests may hold back for a moment: an
    // empty page before the log's head means "again".)
    let full: Vec<(Position, Uuid)> = whole_log(&store)
        .await
        .into_iter()
        .map(|e| (e.position, e.event_id))
        .collect();
    assert_eq!(
        full, seen,
        "the order seen while writing equals a later full read"
    );
}

#[tokio::test]
async fn events_committed_behind_an_open_transaction_are_pending_beyond_the_horizon() {
    let env = TestEnv::new().await;
    let store = EventStore::new(env.pool.clone());
    let stream = format!("product-{}", Uuid::new_v4());
    assert!(
        !store.pending_beyond_horizon().await.expect("ask"),
        "an empty log has nothing beyond the horizon"
    );
    append(
        &store,
        &stream,
        ExpectedVersion::Any,
        &[event(1)],
        &Metadata::default(),
        &[],
    )
    .await
    .expect("append");
    // The horizon is the whole server's: other tests' transactions hold it
    // for moments, so "below the horizon" is waited for.
    assert!(
        horizon_clears(&store).await,
        "with no transaction open every committed event is below the horizon"
    );

    // A transaction that has written holds the horizon where it began.
    let mut holder = env.client().await;
    let open = holder.transaction().await.expect("begin");
    open.execute("select pg_current_xact_id()", &[])
        .await
        .expect("take an id");
    append(
        &store,
        &stream,
        ExpectedVersion::Any,
        &[event(2)],
        &Metadata::default(),
        &[],
    )
    .await
    .expect("append behind the open transaction");
    assert!(
        store.pending_beyond_horizon().await.expect("ask"),
        "an event committed after the open transaction began waits beyond the horizon"
    );
    open.rollback().await.expect("rollback");
    assert!(horizon_clears(&store).await, "the horizon moves on");
}

/// Many appends at once are written together (see `eventstore::group`), and
/// each still gets the answer it would get alone: fresh streams are written
/// with their own versions and command ids, a stream that exists refuses
/// `NoStream`, and a command id already executed replays its first result.
#[tokio::test]
async fn concurrent_appends_go_together_and_each_gets_its_own_answer() {
    let env = TestEnv::new().await;
    let store = EventStore::new(env.pool.clone());
    let existing: Vec<String> = (0..20)
        .map(|_| format!("product-{}", Uuid::new_v4()))
        .collect();
    let mut first_results = Vec::new();
    for (i, stream) in existing.iter().enumerate() {
        let metadata = Metadata {
            command_id: Some(format!("seed-{i}-{stream}")),
            ..Metadata::default()
        };
        let seeded = append(
            &store,
            stream,
            ExpectedVersion::NoStream,
            &[event(0)],
            &metadata,
            &[],
        )
        .await
        .expect("seed");
        first_results.push(seeded);
    }

    // First only fresh streams, so whole batches succeed; then three kinds
    // of request, interleaved, all at once, so batches fail and split.
    let mut tasks = Vec::new();
    let mut fresh = Vec::new();
    for i in (0..240usize).filter(|i| i % 12 >= 2).chain(0..240) {
        if i == 0 {
            collect(&mut tasks, &mut fresh, &first_results).await;
            let stats = store.group_stats();
            assert!(
                stats.batches.load(std::sync::atomic::Ordering::Relaxed) > 0,
                "200 appends at once must be grouped: {stats:?}"
            );
            assert_eq!(
                stats.split.load(std::sync::atomic::Ordering::Relaxed),
                0,
                "appends to fresh streams cannot fail"
            );
        }
        let store = store.clone();
        let existing = existing.clone();
        tasks.push(tokio::spawn(async move {
            let (stream, expected, metadata) = match i % 12 {
                // NoStream on a stream that exists: a conflict.
                0 => (
                    existing[i / 12].clone(),
                    ExpectedVersion::NoStream,
                    Metadata::default(),
                ),
                // The seed's command again: a replay.
                1 => (
                    existing[i / 12].clone(),
                    ExpectedVersion::NoStream,
                    Metadata {
                        command_id: Some(format!("seed-{}-{}", i / 12, existing[i / 12])),
                        ..Metadata::default()
                    },
                ),
                _ => (
                    format!("product-{}", Uuid::new_v4()),
                    ExpectedVersion::NoStream,
                    Metadata {
                        command_id: Some(format!("fresh-{}", Uuid::new_v4())),
                        correlation_id: Some(Uuid::new_v4()),
                        ..Metadata::default()
                    },
                ),
            };
            let events = [event(i), event(i + 1000)];
            let answer = append(&store, &stream, expected, &events, &metadata, &[]).await;
            (i, stream, metadata, answer)
        }));
    }
    collect(&mut tasks, &mut fresh, &first_results).await;
    let stats = store.group_stats();
    assert!(
        stats.split.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "batches holding conflicts and replays must have been split: {stats:?}"
    );

    for (stream, metadata, appended) in &fresh {
        let events = store.read_stream(stream, 0, 10).await.expect("read");
        assert_eq!(events.len(), 2, "{stream}");
        assert_eq!(events[1].position, appended.position, "{stream}");
        assert!(events[0].position < events[1].position);
        assert_eq!(events[0].metadata.command_id, metadata.command_id);
        assert_eq!(events[0].metadata.correlation_id, metadata.correlation_id);
        // The command was recorded: executing it again replays it.
        let again = append(
            &store,
            stream,
            ExpectedVersion::Exact(2),
            &[event(7)],
            metadata,
            &[],
        )
        .await
        .expect("replay");
        assert!(again.replayed);
        assert_eq!(again.position, appended.position);
    }
    for stream in &existing {
        assert_eq!(store.stream_version(stream).await.expect("version"), 1);
    }
}

type Answer = (
    usize,
    String,
    Metadata,
    Result<eventstore::Appended, StoreError>,
);

/// Checks the answers of `tasks` (see the test above); keeps the fresh ones.
async fn collect(
    tasks: &mut Vec<tokio::task::JoinHandle<Answer>>,
    fresh: &mut Vec<(String, Metadata, eventstore::Appended)>,
    first_results: &[eventstore::Appended],
) {
    for task in tasks.drain(..) {
        let (i, stream, metadata, answer) = task.await.expect("task");
        match i % 12 {
            0 => assert!(
                matches!(answer, Err(StoreError::Conflict { .. })),
                "request {i}: {answer:?}"
            ),
            1 => {
                let replayed = answer.expect("a replay answers with the first result");
                let first = &first_results[i / 12];
                assert!(replayed.replayed, "request {i}: {replayed:?}");
                assert_eq!(
                    (
                        replayed.first_version,
                        replayed.last_version,
                        replayed.position
                    ),
                    (first.first_version, first.last_version, first.position)
                );
            }
            _ => {
                let appended = answer.expect("a fresh stream takes the append");
                assert_eq!((appended.first_version, appended.last_version), (1, 2));
                assert!(!appended.replayed);
                fresh.push((stream, metadata, appended));
            }
        }
    }
}

/// Sequential scans of `events` so far, every one the pool's connection
/// made included (its statistics are flushed first).
async fn log_scans(pool: &deadpool_postgres::Pool) -> i64 {
    let client = pool.get().await.expect("client");
    client
        .batch_execute("select pg_stat_force_next_flush()")
        .await
        .expect("flush");
    client
        .query_one(
            "select coalesce(seq_scan, 0) from pg_stat_user_tables where relname = 'events'",
            &[],
        )
        .await
        .expect("scans")
        .get(0)
}

/// A new stream of a hundred events; its id.
async fn hundred_event_stream(store: &EventStore) -> String {
    let stream = format!("product-{}", Uuid::new_v4());
    let events: Vec<NewEvent> = (1..=100).map(event).collect();
    let metadata = Metadata::default();
    append(
        store,
        &stream,
        ExpectedVersion::NoStream,
        &events,
        &metadata,
        &[],
    )
    .await
    .expect("append");
    stream
}

#[tokio::test]
async fn tails_of_several_streams_come_in_one_statement_that_never_reads_the_whole_log() {
    let env = TestEnv::new().await;
    // One connection, so one prepared statement, made while `events` is
    // empty and kept (a generic plan from the sixth use) as it grows past
    // the size where a scan of the whole table looks cheapest.
    let pool = env.database_url.pool(1).expect("pool");
    let store = EventStore::new(pool.clone());
    let before = log_scans(&pool).await;
    let mut streams: Vec<String> = Vec::new();
    for round in 0..30 {
        let stream = hundred_event_stream(&store).await;
        streams.push(stream);
        let missing = format!("product-{}", Uuid::new_v4());
        let mut asked: Vec<(&str, u64)> =
            vec![(streams[round].as_str(), 60), (missing.as_str(), 0)];
        if round > 0 {
            asked.push((streams[0].as_str(), 95));
            asked.push((streams[round - 1].as_str(), 0));
        }
        let got: Vec<(String, u64)> = store
            .read_stream_tails(&asked)
            .await
            .expect("tails")
            .into_iter()
            .map(|e| (e.stream_id, e.version))
            .collect();
        let mut expected: Vec<(String, u64)> =
            (61..=100).map(|v| (streams[round].clone(), v)).collect();
        if round > 0 {
            expected.extend((96..=100).map(|v| (streams[0].clone(), v)));
            expected.extend((1..=100).map(|v| (streams[round - 1].clone(), v)));
        }
        assert_eq!(
            got, expected,
            "round {round}: each stream's tail, in the order asked"
        );
    }
    assert_eq!(
        log_scans(&pool).await,
        before,
        "no read of the tails scanned the log through"
    );
}

#[tokio::test]
async fn the_unfiltered_log_read_is_prepared_once_and_never_reads_the_whole_log() {
    let env = TestEnv::new().await;
    // One connection, so one prepared statement, made while `events` is
    // empty and kept as the log grows past the size where a scan of the
    // whole table looks cheapest.
    let pool = env.database_url.pool(1).expect("pool");
    let store = EventStore::new(pool.clone());
    let before = log_scans(&pool).await;
    let mut cursor = Position::START;
    for round in 0..30 {
        let stream = hundred_event_stream(&store).await;
        // Pages of at most 60 until the round's events are all read (the
        // log is read below the server's oldest running transaction, which
        // other tests' work may hold back for a moment).
        let mut read = Vec::new();
        while read.len() < 100 {
            let store = &store;
            let page = wait_for(std::time::Duration::from_secs(20), || async move {
                let page = store
                    .read_log(cursor, &LogFilter::default(), 60)
                    .await
                    .expect("page");
                (!page.is_empty()).then_some(page)
            })
            .await;
            cursor = page.last().expect("a page").position;
            read.extend(page);
        }
        assert_eq!(read.len(), 100, "round {round}: exactly the new events");
        assert!(read.iter().all(|e| e.stream_id == stream));
    }
    let prepared: i64 = pool
        .get()
        .await
        .expect("client")
        .query_one(
            "select count(*) from pg_prepared_statements
              where statement like '%from events%where (transaction_id, position) >%'
                and statement not like '%pg_prepared_statements%'",
            &[],
        )
        .await
        .expect("prepared")
        .get(0);
    assert!(prepared >= 1, "the log read is a prepared statement");
    assert_eq!(
        log_scans(&pool).await,
        before,
        "no read scanned the log through"
    );
}
