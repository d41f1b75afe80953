//! The read models follow the log: what the API will read is right.
#![allow(clippy::unwrap_used)]

mod common;

use common::World;
use projectors::query;

#[tokio::test]
async fn read_models_answer_what_the_log_says() {
    let world = World::start().await;
    let shop = &world.shop;
    let (ada, _) = shop.register_user("Ada").await;
    let (bob, _) = shop.register_user("Bob").await;
    let (widget, _) = shop.create_product(10, "19.99").await;
    let (gadget, _) = shop.create_product(5, "2.50").await;

    let (paid, _) = shop.place_order(ada, &[(widget, 2), (gadget, 1)]).await;
    shop.reserve_and_confirm(paid).await;
    shop.pay(paid).await;
    let (cancelled, _) = shop.place_order(ada, &[(widget, 1)]).await;
    shop.reserve_and_confirm(cancelled).await;
    shop.cancel(cancelled).await;
    let (confirmed, _) = shop.place_order(bob, &[(gadget, 3)]).await;
    shop.reserve_and_confirm(confirmed).await;
    let renamed = shop.rename_user(bob, "Robert").await;
    world.wait(renamed).await;

    let client = world.env.client().await;
    let ada_view = query::user(&**client, ada.as_uuid())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (ada_view.orders_placed, ada_view.total_spent.as_str()),
        (2, "42.48")
    );
    let bob_view = query::user(&**client, bob.as_uuid())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            bob_view.name.as_str(),
            bob_view.orders_placed,
            bob_view.total_spent.as_str()
        ),
        ("Robert", 1, "0.00")
    );
    let by_email = query::users_by_email(&**client, &ada_view.email)
        .await
        .unwrap();
    assert_eq!(by_email, vec![ada_view.clone()]);

    let widget_view = query::product(&**client, widget.as_uuid())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            widget_view.on_hand,
            widget_view.reserved,
            widget_view.available
        ),
        (10, 2, 8)
    );
    assert_eq!(widget_view.price, "19.99");
    let gadget_view = query::product(&**client, gadget.as_uuid())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            gadget_view.on_hand,
            gadget_view.reserved,
            gadget_view.available
        ),
        (5, 4, 1)
    );

    let order = query::order(&**client, paid.as_uuid())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (order.status.as_str(), order.total.as_str()),
        ("paid", "42.48")
    );
    assert_eq!(order.lines.len(), 2);
    assert_eq!(
        (
            order.lines[0].unit_price.as_str(),
            order.lines[0].line_total.as_str()
        ),
        ("19.99", "39.98")
    );
    let cancelled_view = query::order(&**client, cancelled.as_uuid())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            cancelled_view.status.as_str(),
            cancelled_view.reason.as_deref()
        ),
        ("cancelled", Some("customer_request"))
    );
    let ada_orders = query::user_orders(&**client, ada.as_uuid(), 100)
        .await
        .unwrap();
    assert_eq!(
        ada_orders.iter().map(|o| o.id).collect::<Vec<_>>(),
        vec![cancelled.as_uuid(), paid.as_uuid()],
        "newest first"
    );

    // Pages of products.
    let (first, next) = query::products(&**client, 1, None).await.unwrap();
    assert_eq!(first.len(), 1);
    let (second, last) = query::products(&**client, 1, next).await.unwrap();
    assert_eq!((second.len(), last), (1, None));
    assert_ne!(first[0].id, second[0].id);

    world.assert_read_models_equal_the_fold().await;
    let statuses = projectors::status::projections(&**client).await.unwrap();
    assert_eq!(statuses.len(), 3);
    assert!(
        statuses
            .iter()
            .all(|s| s.status == "running" && s.lag_events == 0),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn min_position_sees_its_own_write_every_time() {
    let world = World::start().await;
    let (product, _) = world.shop.create_product(0, "1.00").await;
    let client = world.env.client().await;
    for i in 1..=200u32 {
        let position = world.shop.restock(product, 1).await;
        let reached = query::wait_for(
            &world.env.pool,
            projectors::Projection::Products,
            position,
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert!(reached, "try {i}: not applied within 5 s");
        let view = query::product(&**client, product.as_uuid())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            view.on_hand,
            i64::from(i),
            "try {i}: the read after the write sees it"
        );
    }
}

#[tokio::test]
async fn events_of_other_streams_are_passed_over_and_still_move_the_checkpoint() {
    let world = World::start().await;
    let shop = &world.shop;
    let (ada, _) = shop.register_user("Ada").await;
    let (widget, _) = shop.create_product(10, "19.99").await;
    let (order, _) = shop.place_order(ada, &[(widget, 2)]).await;
    shop.reserve_and_confirm(order).await;
    // The log ends with a product event, which neither the users nor the
    // orders projection reads: both must still reach its position.
    let last = shop.restock(widget, 1).await;
    world.wait(last).await;
    let client = world.env.client().await;
    let statuses = projectors::status::projections(&**client).await.unwrap();
    assert!(statuses.iter().all(|s| s.lag_events == 0), "{statuses:?}");
    let passed = |projection| {
        world
            .projectors
            .iter()
            .find(|p| p.projection == projection)
            .unwrap()
            .stats
            .passed
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    // Users reads user and order streams; products only its own.
    assert!(
        passed(projectors::Projection::Users) >= 3,
        "users passed over the product events"
    );
    assert!(passed(projectors::Projection::Orders) >= 4);
    assert!(passed(projectors::Projection::Products) >= 3);
    world.assert_read_models_equal_the_fold().await;
}
