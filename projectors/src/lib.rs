//! ordo's read models.
//!
//! - [`projection`]: the projections (`users`, `products`, `orders`) and
//!   applying a batch of events to one; [`model`] holds each one's tables.
//! - [`event`]: events as projections see them.
//! - [`checkpoint`]: how far each projection has applied, kept with its data.
//! - [`runner`]: the live projector, consuming JetStream.
//! - [`rebuild`]: rebuilding from the event log beside the live tables, and
//!   the comparison behind `--dry-run` and `ordo check`.
//! - [`check`]: the invariants `ordo check` verifies
//!   (`docs/reference/guarantees.md#invariants-checked-by-ordo-check`).
//! - [`query`]: what the HTTP API reads, and waiting for a position.
//! - [`status`]: positions and lag for `ordo status` and `GET /projections`.
//! - [`writes`]: a batch's writes, collected and then sent together.

pub mod check;
pub mod checkpoint;
pub mod event;
pub mod model;
pub mod projection;
pub mod query;
pub mod rebuild;
pub mod runner;
pub mod status;
pub mod writes;

pub use projection::Projection;
pub use runner::{Projector, ProjectorConfig};
