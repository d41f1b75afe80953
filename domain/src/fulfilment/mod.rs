//! The order-fulfilment saga's decisions, as a pure state machine.
//!
//! The saga runner (crate `sagas`) feeds [`handle`] what it observes — order
//! and stock events, the outcomes of the commands it ran, timer expiries —
//! and carries out the [`SagaAction`]s it gets back. Everything that needs
//! I/O, clocks or retries with back-off stays in the runner; everything that
//! needs judgement is here, where it can be tested step by step.
//!
//! The course of one order:
//!
//! 1. `OrderPlaced` → reserve stock for every line at once.
//! 2. When every line has a definitive reply: all reserved → confirm the
//!    order; any refused → release every line that holds stock and reject the
//!    order with the first refusal's reason. Releases and the rejection are
//!    issued *together* (releases first): the rejection does not depend on
//!    the releases, and waiting for them would leave the order pending for as
//!    long as a release keeps failing, and no order may stay pending.
//! 3. Confirmed → set the payment timer. It fires while unpaid → cancel the
//!    order (`payment_timeout`). Paid → clear the timer.
//! 4. Cancelled before shipping (customer or timeout) → release every line.
//! 5. Shipped → ship every line's reservation; done when all are shipped.
//!
//! Idempotence: each logical step has a deterministic command id
//! (`<order>:reserve:<line>`, `<order>:release:<line>`, `<order>:ship:<line>`,
//! `<order>:confirm`, `<order>:reject`, `<order>:cancel:payment_timeout`), which
//! the event store uses to absorb re-issued commands. Duplicate or late inputs
//! of any kind produce no actions and leave the state as it was.
//!
//! One concept per file:
//!
//! - `config`: [`SagaConfig`], the tunables.
//! - `state`: [`SagaState`] with its [`SagaPhase`], [`SagaLine`]s
//!   ([`LineStatus`]) and [`PendingCommand`]s.
//! - `history`: [`SagaStep`] and [`StepKind`], what the saga did and saw.
//! - `command`: [`SagaCommand`] and [`SagaCommandKind`], their mapping to
//!   aggregate commands ([`DomainCommand`]), and every command id format.
//! - `input`: [`SagaInput`], what the saga reacts to, and [`SagaAction`],
//!   what it asks of the runner.
//! - `transitions`: [`handle`], the state machine itself.
//! - `ahead`: [`confirmation_ahead`], the confirmation that reservations
//!   issued together lead to, for the runner to run before their outcomes
//!   are recorded.

mod ahead;
mod command;
mod config;
mod history;
mod input;
mod state;
mod transitions;

#[cfg(test)]
mod testing;

pub use ahead::confirmation_ahead;
pub use command::{DomainCommand, SagaCommand, SagaCommandKind};
pub use config::SagaConfig;
pub use history::{SagaStep, StepKind};
pub use input::{SagaAction, SagaInput};
pub use state::{LineStatus, PendingCommand, SagaLine, SagaPhase, SagaState};
pub use transitions::handle;
