//! The user aggregate: register, rename, deactivate.
//!
//! Email uniqueness cannot be decided from one stream, so `UserRegistered`
//! declares a unique claim on the normalised email and the event store
//! enforces it in the append transaction.

use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, ErrorKind, ErrorKindOf};
use crate::event::{self, ClaimKind, UniqueClaim};
use crate::ids::{StreamType, UserId};
use crate::values::{Email, Name};

/// The user aggregate (see [`Aggregate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User;

/// What can be asked of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    /// Create the user.
    Register {
        /// The new user's id, chosen by the caller.
        user_id: UserId,
        /// Their email; must be unique (enforced by the store's claim).
        email: Email,
        /// Their display name.
        name: Name,
    },
    /// Change the display name.
    Rename {
        /// The new name.
        name: Name,
    },
    /// Stop the user from placing orders. Their history stays.
    Deactivate,
}

/// What happened to a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum UserEvent {
    /// The user was registered.
    UserRegistered {
        /// The user's id (also in the stream id; carried so the payload stands alone).
        user_id: UserId,
        /// The normalised email.
        email: Email,
        /// The display name.
        name: Name,
    },
    /// The user was renamed.
    UserRenamed {
        /// The new name.
        name: Name,
    },
    /// The user was deactivated.
    UserDeactivated,
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredUser {
    /// The user's id.
    pub user_id: UserId,
    /// The normalised email.
    pub email: Email,
    /// The current display name.
    pub name: Name,
    /// False once deactivated; inactive users cannot place orders.
    pub active: bool,
}

/// A user's state: nothing until registered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum UserState {
    /// No `UserRegistered` yet.
    #[default]
    NotRegistered,
    /// Registered (active or not).
    Registered(RegisteredUser),
}

impl UserState {
    /// The user, if registered.
    pub fn user(&self) -> Option<&RegisteredUser> {
        match self {
            UserState::NotRegistered => None,
            UserState::Registered(u) => Some(u),
        }
    }

    /// True when registered and not deactivated.
    pub fn is_active(&self) -> bool {
        self.user().is_some_and(|u| u.active)
    }
}

/// Why a user command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// `Register` on a user that exists.
    #[error("user is already registered")]
    AlreadyRegistered,
    /// Any other command on a user that does not exist.
    #[error("user not found")]
    NotFound,
    /// `Rename` or `Deactivate` on a deactivated user.
    #[error("user is deactivated")]
    Deactivated,
}

impl ErrorKindOf for UserError {
    fn kind(&self) -> ErrorKind {
        match self {
            UserError::AlreadyRegistered => ErrorKind::Duplicate,
            UserError::NotFound => ErrorKind::NotFound,
            UserError::Deactivated => ErrorKind::InvalidTransition,
        }
    }
}

impl Aggregate for User {
    type State = UserState;
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;

    fn decide(state: &UserState, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        let user = match state {
            UserState::NotRegistered => {
                return match command {
                    UserCommand::Register {
                        user_id,
                        email,
                        name,
                    } => Ok(vec![UserEvent::UserRegistered {
                        user_id,
                        email,
                        name,
                    }]),
                    _ => Err(UserError::NotFound),
                }
            }
            UserState::Registered(user) => user,
        };
        match command {
            UserCommand::Register { .. } => Err(UserError::AlreadyRegistered),
            _ if !user.active => Err(UserError::Deactivated),
            // Renaming to the current name is already satisfied: no event, so
            // retries and double submits do not clutter the history.
            UserCommand::Rename { name } if user.name == name => Ok(vec![]),
            UserCommand::Rename { name } => Ok(vec![UserEvent::UserRenamed { name }]),
            UserCommand::Deactivate => Ok(vec![UserEvent::UserDeactivated]),
        }
    }

    fn evolve(state: UserState, event: &UserEvent) -> UserState {
        match (state, event) {
            (
                UserState::NotRegistered,
                UserEvent::UserRegistered {
                    user_id,
                    email,
                    name,
                },
            ) => UserState::Registered(RegisteredUser {
                user_id: *user_id,
                email: email.clone(),
                name: name.clone(),
                active: true,
            }),
            (UserState::Registered(mut u), UserEvent::UserRenamed { name }) => {
                u.name = name.clone();
                UserState::Registered(u)
            }
            (UserState::Registered(mut u), UserEvent::UserDeactivated) => {
                u.active = false;
                UserState::Registered(u)
            }
            (state, _) => state,
        }
    }
}

event::tagged_domain_event!(
    UserEvent,
    StreamType::User,
    [UserRegistered, UserRenamed, UserDeactivated],
    {
        /// Registering takes the email. Deactivating keeps it: the address still
        /// belongs to that user's history, and freeing it would let a second
        /// account reuse it.
        fn unique_claims(&self) -> Vec<UniqueClaim> {
            match self {
                UserEvent::UserRegistered { email, .. } => {
                    vec![UniqueClaim::take(ClaimKind::Email, email.as_str())]
                }
                _ => vec![],
            }
        }
    },
);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::event::{ClaimAction, DomainEvent};
    use crate::testing::given;
    use uuid::Uuid;

    fn id() -> UserId {
        UserId::new(Uuid::from_u128(1))
    }
    fn email() -> Email {
        Email::parse("alice@example.com").unwrap()
    }
    fn name(n: &str) -> Name {
        Name::parse(n).unwrap()
    }
    fn registered() -> UserEvent {
        UserEvent::UserRegistered {
            user_id: id(),
            email: email(),
            name: name("Alice"),
        }
    }
    fn register() -> UserCommand {
        UserCommand::Register {
            user_id: id(),
            email: email(),
            name: name("Alice"),
        }
    }

    #[test]
    fn register_creates_the_user() {
        let state = given::<User>([]).when(register()).then([registered()]);
        assert!(state.is_active());
        assert_eq!(state.user().unwrap().email, email());
    }

    #[test]
    fn register_twice_is_a_duplicate() {
        given::<User>([registered()])
            .when(register())
            .then_err(UserError::AlreadyRegistered);
    }

    #[test]
    fn rename_changes_the_name() {
        let state = given::<User>([registered()])
            .when(UserCommand::Rename { name: name("Bob") })
            .then([UserEvent::UserRenamed { name: name("Bob") }]);
        assert_eq!(state.user().unwrap().name, name("Bob"));
    }

    #[test]
    fn rename_to_the_same_name_changes_nothing() {
        given::<User>([registered()])
            .when(UserCommand::Rename {
                name: name("Alice"),
            })
            .then([]);
    }

    #[test]
    fn rename_an_unknown_user_is_not_found() {
        given::<User>([])
            .when(UserCommand::Rename { name: name("Bob") })
            .then_err(UserError::NotFound);
    }

    #[test]
    fn rename_a_deactivated_user_is_refused() {
        given::<User>([registered(), UserEvent::UserDeactivated])
            .when(UserCommand::Rename { name: name("Bob") })
            .then_err(UserError::Deactivated);
    }

    #[test]
    fn deactivate_deactivates() {
        let state = given::<User>([registered()])
            .when(UserCommand::Deactivate)
            .then([UserEvent::UserDeactivated]);
        assert!(!state.is_active());
    }

    #[test]
    fn deactivate_an_unknown_user_is_not_found() {
        given::<User>([])
            .when(UserCommand::Deactivate)
            .then_err(UserError::NotFound);
    }

    #[test]
    fn deactivate_twice_is_refused() {
        given::<User>([registered(), UserEvent::UserDeactivated])
            .when(UserCommand::Deactivate)
            .then_err(UserError::Deactivated);
    }

    #[test]
    fn error_kinds_map_to_the_api_statuses() {
        assert_eq!(UserError::AlreadyRegistered.kind(), ErrorKind::Duplicate);
        assert_eq!(UserError::NotFound.kind(), ErrorKind::NotFound);
        assert_eq!(UserError::Deactivated.kind(), ErrorKind::InvalidTransition);
    }

    #[test]
    fn registering_claims_the_normalised_email() {
        let e = UserEvent::UserRegistered {
            user_id: id(),
            email: Email::parse("Alice@Example.com").unwrap(),
            name: name("Alice"),
        };
        assert_eq!(
            e.unique_claims(),
            vec![UniqueClaim {
                kind: ClaimKind::Email,
                value: "alice@example.com".into(),
                action: ClaimAction::Take
            }]
        );
        assert!(UserEvent::UserDeactivated.unique_claims().is_empty());
    }

    #[test]
    fn evolve_ignores_events_that_do_not_fit() {
        let s = User::evolve(UserState::NotRegistered, &UserEvent::UserDeactivated);
        assert_eq!(s, UserState::NotRegistered);
        let s = User::fold(&[registered(), registered()]);
        assert_eq!(s.user().unwrap().name, name("Alice"));
    }
}
