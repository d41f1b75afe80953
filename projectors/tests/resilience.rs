//! Projectors through crashes, redelivery and bad events.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{spawn_projector, World};
use eventstore::{AppendRequest, ExpectedVersion, Metadata, NewEvent};
use projectors::Projection;
use rand::Rng as _;
use serde_json::json;
use uuid::Uuid;

/// Writes a steady mix of events until told to stop.
fn spawn_load(
    world: &World,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<u32> {
    let shop = world.shop.clone();
    tokio::spawn(async move {
        let (user, _) = shop.register_user("Load").await;
        let (product, _) = shop.create_product(1_000_000, "3.00").await;
        let mut orders = 0;
        while !stop.is_cancelled() {
            shop.restock(product, 1).await;
            let (order, _) = shop.place_order(user, &[(product, 1)]).await;
            shop.reserve_and_confirm(order).await;
            if orders % 2 == 0 {
                shop.pay(order).await;
            }
            orders += 1;
        }
        orders
    })
}

#[tokio::test]
async fn killed_projectors_and_redelivered_messages_still_equal_the_fold() {
    let mut world = World::start().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let load = spawn_load(&world, stop.clone());

    // Kill every projector (abort: mid-transaction if it is in one) a dozen
    // times at random moments, restarting it each time.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(20..150))).await;
        let victim = rand::rng().random_range(0..world.projectors.len());
        let killed = world.projectors.remove(victim);
        let projection = killed.projection;
        killed.running.kill().await;
        world
            .projectors
            .insert(victim, spawn_projector(&world.env, projection, 50));
    }
    stop.cancel();
    let orders = load.await.unwrap();
    assert!(orders > 5, "the load ran ({orders} orders)");
    world.settle().await;

    // Make JetStream deliver already applied messages again: stop the
    // projectors, move their stream sequence back, start them again.
    for projector in world.projectors.drain(..) {
        projector.running.stop().await;
    }
    let client = world.env.client().await;
    client
        .execute(
            "update read.checkpoints set stream_sequence = greatest(stream_sequence - 40, 0)",
            &[],
        )
        .await
        .unwrap();
    world.projectors = Projection::ALL
        .iter()
        .map(|p| spawn_projector(&world.env, *p, 25))
        .collect();
    let (_, position) = world.shop.register_user("After").await;
    world.wait(position).await;
    let skipped: u64 = world
        .projectors
        .iter()
        .map(|p| p.stats.skipped.load(Ordering::SeqCst))
        .sum();
    assert!(
        skipped >= 40,
        "redelivered messages were skipped ({skipped})"
    );

    world.assert_read_models_equal_the_fold().await;
    let violations = projectors::check::invariants(&**client).await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
}

#[tokio::test]
async fn a_poison_event_stops_its_projection_and_names_it_the_others_go_on() {
    let world = World::start().await;
    let (product, _) = world.shop.create_product(5, "1.00").await;
    let restocked = world.shop.restock(product, 2).await;
    world.wait(restocked).await;

    // A payload the products projection cannot read, appended as the next
    // version of the product's stream.
    let poison_id = Uuid::now_v7();
    world
        .shop
        .store
        .append(AppendRequest {
            stream_id: &product.stream_id(),
            stream_type: "product",
            expected: ExpectedVersion::Exact(2),
            events: &[NewEvent {
                event_id: poison_id,
                event_type: "ProductRestocked".into(),
                schema_version: 1,
                data: json!({ "quantity": "lots" }),
            }],
            metadata: &Metadata::default(),
            claims: &[],
        })
        .await
        .unwrap();
    let (user, after) = world.shop.register_user("Still served").await;
    for projection in [Projection::Users, Projection::Orders] {
        let reached = projectors::query::wait_for(
            &world.env.pool,
            projection,
            after,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert!(reached, "{projection} goes on past the poison event");
    }
    let client = world.env.client().await;
    assert!(projectors::query::user(&**client, user.as_uuid())
        .await
        .unwrap()
        .is_some());

    let status = test_support::poll(
        Duration::from_secs(10),
        || async {
            projectors::checkpoint::load(&**client, "products")
                .await
                .unwrap()
        },
        |status| status.status == "failed",
    )
    .await;
    assert_eq!(status.status, "failed");
    assert_eq!(status.failed_event, Some(poison_id));
    assert!(
        status
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("ProductRestocked"),
        "{status:?}"
    );
    assert_eq!(
        status.position, restocked,
        "everything before the poison was applied, nothing after"
    );
    let view = projectors::query::product(&**client, product.as_uuid())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.on_hand, 7);
    let statuses = projectors::status::projections(&**client).await.unwrap();
    let products = statuses.iter().find(|s| s.name == "products").unwrap();
    assert_eq!(
        (products.status.as_str(), products.failed_event),
        ("failed", Some(poison_id))
    );
}

#[tokio::test]
async fn only_one_instance_of_a_projection_applies_events() {
    let world = World::start().await;
    let second = spawn_projector(&world.env, Projection::Products, 100);
    let mut last = world.shop.create_product(1, "1.00").await.1;
    for _ in 0..20 {
        last = world.shop.create_product(1, "1.00").await.1;
    }
    world.wait(last).await;
    let first = world
        .projectors
        .iter()
        .find(|p| p.projection == Projection::Products)
        .unwrap();
    let applied = [
        first.stats.applied.load(Ordering::SeqCst),
        second.stats.applied.load(Ordering::SeqCst),
    ];
    assert!(
        applied.contains(&0),
        "one of the two applied nothing: {applied:?}"
    );
    assert_eq!(
        [
            first.stats.active.load(Ordering::SeqCst),
            second.stats.active.load(Ordering::SeqCst)
        ]
        .iter()
        .filter(|a| **a)
        .count(),
        1
    );
    world.assert_read_models_equal_the_fold().await;
}
