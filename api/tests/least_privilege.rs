//! Least privilege in PostgreSQL, on a private server: the schema migrated by
//! an owner that is not a superuser, every ordo role (API, relay, projectors,
//! saga, rebuild, check) connected as a login role that is only a member of
//! the runtime role, and what that login, and then the owner, try and are
//! refused.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Api;
use eventstore::DatabaseUrl;
use projectors::rebuild::RebuildOptions;
use projectors::Projection;
use serde_json::json;
use test_support::{PrivatePostgres, TestEnv};
use tokio_postgres::error::SqlState;

/// A non-superuser owner migrates; `shop_app` is its processes' login.
struct Deployment {
    server: PrivatePostgres,
    owner: DatabaseUrl,
    app: DatabaseUrl,
    env: TestEnv,
}

async fn deployment() -> Deployment {
    let server = PrivatePostgres::start();
    let root = server.url("postgres").connect().await.unwrap();
    root.batch_execute("create role shop_owner login password 'owner-secret' createdb createrole")
        .await
        .unwrap();
    let env = TestEnv::on_server(
        &server.url_as("shop_owner", "owner-secret", "postgres"),
        test_support::nats_url(),
    )
    .await;
    let database = env.database_url.database().to_owned();
    let owner = server.url_as("shop_owner", "owner-secret", &database);
    owner
        .connect()
        .await
        .unwrap()
        .batch_execute(
            "create role shop_app login password 'app-secret';
             grant ordo_runtime to shop_app;
             create table other_data (secret text);
             insert into other_data values ('payroll')",
        )
        .await
        .unwrap();
    let app = server.url_as("shop_app", "app-secret", &database);
    Deployment {
        server,
        owner,
        app,
        env,
    }
}

async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("select count(*) from {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// `sql` fails with `code`; returns the server's message.
async fn refused(client: &tokio_postgres::Client, sql: &str, code: &SqlState) -> String {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("{sql:?} was allowed"),
        Err(e) => {
            let db = e.as_db_error().unwrap_or_else(|| panic!("{sql:?}: {e}"));
            assert_eq!(db.code(), code, "{sql:?}: {}", db.message());
            db.message().to_owned()
        }
    }
}

#[tokio::test]
async fn the_whole_journey_runs_as_a_member_of_the_runtime_role() {
    let Deployment {
        server: _server,
        owner,
        app,
        env,
    } = deployment().await;
    let mut settings = env.settings();
    settings.database_url = app.clone();
    let stream = env.stream.clone();
    let jetstream = env.jetstream.clone();
    let api = Api::start_as(env, settings).await;

    let user = api.user("Least").await.id();
    let product = api.product(5, "10.00").await.id();
    let placed = api
        .post(
            "/orders",
            json!({ "user_id": user, "lines": [{ "product_id": product, "quantity": 2 }] }),
        )
        .await;
    assert_eq!(placed.status, 202, "{placed:?}");
    let id = placed.id();
    let confirmed = api.settled_order(&id).await;
    assert_eq!(confirmed.body["status"], "confirmed", "{confirmed:?}");
    let paid = api
        .post(&format!("/orders/{id}/pay"), json!({ "amount": "20.00" }))
        .await;
    assert_eq!(paid.status, 200, "{paid:?}");
    let shipped = api.post_empty(&format!("/orders/{id}/ship")).await;
    assert_eq!(shipped.body["status"], "shipped", "{shipped:?}");
    let product_path = format!("/products/{product}");
    let stocked = test_support::poll(
        Duration::from_secs(20),
        || api.get(&product_path),
        |p| p.body["on_hand"] == 3 && p.body["reserved"] == 0,
    )
    .await;
    assert_eq!(stocked.body["available"], 3, "{stocked:?}");

    // The operators' commands, as the same login.
    let pool = app.pool(10).unwrap();
    let options = RebuildOptions {
        projections: Projection::ALL.to_vec(),
        dry_run: false,
        batch_size: 100,
    };
    let report = projectors::rebuild::rebuild(&pool, &stream, &options, |_| {})
        .await
        .unwrap();
    assert!(report.projections.iter().all(|p| p.swapped), "{report:?}");
    let order = api.get(&format!("/orders/{id}")).await;
    assert_eq!(
        order.body["status"], "shipped",
        "served from the rebuilt table"
    );
    let check = test_support::poll(
        Duration::from_secs(20),
        || projectors::check::check(&pool, &jetstream, &stream),
        |r| r.as_ref().is_ok_and(|r| r.passed()),
    )
    .await;
    assert!(check.unwrap().passed());

    // And as the owner, `ordo migrate` again: nothing pending, the grants
    // re-applied, the running login unaffected.
    let report = eventstore::migrations::migrate(&owner).await.unwrap();
    assert!(report.applied.is_empty());
    let again = api.get(&format!("/orders/{id}")).await;
    assert_eq!(again.status, 200);
}

#[tokio::test]
async fn through_the_runtime_role_the_log_is_append_only_and_nothing_else_is_reachable() {
    let d = deployment().await;
    // An event to protect, appended as the app.
    let app_pool = d.app.pool(2).unwrap();
    let shop = test_support::shop::Shop::on(eventstore::EventStore::new(app_pool.clone()));
    shop.register_user("Alice").await;
    let app = d.app.connect().await.unwrap();
    let owner = d.owner.connect().await.unwrap();
    // Neither is a superuser (the warning for remote superusers reads this).
    assert!(!eventstore::privileges::is_superuser(&app).await.unwrap());
    assert!(!eventstore::privileges::is_superuser(&owner).await.unwrap());
    let root = d.server.url("postgres").connect().await.unwrap();
    assert!(eventstore::privileges::is_superuser(&root).await.unwrap());
    let events = count(&app, "events").await;
    assert!(events > 0);

    let denied = SqlState::INSUFFICIENT_PRIVILEGE;
    for sql in [
        "update events set data = '{}'",
        "delete from events",
        "truncate events",
        "drop table events",
        "alter table events disable trigger events_append_only",
        "alter table events add column evil text",
        "create index evil on events (type)",
        // an event's place in the log and its time are the server's
        "insert into events (event_id, stream_id, stream_type, version, type, schema_version, data, \
         recorded_at) values (gen_random_uuid(), 'x', 'user', 1, 'T', 1, '{}', '2000-01-01')",
        "insert into events (event_id, stream_id, stream_type, version, type, schema_version, data, \
         transaction_id) values (gen_random_uuid(), 'x', 'user', 1, 'T', 1, '{}', '1')",
        "update commands set last_position = 0",
        "delete from commands",
        "update ordo_migrations set checksum = 'x'",
        "delete from ordo_migrations",
        "insert into ordo_migrations (version, name, checksum) values (999, 'x', 'x')",
        "select * from other_data",
        "insert into other_data values ('x')",
        "update api.tokens set scopes = '{admin}'",
        "delete from api.tokens",
        "update api.idempotency set status = 200",
        "delete from read.orders",
        "truncate read.orders",
        "drop table read.orders",
        "update saga.history set steps = '[]'",
        "create table evil (x int)",
        "create schema evil",
        "create function evil() returns int language sql as 'select 1'",
    ] {
        refused(&app, sql, &denied).await;
    }
    // The rebuild's functions take read model tables only.
    for name in ["checkpoints", "../events", "events"] {
        refused(
            &app,
            &format!("select ordo_rebuild_swap('{name}')"),
            &SqlState::UNDEFINED_TABLE,
        )
        .await;
    }
    assert_eq!(count(&app, "events").await, events, "nothing changed");

    // The owner may write the log's table, yet the trigger refuses to
    // change what is in it.
    for sql in [
        "update events set data = '{}'",
        "delete from events",
        "truncate events",
    ] {
        let message = refused(&owner, sql, &denied).await;
        assert!(message.contains("append-only"), "{message}");
    }
    assert_eq!(count(&owner, "events").await, events);
    // A migration that declares it rewrites events lifts the guard for its
    // own transaction (as the migration runner does); the app cannot, as it
    // lacks the privilege in the first place.
    let lifted = "begin; set local ordo.rewrite_events = 'on'; \
                  update events set metadata = metadata; rollback;";
    owner.batch_execute(lifted).await.unwrap();
    refused(&app, lifted, &denied).await;
    app.batch_execute("rollback").await.unwrap();
    refused(&owner, "delete from events", &denied).await;
    // Still readable and appendable by the app.
    shop.register_user("Bob").await;
    assert_eq!(count(&app, "events").await, events + 1);
}

#[tokio::test]
async fn a_login_that_cannot_migrate_checks_the_schema_and_says_what_to_run() {
    let server = PrivatePostgres::start();
    let root = server.url("postgres").connect().await.unwrap();
    for sql in [
        "create role shop_owner login password 'o' createdb createrole",
        "create database shop owner shop_owner",
        "create role shop_app login password 'a'",
    ] {
        root.batch_execute(sql).await.unwrap();
    }
    let owner = server.url_as("shop_owner", "o", "shop");
    let app = server.url_as("shop_app", "a", "shop");
    let role = eventstore::privileges::RuntimeRole::default();

    // Nothing applied yet: the app may not migrate and says so.
    let err = eventstore::migrations::ensure_current(&app, None, &role)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ordo migrate") && err.contains("ORDO_MIGRATE_DATABASE_URL"),
        "{err}"
    );
    // With the owner's URL it migrates.
    let done = eventstore::migrations::ensure_current(&app, Some(&owner), &role)
        .await
        .unwrap();
    assert!(matches!(
        done,
        eventstore::migrations::SchemaCheck::Migrated(_)
    ));
    owner
        .connect()
        .await
        .unwrap()
        .batch_execute("grant ordo_runtime to shop_app")
        .await
        .unwrap();
    // Now the app finds the schema current and goes on.
    let checked = eventstore::migrations::ensure_current(&app, None, &role)
        .await
        .unwrap();
    assert_eq!(checked, eventstore::migrations::SchemaCheck::Current);
    // The owner, given no separate URL, migrates as itself.
    let owned = eventstore::migrations::ensure_current(&owner, None, &role)
        .await
        .unwrap();
    assert!(matches!(
        owned,
        eventstore::migrations::SchemaCheck::Migrated(_)
    ));
}

#[tokio::test]
async fn two_deployments_on_one_server_use_runtime_roles_of_their_own() {
    let server = PrivatePostgres::start();
    let root = server.url("postgres");
    let a_role: eventstore::privileges::RuntimeRole = "shop_a_runtime".parse().unwrap();
    let b_role: eventstore::privileges::RuntimeRole = "shop_b_runtime".parse().unwrap();
    eventstore::migrations::migrate_with(&root.with_database("shop_a"), &a_role)
        .await
        .unwrap();
    eventstore::migrations::migrate_with(&root.with_database("shop_b"), &b_role)
        .await
        .unwrap();
    root.connect()
        .await
        .unwrap()
        .batch_execute(
            "create role a_app login password 'a' in role shop_a_runtime;
             create role b_app login password 'b' in role shop_b_runtime",
        )
        .await
        .unwrap();
    let a_on_b = server
        .url_as("a_app", "a", "shop_b")
        .connect()
        .await
        .unwrap();
    refused(
        &a_on_b,
        "select * from events",
        &SqlState::INSUFFICIENT_PRIVILEGE,
    )
    .await;
    let a_on_a = server
        .url_as("a_app", "a", "shop_a")
        .connect()
        .await
        .unwrap();
    assert_eq!(count(&a_on_a, "events").await, 0);
}
