//! Given/when/then scenarios for deciders, usable from any crate's tests.
//!
//! ```
//! use domain::testing::given;
//! use domain::user::{User, UserCommand, UserError};
//!
//! given::<User>([]).when(UserCommand::Deactivate).then_err(UserError::NotFound);
//! ```
//!
//! `given` folds the history with `evolve`, `when` runs `decide`, and `then`
//! compares the produced events; it also folds them into the state, so every
//! scenario checks that `evolve` accepts what `decide` produced.

use crate::aggregate::Aggregate;

/// Starts a scenario from the events already in the aggregate's stream.
pub fn given<A: Aggregate>(history: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let history: Vec<A::Event> = history.into_iter().collect();
    Given {
        state: A::fold(&history),
    }
}

/// The state built from a scenario's history.
#[derive(Debug)]
pub struct Given<A: Aggregate> {
    /// The folded state the command is decided against.
    state: A::State,
}

impl<A: Aggregate> Given<A> {
    /// Decides `command` against the state.
    pub fn when(self, command: A::Command) -> When<A> {
        let result = A::decide(&self.state, command);
        When {
            state: self.state,
            result,
        }
    }

    /// The folded state, for assertions about `evolve` alone.
    pub fn state(&self) -> &A::State {
        &self.state
    }
}

/// The outcome of a scenario's command.
#[derive(Debug)]
pub struct When<A: Aggregate> {
    /// The state before the command.
    state: A::State,
    /// What `decide` returned.
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> When<A> {
    /// Asserts the command succeeded with exactly `expected`, and returns the
    /// state after applying them.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) -> A::State {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.result {
            Ok(events) => {
                assert_eq!(
                    events, expected,
                    "decide produced other events than expected"
                );
                events.iter().fold(self.state, A::evolve)
            }
            Err(err) => panic!("expected events {expected:?}, got error {err:?} ({err})"),
        }
    }

    /// Asserts the command was refused with `expected`.
    #[track_caller]
    pub fn then_err(self, expected: A::Error) {
        match self.result {
            Ok(events) => panic!("expected error {expected:?}, got events {events:?}"),
            Err(err) => assert_eq!(err, expected, "decide refused with another error"),
        }
    }

    /// What `decide` returned, for assertions the helpers do not cover.
    pub fn result(&self) -> &Result<Vec<A::Event>, A::Error> {
        &self.result
    }
}
