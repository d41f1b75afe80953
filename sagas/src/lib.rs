//! ordo's order-fulfilment saga runner (`ordo saga`, and part of `ordo up`).
//!
//! The decisions are `domain::fulfilment`'s pure state machine; this crate
//! carries them out: it consumes order and stock events from JetStream,
//! keeps each order's saga state and timers in PostgreSQL (schema `saga`,
//! `schemas/sql/0003_sagas.sql`), runs the commands the machine asks for
//! through the event store's executor, and fires payment timeouts.
//!
//! Module map:
//!
//! - [`runner`]: [`SagaRunner`], [`RunnerConfig`], [`SagaStats`]: leadership,
//!   consumption, command drivers, timer polling, recovery, one file each.
//!   Start here.
//! - `input` (private): from a NATS message to a saga input.
//! - `commands` (private): running a saga command through the executor and
//!   classifying what happened; the payment timeout's guarded cancellation.
//! - [`store`]: the saga tables' SQL, and [`store::SagaRow`], one saga as
//!   stored.
//! - [`query`]: [`query::saga`], the data of `GET /sagas/{order_id}`.
//! - [`mod@status`]: [`status()`], the figures of `ordo status`.
//! - [`clock`]: [`Clock`], [`SystemClock`], [`ManualClock`] for tests.
//! - [`hooks`]: failure injection and step repetition for omicron-style tests.
//! - [`error`]: what can go wrong, [`SagaError`].
//!
//! Metrics: `ordo_saga_outcomes_total{outcome}` (confirmed, rejected,
//! cancelled, completed, needs_attention, parked), `ordo_saga_needs_attention`,
//! `ordo_saga_lag_seconds`, `ordo_saga_active`, `ordo_saga_failures_total`,
//! `ordo_saga_malformed_messages_total`.

pub mod clock;
mod commands;
mod echoes;
pub mod error;
pub mod hooks;
mod input;
pub mod query;
pub mod runner;
pub mod status;
pub mod store;

/// The `actor` of every event the saga coordinator's commands write (its
/// timers' included).
pub const ACTOR: &str = "saga";

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::SagaError;
pub use hooks::{Hooks, Injected, Step};
pub use query::SagaView;
pub use runner::{RunnerConfig, SagaRunner, SagaStats};
pub use status::{status, SagaStatus};
