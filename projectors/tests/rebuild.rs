//! Rebuilding read models beside the live ones while commands keep coming.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::World;
use projectors::rebuild::{self, RebuildOptions};
use projectors::Projection;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn rebuild_all_under_load_then_check_passes_and_no_query_answers_wrong() {
    let world = World::start().await;
    let mut products = Vec::new();
    for _ in 0..5 {
        products.push(world.shop.create_product(10, "4.00").await.0);
    }
    let (user, _) = world.shop.register_user("Buyer").await;
    for _ in 0..30 {
        let (order, _) = world.shop.place_order(user, &[(products[0], 1)]).await;
        world.shop.reserve_and_confirm(order).await;
        world.shop.restock(products[0], 1).await;
    }
    world.settle().await;

    let stop = CancellationToken::new();
    // Commands keep arriving: restocks only, so every product's on_hand only grows.
    let writer = {
        let (shop, products, stop) = (world.shop.clone(), products.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.is_cancelled() {
                shop.restock(products[(n as usize) % products.len()], 1)
                    .await;
                n += 1;
            }
            n
        })
    };
    // Queries keep coming: every product is always there, and what it shows
    // never goes back in time.
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (pool, products, stop, reads) = (
            world.env.pool.clone(),
            products.clone(),
            stop.clone(),
            reads.clone(),
        );
        tokio::spawn(async move {
            let client = pool.get().await.unwrap();
            let mut seen: HashMap<uuid::Uuid, i64> = HashMap::new();
            while !stop.is_cancelled() {
                for product in &products {
                    let view = projectors::query::product(&**client, product.as_uuid())
                        .await
                        .unwrap()
                        .unwrap_or_else(|| panic!("product {product} vanished during the rebuild"));
                    let before = seen.insert(product.as_uuid(), view.on_hand).unwrap_or(0);
                    assert!(
                        view.on_hand >= before,
                        "on_hand went back from {before} to {}",
                        view.on_hand
                    );
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    tokio::time::sleep(Duration::from_millis(200)).await;
    let options = RebuildOptions {
        projections: Projection::ALL.to_vec(),
        dry_run: false,
        batch_size: 50,
    };
    let mut progress_calls = 0;
    let report = rebuild::rebuild(&world.env.pool, &world.env.stream, &options, |_| {
        progress_calls += 1
    })
    .await
    .unwrap();
    assert!(report.projections.iter().all(|p| p.swapped));
    assert!(progress_calls > 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let restocks = writer.await.unwrap();
    reader.await.unwrap();
    assert!(
        restocks > 10 && reads.load(Ordering::Relaxed) > 50,
        "{restocks} writes, {reads:?} reads"
    );

    // The live projectors went on from the swapped checkpoint.
    world.settle().await;
    world.assert_read_models_equal_the_fold().await;
    let client = world.env.client().await;
    assert!(projectors::check::invariants(&**client)
        .await
        .unwrap()
        .is_empty());
    let check = projectors::check::check(&world.env.pool, &world.env.jetstream, &world.env.stream)
        .await
        .unwrap();
    assert!(check.passed(), "{check:#?}");
}

#[tokio::test]
async fn dry_run_shows_differences_and_swaps_nothing_then_rebuild_repairs() {
    let world = World::start().await;
    let (product, _) = world.shop.create_product(3, "9.99").await;
    let (user, last) = world.shop.register_user("Eve").await;
    world.wait(last).await;
    let client = world.env.client().await;
    // Damage the live read models behind the projectors' back.
    client
        .execute(
            "update read.products set on_hand = 999 where id = $1",
            &[&product.as_uuid()],
        )
        .await
        .unwrap();
    client
        .execute("delete from read.users where id = $1", &[&user.as_uuid()])
        .await
        .unwrap();

    let dry = RebuildOptions {
        projections: vec![Projection::Products, Projection::Users],
        dry_run: true,
        batch_size: 100,
    };
    let report = rebuild::rebuild(&world.env.pool, &world.env.stream, &dry, |_| {})
        .await
        .unwrap();
    assert!(!report.identical());
    let products = report
        .projections
        .iter()
        .find(|p| p.projection == "products")
        .unwrap();
    assert!(!products.swapped);
    assert_eq!(products.differences[0].table, "read.products");
    assert_eq!(
        (
            products.differences[0].only_live,
            products.differences[0].only_rebuilt
        ),
        (1, 1)
    );
    assert!(products.differences[0]
        .examples
        .iter()
        .any(|e| e.contains("999")));
    let users = report
        .projections
        .iter()
        .find(|p| p.projection == "users")
        .unwrap();
    assert_eq!(
        (
            users.differences[0].only_live,
            users.differences[0].only_rebuilt
        ),
        (0, 1)
    );
    // Nothing was swapped: the damage is still there.
    let view = projectors::query::product(&**client, product.as_uuid())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.on_hand, 999);

    let check = projectors::check::check(&world.env.pool, &world.env.jetstream, &world.env.stream)
        .await
        .unwrap();
    assert!(!check.passed());

    let repair = RebuildOptions {
        dry_run: false,
        ..dry
    };
    rebuild::rebuild(&world.env.pool, &world.env.stream, &repair, |_| {})
        .await
        .unwrap();
    let view = projectors::query::product(&**client, product.as_uuid())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.on_hand, 3);
    assert!(projectors::query::user(&**client, user.as_uuid())
        .await
        .unwrap()
        .is_some());
    world.assert_read_models_equal_the_fold().await;
}

#[tokio::test]
async fn two_rebuilds_of_one_projection_do_not_run_at_once() {
    let world = World::start().await;
    for _ in 0..200 {
        world.shop.create_product(1, "1.00").await;
    }
    world.settle().await;
    let options = RebuildOptions {
        projections: vec![Projection::Products],
        dry_run: false,
        batch_size: 10,
    };
    let (a, b) = tokio::join!(
        rebuild::rebuild(&world.env.pool, &world.env.stream, &options, |_| {}),
        rebuild::rebuild(&world.env.pool, &world.env.stream, &options, |_| {}),
    );
    let busy = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(rebuild::RebuildError::Busy(_))))
        .count();
    let ok = [&a, &b].iter().filter(|r| r.is_ok()).count();
    assert_eq!((ok, busy), (1, 1), "{a:?} {b:?}");
    world.assert_read_models_equal_the_fold().await;
}

/// The live projector moves its checkpoint only from where it left it: a
/// batch read before a rebuild's swap must not be written after it.
#[tokio::test]
async fn a_checkpoint_moved_by_someone_else_is_not_moved_again() {
    let env = test_support::TestEnv::new().await;
    let mut client = env.client().await;
    let left = projectors::checkpoint::load(&**client, "orders")
        .await
        .unwrap();
    let ours = eventstore::Position::new(left.position.transaction_id + 7, 7);
    let tx = client.transaction().await.unwrap();
    assert!(
        projectors::checkpoint::advance_from(&tx, "orders", &left, ours, 7)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();

    // A second batch that still believes the checkpoint is where it was.
    let theirs = eventstore::Position::new(left.position.transaction_id + 9, 9);
    let tx = client.transaction().await.unwrap();
    assert!(
        !projectors::checkpoint::advance_from(&tx, "orders", &left, theirs, 9)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    let now = projectors::checkpoint::load(&**client, "orders")
        .await
        .unwrap();
    assert_eq!((now.position, now.stream_sequence), (ours, 7));
}
