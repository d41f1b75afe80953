//! ordo's business rules: users, products and orders as pure deciders.
//!
//! Nothing in this crate does I/O, reads a clock or draws random numbers:
//! ids, times and prices come in on commands, so every rule is a function
//! that tests can call directly. The event store, API, projectors and saga
//! runner build on these types.
//!
//! Module map:
//!
//! - [`ids`]: typed ids (`UserId`, `ProductId`, `OrderId`), `StreamType` and
//!   stream ids (`order-<uuid>`).
//! - [`values`]: validated values (`Email`, `Sku`, `Name`, `Money`,
//!   `Quantity`, `CancelReason`) and their `ValueError`.
//! - [`aggregate`]: the `Aggregate` (decider) trait and `ErrorKind`, which the
//!   API maps to HTTP statuses.
//! - [`user`], [`product`], [`order`]: the three aggregates, each with its
//!   commands, events, state and error enum. `order::place_order` is the
//!   cross-aggregate rule for placing an order.
//! - [`event`]: the `DomainEvent` trait (type names, payloads, decoding),
//!   `AnyEvent`, unique claims, and [`event::upcast`] for older schema versions.
//! - [`fulfilment`]: the order-fulfilment saga's decisions as a pure state machine.
//! - [`testing`]: the given/when/then helper for decider tests, public so
//!   other crates' tests can use it.
//!
//! JSON Schemas of every event payload live in `schemas/events/` at the
//! repository root; `tests/schemas.rs` checks the events against them.

pub mod aggregate;
pub mod event;
pub mod fulfilment;
pub mod ids;
pub mod order;
pub mod product;
pub mod testing;
pub mod user;
pub mod values;

pub use aggregate::{Aggregate, ErrorKind, ErrorKindOf};
pub use event::{AnyEvent, DecodeError, DomainEvent};
pub use ids::{OrderId, ProductId, StreamType, UserId};
pub use order::Order;
pub use product::Product;
pub use user::User;
pub use values::{CancelReason, Email, Money, Name, Quantity, Sku, ValueError};
