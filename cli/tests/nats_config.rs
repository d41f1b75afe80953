//! NATS least privilege against real servers: `ordo nats-config` writes the
//! configuration, a private nats-server runs with it, and ordo's roles (and a
//! downstream subscriber) connect as its users. Also the protected stream,
//! readable refusals, and the same over TLS.
//!
//! Every secured server here is a private one the test starts; PostgreSQL is
//! the shared test server, a fresh database per test.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use domain::ids::{OrderId, ProductId, UserId};
use domain::order::{Order, OrderCommand};
use eventstore::executor::CommandContext;
use eventstore::nats::{
    BusError, NatsAuth, NatsConnect, NatsUrl, StreamName, SubjectPrefix, Unprotected,
};
use futures::StreamExt as _;
use projectors::Projection;
use system::{Roles, System};
use test_support::servers::PrivateNats;
use test_support::shop::Shop;
use test_support::{poll, Running, TestEnv};

/// The defaults a deployment's configuration is generated for.
fn default_names() -> (StreamName, SubjectPrefix) {
    ("ORDO_EVENTS".parse().unwrap(), "events".parse().unwrap())
}

/// `ordo` with none of the caller's NATS settings.
fn ordo() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ordo"));
    for variable in [
        "NATS_USER",
        "NATS_PASSWORD",
        "NATS_CREDS",
        "NATS_NKEY",
        "NATS_TLS_CA",
        "NATS_TLS_CERT",
        "NATS_TLS_KEY",
        "NATS_INBOX_PREFIX",
        "ORDO_ALLOW_UNPROTECTED_STREAM",
        "ORDO_STREAM",
        "ORDO_SUBJECT_PREFIX",
    ] {
        command.env_remove(variable);
    }
    command.env("RUST_LOG", "warn");
    command
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `ordo` on `env`'s database and stream, on the server `nats`.
fn ordo_on(env: &TestEnv, nats: &PrivateNats) -> Command {
    let mut command = ordo();
    command
        .env("DATABASE_URL", env.database_url.expose())
        .env("NATS_URL", nats.url().as_str())
        .env("ORDO_STREAM", env.stream.as_str())
        .env("ORDO_SUBJECT_PREFIX", env.prefix.as_str());
    command
}

/// An `ordo` process, killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `KEY=value` lines of a credentials file.
fn env_file(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A private nats-server running the configuration `ordo nats-config`
/// wrote into a directory of its own.
struct Secured {
    dir: tempfile::TempDir,
    nats: PrivateNats,
}

impl Secured {
    /// Generates the configuration (with `args` added) and starts a server
    /// on it.
    fn start(args: &[&str]) -> Secured {
        let dir = generate(args);
        let nats = PrivateNats::start_with_config(&dir.path().join("nats-server.conf"));
        Secured { dir, nats }
    }

    /// Starts a server on `conf`, a configuration in the same directory
    /// that includes the generated one.
    fn start_including(args: &[&str], extra: &str) -> Secured {
        let dir = generate(args);
        let conf = dir.path().join("server.conf");
        std::fs::write(&conf, format!("include \"nats-server.conf\"\n{extra}")).unwrap();
        let nats = PrivateNats::start_with_config(&conf);
        Secured { dir, nats }
    }

    fn url(&self) -> NatsUrl {
        self.nats.url()
    }

    /// How `user` connects, from its credentials file.
    fn user(&self, user: &str) -> NatsConnect {
        let vars = env_file(&self.dir.path().join(format!("{user}.env")));
        let mut connect =
            NatsConnect::new(self.url()).with_user(&vars["NATS_USER"], &vars["NATS_PASSWORD"]);
        connect.inbox_prefix = Some(vars["NATS_INBOX_PREFIX"].parse().unwrap());
        connect
    }
}

fn generate(args: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = ordo()
        .args(["nats-config", "--out"])
        .arg(dir.path())
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    dir
}

/// ordo's roles built on `env`'s database and stream, connected as `nats`.
async fn system_as(env: &TestEnv, nats: NatsConnect, name: &str) -> System {
    let mut settings = env.settings();
    settings.nats = nats;
    System::connect(settings, name)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The relay, every projector, the saga coordinator and the API, each
/// connected as the user given for it, running until dropped. Returns the
/// API's address.
async fn start_roles(
    env: &TestEnv,
    [relay, projector, saga, api]: [NatsConnect; 4],
) -> (Running<anyhow::Result<()>>, std::net::SocketAddr) {
    let relay = system_as(env, relay, "ordo-relay").await;
    let projector = system_as(env, projector, "ordo-projector").await;
    let saga = system_as(env, saga, "ordo-saga").await;
    let api = system_as(env, api, "ordo-api").await;
    let state = api.api().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let running = Running::spawn(|stop| async move {
        let mut roles = Roles::new(stop);
        relay.start_relay(&mut roles)?;
        projector.start_projectors(&mut roles, &Projection::ALL)?;
        saga.start_saga(&mut roles, None)?;
        api.start_api(&mut roles, state, listener);
        roles.run_until_stopped().await
    });
    (running, addr)
}

async fn read_one(env: &TestEnv, sql: &str, id: uuid::Uuid) -> Option<String> {
    env.client()
        .await
        .query_opt(sql, &[&id])
        .await
        .unwrap()
        .map(|row| row.get(0))
}

/// Waits until `sql` (one text column, `$1` the id) answers `expected`.
async fn projected(env: &TestEnv, sql: &str, id: uuid::Uuid, expected: &str) {
    let seen = poll(
        Duration::from_secs(30),
        || read_one(env, sql, id),
        |seen| seen.as_deref() == Some(expected),
    )
    .await;
    assert_eq!(seen.as_deref(), Some(expected), "{sql}");
}

const ORDER_STATUS: &str = "select status::text from read.orders where id = $1";
const STOCK: &str =
    "select on_hand::text || '/' || reserved::text from read.products where id = $1";
const USER_ORDERS: &str = "select orders_placed::text from read.users where id = $1";

/// A customer registers, a product is created, an order placed; the saga
/// reserves and confirms it; it is paid and shipped, and the saga ships its
/// stock. Every step is seen through the projections, i.e. after the relay
/// published it and a projector read it back.
async fn journey(env: &TestEnv) -> (UserId, ProductId, OrderId) {
    let shop = Shop::new(env);
    let (user, _) = shop.register_user("Least Privilege").await;
    let (product, _) = shop.create_product(5, "10.00").await;
    let (order, _) = shop.place_order(user, &[(product, 2)]).await;
    projected(env, ORDER_STATUS, order.as_uuid(), "confirmed").await;
    projected(env, STOCK, product.as_uuid(), "5/2").await;
    shop.pay(order).await;
    shop.executor
        .execute::<Order>(
            &order.stream_id(),
            OrderCommand::Ship,
            &CommandContext {
                actor: Some("system".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    projected(env, ORDER_STATUS, order.as_uuid(), "shipped").await;
    projected(env, STOCK, product.as_uuid(), "3/0").await;
    projected(env, USER_ORDERS, user.as_uuid(), "1").await;
    (user, product, order)
}

/// `GET /ready` of the API: NATS is "ok" when its connection stands.
async fn ready(addr: std::net::SocketAddr) -> serde_json::Value {
    reqwest::get(format!("http://{addr}/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every consumer on the stream, as an admin sees them.
async fn consumer_names(js: &jetstream::Context, stream: &StreamName) -> Vec<String> {
    let stream = js.get_stream(stream.as_str()).await.unwrap();
    stream
        .consumer_names()
        .map(|name| name.unwrap())
        .collect()
        .await
}

#[tokio::test]
async fn every_role_works_under_its_own_user() {
    let server = Secured::start(&[]);
    let (stream, prefix) = default_names();
    let env = TestEnv::with_nats_as(server.user("admin"), stream.clone(), prefix).await;
    let roles = ["relay", "projector", "saga", "api"].map(|u| server.user(u));
    let (running, addr) = start_roles(&env, roles).await;

    let (user, product, _) = journey(&env).await;
    assert_eq!(ready(addr).await["nats"], "ok");

    // Deleting ordo's live consumers (as an operator may) makes async-nats
    // recreate them under a name of its own, deleting the old one first:
    // the projector's and saga's users may do that, and the work goes on.
    let before = consumer_names(&env.jetstream, &stream).await;
    assert_eq!(before.len(), 4, "three projectors and the saga: {before:?}");
    for name in &before {
        env.jetstream
            .delete_consumer_from_stream(name, stream.as_str())
            .await
            .unwrap();
    }
    let shop = Shop::new(&env);
    let (order, _) = shop.place_order(user, &[(product, 1)]).await;
    projected(&env, ORDER_STATUS, order.as_uuid(), "confirmed").await;
    projected(&env, STOCK, product.as_uuid(), "3/1").await;
    let after = poll(
        Duration::from_secs(20),
        || consumer_names(&env.jetstream, &stream),
        |names| names.len() == 4,
    )
    .await;
    assert_eq!(after.len(), 4, "{after:?}");
    assert!(after.iter().all(|name| !before.contains(name)), "{after:?}");

    // An operator's check reads the whole stream as admin.
    let admin = env_file(&server.dir.path().join("admin.env"));
    let check = ordo()
        .arg("check")
        .env("DATABASE_URL", env.database_url.expose())
        .env("NATS_URL", server.url().as_str())
        .env("NATS_USER", &admin["NATS_USER"])
        .env("NATS_PASSWORD", &admin["NATS_PASSWORD"])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));

    running.stop().await.unwrap();
    server.refused_nothing_but_to("nobody");
}

#[tokio::test]
async fn every_role_works_as_the_ordo_user() {
    let mut server = Secured::start(&[]);
    let (stream, prefix) = default_names();
    let env = TestEnv::with_nats_as(server.user("admin"), stream, prefix).await;
    let (running, addr) = start_roles(
        &env,
        ["ordo", "ordo", "ordo", "ordo"].map(|u| server.user(u)),
    )
    .await;
    journey(&env).await;
    assert_eq!(ready(addr).await["nats"], "ok");
    // The server restarts: the readers reconnect and ask after their
    // consumers (CONSUMER.INFO) before going on, within their rights.
    server.nats.restart();
    journey(&env).await;
    running.stop().await.unwrap();
    server.refused_nothing_but_to("nobody");
}

impl Secured {
    /// Waits for the server to have refused `what` ("Publish" or
    /// "Subscription") on `subject` to `user`.
    async fn refused(&self, user: &str, what: &str, subject: &str) {
        let expected = format!("{what} Violation - User \"{user}\", Subject \"{subject}\"");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let seen = self.nats.violations();
            if seen.iter().any(|v| v.starts_with(&expected)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not refused: {expected}; refused: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts the server refused nothing to anyone but `except`.
    fn refused_nothing_but_to(&self, except: &str) {
        let others: Vec<String> = self
            .nats
            .violations()
            .into_iter()
            .filter(|v| !v.contains(&format!("User \"{except}\"")))
            .collect();
        assert!(others.is_empty(), "refused: {others:?}");
    }
}

/// A relay connected as `relay`, running until stopped.
async fn spawn_relay_as(env: &TestEnv, server: &Secured) -> Running<anyhow::Result<()>> {
    let relay = system_as(env, server.user("relay"), "ordo-relay").await;
    Running::spawn(|stop| async move {
        let mut roles = Roles::new(stop);
        relay.start_relay(&mut roles)?;
        roles.run_until_stopped().await
    })
}

#[tokio::test]
async fn the_subscriber_reads_through_its_own_consumer_and_nothing_else() {
    let server = Secured::start(&[
        "--subscriber-consumer",
        "audit",
        "--subscriber-consumer",
        "mirror",
    ]);
    let (stream, prefix) = default_names();
    let env = TestEnv::with_nats_as(server.user("admin"), stream.clone(), prefix.clone()).await;
    let relay = spawn_relay_as(&env, &server).await;
    let projector = system_as(&env, server.user("projector"), "ordo-projector").await;
    let projecting = Running::spawn(|stop| async move {
        let mut roles = Roles::new(stop);
        projector.start_projectors(&mut roles, &[Projection::Orders])?;
        roles.run_until_stopped().await
    });
    let shop = Shop::new(&env);
    let (user, _) = shop.register_user("Subscriber").await;
    let (product, _) = shop.create_product(5, "1.00").await;
    let (order, _) = shop.place_order(user, &[(product, 1)]).await;
    projected(&env, ORDER_STATUS, order.as_uuid(), "pending").await;
    // A relay that resumes reads the stream's last message: allowed too.
    relay.stop().await.unwrap();
    let relay = spawn_relay_as(&env, &server).await;
    let (order, _) = shop.place_order(user, &[(product, 1)]).await;
    projected(&env, ORDER_STATUS, order.as_uuid(), "pending").await;
    let events: i64 = env
        .client()
        .await
        .query_one("select count(*) from events", &[])
        .await
        .unwrap()
        .get(0);

    // It reads every event through its own durable consumer, acking each.
    let client = eventstore::nats::connect(&server.user("subscriber"), "subscriber")
        .await
        .unwrap();
    // Short timeouts: a refused request gets no answer.
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(1))
        .build(client.clone());
    let ordo_stream = js.get_stream(stream.as_str()).await.unwrap();
    let audit = ordo_stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("audit".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut read = 0;
    let mut batch = audit.fetch().max_messages(100).messages().await.unwrap();
    while let Some(message) = batch.next().await {
        message.unwrap().ack().await.unwrap();
        read += 1;
    }
    assert_eq!(read, events, "every event, once");
    let info = poll(
        Duration::from_secs(5),
        || async {
            js.get_consumer_from_stream::<consumer::pull::Config, _, _>("audit", stream.as_str())
                .await
                .unwrap()
                .cached_info()
                .clone()
        },
        |info| info.num_ack_pending == 0,
    )
    .await;
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0), "acked");
    // Also filtered (current clients put the filter in the subject).
    let mirror = ordo_stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("mirror".into()),
            filter_subject: prefix.wildcard(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(mirror.cached_info().num_pending as i64, events);
    ordo_stream.delete_consumer("mirror").await.unwrap();
    // Older clients create durable consumers on the subject of their own.
    let legacy: jetstream::response::Response<consumer::Info> = js
        .request(
            format!("CONSUMER.DURABLE.CREATE.{}.mirror", stream.as_str()),
            &serde_json::json!({
                "stream_name": stream.as_str(),
                "config": { "durable_name": "mirror", "ack_policy": "explicit" },
            }),
        )
        .await
        .unwrap();
    assert!(
        matches!(legacy, jetstream::response::Response::Ok(ref info) if info.name == "mirror"),
        "{legacy:?}"
    );
    ordo_stream.delete_consumer("mirror").await.unwrap();
    server.refused_nothing_but_to("nobody");

    // What it may not do. The admin learns a live consumer of ordo's.
    let ordo_consumer = consumer_names(&env.jetstream, &stream)
        .await
        .into_iter()
        .find(|name| name != "audit")
        .unwrap();
    let s = stream.as_str();
    let forged = format!("{prefix}.order.{}.OrderCancelled", uuid::Uuid::new_v4());
    client.publish(forged.clone(), "{}".into()).await.unwrap();
    let next = format!("$JS.API.CONSUMER.MSG.NEXT.{s}.{ordo_consumer}");
    client
        .publish_with_reply(next.clone(), client.new_inbox(), "{\"batch\":1}".into())
        .await
        .unwrap();
    // Refused requests go unanswered: all at once, each given up after 1 s.
    // (Paged listings ask again and again when unanswered: one page each.)
    let update = eventstore::nats::stream_config(&stream, &prefix);
    let other = consumer::pull::Config {
        durable_name: Some("other".into()),
        ..Default::default()
    };
    let (mut names, mut listed) = (ordo_stream.consumer_names(), ordo_stream.consumers());
    let one_second = Duration::from_secs(1);
    let _ = tokio::join!(
        js.delete_stream(s),
        ordo_stream.purge(),
        js.update_stream(&update),
        js.delete_consumer_from_stream(&ordo_consumer, s),
        ordo_stream.create_consumer(other),
        tokio::time::timeout(one_second, names.next()),
        tokio::time::timeout(one_second, listed.next()),
    );
    let mut snoop = client.subscribe("_INBOX_relay.>").await.unwrap();
    let mut everyone = client.subscribe("_INBOX.>").await.unwrap();
    client.flush().await.unwrap();

    for subject in [
        forged.clone(),
        format!("$JS.API.STREAM.DELETE.{s}"),
        format!("$JS.API.STREAM.PURGE.{s}"),
        format!("$JS.API.STREAM.UPDATE.{s}"),
        format!("$JS.API.CONSUMER.DELETE.{s}.{ordo_consumer}"),
        next,
        format!("$JS.API.CONSUMER.CREATE.{s}.other"),
        format!("$JS.API.CONSUMER.NAMES.{s}"),
        format!("$JS.API.CONSUMER.LIST.{s}"),
    ] {
        server.refused("subscriber", "Publish", &subject).await;
    }
    server
        .refused("subscriber", "Subscription", "_INBOX_relay.>")
        .await;
    server
        .refused("subscriber", "Subscription", "_INBOX.>")
        .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), snoop.next())
            .await
            .is_err()
            && tokio::time::timeout(Duration::from_millis(10), everyone.next())
                .await
                .is_err(),
        "no reply of anyone else's reached it"
    );

    // Nothing of it happened.
    let admin_stream = env.jetstream.get_stream(s).await.unwrap();
    let config = &admin_stream.cached_info().config;
    assert!(config.deny_delete && config.deny_purge);
    assert_eq!(admin_stream.cached_info().state.messages as i64, events);
    assert!(consumer_names(&env.jetstream, &stream)
        .await
        .contains(&ordo_consumer));
    server.refused_nothing_but_to("subscriber");
    relay.stop().await.unwrap();
    projecting.stop().await.unwrap();
}

#[tokio::test]
async fn anonymous_and_wrong_credentials_are_refused_naming_the_setting() {
    let server = Secured::start(&[]);

    let anonymous = eventstore::nats::connect(&NatsConnect::new(server.url()), "t")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        anonymous.contains("refused an anonymous connection")
            && anonymous.contains("set NATS_USER and NATS_PASSWORD"),
        "{anonymous}"
    );

    let started = Instant::now();
    let wrong = eventstore::nats::connect(&server.user("relay").with_user("relay", "wrong"), "t")
        .await
        .unwrap_err();
    assert!(matches!(wrong, BusError::Refused { .. }), "{wrong:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "fails fast");

    // From the command line: one line, naming NATS_PASSWORD, exit status 1.
    let out = ordo()
        .arg("protect-stream")
        .env("NATS_URL", server.url().as_str())
        .env("NATS_USER", "relay")
        .env("NATS_PASSWORD", "wrong")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("refused user \"relay\"") && stderr.contains("NATS_PASSWORD"),
        "{stderr}"
    );

    // Settings that cannot work name themselves before anything connects:
    // exit status 2 for a bad combination, 1 for a file that cannot be used.
    for (variable, value, status, expected) in [
        (
            "NATS_TLS_CA",
            "/nonexistent/ca.pem",
            1,
            "NATS_TLS_CA: cannot read /nonexistent/ca.pem",
        ),
        (
            "NATS_CREDS",
            "/nonexistent/ordo.creds",
            1,
            "NATS_CREDS: cannot read",
        ),
        (
            "NATS_NKEY",
            "/nonexistent/seed",
            1,
            "NATS_NKEY: cannot read",
        ),
        (
            "NATS_PASSWORD",
            "alone",
            2,
            "NATS_USER: NATS_PASSWORD is set without it",
        ),
    ] {
        let out = ordo()
            .arg("protect-stream")
            .env("NATS_URL", server.url().as_str())
            .env(variable, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{}", text(&out));
        assert!(stderr.contains(expected), "{variable}: {stderr}");
        assert!(!stderr.contains("alone"), "a password is never printed");
    }
}

#[tokio::test]
async fn an_nkey_seed_logs_in_and_a_wrong_one_names_nats_nkey() {
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let conf = dir.path().join("nkey.conf");
    std::fs::write(
        &conf,
        format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
            user.public_key()
        ),
    )
    .unwrap();
    let nats = PrivateNats::start_with_config(&conf);
    let seed = dir.path().join("user.nk");
    std::fs::write(&seed, user.seed().unwrap()).unwrap();
    let mut connect = NatsConnect::new(nats.url());
    connect.auth = NatsAuth::NKey(seed.clone());
    let client = eventstore::nats::connect(&connect, "t").await.unwrap();
    client.flush().await.unwrap();

    let other = dir.path().join("other.nk");
    std::fs::write(&other, nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
    connect.auth = NatsAuth::NKey(other);
    let refused = eventstore::nats::connect(&connect, "t")
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("NATS_NKEY"), "{refused}");
}

#[tokio::test]
async fn the_stream_denies_message_deletes_and_purges() {
    // A server without authorization: every API subject is allowed, and
    // the stream's own settings are what refuses.
    let nats = PrivateNats::start();
    let env = TestEnv::with_nats(nats.url()).await;
    let stream = env.create_stream().await;
    let config = &stream.cached_info().config;
    assert!(config.deny_delete && config.deny_purge, "{config:?}");
    env.jetstream
        .publish(format!("{}.order.x.OrderPlaced", env.prefix), "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let purge = stream.purge().await.unwrap_err().to_string();
    assert!(
        purge.to_lowercase().contains("purge not permitted"),
        "{purge}"
    );
    let delete = stream.delete_message(1).await.unwrap_err().to_string();
    assert!(
        delete.to_lowercase().contains("delete not permitted"),
        "{delete}"
    );
    let mut stream = env.jetstream.get_stream(env.stream.as_str()).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    // The flags do not stop deleting the whole stream: permissions do.
    assert!(
        env.jetstream
            .delete_stream(env.stream.as_str())
            .await
            .unwrap()
            .success
    );
}

#[tokio::test]
async fn an_unprotected_stream_is_refused_until_protected_or_allowed() {
    let nats = PrivateNats::start();
    let env = TestEnv::with_nats(nats.url()).await;
    // A stream as earlier versions of ordo made it.
    let mut old = eventstore::nats::stream_config(&env.stream, &env.prefix);
    (old.deny_delete, old.deny_purge) = (false, false);
    env.jetstream.create_stream(old).await.unwrap();

    let refused = eventstore::nats::ensure_stream(
        &env.jetstream,
        &env.stream,
        &env.prefix,
        Unprotected::Refuse,
    )
    .await
    .unwrap_err();
    let message = refused.to_string();
    assert!(
        message.contains("allows message deletes and purges")
            && message.contains("ordo protect-stream")
            && message.contains("ORDO_ALLOW_UNPROTECTED_STREAM=true"),
        "{message}"
    );
    // The relay stops for good with it, and so does the saga coordinator.
    let relay = ordo_on(&env, &nats).arg("relay").output().unwrap();
    let stderr = String::from_utf8_lossy(&relay.stderr);
    assert_eq!(relay.status.code(), Some(1), "{}", text(&relay));
    assert!(
        stderr.contains("error: relay failed: JetStream stream")
            && stderr.contains("ordo protect-stream"),
        "{stderr}"
    );
    let saga = env.system().saga(None).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(20), saga.run(Default::default()))
        .await
        .expect("the saga coordinator gives up at once");
    assert!(ended
        .unwrap_err()
        .to_string()
        .contains("ordo protect-stream"));

    // The opt-out runs on it.
    let allowed = Child(
        ordo_on(&env, &nats)
            .arg("relay")
            .env("ORDO_ALLOW_UNPROTECTED_STREAM", "true")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    Shop::new(&env).register_user("Allowed").await;
    let published = poll(
        Duration::from_secs(20),
        || async {
            let stream = env.jetstream.get_stream(env.stream.as_str()).await.unwrap();
            stream.cached_info().state.messages
        },
        |messages| *messages == 1,
    )
    .await;
    assert_eq!(
        published, 1,
        "the relay published on the unprotected stream"
    );
    drop(allowed);

    // The fix: `ordo protect-stream`, then the stream is ordo's again.
    let protect = || ordo_on(&env, &nats).arg("protect-stream").output().unwrap();
    let out = protect();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("now denies message deletes and purges"),
        "{}",
        text(&out)
    );
    let stream = eventstore::nats::ensure_stream(
        &env.jetstream,
        &env.stream,
        &env.prefix,
        Unprotected::Refuse,
    )
    .await
    .unwrap();
    let config = &stream.cached_info().config;
    assert!(config.deny_delete && config.deny_purge);
    let again = protect();
    assert!(text(&again).contains("already denies"), "{}", text(&again));
}

#[tokio::test]
async fn an_operator_protects_an_old_stream_as_admin_after_securing_the_server() {
    // A server as it ran before: no authorization, a stream without the flags.
    let dir = generate(&[]);
    let conf = dir.path().join("server.conf");
    std::fs::write(&conf, "# no authorization yet\n").unwrap();
    let mut nats = PrivateNats::start_with_config(&conf);
    let (stream, prefix) = default_names();
    let anonymous = eventstore::nats::connect(&NatsConnect::new(nats.url()), "t")
        .await
        .unwrap();
    let mut old = eventstore::nats::stream_config(&stream, &prefix);
    (old.deny_delete, old.deny_purge) = (false, false);
    jetstream::new(anonymous).create_stream(old).await.unwrap();

    // Secured with the generated users, on the same store.
    std::fs::write(&conf, "include \"nats-server.conf\"\n").unwrap();
    nats.restart();
    let server = Secured { dir, nats };
    let relay = eventstore::nats::connect(&server.user("relay"), "relay")
        .await
        .unwrap();
    let refused = eventstore::nats::ensure_stream(
        &jetstream::new(relay.clone()),
        &stream,
        &prefix,
        Unprotected::Refuse,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(refused, BusError::UnprotectedStream { .. }),
        "{refused:?}"
    );

    let admin = env_file(&server.dir.path().join("admin.env"));
    let out = ordo()
        .arg("protect-stream")
        .env("NATS_URL", server.url().as_str())
        .env("NATS_USER", &admin["NATS_USER"])
        .env("NATS_PASSWORD", &admin["NATS_PASSWORD"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("now denies"), "{}", text(&out));
    eventstore::nats::ensure_stream(
        &jetstream::new(relay),
        &stream,
        &prefix,
        Unprotected::Refuse,
    )
    .await
    .unwrap();
    server.refused_nothing_but_to("nobody");
}

#[test]
fn the_configuration_is_not_overwritten_without_force_and_credentials_stay_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = generate(&["--nats-stream", "SHOP", "--subject-prefix", "shop"]);
    let conf_path = dir.path().join("nats-server.conf");
    let conf = std::fs::read_to_string(&conf_path).unwrap();
    assert!(
        conf.contains("\"shop.*.*.*\", \"$JS.API.STREAM.INFO.SHOP\""),
        "{conf}"
    );
    assert!(!conf.contains("ORDO_EVENTS") && !conf.contains("$JS.API.>"));
    let relay = env_file(&dir.path().join("relay.env"));
    assert!(!conf.contains(&relay["NATS_PASSWORD"]), "only its hash");
    for user in [
        "relay",
        "projector",
        "saga",
        "api",
        "ordo",
        "subscriber",
        "admin",
    ] {
        let file = dir.path().join(format!("{user}.env"));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{user}.env");
        assert_eq!(env_file(&file)["NATS_USER"], user);
    }

    let again = ordo()
        .args(["nats-config", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("pass --force"), "{}", text(&again));
    assert_eq!(
        std::fs::read_to_string(&conf_path).unwrap(),
        conf,
        "untouched"
    );

    let forced = ordo()
        .args(["nats-config", "--force", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(forced.status.success(), "{}", text(&forced));
    let renewed = env_file(&dir.path().join("relay.env"));
    assert_ne!(
        renewed["NATS_PASSWORD"], relay["NATS_PASSWORD"],
        "new passwords"
    );
}

#[tokio::test]
async fn the_saga_coordinator_creates_the_stream_protected() {
    let nats = PrivateNats::start();
    let env = TestEnv::with_nats(nats.url()).await;
    let saga = env.system().saga(None).unwrap();
    let running = Running::spawn(|stop| saga.run(stop));
    let stream = poll(
        Duration::from_secs(20),
        || env.jetstream.get_stream(env.stream.as_str()),
        |found| found.is_ok(),
    )
    .await
    .unwrap();
    let config = &stream.cached_info().config;
    assert!(config.deny_delete && config.deny_purge, "{config:?}");
    running.stop().await.unwrap();
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as
/// PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ordo test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, file: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let cert_path = dir.join(format!("{file}.pem"));
        let key_path = dir.join(format!("{file}-key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    };
    let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()], "server");
    let (client_cert, client_key) = leaf(vec!["ordo".into()], "client");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    Pki {
        ca,
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

#[tokio::test]
async fn the_journey_over_tls_with_client_certificates() {
    let certs = tempfile::tempdir().unwrap();
    let pki = pki(certs.path());
    let server = Secured::start_including(
        &[],
        &format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n  timeout: 2\n}}\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca.display()
        ),
    );
    let tls = |user: &str| {
        server
            .user(user)
            .with_ca(&pki.ca)
            .with_client_certificate(&pki.client_cert, &pki.client_key)
    };

    // Without the CA, or without a client certificate: refused, naming
    // what to set.
    let no_ca = eventstore::nats::connect(&server.user("ordo"), "t")
        .await
        .unwrap_err()
        .to_string();
    assert!(no_ca.contains("NATS_TLS_CA"), "{no_ca}");
    let no_cert = eventstore::nats::connect(&server.user("ordo").with_ca(&pki.ca), "t")
        .await
        .unwrap_err()
        .to_string();
    assert!(no_cert.contains("NATS_TLS_CERT"), "{no_cert}");

    // TLS settings make TLS required: a server without it is refused.
    let plain = PrivateNats::start();
    let in_clear = NatsConnect::new(plain.url()).with_ca(&pki.ca);
    let refused = eventstore::nats::connect(&in_clear, "t").await.unwrap_err();
    assert!(
        matches!(refused, BusError::Tls { .. }) && refused.to_string().contains("without TLS"),
        "{refused:?}"
    );

    let (stream, prefix) = default_names();
    let env = TestEnv::with_nats_as(tls("admin"), stream, prefix).await;
    let (running, addr) = start_roles(&env, ["relay", "projector", "saga", "api"].map(tls)).await;
    journey(&env).await;
    assert_eq!(ready(addr).await["nats"], "ok");
    running.stop().await.unwrap();
    server.refused_nothing_but_to("nobody");
}
