//! The watcher of the projections' checkpoints that every `min_position`
//! wait shares, against a real PostgreSQL.

use std::time::Duration;

use api::applied::Applied;
use eventstore::Position;
use test_support::TestEnv;

async fn move_checkpoint(client: &deadpool_postgres::Object, projection: &str, to: Position) {
    client
        .execute(
            "update read.checkpoints set transaction_id = $2::text::xid8, position = $3
              where projection = $1",
            &[&projection, &to.transaction_sql(), &to.position],
        )
        .await
        .expect("move the checkpoint");
}

#[tokio::test]
async fn waiters_are_answered_when_the_checkpoint_passes_their_position() {
    let env = TestEnv::new().await;
    let client = env.client().await;
    let applied = std::sync::Arc::new(Applied::new(env.pool.clone()));
    let target = Position::new(1_000, 500);

    // Reached already: answered at once.
    move_checkpoint(&client, "orders", Position::new(1_000, 499)).await;
    assert!(
        applied
            .wait("orders", Position::new(999, 10), Duration::from_secs(5))
            .await
    );

    // Many waiters, one projection not there yet, another far past.
    move_checkpoint(&client, "users", Position::new(5_000, 9_000)).await;
    let waiters: Vec<_> = (0..50)
        .map(|_| {
            let applied = applied.clone();
            tokio::spawn(async move {
                applied
                    .wait("orders", target, Duration::from_secs(10))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "nobody is answered before the orders projection gets there"
    );
    let moved = std::time::Instant::now();
    move_checkpoint(&client, "orders", target).await;
    for waiter in waiters {
        assert!(waiter.await.expect("waiter"), "answered, not timed out");
    }
    assert!(
        moved.elapsed() < Duration::from_secs(1),
        "answered when the checkpoint moved, not at the timeout: {:?}",
        moved.elapsed()
    );

    // Never reached: false at the timeout.
    let started = std::time::Instant::now();
    assert!(
        !applied
            .wait(
                "orders",
                Position::new(1_000, 501),
                Duration::from_millis(300)
            )
            .await
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    // An unknown projection never matches.
    assert!(
        !applied
            .wait("nope", Position::new(1, 1), Duration::from_millis(50))
            .await
    );
}
