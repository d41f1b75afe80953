//! The saga's history: what it did and saw, step by step, as shown by
//! `GET /sagas/{order_id}`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What kind of thing a history entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// The saga started for a placed order.
    Started,
    /// A command was issued.
    Issued,
    /// A command succeeded (by its reply or by observing its event).
    Succeeded,
    /// A reservation was refused.
    Refused,
    /// A command failed transiently.
    Failed,
    /// A failed command was issued again.
    Retried,
    /// An event changed the saga without answering one of its commands.
    Observed,
    /// The payment timer was set.
    TimerSet,
    /// The payment timer was cleared.
    TimerCleared,
    /// The payment timer fired.
    TimerFired,
    /// The phase changed; `detail` names the new phase.
    PhaseChanged,
    /// A compensation was given up on.
    GaveUp,
}

/// One entry of the saga's history, shown by `GET /sagas/{order_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaStep {
    /// When it happened (the `now` of the input).
    pub at: DateTime<Utc>,
    /// What happened.
    pub kind: StepKind,
    /// The command concerned, if any.
    pub command_id: Option<String>,
    /// True for compensating steps (releases).
    pub compensation: bool,
    /// A human-readable description.
    pub detail: String,
}
