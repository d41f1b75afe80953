//! ordo's event store on PostgreSQL.
//!
//! - [`db`]: `DATABASE_URL`, creating the database, the connection pool.
//! - [`tls`]: TLS to PostgreSQL (`sslmode`, `sslrootcert`) through rustls.
//! - [`migrations`]: the numbered SQL of `schemas/sql/`, applied once each.
//! - [`privileges`]: the runtime role, what it may do, who may migrate.
//! - [`position`]: positions in the global log and their tokens.
//! - [`event`]: events as stored and read back, with their metadata.
//! - [`store`]: [`EventStore`]: appends, stream and log reads, the log's
//!   horizon, snapshots; a folder with one module per job (its docs map it).
//! - [`group`]: group commit: concurrent appends written in one statement
//!   (`store::group`, re-exported here under its old path).
//! - [`follow`]: a cursor following the log in order, waiting for more.
//! - [`executor`]: load, decide, append, retry on conflict; placing an order.
//! - [`leadership`]: jobs one process at a time does (relay, projections,
//!   sagas, rebuilds): advisory locks, standby, terms, backoff.
//! - [`notify`]: waking log readers after appends, without serialising writers.
//! - [`relay`]: the one active publisher of the log to JetStream.
//! - [`envelope`]: the CloudEvents envelope users and subscribers see.
//! - [`nats`]: connecting to NATS and the JetStream stream events go to.
//! - [`error`]: `StoreError`, what can go wrong.

pub mod db;
pub mod envelope;
pub mod error;
pub mod event;
pub mod executor;
pub mod follow;
pub mod leadership;
pub mod migrations;
pub mod nats;
pub mod notify;
pub mod position;
pub mod privileges;
pub mod relay;
pub mod store;
pub mod telemetry;
pub mod tls;

pub use store::group;

pub use db::DatabaseUrl;
pub use error::StoreError;
pub use event::{Metadata, NewEvent, RecordedEvent};
pub use position::Position;
pub use store::{AppendRequest, Appended, EventStore, ExpectedVersion};
