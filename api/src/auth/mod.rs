//! Who is calling, and whether they may.
//!
//! One middleware ([`authenticate`]) runs before every handler: it reads the
//! bearer token (an ordo token from [`tokens`], or a JWT from an OpenID
//! provider, [`jwt`]), finds what the operation requires (declared once, in
//! the operation's OpenAPI `security`, read by [`policy`]), refuses or lets
//! the request in with its [`Caller`] attached. Handlers then only confine a
//! customer to its own user and orders ([`Caller::confined_to`]).
//!
//! Refusals never say which check failed: the caller learns 401 or 403, the
//! log learns why (at `info`, never with the token). Public routes (`/health`,
//! `/ready`, the documents, the catalogue unless closed) do not read the
//! `Authorization` header at all.

pub mod jwt;
pub mod policy;
pub mod rate;
pub mod scope;
pub mod secret;
pub mod tokens;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use uuid::Uuid;

pub use policy::Policy;
pub use scope::{Requirement, Scope, Scopes};
pub use secret::TokenSecret;
pub use tokens::TokenStore;

use crate::error::ApiError;
use crate::AppState;

/// Who caused something: the `actor` of every event's metadata and envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An ordo token, by id: `token:<id>`.
    Token(Uuid),
    /// A JWT's issuer and subject: `jwt:<issuer>#<sub>`.
    Jwt {
        /// `iss`.
        issuer: String,
        /// `sub`.
        subject: String,
    },
    /// Nobody known: a public route, or authentication turned off
    /// (`ORDO_AUTH=off`): `anonymous`.
    Anonymous,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Token(id) => write!(f, "token:{id}"),
            Actor::Jwt { issuer, subject } => write!(f, "jwt:{issuer}#{subject}"),
            Actor::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// The caller of a request, as the middleware established it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub actor: Actor,
    /// What they hold.
    pub scopes: Scopes,
    /// The user a customer token is bound to.
    pub user: Option<Uuid>,
    /// Set when this request is allowed only through the `customer` scope:
    /// the one user it may see and act on.
    confined: Option<Uuid>,
}

impl Caller {
    /// A caller with every power and no identity: authentication is off.
    pub fn unchecked() -> Caller {
        Caller {
            actor: Actor::Anonymous,
            scopes: Scopes::NONE.with(Scope::Admin),
            user: None,
            confined: None,
        }
    }

    /// An anonymous caller of a public route.
    pub fn anonymous() -> Caller {
        Caller {
            actor: Actor::Anonymous,
            scopes: Scopes::NONE,
            user: None,
            confined: None,
        }
    }

    /// The user this request is confined to, when it is let in only as that
    /// user's customer: it may see and act on that user and its orders
    /// only, and anything else is answered as if it did not exist.
    pub fn confined_to(&self) -> Option<Uuid> {
        self.confined
    }

    /// `Ok` when the request may see something belonging to `owner`
    /// (`None`: nobody, or it does not exist); otherwise `hidden`, which
    /// must be the very answer a missing thing gets.
    pub fn may_see(
        &self,
        owner: Option<Uuid>,
        hidden: impl FnOnce() -> ApiError,
    ) -> Result<(), ApiError> {
        match self.confined {
            Some(user) if owner != Some(user) => Err(hidden()),
            _ => Ok(()),
        }
    }

    /// `Ok` when the request may act for `user` (a body naming a user): a
    /// customer naming another user is refused with 403.
    pub fn may_act_for(&self, user: Uuid) -> Result<(), ApiError> {
        match self.confined {
            Some(own) if own != user => Err(ApiError::Forbidden(
                "a customer token acts for its own user only".into(),
            )),
            _ => Ok(()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::Internal("a handler ran outside the authentication middleware".into())
        })
    }
}

/// Why a presented credential was refused; logged, never shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not `Bearer <token>`.
    #[error("the Authorization header is not `Bearer <token>`")]
    Malformed,
    /// An ordo token with no such id, or whose secret does not match.
    #[error("unknown token")]
    Unknown,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// Revoked.
    #[error("token revoked")]
    Revoked,
    /// A JWT failing a check.
    #[error("JWT refused: {0}")]
    Jwt(String),
    /// A JWT while no provider is configured.
    #[error("a JWT was presented but no provider is configured (ORDO_JWT_ISSUER)")]
    NoProvider,
}

/// What checks callers: off, or tokens and (optionally) JWTs.
#[derive(Debug, Clone)]
pub struct Auth {
    inner: Option<Arc<Checks>>,
    /// Every operation's requirement.
    pub policy: Arc<Policy>,
}

#[derive(Debug)]
struct Checks {
    tokens: TokenStore,
    jwt: Option<jwt::JwtVerifier>,
}

impl Auth {
    /// No checks at all: every request is let in as [`Caller::unchecked`].
    pub fn off() -> Auth {
        Auth {
            inner: None,
            policy: Arc::new(Policy::from_document(&crate::openapi(), true)),
        }
    }

    /// Checks by ordo tokens (and JWTs when `jwt` is given); the catalogue
    /// is public unless `public_catalogue` is false.
    pub fn on(tokens: TokenStore, jwt: Option<jwt::JwtVerifier>, public_catalogue: bool) -> Auth {
        Auth {
            inner: Some(Arc::new(Checks { tokens, jwt })),
            policy: Arc::new(Policy::from_document(&crate::openapi(), public_catalogue)),
        }
    }

    /// Whether callers are checked.
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// The token store, when checks are on.
    pub fn tokens(&self) -> Option<&TokenStore> {
        self.inner.as_ref().map(|checks| &checks.tokens)
    }

    /// Who presents `credential`, or why not.
    pub async fn identify(&self, credential: &str) -> Result<Result<Caller, Refusal>, ApiError> {
        let Some(checks) = &self.inner else {
            return Ok(Ok(Caller::unchecked()));
        };
        if let Some(secret) = TokenSecret::parse(credential) {
            return Ok(checks.tokens.verify(&secret).await?.map(|token| Caller {
                actor: Actor::Token(token.id),
                scopes: token.scopes,
                user: token.user_id,
                confined: None,
            }));
        }
        if credential.starts_with(secret::PREFIX) {
            return Ok(Err(Refusal::Malformed));
        }
        match &checks.jwt {
            Some(verifier) if credential.split('.').count() == 3 => {
                Ok(verifier.verify(credential).await)
            }
            Some(_) => Ok(Err(Refusal::Malformed)),
            None if credential.split('.').count() == 3 => Ok(Err(Refusal::NoProvider)),
            None => Ok(Err(Refusal::Malformed)),
        }
    }
}

/// The bearer credential of a request: `None` when there is no
/// `Authorization` header, `Some(Err)` when it is not a bearer token.
fn bearer(headers: &HeaderMap) -> Option<Result<&str, Refusal>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let Ok(text) = value.to_str() else {
        return Some(Err(Refusal::Malformed));
    };
    let Some((scheme, credential)) = text.trim().split_once(' ') else {
        return Some(Err(Refusal::Malformed));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Some(Err(Refusal::Malformed));
    }
    let credential = credential.trim();
    if credential.is_empty() || credential.len() > 8192 {
        return Some(Err(Refusal::Malformed));
    }
    Some(Ok(credential))
}

/// The middleware: establishes the [`Caller`], holds it to its rate, and
/// refuses what the operation's requirement does not allow.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let address = state.rate.client_address(peer, request.headers());
    let by_address = || match address {
        Some(address) => rate::RateKey::Address(address),
        None => rate::RateKey::Address(std::net::Ipv4Addr::UNSPECIFIED.into()),
    };
    let auth = &state.auth;
    if !auth.is_on() {
        state.rate.check(&by_address())?;
        request.extensions_mut().insert(Caller::unchecked());
        return Ok(next.run(request).await);
    }
    let requirement = match request.extensions().get::<MatchedPath>() {
        Some(path) => auth.policy.requirement(request.method(), path.as_str()),
        // Not a route: the fallback answers 404 to anyone.
        None => Requirement::Public,
    };
    let caller = match bearer(request.headers()) {
        // Public routes do not read credentials at all: their answer is the
        // same for everyone, and a probe of /ready must not depend on the
        // token store.
        _ if requirement == Requirement::Public => Caller::anonymous(),
        None => {
            state.rate.check(&by_address())?;
            tracing::info!(path = %request.uri().path(), "refused: no bearer token");
            return Err(ApiError::Unauthorized { token_given: false });
        }
        Some(credential) => {
            let identified = match credential {
                Ok(credential) => auth.identify(credential).await?,
                Err(refusal) => Err(refusal),
            };
            match identified {
                Ok(caller) => caller,
                Err(refusal) => {
                    state.rate.check(&by_address())?;
                    tracing::info!(path = %request.uri().path(), reason = %refusal, "refused: bad credential");
                    return Err(ApiError::Unauthorized { token_given: true });
                }
            }
        }
    };
    match &caller.actor {
        Actor::Anonymous => state.rate.check(&by_address())?,
        actor => state.rate.check(&rate::RateKey::Actor(actor.to_string()))?,
    }
    let caller = admit(&requirement, caller).inspect_err(|_| {
        tracing::info!(path = %request.uri().path(), "refused: scope missing");
    })?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// Lets `caller` through `requirement`, confining a customer to its user.
fn admit(requirement: &Requirement, mut caller: Caller) -> Result<Caller, ApiError> {
    let forbidden =
        || ApiError::Forbidden("this token's scopes do not allow this operation".into());
    if !requirement.allows(caller.scopes) {
        return Err(forbidden());
    }
    if let Requirement::AnyOf(any) = requirement {
        let as_staff = caller.scopes.contains(Scope::Admin)
            || any
                .iter()
                .any(|s| *s != Scope::Customer && caller.scopes.contains(*s));
        if !as_staff {
            // In only as a customer: then bound to its user, or not at all.
            caller.confined = Some(caller.user.ok_or_else(forbidden)?);
        }
    }
    Ok(caller)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn caller(scopes: &[Scope], user: Option<Uuid>) -> Caller {
        Caller {
            actor: Actor::Token(Uuid::nil()),
            scopes: scopes.iter().copied().collect(),
            user,
            confined: None,
        }
    }

    #[test]
    fn actors_are_written_as_the_envelope_carries_them() {
        let id = Uuid::nil();
        assert_eq!(Actor::Token(id).to_string(), format!("token:{id}"));
        let jwt = Actor::Jwt {
            issuer: "https://id.example".into(),
            subject: "42".into(),
        };
        assert_eq!(jwt.to_string(), "jwt:https://id.example#42");
    }

    #[test]
    fn a_customer_is_confined_to_its_user_and_staff_are_not() {
        let user = Uuid::now_v7();
        let need = Requirement::AnyOf(vec![Scope::OrdersRead, Scope::Customer]);
        let admitted = admit(&need, caller(&[Scope::Customer], Some(user))).unwrap();
        assert_eq!(admitted.confined_to(), Some(user));
        assert!(admitted
            .may_see(Some(user), || ApiError::NotFound("x".into()))
            .is_ok());
        assert_eq!(
            admitted
                .may_see(Some(Uuid::now_v7()), || ApiError::NotFound("x".into()))
                .unwrap_err()
                .status(),
            404
        );
        assert_eq!(
            admitted.may_act_for(Uuid::now_v7()).unwrap_err().status(),
            403
        );
        let staff = admit(
            &need,
            caller(&[Scope::OrdersRead, Scope::Customer], Some(user)),
        )
        .unwrap();
        assert_eq!(staff.confined_to(), None);
        assert!(admit(&need, caller(&[Scope::Admin], None))
            .unwrap()
            .confined_to()
            .is_none());
    }

    #[test]
    fn a_customer_without_a_user_or_a_scope_gets_nothing() {
        let need = Requirement::AnyOf(vec![Scope::OrdersRead, Scope::Customer]);
        assert_eq!(
            admit(&need, caller(&[Scope::Customer], None))
                .unwrap_err()
                .status(),
            403
        );
        assert_eq!(
            admit(&need, caller(&[Scope::OrdersFulfil], None))
                .unwrap_err()
                .status(),
            403
        );
    }

    #[test]
    fn only_bearer_credentials_are_read() {
        let mut headers = HeaderMap::new();
        assert!(bearer(&headers).is_none());
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some(Ok("abc")));
        headers.insert(header::AUTHORIZATION, "bearer   abc ".parse().unwrap());
        assert_eq!(bearer(&headers), Some(Ok("abc")));
        headers.insert(header::AUTHORIZATION, "Basic YTpi".parse().unwrap());
        assert_eq!(bearer(&headers), Some(Err(Refusal::Malformed)));
        headers.insert(header::AUTHORIZATION, "Bearer".parse().unwrap());
        assert_eq!(bearer(&headers), Some(Err(Refusal::Malformed)));
        headers.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&headers), Some(Err(Refusal::Malformed)));
    }
}
