//! The saga tables under growth: handled messages, sagas and timers are
//! found by key whatever the table's size when a statement was prepared
//! (PostgreSQL keeps a generic plan made while a table was small, and on a
//! server without autovacuum its statistics never change).

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use chrono::Utc;
use domain::ids::OrderId;
use sagas::store::{self, SagaRow};
use test_support::TestEnv;
use uuid::Uuid;

/// Sequential scans so far of each of these `saga` tables, every one
/// this connection made included (its statistics are flushed first).
async fn saga_scans(client: &deadpool_postgres::Object, tables: &[&str]) -> Vec<i64> {
    client
        .batch_execute("select pg_stat_force_next_flush()")
        .await
        .unwrap();
    let mut scans = Vec::with_capacity(tables.len());
    for table in tables {
        let row = client
            .query_one(
                "select coalesce((select seq_scan from pg_stat_user_tables
                                   where schemaname = 'saga' and relname = $1), 0)",
                &[table],
            )
            .await
            .unwrap();
        scans.push(row.get(0));
    }
    scans
}

#[tokio::test]
async fn handled_messages_are_told_apart_from_new_ones_without_reading_the_table_through() {
    let env = TestEnv::new().await;
    let mut client = env.client().await;
    let before = saga_scans(&client, &["processed"]).await;
    let order = Uuid::new_v4();
    let mut seen = Vec::new();
    // Batches as the consumer makes them while the table grows from
    // empty, each with a message handled before and one given twice;
    // halfway, at about a thousand rows (where a sequential scan looks
    // cheapest to the planner), another connection takes over and
    // prepares its statements afresh.
    let mut other = env.client().await;
    for batch in 0..100 {
        if batch == 50 {
            saga_scans(&client, &["processed"]).await;
            std::mem::swap(&mut client, &mut other);
        }
        let new: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
        let mut ids = new.clone();
        ids.extend(seen.last().copied());
        ids.push(new[0]);
        let orders = vec![order; ids.len()];
        let tx = client.transaction().await.unwrap();
        let fresh = store::record_processed(&tx, &ids, &orders).await.unwrap();
        tx.commit().await.unwrap();
        let expected: HashSet<Uuid> = new.iter().copied().collect();
        assert_eq!(fresh, expected, "exactly the messages not handled before");
        seen.extend(new);
    }
    assert_eq!(
        saga_scans(&client, &["processed"]).await,
        before,
        "no batch read the table through"
    );
    let stored: i64 = client
        .query_one("select count(*) from saga.processed", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, seen.len() as i64);
}

#[tokio::test]
async fn sagas_and_timers_are_found_by_key_whatever_the_size_their_statements_were_planned_at() {
    let env = TestEnv::new().await;
    let mut client = env.client().await;
    let before = saga_scans(&client, &["sagas", "timers"]).await;
    let now = Utc::now();
    let mut other = env.client().await;
    let mut previous: Vec<Uuid> = Vec::new();
    // Each batch stores twenty new sagas with timers and clears the
    // timers of the batch before, as the consumer and feeder do; halfway,
    // at about a thousand rows, another connection prepares the
    // statements afresh.
    for batch in 0..100 {
        if batch == 50 {
            saga_scans(&client, &["sagas", "timers"]).await;
            std::mem::swap(&mut client, &mut other);
        }
        let new: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
        let asked: Vec<Uuid> = new.iter().chain(&previous).copied().collect();
        let tx = client.transaction().await.unwrap();
        let mut found = store::load_for_update(&tx, &asked).await.unwrap();
        let mut found_ids: Vec<Uuid> = found.keys().map(|o| o.as_uuid()).collect();
        found_ids.sort_unstable();
        let mut expected = previous.clone();
        expected.sort_unstable();
        assert_eq!(
            found_ids, expected,
            "batch {batch}: exactly the stored sagas"
        );
        for saga in found.values_mut() {
            saga.timer = Some(None);
            saga.dirty = true;
        }
        for id in &new {
            let mut saga = SagaRow::new(OrderId::new(*id));
            saga.timer = Some(Some(now));
            saga.dirty = true;
            found.insert(saga.order_id, saga);
        }
        store::save_all(&tx, found.values(), now).await.unwrap();
        tx.commit().await.unwrap();
        previous = new;
    }
    assert_eq!(
        saga_scans(&client, &["sagas", "timers"]).await,
        before,
        "no statement read saga.sagas or saga.timers through"
    );
    let counts = client
        .query_one(
            "select (select count(*) from saga.sagas), (select count(*) from saga.timers)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (counts.get::<_, i64>(0), counts.get::<_, i64>(1)),
        (2000, 20)
    );
}
