//! The horizon of transactions that may append (`schemas/sql/0007_log_horizon.sql`):
//! they hold readers back until they end; transactions that cannot append
//! are passed over (by followers, once they have held them a second); and
//! no event is ever skipped, however transactions interleave.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventstore::follow::{LogFollower, LOOK_PAST_OTHERS_AFTER};
use eventstore::notify::LogListener;
use eventstore::store::LogFilter;
use eventstore::{
    AppendRequest, EventStore, ExpectedVersion, Metadata, NewEvent, Position, RecordedEvent,
};
use rand::Rng as _;
use test_support::log::horizon_clears;
use test_support::{poll, wait_for, TestEnv};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

/// Appends one event to a fresh stream through the store (its own
/// transaction); returns the event id.
async fn append(store: &EventStore) -> Uuid {
    let event = NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "ProductRestocked".into(),
        schema_version: 1,
        data: serde_json::json!({ "quantity": 1 }),
    };
    store
        .append(AppendRequest {
            stream_id: &format!("product-{}", Uuid::new_v4()),
            stream_type: "product",
            expected: ExpectedVersion::NoStream,
            events: std::slice::from_ref(&event),
            metadata: &Metadata::default(),
            claims: &[],
        })
        .await
        .expect("append");
    event.event_id
}

/// Inserts one event to a fresh stream with plain SQL, in whatever
/// transaction `client` is in; returns the event id.
async fn insert_event(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<Uuid, tokio_postgres::Error> {
    let id = Uuid::now_v7();
    client
        .execute(
            "insert into events (event_id, stream_id, stream_type, version, type, schema_version, data)
             values ($1, $2, 'product', 1, 'ProductRestocked', 1, '{}')",
            &[&id, &format!("product-{}", Uuid::new_v4())],
        )
        .await?;
    Ok(id)
}

/// Every event readable now below the horizon of transactions that may
/// append, in log order.
async fn read_all(store: &EventStore) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut after = Position::START;
    loop {
        let (batch, _) = store
            .read_log_past_others_as::<RecordedEvent>(after, &LogFilter::default(), 5000)
            .await
            .expect("read");
        let Some(last) = batch.last() else {
            return all;
        };
        after = last.position;
        all.extend(batch);
    }
}

/// The ids [`read_all`] gives once it gives `count` of them (within ten
/// seconds). Transactions of other tests on the server, ending at the moment
/// a read looks at them, can hold it back for that moment: which ones can
/// append is judged from the lock table, and one caught ending counts.
async fn read_ids(store: &EventStore, count: usize) -> Vec<Uuid> {
    ids(&read_at_least(store, count).await)
}

/// What [`read_all`] gives once it gives at least `count` events (within ten
/// seconds), for the same reason as [`read_ids`].
async fn read_at_least(store: &EventStore, count: usize) -> Vec<RecordedEvent> {
    poll(
        Duration::from_secs(10),
        || read_all(store),
        |all| all.len() >= count,
    )
    .await
}

/// Whether `horizon()` says the transaction of backend `pid` may append,
/// once that transaction is the oldest on the server (other tests'
/// transactions that began before it end within moments).
async fn holder_may_append(store: &EventStore, pid: i32) -> bool {
    wait_for(Duration::from_secs(20), || async {
        let horizon = store.horizon().await.expect("horizon");
        horizon
            .holder
            .filter(|h| h.pid == pid)
            .map(|holder| holder.may_append)
    })
    .await
}

async fn backend_pid(client: &impl deadpool_postgres::GenericClient) -> i32 {
    client
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0)
}

fn ids(events: &[RecordedEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

#[tokio::test]
async fn an_open_transaction_that_appended_holds_later_events_back_until_it_ends() {
    let env = TestEnv::new().await;
    let store = EventStore::new(env.pool.clone());
    assert!(
        !store.pending_beyond_horizon().await.expect("ask"),
        "an empty log has nothing beyond the horizon"
    );
    let before = append(&store).await;
    assert_eq!(read_ids(&store, 1).await, vec![before]);

    let mut holder = env.client().await;
    let pid = backend_pid(&holder).await;
    let open = holder.transaction().await.expect("begin");
    let early = insert_event(&open)
        .await
        .expect("insert in the open transaction");
    let late = append(&store).await;
    assert!(
        store.pending_beyond_horizon().await.expect("ask"),
        "an event committed after the open append began waits beyond the horizon"
    );
    assert_eq!(
        read_ids(&store, 1).await,
        vec![before],
        "nothing at or after the open append is readable yet"
    );
    assert!(
        holder_may_append(&store, pid).await,
        "status says the holder may append"
    );

    open.commit().await.expect("commit");
    assert_eq!(
        read_ids(&store, 3).await,
        vec![before, early, late],
        "the late committer sorts before the event that committed first, as it began first"
    );
    assert!(horizon_clears(&store).await, "the horizon moves on");
}

#[tokio::test]
async fn transactions_that_cannot_append_do_not_hold_the_log_back() {
    let env = TestEnv::new().await;
    let store = EventStore::new(env.pool.clone());
    env.client()
        .await
        .batch_execute("create table scratch (n int)")
        .await
        .expect("scratch table");

    // Reads the log and writes elsewhere, so it holds a transaction id (and
    // a lock on `events` that does not let it write): before migration 0007
    // this held every reader of the log back until it ended.
    let mut other = env.client().await;
    let pid = backend_pid(&other).await;
    let open = other.transaction().await.expect("begin");
    open.query_one("select count(*) from events", &[])
        .await
        .expect("read the log");
    open.execute("insert into scratch values (1)", &[])
        .await
        .expect("write elsewhere");
    let held: Option<String> = open
        .query_one("select pg_current_xact_id_if_assigned()::text", &[])
        .await
        .expect("xid")
        .get(0);
    assert!(held.is_some(), "the open transaction holds an id");

    let appended = append(&store).await;
    assert_eq!(
        read_ids(&store, 1).await,
        vec![appended],
        "an event committed behind a transaction that cannot append is readable while it runs"
    );
    assert!(
        store
            .read_log(Position::START, &LogFilter::default(), 10)
            .await
            .expect("plain read")
            .is_empty(),
        "below the plain horizon, it still waits"
    );
    assert!(
        !holder_may_append(&store, pid).await,
        "status says the holder cannot append"
    );

    // And it cannot append: appending must be a transaction's first write.
    let refused = insert_event(&open)
        .await
        .expect_err("an append after another write is refused");
    assert_eq!(
        refused.code(),
        Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE)
    );
    let message = refused.as_db_error().map(|e| e.message().to_owned());
    assert_eq!(
        message.as_deref(),
        Some("events must be appended by a transaction's first write")
    );
    open.rollback().await.expect("rollback");

    // A transaction whose first write was an append may go on writing, and
    // appending.
    let mut client = env.client().await;
    let tx = client.transaction().await.expect("begin");
    let first = insert_event(&tx).await.expect("first write is an append");
    tx.execute("insert into scratch values (2)", &[])
        .await
        .expect("write elsewhere");
    let second = insert_event(&tx).await.expect("and append again");
    tx.commit().await.expect("commit");
    assert_eq!(read_ids(&store, 3).await, vec![appended, first, second]);
}

/// Reads `count` events with the follower (ten seconds at most).
async fn follow(follower: &mut LogFollower, count: usize) -> Vec<Uuid> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let batch = tokio::time::timeout(Duration::from_secs(10), follower.next_batch())
            .await
            .expect("the follower reads them")
            .expect("read");
        seen.extend(ids(&batch));
    }
    seen
}

#[tokio::test]
async fn a_follower_passes_over_a_long_transaction_that_cannot_append_but_not_one_that_can() {
    let env = TestEnv::new().await;
    let store = EventStore::new(env.pool.clone());
    let listener = LogListener::spawn(env.database_url.clone());
    env.client()
        .await
        .batch_execute("create table scratch (n int)")
        .await
        .expect("scratch table");
    let mut follower: LogFollower =
        LogFollower::new(store.clone(), &listener, Position::START, 100);

    // A long transaction that cannot append: the plain horizon waits for
    // it, the follower only for a while.
    let mut other = env.client().await;
    let open = other.transaction().await.expect("begin");
    open.execute("insert into scratch values (1)", &[])
        .await
        .expect("write elsewhere");
    let first = append(&store).await;
    let started = std::time::Instant::now();
    assert_eq!(follow(&mut follower, 1).await, vec![first]);
    assert!(
        started.elapsed() >= LOOK_PAST_OTHERS_AFTER,
        "plain reads come first, for {LOOK_PAST_OTHERS_AFTER:?}"
    );
    assert!(follower.looking_past_others());

    // Meanwhile a transaction that has appended holds the follower back
    // until it ends, and its event then comes first.
    let mut writer = env.client().await;
    let writing = writer.transaction().await.expect("begin");
    let held = insert_event(&writing)
        .await
        .expect("append in the open transaction");
    let second = append(&store).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(2), follower.next_batch())
            .await
            .is_err(),
        "an open transaction that appended holds the follower back"
    );
    writing.commit().await.expect("commit");
    assert_eq!(follow(&mut follower, 2).await, vec![held, second]);

    // Once the long transaction ends, the plain horizon passes the follower
    // and it reads plainly again (other tests' transactions on the server
    // may hold the plain horizon for moments, hence the retries).
    open.rollback().await.expect("rollback");
    let mut plain_again = false;
    for _ in 0..50 {
        let next = append(&store).await;
        assert_eq!(follow(&mut follower, 1).await, vec![next]);
        if !follower.looking_past_others() {
            plain_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(plain_again, "the follower goes back to plain reads");
}

/// Explicit transactions that append one to three events, pausing between
/// statements and before committing (some roll back), interleaved with
/// transactions that only write elsewhere and with ordinary appends: a
/// follower reading all the while sees every committed event exactly once,
/// in the order a full read gives afterwards. The interesting moments are
/// transactions ending between a read's snapshot and its look at the
/// locks; thousands of commits give them plenty of chances.
#[tokio::test]
async fn a_follower_never_skips_events_of_transactions_that_commit_late() {
    const WRITERS: usize = 8;
    const WRITING: Duration = Duration::from_secs(4);
    let env = TestEnv::new().await;
    let pool = env.database_url.pool(WRITERS + 4).expect("pool");
    let store = EventStore::new(pool.clone());
    let listener = LogListener::spawn(env.database_url.clone());
    pool.get()
        .await
        .expect("client")
        .batch_execute("create table scratch (n int)")
        .await
        .expect("scratch table");

    // One follower as the relay uses it, and two readers asking again and
    // again, without waiting, below the horizon of transactions that may
    // append, so those reads meet transactions as they end.
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for eager in [false, true, true] {
        let mut follower: LogFollower =
            LogFollower::new(store.clone(), &listener, Position::START, 200);
        let done = done.clone();
        let store = store.clone();
        readers.push(tokio::spawn(async move {
            let mut seen: Vec<(Position, Uuid)> = Vec::new();
            loop {
                if done.load(Ordering::SeqCst) {
                    // Writing is over: drain what is left, then stop.
                    let rest = follower.try_next_batch().await.expect("read");
                    if rest.is_empty() && !store.pending_beyond_horizon().await.expect("ask") {
                        let rest = follower.try_next_batch().await.expect("read");
                        seen.extend(rest.into_iter().map(|e| (e.position, e.event_id)));
                        return seen;
                    }
                    seen.extend(rest.into_iter().map(|e| (e.position, e.event_id)));
                    continue;
                }
                let batch = if eager {
                    let (batch, _) = store
                        .read_log_past_others_as::<RecordedEvent>(
                            follower.position(),
                            &LogFilter::default(),
                            200,
                        )
                        .await
                        .expect("read");
                    if let Some(last) = batch.last() {
                        follower.seek(last.position);
                    }
                    batch
                } else {
                    tokio::select! {
                        batch = follower.next_batch() => batch.expect("read"),
                        _ = tokio::time::sleep(Duration::from_millis(50)) => Vec::new(),
                    }
                };
                seen.extend(batch.into_iter().map(|e| (e.position, e.event_id)));
            }
        }));
    }

    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let (pool, store) = (pool.clone(), store.clone());
        writers.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let (mut committed, mut rolled_back) = (Vec::new(), 0usize);
            while started.elapsed() < WRITING {
                let (kind, events, pause_ms, commit) = {
                    let mut rng = rand::rng();
                    (
                        rng.random_range(0..10u32),
                        rng.random_range(1..=3usize),
                        rng.random_range(0..4u64),
                        rng.random_bool(0.9),
                    )
                };
                let pause = Duration::from_millis(pause_ms);
                match kind {
                    // An append in an explicit transaction, ending late.
                    0..=3 => {
                        let mut client = pool.get().await.expect("client");
                        let tx = client.transaction().await.expect("begin");
                        let mut written = Vec::new();
                        for _ in 0..events {
                            written.push(insert_event(&tx).await.expect("insert"));
                            tokio::time::sleep(pause).await;
                        }
                        tx.execute("insert into scratch values (1)", &[])
                            .await
                            .expect("write elsewhere too");
                        tokio::time::sleep(pause).await;
                        if commit {
                            tx.commit().await.expect("commit");
                            committed.extend(written);
                        } else {
                            tx.rollback().await.expect("rollback");
                            rolled_back += written.len();
                        }
                    }
                    // A transaction that never appends.
                    4..=6 => {
                        let mut client = pool.get().await.expect("client");
                        let tx = client.transaction().await.expect("begin");
                        tx.execute("insert into scratch values (2)", &[])
                            .await
                            .expect("write elsewhere");
                        tokio::time::sleep(pause).await;
                        tx.commit().await.expect("commit");
                    }
                    // An ordinary append.
                    _ => committed.push(append(&store).await),
                }
            }
            (committed, rolled_back)
        }));
    }
    let mut committed = HashSet::new();
    let mut rolled_back = 0;
    for writer in writers {
        let (ids, rolled) = writer.await.expect("writer");
        committed.extend(ids);
        rolled_back += rolled;
    }
    done.store(true, Ordering::SeqCst);
    let mut seen_by = Vec::new();
    for reader in readers {
        seen_by.push(
            tokio::time::timeout(Duration::from_secs(60), reader)
                .await
                .expect("the reader drains")
                .expect("reader"),
        );
    }

    let full: Vec<(Position, Uuid)> = read_at_least(&store, committed.len())
        .await
        .into_iter()
        .map(|e| (e.position, e.event_id))
        .collect();
    let full_ids: HashSet<Uuid> = full.iter().map(|(_, id)| *id).collect();
    assert_eq!(
        full_ids, committed,
        "the log holds exactly the committed events"
    );
    assert!(
        rolled_back > 0 && committed.len() > 500,
        "the mix ran: {} committed, {rolled_back} rolled back",
        committed.len()
    );
    for (reader, seen) in seen_by.iter().enumerate() {
        let seen_ids: HashSet<Uuid> = seen.iter().map(|(_, id)| *id).collect();
        assert_eq!(
            seen.len(),
            seen_ids.len(),
            "reader {reader}: no event seen twice"
        );
        let missed = committed.difference(&seen_ids).count();
        assert_eq!(
            missed, 0,
            "reader {reader} skipped {missed} committed events"
        );
        assert_eq!(
            seen, &full,
            "reader {reader}: the order seen while writing equals a later full read"
        );
    }
}
