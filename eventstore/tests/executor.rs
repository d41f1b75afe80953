//! The executor with the real domain: uniqueness, idempotency, retries on
//! conflict, snapshots.

use std::sync::Arc;

use domain::ids::{OrderId, ProductId, UserId};
use domain::order::OrderError;
use domain::product::{Product, ProductCommand};
use domain::user::{User, UserCommand};
use domain::values::{Email, Money, Name, Quantity, Sku};
use eventstore::executor::{CommandContext, ExecuteError, Executor};
use eventstore::EventStore;
use test_support::TestEnv;
use uuid::Uuid;

fn register(email: &str) -> (String, UserCommand) {
    let user_id = UserId::new(Uuid::new_v4());
    let command = UserCommand::Register {
        user_id,
        email: Email::parse(email).expect("email"),
        name: Name::parse("Ada").expect("name"),
    };
    (user_id.stream_id(), command)
}

async fn create_product(executor: &Executor, stock: u32) -> String {
    let product_id = ProductId::new(Uuid::new_v4());
    let command = ProductCommand::Create {
        product_id,
        sku: Sku::parse(&format!(
            "SKU-{}",
            &Uuid::new_v4().simple().to_string()[..8]
        ))
        .expect("sku"),
        name: Name::parse("Widget").expect("name"),
        price: Money::parse("19.99").expect("price"),
        stock,
    };
    let stream = product_id.stream_id();
    executor
        .execute::<Product>(&stream, command, &CommandContext::default())
        .await
        .expect("create");
    stream
}

#[tokio::test]
async fn two_registrations_with_one_email_at_once_exactly_one_wins() {
    let env = TestEnv::new().await;
    let executor = Executor::new(EventStore::new(env.pool.clone()));
    for round in 0..10 {
        // Same address, different case: emails are unique case-insensitively.
        let (a_stream, a) = register(&format!("Person{round}@Example.com"));
        let (b_stream, b) = register(&format!("person{round}@example.COM"));
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let run = |stream: String, command: UserCommand| {
            let (executor, barrier) = (executor.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                executor
                    .execute::<User>(&stream, command, &CommandContext::default())
                    .await
            })
        };
        let (ra, rb) = tokio::join!(run(a_stream, a), run(b_stream, b));
        let results = [ra.expect("task"), rb.expect("task")];
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}"
        );
        assert!(results
            .iter()
            .any(|r| matches!(r, Err(ExecuteError::Duplicate { kind, .. }) if kind == "email")));
    }
}

#[tokio::test]
async fn a_command_id_executed_twice_at_once_appends_one_set_of_events() {
    let env = TestEnv::new().await;
    let executor = Executor::new(EventStore::new(env.pool.clone()));
    let product = create_product(&executor, 100).await;
    let order_id = OrderId::new(Uuid::new_v4());
    let ctx = CommandContext {
        command_id: Some(format!("{order_id}:reserve:0")),
        ..Default::default()
    };
    let command = ProductCommand::ReserveStock {
        order_id,
        quantity: Quantity::new(3).expect("qty"),
    };

    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (executor, product, ctx, command) = (
            executor.clone(),
            product.clone(),
            ctx.clone(),
            command.clone(),
        );
        tasks.push(tokio::spawn(async move {
            executor.execute::<Product>(&product, command, &ctx).await
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task").expect("executed"));
    }
    assert_eq!(outcomes.iter().filter(|o| !o.replayed).count(), 1);
    assert!(outcomes
        .iter()
        .all(|o| o.version == 2 && o.position == outcomes[0].position));

    // Long after (no JetStream window involved): still one reservation.
    let again = executor
        .execute::<Product>(&product, command, &ctx)
        .await
        .expect("again");
    assert!(again.replayed);
    let loaded = executor.load::<Product>(&product).await.expect("load");
    assert_eq!(
        (
            loaded.version,
            loaded.state.reserved(),
            loaded.state.available()
        ),
        (2, 3, 97)
    );
}

#[tokio::test]
async fn concurrent_commands_on_one_aggregate_all_land_through_retries() {
    let env = TestEnv::new().await;
    let executor = Executor::new(EventStore::new(env.pool.clone()));
    let product = create_product(&executor, 0).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (executor, product) = (executor.clone(), product.clone());
        tasks.push(tokio::spawn(async move {
            let command = ProductCommand::Restock {
                quantity: Quantity::new(1).expect("qty"),
            };
            executor
                .execute::<Product>(&product, command, &CommandContext::default())
                .await
        }));
    }
    for task in tasks {
        task.await
            .expect("task")
            .expect("restock lands after retrying");
    }
    let loaded = executor.load::<Product>(&product).await.expect("load");
    assert_eq!((loaded.version, loaded.state.on_hand()), (9, 8));
}

#[tokio::test]
async fn snapshots_give_the_same_state_as_a_full_fold() {
    let env = TestEnv::new().await;
    let store = EventStore::new(env.pool.clone());
    let executor = Executor::new(store.clone());
    let product = create_product(&executor, 1000).await;
    for i in 0..150u32 {
        let order_id = OrderId::new(Uuid::new_v4());
        let quantity = Quantity::new(i % 5 + 1).expect("qty");
        executor
            .execute::<Product>(
                &product,
                ProductCommand::ReserveStock { order_id, quantity },
                &CommandContext::default(),
            )
            .await
            .expect("reserve");
        if i % 3 == 0 {
            executor
                .execute::<Product>(
                    &product,
                    ProductCommand::ReleaseStock { order_id },
                    &CommandContext::default(),
                )
                .await
                .expect("release");
        }
    }
    let with_snapshot = executor.load::<Product>(&product).await.expect("load");
    let client = env.client().await;
    let snapshots: i64 = client
        .query_one(
            "select count(*) from snapshots where stream_id = $1",
            &[&product],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(snapshots, 1, "a long stream gets a snapshot");
    client
        .execute("delete from snapshots", &[])
        .await
        .expect("delete");
    let folded = executor.load::<Product>(&product).await.expect("load");
    assert_eq!(with_snapshot.state, folded.state);
    assert_eq!(with_snapshot.version, folded.version);

    // A snapshot in an unreadable layout is ignored, not trusted.
    client
        .execute(
            "insert into snapshots (stream_id, version, state_format, state) values ($1, 5, 'product:1', '{\"garbage\": true}')",
            &[&product],
        )
        .await
        .expect("insert");
    let recovered = executor.load::<Product>(&product).await.expect("load");
    assert_eq!(recovered.state, folded.state);
}

#[tokio::test]
async fn domain_refusals_append_nothing() {
    let env = TestEnv::new().await;
    let executor = Executor::new(EventStore::new(env.pool.clone()));
    let product = create_product(&executor, 2).await;
    let command = ProductCommand::ReserveStock {
        order_id: OrderId::new(Uuid::new_v4()),
        quantity: Quantity::new(3).expect("qty"),
    };
    let ctx = CommandContext {
        command_id: Some("refused-once".into()),
        ..Default::default()
    };
    let refused = executor
        .execute::<Product>(&product, command.clone(), &ctx)
        .await;
    assert!(
        matches!(refused, Err(ExecuteError::Rejected(_))),
        "{refused:?}"
    );
    // A refusal records no command id: after a restock the same id may succeed.
    executor
        .execute::<Product>(
            &product,
            ProductCommand::Restock {
                quantity: Quantity::new(5).expect("qty"),
            },
            &CommandContext::default(),
        )
        .await
        .expect("restock");
    let later = executor
        .execute::<Product>(&product, command, &ctx)
        .await
        .expect("now it fits");
    assert!(!later.replayed);
    assert_eq!(later.version, 3);
}

#[tokio::test]
async fn time_travel_folds_a_stream_up_to_a_position_or_a_time() {
    let env = TestEnv::new().await;
    let executor = Executor::new(EventStore::new(env.pool.clone()));
    let product = create_product(&executor, 10).await;
    let restock = |n| ProductCommand::Restock {
        quantity: Quantity::new(n).expect("qty"),
    };
    let first = executor
        .execute::<Product>(&product, restock(5), &CommandContext::default())
        .await
        .expect("restock");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    executor
        .execute::<Product>(&product, restock(7), &CommandContext::default())
        .await
        .expect("restock");

    let position = first.position.expect("appended");
    let then = executor
        .load_as_of::<Product>(&product, eventstore::store::AsOf::Position(position))
        .await
        .expect("as of position");
    assert_eq!((then.version, then.state.on_hand()), (2, 15));
    let then = executor
        .load_as_of::<Product>(&product, eventstore::store::AsOf::Time(between))
        .await
        .expect("as of time");
    assert_eq!((then.version, then.state.on_hand()), (2, 15));
    let now = executor.load::<Product>(&product).await.expect("now");
    assert_eq!((now.version, now.state.on_hand()), (3, 22));
    let before = executor
        .load_as_of::<Product>(
            &product,
            eventstore::store::AsOf::Time(between - chrono::Duration::hours(1)),
        )
        .await
        .expect("before it existed");
    assert_eq!(before.version, 0);
}

#[tokio::test]
async fn a_create_retried_concurrently_under_one_command_id_is_one_success() {
    // The retries that lose the race find the user registered: that refusal
    // must turn into the first execution's answer, not an error.
    let env = TestEnv::new().await;
    let executor = Executor::new(EventStore::new(env.pool.clone()));
    for round in 0..5 {
        let (stream, command) = register(&format!("retry{round}@example.com"));
        let ctx = CommandContext {
            command_id: Some(format!("register-{round}")),
            ..Default::default()
        };
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (executor, stream, command, ctx) = (
                executor.clone(),
                stream.clone(),
                command.clone(),
                ctx.clone(),
            );
            tasks.push(tokio::spawn(async move {
                executor.execute::<User>(&stream, command, &ctx).await
            }));
        }
        let mut positions = Vec::new();
        for task in tasks {
            let executed = task.await.expect("task").expect("every retry succeeds");
            positions.push(executed.position);
        }
        assert!(
            positions.windows(2).all(|w| w[0] == w[1]),
            "round {round}: {positions:?}"
        );
    }
}

/// Two processes (two executors, each with its own cache of states) working
/// on one product: a cached state the other process has moved past is never
/// written on and never answers a refusal of its own.
#[tokio::test]
async fn a_state_cached_in_one_process_and_changed_by_another_is_never_decided_on_alone() {
    let env = TestEnv::new().await;
    let here = Executor::new(EventStore::new(env.pool.clone()));
    let there = Executor::new(EventStore::new(env.pool.clone()));
    let product = create_product(&here, 1).await; // cached here: on hand 1, version 1
    let reserve = |quantity: u32| ProductCommand::ReserveStock {
        order_id: OrderId::new(Uuid::new_v4()),
        quantity: Quantity::new(quantity).expect("qty"),
    };
    let restock = ProductCommand::Restock {
        quantity: Quantity::new(4).expect("qty"),
    };
    let ctx = CommandContext::default();

    // The other process restocks: 5 on hand at version 2; the cache here still says 1.
    there
        .execute::<Product>(&product, restock.clone(), &ctx)
        .await
        .expect("restock there");
    // Refused by the cached state (1 < 3), accepted by the real one (5).
    let reserved = here
        .execute::<Product>(&product, reserve(3), &ctx)
        .await
        .expect("a reservation that fits the current stock");
    assert_eq!(reserved.version, 3);

    // The other process takes the rest; the cache here says 2 are available.
    there
        .execute::<Product>(&product, reserve(2), &ctx)
        .await
        .expect("reserve there");
    // Accepted by the cached state, refused by the real one: the append on
    // the stale version fails, the retry decides on the real state.
    let refused = here.execute::<Product>(&product, reserve(2), &ctx).await;
    assert!(
        matches!(refused, Err(ExecuteError::Rejected(_))),
        "{refused:?}"
    );
    let state = here.load::<Product>(&product).await.expect("load");
    assert_eq!(state.version, 4);
}

#[tokio::test]
async fn a_stream_another_process_created_is_never_taken_for_a_new_one() {
    let env = TestEnv::new().await;
    let here = Executor::new(EventStore::new(env.pool.clone()));
    let there = Executor::new(EventStore::new(env.pool.clone()));
    let ctx = CommandContext::default();

    // Created there; nothing cached here. A second registration under the
    // same id, decided here on the empty state first, must not land.
    let (stream, command) = register("first@example.com");
    there
        .execute::<User>(&stream, command, &ctx)
        .await
        .expect("register there");
    let again = UserCommand::Register {
        user_id: UserId::new(
            stream
                .strip_prefix("user-")
                .and_then(|id| id.parse().ok())
                .expect("a user stream id"),
        ),
        email: Email::parse("second@example.com").expect("email"),
        name: Name::parse("Bob").expect("name"),
    };
    let refused = here.execute::<User>(&stream, again, &ctx).await;
    assert!(
        matches!(
            refused,
            Err(ExecuteError::Rejected(
                domain::user::UserError::AlreadyRegistered
            ))
        ),
        "{refused:?}"
    );

    // A command that only an existing stream accepts: refused by the empty
    // state here, so decided again on the stored one.
    let product = create_product(&there, 5).await;
    let reserved = here
        .execute::<Product>(
            &product,
            ProductCommand::ReserveStock {
                order_id: OrderId::new(Uuid::new_v4()),
                quantity: Quantity::new(2).expect("qty"),
            },
            &ctx,
        )
        .await
        .expect("reserve on a stream created elsewhere");
    assert_eq!(reserved.version, 2);
    let user = here.load::<User>(&stream).await.expect("load");
    assert_eq!(user.version, 1, "the refused registration appended nothing");
}

#[tokio::test]
async fn loading_streams_together_gives_what_loading_each_gives() {
    let env = TestEnv::new().await;
    let here = Executor::new(EventStore::new(env.pool.clone()));
    let there = Executor::new(EventStore::new(env.pool.clone()));
    let ctx = CommandContext::default();
    let (user, command) = register("together@example.com");
    here.execute::<User>(&user, command, &ctx)
        .await
        .expect("register");
    let cached = create_product(&here, 10).await;
    let stranger = create_product(&there, 3).await; // never cached here
    let long = create_product(&there, 1000).await; // past a snapshot, elsewhere
    for _ in 0..70 {
        there
            .execute::<Product>(
                &long,
                ProductCommand::ReserveStock {
                    order_id: OrderId::new(Uuid::new_v4()),
                    quantity: Quantity::new(1).expect("qty"),
                },
                &ctx,
            )
            .await
            .expect("reserve");
    }
    // Changes the cached states here do not know of.
    there
        .execute::<User>(&user, UserCommand::Deactivate, &ctx)
        .await
        .expect("deactivate there");
    there
        .execute::<Product>(&cached, ProductCommand::Discontinue, &ctx)
        .await
        .expect("discontinue there");

    let streams = vec![
        cached.clone(),
        stranger.clone(),
        long.clone(),
        cached.clone(),
    ];
    let (u, products) = here
        .load_together::<User, Product>(&user, &streams)
        .await
        .expect("load together");
    let fresh = Executor::new(EventStore::new(env.pool.clone()));
    let alone = fresh.load::<User>(&user).await.expect("load");
    assert_eq!((u.version, &u.state), (alone.version, &alone.state));
    assert_eq!(u.version, 2);
    assert_eq!(products.len(), 4);
    for (stream, loaded) in streams.iter().zip(&products) {
        let alone = fresh.load::<Product>(stream).await.expect("load");
        assert_eq!(
            (loaded.version, &loaded.state),
            (alone.version, &alone.state),
            "{stream}"
        );
    }
    assert_eq!(products[0].version, 2, "the discontinuation is seen");
    assert_eq!(products[2].version, 71);
}

#[tokio::test]
async fn placing_an_order_decides_on_the_user_and_products_as_the_log_has_them() {
    let env = TestEnv::new().await;
    let store = EventStore::new(env.pool.clone());
    let here = Executor::new(store.clone());
    // Another process, with a cache of its own.
    let there = Executor::new(EventStore::new(env.pool.clone()));
    let ctx = CommandContext::default();
    let q = |n: u32| Quantity::new(n).expect("qty");
    let product_id =
        |stream: &str| ProductId::new(Uuid::parse_str(&stream["product-".len()..]).expect("uuid"));
    let widget = product_id(&create_product(&here, 10).await);
    let gadget = product_id(&create_product(&here, 10).await);
    let (user_stream, command) = register(&format!("{}@example.com", Uuid::new_v4()));
    here.execute::<User>(&user_stream, command, &ctx)
        .await
        .expect("register");
    let user = UserId::new(Uuid::parse_str(&user_stream["user-".len()..]).expect("uuid"));

    // Refusals of the rule append nothing.
    let nobody = UserId::new(Uuid::new_v4());
    let order = OrderId::new(Uuid::new_v4());
    let refused = here
        .place_order(order, nobody, &[(widget, q(1))], &ctx)
        .await;
    assert!(
        matches!(
            refused,
            Err(ExecuteError::Rejected(OrderError::UnknownUser))
        ),
        "{refused:?}"
    );
    let nothing = ProductId::new(Uuid::new_v4());
    let refused = here
        .place_order(order, user, &[(widget, q(1)), (nothing, q(1))], &ctx)
        .await;
    assert!(
        matches!(refused, Err(ExecuteError::Rejected(OrderError::UnknownProduct(p))) if p == nothing),
        "{refused:?}"
    );
    assert_eq!(
        store
            .stream_version(&order.stream_id())
            .await
            .expect("version"),
        0
    );

    // A price changed elsewhere, after this process cached the product, is
    // the price the order takes.
    there
        .execute::<Product>(
            &gadget.stream_id(),
            ProductCommand::ChangePrice {
                price: Money::parse("5.25").expect("price"),
            },
            &ctx,
        )
        .await
        .expect("reprice");
    let ctx = CommandContext {
        command_id: Some(format!("place-{}", order.as_uuid())),
        ..CommandContext::default()
    };
    let placed = here
        .place_order(order, user, &[(widget, q(2)), (gadget, q(3))], &ctx)
        .await
        .expect("place");
    assert!(!placed.replayed);
    assert_eq!(placed.events.len(), 1);
    let prices: Vec<(ProductId, u32, String)> = placed
        .state
        .lines()
        .iter()
        .map(|l| (l.product_id, l.quantity.get(), l.unit_price.to_string()))
        .collect();
    assert_eq!(
        prices,
        [
            (widget, 2, "19.99".to_owned()),
            (gadget, 3, "5.25".to_owned())
        ]
    );
    assert_eq!(
        placed.state.total().map(|t| t.to_string()).as_deref(),
        Some("55.73")
    );

    // The same command id again: the first result, nothing appended.
    let again = here
        .place_order(order, user, &[(widget, q(2)), (gadget, q(3))], &ctx)
        .await
        .expect("replay");
    assert!(again.replayed);
    assert!(again.events.is_empty());
    assert_eq!(
        (again.version, again.position),
        (placed.version, placed.position)
    );
    assert_eq!(
        store
            .stream_version(&order.stream_id())
            .await
            .expect("version"),
        1
    );

    // A user deactivated elsewhere orders nothing more.
    there
        .execute::<User>(
            &user_stream,
            UserCommand::Deactivate,
            &CommandContext::default(),
        )
        .await
        .expect("deactivate");
    let refused = here
        .place_order(
            OrderId::new(Uuid::new_v4()),
            user,
            &[(widget, q(1))],
            &CommandContext::default(),
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(ExecuteError::Rejected(OrderError::InactiveUser))
        ),
        "{refused:?}"
    );
}
