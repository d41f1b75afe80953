//! Scopes: what a caller may do, and what each operation requires.
//!
//! Every operation of the API declares in its OpenAPI `security` the scopes
//! that let a caller in, as alternatives (any one suffices); `admin` lets a
//! caller into everything. A `customer` is also confined to its own user and
//! orders, which the handlers check (see [`super::Caller::owns`]).

use std::fmt;
use std::str::FromStr;

/// One permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// A token bound to one user: that user and its orders only.
    Customer,
    /// Read any user, list by email.
    UsersRead,
    /// Register, rename, deactivate any user.
    UsersWrite,
    /// Erase a user's personal data.
    UsersErase,
    /// Create, restock, change price, discontinue products.
    ProductsWrite,
    /// Read any order, its timeline, `as_of`.
    OrdersRead,
    /// Place, pay, cancel any order on a user's behalf.
    OrdersWrite,
    /// Ship and deliver.
    OrdersFulfil,
    /// The event log: `/events`, `/streams/{id}/events`.
    EventsRead,
    /// `/sagas/{id}`.
    SagasRead,
    /// Operator actions on a saga.
    SagasWrite,
    /// `/projections`, `/metrics`, rebuilds, the console's operations pages.
    Ops,
    /// Everything, tokens included.
    Admin,
}

impl Scope {
    /// Every scope, in the order documentation lists them.
    pub const ALL: [Scope; 13] = [
        Scope::Customer,
        Scope::UsersRead,
        Scope::UsersWrite,
        Scope::UsersErase,
        Scope::ProductsWrite,
        Scope::OrdersRead,
        Scope::OrdersWrite,
        Scope::OrdersFulfil,
        Scope::EventsRead,
        Scope::SagasRead,
        Scope::SagasWrite,
        Scope::Ops,
        Scope::Admin,
    ];

    /// The scope as written in tokens, JWT `scope` claims and the OpenAPI
    /// document.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Customer => "customer",
            Scope::UsersRead => "users:read",
            Scope::UsersWrite => "users:write",
            Scope::UsersErase => "users:erase",
            Scope::ProductsWrite => "products:write",
            Scope::OrdersRead => "orders:read",
            Scope::OrdersWrite => "orders:write",
            Scope::OrdersFulfil => "orders:fulfil",
            Scope::EventsRead => "events:read",
            Scope::SagasRead => "sagas:read",
            Scope::SagasWrite => "sagas:write",
            Scope::Ops => "ops",
            Scope::Admin => "admin",
        }
    }

    /// What the scope allows, in a sentence (for `--help`, the OpenAPI
    /// document and the README).
    pub const fn describe(self) -> &'static str {
        match self {
            Scope::Customer => "one user only (the token's): read, rename itself; place orders for itself; read, pay and cancel its own orders",
            Scope::UsersRead => "read any user, find users by email",
            Scope::UsersWrite => "register, rename and deactivate users",
            Scope::UsersErase => "erase a user's personal data",
            Scope::ProductsWrite => "create, restock, reprice and discontinue products",
            Scope::OrdersRead => "read any order, its timeline and past states",
            Scope::OrdersWrite => "place, pay and cancel orders on a user's behalf",
            Scope::OrdersFulfil => "ship and deliver orders",
            Scope::EventsRead => "read the event log",
            Scope::SagasRead => "read sagas",
            Scope::SagasWrite => "act on sagas",
            Scope::Ops => "projections, metrics, rebuilds, the console's operations pages",
            Scope::Admin => "everything, tokens included",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that names no scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?}; scopes are {list}", list = Scope::ALL.map(Scope::as_str).join(", "))]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| UnknownScope(s.to_owned()))
    }
}

/// The scopes a caller holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u16);

impl Scopes {
    /// No scope at all.
    pub const NONE: Scopes = Scopes(0);

    fn bit(scope: Scope) -> u16 {
        1 << (scope as u16)
    }

    /// Holds `scope`.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & Scopes::bit(scope) != 0
    }

    /// With `scope` added.
    pub fn with(self, scope: Scope) -> Scopes {
        Scopes(self.0 | Scopes::bit(scope))
    }

    /// Every scope held, in [`Scope::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// Nothing held.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Scopes from words, refusing unknown ones (tokens being created).
    pub fn parse<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<Scopes, UnknownScope> {
        words
            .into_iter()
            .try_fold(Scopes::NONE, |scopes, word| Ok(scopes.with(word.parse()?)))
    }

    /// Scopes from words, passing over those ordo does not know (a JWT's
    /// `scope` claim also names other services' scopes).
    pub fn known<'a>(words: impl IntoIterator<Item = &'a str>) -> Scopes {
        words
            .into_iter()
            .filter_map(|word| word.parse().ok())
            .fold(Scopes::NONE, Scopes::with)
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(Scopes::NONE, Scopes::with)
    }
}

/// What an operation requires of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// Anyone, with or without a token (a token given is still checked, so
    /// that a bad one is told so).
    Public,
    /// Any valid token, whatever its scopes.
    Authenticated,
    /// A valid token holding at least one of these (or `admin`).
    AnyOf(Vec<Scope>),
}

impl Requirement {
    /// Whether a caller holding `scopes` may go in.
    pub fn allows(&self, scopes: Scopes) -> bool {
        match self {
            Requirement::Public | Requirement::Authenticated => true,
            Requirement::AnyOf(any) => {
                scopes.contains(Scope::Admin) || any.iter().any(|s| scopes.contains(*s))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_scope_reads_back_from_its_word() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), scope);
        }
        let err = "orders:delete".parse::<Scope>().unwrap_err();
        assert!(err.to_string().contains("orders:read"), "{err}");
    }

    #[test]
    fn sets_hold_what_was_added() {
        let scopes = Scopes::parse(["orders:read", "ops"]).unwrap();
        assert!(scopes.contains(Scope::OrdersRead));
        assert!(scopes.contains(Scope::Ops));
        assert!(!scopes.contains(Scope::Admin));
        assert_eq!(
            scopes.iter().collect::<Vec<_>>(),
            [Scope::OrdersRead, Scope::Ops]
        );
        assert!(Scopes::parse(["ops", "root"]).is_err());
        assert_eq!(
            Scopes::known(["ops", "openid", "profile"]),
            Scopes::NONE.with(Scope::Ops)
        );
    }

    #[test]
    fn admin_passes_every_requirement_and_others_only_theirs() {
        let need = Requirement::AnyOf(vec![Scope::OrdersWrite, Scope::Customer]);
        assert!(need.allows(Scopes::NONE.with(Scope::Admin)));
        assert!(need.allows(Scopes::NONE.with(Scope::Customer)));
        assert!(!need.allows(Scopes::NONE.with(Scope::OrdersRead)));
        assert!(!need.allows(Scopes::NONE));
        assert!(Requirement::Authenticated.allows(Scopes::NONE));
    }
}
