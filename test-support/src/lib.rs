//! The harness of ordo's integration tests.
//!
//! [`TestEnv::new`] gives each test its own PostgreSQL database (created and
//! migrated) and its own JetStream stream name and subject prefix, so tests run
//! in parallel against one server without seeing each other's data. Dropping it
//! drops the database and deletes the stream, also when the test panics.
//! [`TestDatabase`] is the database part alone, not yet created, for tests of
//! creation and migration themselves.
//!
//! [`TestEnv::system`] builds ordo's roles on a test's database and stream
//! exactly as `ordo up` does; [`Running`] runs one of them (or any task) until
//! the test stops it, and [`wait_for`] / [`poll`] wait for what happens in
//! its own time. [`shop`] makes users, products and orders through the real
//! executor, and runs a relay into the test's stream. [`servers`] has what
//! outage tests need: a private nats-server to kill and restart, a TCP proxy
//! to cut, and a reader of a whole JetStream stream. [`PrivatePostgres`] is
//! a PostgreSQL cluster of a test's own (with TLS if asked: [`certs`] makes
//! a CA and server certificates), for tests that must configure the server;
//! [`TestEnv::on_server`] puts a test's database there.
//!
//! The servers come from `DATABASE_URL` and `NATS_URL` (what `scripts/test`
//! exports), defaulting to the local ones. Set `TEST_LOG=1` to see logs and
//! `ORDO_TEST_KEEP=1` to keep the database and stream of a failing test.

pub mod certs;
pub mod log;
pub mod postgres;
pub mod running;
pub mod servers;
pub mod shop;
pub mod wait;

use std::future::Future;
use std::sync::Once;

pub use postgres::{PostgresOptions, PrivatePostgres, TlsFiles};
pub use running::Running;
pub use wait::{eventually, poll, poll_blocking, throughout, wait_for};

use async_nats::jetstream;
use eventstore::db::DatabaseUrl;
use eventstore::nats::{NatsConnect, NatsUrl, StreamName, SubjectPrefix, Unprotected};

/// The server `DATABASE_URL` names (its database is not used).
pub fn server_database_url() -> DatabaseUrl {
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://127.0.0.1:5432/ordo".into());
    url.parse().unwrap_or_else(|e| panic!("DATABASE_URL: {e}"))
}

/// The server `NATS_URL` names.
pub fn nats_url() -> NatsUrl {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    url.parse().unwrap_or_else(|e| panic!("NATS_URL: {e}"))
}

/// Installs a tracing subscriber once, printing only when `TEST_LOG` is set.
pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

fn keep() -> bool {
    std::env::var_os("ORDO_TEST_KEEP").is_some()
}

/// Runs async cleanup from `Drop`: Drop cannot await and may run while the
/// test's runtime shuts down, so a thread with its own small runtime does it.
fn block_on_thread<F>(cleanup: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let thread = std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(cleanup);
        }
    });
    let _ = thread.join();
}

/// A database name of its own on the test server, dropped with this value.
/// Nothing is created: [`TestEnv`] migrates it, tests of creation create it.
pub struct TestDatabase {
    /// URL of the database.
    pub url: DatabaseUrl,
    /// The random part of its name, for naming anything else after it.
    pub id: String,
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TestDatabase")
            .field(&self.url.database())
            .finish()
    }
}

impl TestDatabase {
    /// A name nobody else uses: `ordo_test_<random>`.
    pub fn fresh() -> TestDatabase {
        TestDatabase::fresh_on(&server_database_url())
    }

    /// The same on the server `server` names (its database is not used; its
    /// user, `sslmode` and other parameters are).
    pub fn fresh_on(server: &DatabaseUrl) -> TestDatabase {
        init_tracing();
        let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        let url = server.with_database(&format!("ordo_test_{id}"));
        TestDatabase { url, id }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if keep() {
            eprintln!("ORDO_TEST_KEEP: kept database {}", self.url.database());
            return;
        }
        let database = self.url.database().to_owned();
        let admin = self.url.with_database("postgres");
        block_on_thread(async move {
            let sql = format!(
                "drop database if exists {} with (force)",
                eventstore::db::quote_ident(&database)
            );
            let result = match admin.connect().await {
                Ok(client) => client.batch_execute(&sql).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = result {
                eprintln!("could not drop test database {database}: {e}");
            }
        });
    }
}

/// One test's private database and JetStream names.
pub struct TestEnv {
    /// URL of this test's database.
    pub database_url: DatabaseUrl,
    /// A pool on it.
    pub pool: deadpool_postgres::Pool,
    /// A NATS connection.
    pub nats: async_nats::Client,
    /// JetStream on that connection.
    pub jetstream: jetstream::Context,
    /// This test's stream name (not created until something asks for it).
    pub stream: StreamName,
    /// This test's subject prefix.
    pub prefix: SubjectPrefix,
    /// The id both names are made from, for anything else a test wants unique.
    pub id: String,
    /// The NATS server this test uses.
    pub nats_url: NatsUrl,
    /// How this test connects to it (its URL, and credentials when the
    /// server wants them).
    pub nats_connect: NatsConnect,
    /// Whether dropping this deletes the stream: not on a secured server
    /// (the test's own, gone with it), whose users may not delete it.
    delete_stream: bool,
    // Declared last so it is dropped after the pool is closed.
    database: TestDatabase,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("database", &self.database_url.database())
            .field("stream", &self.stream)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl TestEnv {
    /// A fresh migrated database, and a stream name and prefix nobody else uses.
    pub async fn new() -> TestEnv {
        TestEnv::with_nats(nats_url()).await
    }

    /// The same, on a NATS server of the test's choosing (a private one it
    /// will restart).
    pub async fn with_nats(nats_url: NatsUrl) -> TestEnv {
        TestEnv::build(&server_database_url(), NatsConnect::new(nats_url), None).await
    }

    /// The same on the PostgreSQL server `database_server` names (a
    /// [`PrivatePostgres`], a URL with `sslmode`) and the NATS server
    /// `nats_url` names. Its database is created there by the user of
    /// `database_server`; keep the server running until this is dropped.
    pub async fn on_server(database_server: &DatabaseUrl, nats_url: NatsUrl) -> TestEnv {
        TestEnv::build(database_server, NatsConnect::new(nats_url), None).await
    }

    /// The same on a NATS server that wants credentials, with the stream
    /// name and prefix its permissions were written for.
    pub async fn with_nats_as(
        nats: NatsConnect,
        stream: StreamName,
        prefix: SubjectPrefix,
    ) -> TestEnv {
        TestEnv::build(&server_database_url(), nats, Some((stream, prefix))).await
    }

    async fn build(
        database_server: &DatabaseUrl,
        nats_connect: NatsConnect,
        names: Option<(StreamName, SubjectPrefix)>,
    ) -> TestEnv {
        let nats_url = nats_connect.url.clone();
        let delete_stream = names.is_none();
        let database = TestDatabase::fresh_on(database_server);
        let id = database.id.clone();
        let database_url = database.url.clone();
        eventstore::migrations::migrate(&database_url)
            .await
            .unwrap_or_else(|e| panic!("test database: {e}"));
        let pool = database_url
            .pool(16)
            .unwrap_or_else(|e| panic!("test pool: {e}"));
        let nats = eventstore::nats::connect(&nats_connect, "ordo-test")
            .await
            .unwrap_or_else(|e| panic!("test NATS: {e}"));
        let jetstream = jetstream::new(nats.clone());
        let (stream, prefix) = names.unwrap_or_else(|| {
            (
                format!("ORDO_TEST_{}", id.to_uppercase())
                    .parse()
                    .unwrap_or_else(|e| panic!("stream name: {e}")),
                format!("test_{id}")
                    .parse()
                    .unwrap_or_else(|e| panic!("prefix: {e}")),
            )
        });
        TestEnv {
            database_url,
            pool,
            nats,
            jetstream,
            stream,
            prefix,
            id,
            nats_url,
            nats_connect,
            delete_stream,
            database,
        }
    }

    /// A pooled connection to this test's database.
    pub async fn client(&self) -> deadpool_postgres::Object {
        self.pool
            .get()
            .await
            .unwrap_or_else(|e| panic!("test connection: {e}"))
    }

    /// The settings of a deployment on this test's database, stream and
    /// prefix. New orders are not held back by lag (tests of admission turn
    /// it on).
    pub fn settings(&self) -> system::Settings {
        let mut settings = system::Settings::new(
            self.database_url.clone(),
            self.nats_connect.clone(),
            self.stream.clone(),
            self.prefix.clone(),
        );
        settings.admission_lag = 0;
        settings
    }

    /// ordo's roles on this test's database, stream and prefix, built as
    /// `ordo up` builds them, on this test's NATS connection.
    pub fn system(&self) -> system::System {
        self.system_with(self.settings())
    }

    /// The same with settings of the test's.
    pub fn system_with(&self, settings: system::Settings) -> system::System {
        system::System::with_nats(settings, self.nats.clone())
    }

    /// Creates this test's JetStream stream (subjects `<prefix>.>`).
    pub async fn create_stream(&self) -> jetstream::stream::Stream {
        eventstore::nats::ensure_stream(
            &self.jetstream,
            &self.stream,
            &self.prefix,
            Unprotected::Refuse,
        )
        .await
        .unwrap_or_else(|e| panic!("test stream: {e}"))
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.pool.close();
        if keep() {
            eprintln!("ORDO_TEST_KEEP: kept stream {}", self.stream);
            return;
        }
        if !self.delete_stream {
            return;
        }
        let stream = self.stream.to_string();
        let nats = self.nats_connect.clone();
        // A connection of its own: this test's client is driven by the test's
        // runtime, which is blocked while Drop runs.
        block_on_thread(async move {
            if let Ok(client) = eventstore::nats::connect(&nats, "ordo-test-cleanup").await {
                // The stream may never have been created; a miss is fine.
                let _ = jetstream::new(client).delete_stream(&stream).await;
            }
        });
        let _ = &self.database; // dropped next, after the pool is closed
    }
}
