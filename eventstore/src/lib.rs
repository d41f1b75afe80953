//! ordo's event store on PostgreSQL.
//!
//! - [`db`]: `DATABASE_URL`, creating the database, the connection pool.
//! - [`migrations`]: the numbered SQL of `schemas/sql/`, applied once each.
//! - [`nats`]: connecting to NATS and the JetStream stream events go to.
//! - [`error`]: `StoreError`, what can go wrong.

pub mod db;
pub mod error;
pub mod migrations;
pub mod nats;

pub use db::DatabaseUrl;
pub use error::StoreError;
