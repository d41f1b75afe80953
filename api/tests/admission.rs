//! Admission by lag against a real PostgreSQL: how far behind the log the
//! furthest-behind live consumer is.

use test_support::TestEnv;

#[tokio::test]
async fn the_lag_is_counted_from_the_slowest_live_consumer() {
    let env = TestEnv::new().await;
    let client = env.client().await;
    // The migrations put every projection's checkpoint in place; nothing
    // has moved them for a while.
    client
        .execute(
            "update read.checkpoints set updated_at = now() - interval '1 minute'",
            &[],
        )
        .await
        .expect("idle projections");
    assert_eq!(api::admission::read_lag(&env.pool).await.expect("lag"), 0);
    client
        .batch_execute(
            "insert into events (event_id, stream_id, stream_type, version, type, schema_version, data)
             select gen_random_uuid(), 'product-' || gen_random_uuid(), 'product', 1, 'ProductRestocked', 1, '{}'
               from generate_series(1, 50)",
        )
        .await
        .expect("events");
    let first: i64 = client
        .query_one("select min(position) from events", &[])
        .await
        .expect("first")
        .get(0);
    // Nobody consumes yet: nothing holds orders back.
    assert_eq!(api::admission::read_lag(&env.pool).await.expect("lag"), 0);

    // A saga ten events in and a projection forty in: the saga counts.
    client
        .execute(
            "insert into saga.checkpoint (stream_name, position) values ('S', $1)",
            &[&(first + 9)],
        )
        .await
        .expect("saga checkpoint");
    client
        .execute(
            "insert into read.checkpoints (projection, position) values ('orders', $1)
             on conflict (projection) do update set position = excluded.position, updated_at = now()",
            &[&(first + 39)],
        )
        .await
        .expect("projection checkpoint");
    assert_eq!(api::admission::read_lag(&env.pool).await.expect("lag"), 40);

    // A saga that stopped moving long ago is not waited for; nor is a
    // failed projection.
    client
        .execute(
            "update saga.checkpoint set updated_at = now() - interval '1 minute'",
            &[],
        )
        .await
        .expect("stale saga");
    assert_eq!(api::admission::read_lag(&env.pool).await.expect("lag"), 10);
    client
        .execute("update read.checkpoints set status = 'failed'", &[])
        .await
        .expect("failed projection");
    assert_eq!(api::admission::read_lag(&env.pool).await.expect("lag"), 0);
}
