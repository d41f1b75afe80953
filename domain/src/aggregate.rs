//! The decider shape every aggregate follows.
//!
//! An aggregate is two pure functions: `decide` turns a command and the
//! current state into new events (or a typed error), `evolve` folds one event
//! into the state. The event store loads a stream, folds it, calls `decide`,
//! and appends the result with an optimistic version check; nothing here knows
//! about that.

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::event::DomainEvent;
use crate::ids::StreamType;

/// An event-sourced aggregate, written as a decider.
pub trait Aggregate {
    /// The stream type whose streams hold this aggregate's events: its
    /// events' own.
    const STREAM_TYPE: StreamType = <Self::Event as DomainEvent>::STREAM_TYPE;

    /// What `decide` needs to know; `Default` is the state before any event.
    type State: Default
        + Clone
        + Debug
        + PartialEq
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static;
    /// What a caller asks for.
    type Command: Debug + Clone;
    /// What happened.
    type Event: DomainEvent;
    /// Why a command was refused.
    type Error: std::error::Error + PartialEq + Clone + Send + Sync + 'static + ErrorKindOf;

    /// Decides which events a command produces in `state`. An empty vector
    /// means the command is already satisfied (an idempotent no-op).
    fn decide(state: &Self::State, command: Self::Command)
        -> Result<Vec<Self::Event>, Self::Error>;

    /// Unique values `event` takes or releases, appended in `state` (the
    /// state just before it): by default the event's own
    /// [`DomainEvent::unique_claims`]; an aggregate whose releases depend on
    /// its state (an order gives back its user's unpaid-order slot) says so
    /// here.
    fn claims(state: &Self::State, event: &Self::Event) -> Vec<crate::event::UniqueClaim> {
        let _ = state;
        event.unique_claims()
    }

    /// Applies one event. Never fails: events are facts. An event that makes no
    /// sense in `state` (which `decide` never produces) leaves it unchanged
    /// rather than panicking, so a corrupted stream cannot crash a reader.
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;

    /// Folds a stream's events, from the start, into its state.
    fn fold<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self::State
    where
        Self::Event: 'a,
    {
        events
            .into_iter()
            .fold(Self::State::default(), |state, event| {
                Self::evolve(state, event)
            })
    }
}

/// The broad class of a refusal, which is all the API needs to pick a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The command breaks a rule regardless of state (422).
    Validation,
    /// The aggregate does not exist (404).
    NotFound,
    /// The aggregate, or a unique value, already exists (409).
    Duplicate,
    /// The aggregate's current state does not allow the command (409).
    InvalidTransition,
    /// A limit on how many of something one may hold is reached (409).
    LimitReached,
}

impl ErrorKind {
    /// The stable machine-readable `code` of the API's problem documents.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Validation => "validation",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Duplicate => "duplicate",
            ErrorKind::InvalidTransition => "invalid_transition",
            ErrorKind::LimitReached => "too_many_unpaid_orders",
        }
    }
}

/// Classifies an error into an [`ErrorKind`].
pub trait ErrorKindOf {
    /// The class of this error.
    fn kind(&self) -> ErrorKind;
}
