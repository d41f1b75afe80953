//! Failure injection and step repetition, for omicron-style saga tests.
//!
//! oxidecomputer/omicron tests each saga by running every action twice and by
//! making every action fail in turn. The runner offers the same two knobs:
//!
//! - [`Hooks::fail`] is asked at every [`Step`]: after a message's state change
//!   commits, before and after each command, after each outcome commits, after
//!   a timer fires. Answering [`Injected::Crash`] ends `SagaRunner::run` at
//!   once with every task aborted, as a `kill -9` would; a test then starts a
//!   fresh runner and checks that the orders still end right. Answering
//!   [`Injected::FailCommand`] before a command makes that command fail as a
//!   transient error would, without running it (to make a compensation fail
//!   every time).
//! - [`Hooks::repeat`] handles every message twice, runs every command twice
//!   and records every outcome twice: the second time must change nothing.
//!
//! Production runs with [`Hooks::default`], which does neither.

use std::sync::Arc;

use domain::ids::OrderId;

/// A point in the runner's work where a failure can be injected.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    /// A message's state change committed; its commands have not run.
    MessageCommitted {
        /// The saga.
        order_id: OrderId,
        /// The message's event type.
        event_type: String,
    },
    /// A command is about to run.
    BeforeCommand {
        /// The saga.
        order_id: OrderId,
        /// The command's id.
        command_id: String,
    },
    /// A command ran; its outcome is not recorded yet.
    AfterCommand {
        /// The saga.
        order_id: OrderId,
        /// The command's id.
        command_id: String,
    },
    /// A command's outcome committed; the commands it led to have not run.
    OutcomeCommitted {
        /// The saga.
        order_id: OrderId,
        /// The command's id.
        command_id: String,
    },
    /// A timer's firing committed; the commands it led to have not run.
    TimerCommitted {
        /// The saga.
        order_id: OrderId,
    },
}

impl Step {
    /// The saga the step belongs to.
    pub fn order_id(&self) -> OrderId {
        match self {
            Step::MessageCommitted { order_id, .. }
            | Step::BeforeCommand { order_id, .. }
            | Step::AfterCommand { order_id, .. }
            | Step::OutcomeCommitted { order_id, .. }
            | Step::TimerCommitted { order_id } => *order_id,
        }
    }

    /// The step without its order id, e.g. `before reserve:1` or
    /// `committed OrderPlaced`: the same for every order, so a test can list
    /// the steps of one run and crash another run at each of them.
    pub fn label(&self) -> String {
        let short = |command_id: &str| {
            command_id
                .split_once(':')
                .map_or(command_id, |(_, rest)| rest)
                .to_owned()
        };
        match self {
            Step::MessageCommitted { event_type, .. } => format!("committed {event_type}"),
            Step::BeforeCommand { command_id, .. } => format!("before {}", short(command_id)),
            Step::AfterCommand { command_id, .. } => format!("after {}", short(command_id)),
            Step::OutcomeCommitted { command_id, .. } => format!("outcome {}", short(command_id)),
            Step::TimerCommitted { .. } => "timer fired".to_owned(),
        }
    }
}

/// What an injected failure does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// The runner dies here: `run` returns `SagaError::Injected` and every
    /// task stops where it is.
    Crash,
    /// Only at [`Step::BeforeCommand`]: the command fails as if the store had
    /// been unreachable, without running. Elsewhere it means [`Injected::Crash`].
    FailCommand,
}

/// The hook asked at every step.
pub type FailureHook = Arc<dyn Fn(&Step) -> Result<(), Injected> + Send + Sync>;

/// Test knobs of a runner; the default injects nothing and repeats nothing.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Asked at every step; `None` in production.
    pub fail: Option<FailureHook>,
    /// Handle every message, run every command and record every outcome twice.
    pub repeat: bool,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("fail", &self.fail.as_ref().map(|_| "<hook>"))
            .field("repeat", &self.repeat)
            .finish()
    }
}

impl Hooks {
    /// Asks the hook about `step`.
    pub(crate) fn check(&self, step: &Step) -> Result<(), Injected> {
        match &self.fail {
            Some(hook) => hook(step),
            None => Ok(()),
        }
    }

    /// How many times each handler runs: 2 when repeating.
    pub(crate) fn times(&self) -> usize {
        if self.repeat {
            2
        } else {
            1
        }
    }
}
