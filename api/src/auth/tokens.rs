//! ordo tokens in PostgreSQL (`api.tokens`, schemas/sql/0008_tokens.sql):
//! created, listed, revoked, and verified on every request.
//!
//! Verification is cached in each process. A change to any token (a
//! revocation) fires a `NOTIFY` from a trigger, whatever made it (the CLI,
//! `DELETE /tokens/{id}` on another process, SQL by hand); every process
//! `LISTEN`s and drops its whole cache on it, so a revocation holds
//! everywhere as fast as the notification travels. While a process is not
//! listening (its connection lost), it trusts no cached entry and asks the
//! database each time; entries also expire after [`CACHE_TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use eventstore::notify::Listener;
use eventstore::{DatabaseUrl, StoreError};
use serde::Serialize;
use uuid::Uuid;

use super::scope::{Scope, Scopes};
use super::secret::TokenSecret;
use super::Refusal;

/// The channel token changes are announced on.
pub const CHANNEL: &str = "ordo_tokens";

/// How long a verified token is trusted without asking again.
const CACHE_TTL: Duration = Duration::from_secs(60);

/// At most this many tokens are cached; past it the cache starts over.
const CACHE_LIMIT: usize = 100_000;

/// A token as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Token {
    /// Its id: `actor` `token:<id>` in the events it causes.
    pub id: Uuid,
    /// A label for people.
    pub name: String,
    /// What it may do.
    #[serde(serialize_with = "scope_words")]
    #[schema(value_type = Vec<String>, example = json!(["orders:read"]))]
    pub scopes: Scopes,
    /// The user a `customer` token is bound to (absent for staff tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub user_id: Option<Uuid>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Who made it: an actor (`token:<id>`, `system`).
    pub created_by: String,
}

fn scope_words<S: serde::Serializer>(scopes: &Scopes, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(scopes.iter().map(Scope::as_str))
}

impl Token {
    /// The scopes as words.
    pub fn scope_words(&self) -> Vec<&'static str> {
        self.scopes.iter().map(Scope::as_str).collect()
    }
}

/// What a new token is to be.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// A label for people.
    pub name: String,
    /// What it may do.
    pub scopes: Scopes,
    /// The user of a `customer` token.
    pub user_id: Option<Uuid>,
    /// How long it lives; `None`: until revoked.
    pub expires_in: Option<Duration>,
    /// Who makes it.
    pub created_by: String,
}

/// Why a token cannot be made as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRuleError {
    /// No scope.
    #[error("a token needs at least one scope")]
    NoScope,
    /// A customer token without its user.
    #[error("a customer token needs the user it acts for (--user / user_id)")]
    CustomerWithoutUser,
    /// A user on a staff token.
    #[error("only a customer token is bound to a user; give --scope customer alone with --user")]
    UserWithoutCustomer,
    /// Customer and other scopes together.
    #[error("a customer token holds the customer scope alone")]
    CustomerMixed,
    /// No such user.
    #[error("no user {0}")]
    UnknownUser(Uuid),
    /// A name too long or with control characters.
    #[error("a token's name is at most 200 characters, without control characters")]
    BadName,
    /// A lifetime of zero or absurdly long.
    #[error("a token's lifetime must be between 1 second and 100 years")]
    BadLifetime,
}

impl NewToken {
    /// Checks the rules a token obeys.
    pub fn check(&self) -> Result<(), TokenRuleError> {
        if self.scopes.is_empty() {
            return Err(TokenRuleError::NoScope);
        }
        let customer = self.scopes.contains(Scope::Customer);
        if customer && self.scopes != Scopes::NONE.with(Scope::Customer) {
            return Err(TokenRuleError::CustomerMixed);
        }
        match (customer, self.user_id) {
            (true, None) => return Err(TokenRuleError::CustomerWithoutUser),
            (false, Some(_)) => return Err(TokenRuleError::UserWithoutCustomer),
            _ => {}
        }
        if self.name.chars().count() > 200 || self.name.chars().any(char::is_control) {
            return Err(TokenRuleError::BadName);
        }
        if let Some(lifetime) = self.expires_in {
            if lifetime < Duration::from_secs(1)
                || lifetime > Duration::from_secs(100 * 366 * 86_400)
            {
                return Err(TokenRuleError::BadLifetime);
            }
        }
        Ok(())
    }
}

/// What creating a token can come to.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The token breaks a rule.
    #[error(transparent)]
    Rule(#[from] TokenRuleError),
    /// PostgreSQL trouble.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<tokio_postgres::Error> for CreateError {
    fn from(e: tokio_postgres::Error) -> Self {
        CreateError::Store(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for CreateError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        CreateError::Store(e.into())
    }
}

#[derive(Debug, Clone)]
struct Cached {
    token: Token,
    hash: Vec<u8>,
    at: Instant,
    generation: u64,
}

/// Tokens in the database, with a cache of verified ones.
#[derive(Debug, Clone)]
pub struct TokenStore {
    pool: deadpool_postgres::Pool,
    cache: Arc<Mutex<HashMap<Uuid, Cached>>>,
    /// Token changes; no cache without it.
    changes: Option<Listener>,
}

const COLUMNS: &str =
    "id, name, scopes, user_id, created_at, expires_at, revoked_at, created_by, secret_hash";

fn token_from_row(row: &tokio_postgres::Row) -> Result<(Token, Vec<u8>), StoreError> {
    let words: Vec<String> = row.try_get(2)?;
    Ok((
        Token {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            // A scope this build does not know (written by a newer one)
            // grants nothing here.
            scopes: Scopes::known(words.iter().map(String::as_str)),
            user_id: row.try_get(3)?,
            created_at: row.try_get(4)?,
            expires_at: row.try_get(5)?,
            revoked_at: row.try_get(6)?,
            created_by: row.try_get(7)?,
        },
        row.try_get(8)?,
    ))
}

impl TokenStore {
    /// Tokens on `pool`, asked for on every verification.
    pub fn new(pool: deadpool_postgres::Pool) -> TokenStore {
        TokenStore {
            pool,
            cache: Arc::default(),
            changes: None,
        }
    }

    /// Tokens on `pool`, verified tokens cached while `url`'s listener
    /// hears of every change.
    pub fn cached(pool: deadpool_postgres::Pool, url: DatabaseUrl) -> TokenStore {
        TokenStore {
            pool,
            cache: Arc::default(),
            changes: Some(Listener::spawn_on(url, CHANNEL)),
        }
    }

    /// Makes a token; its secret is returned once and never stored.
    pub async fn create(&self, new: &NewToken) -> Result<(Token, TokenSecret), CreateError> {
        let secret = TokenSecret::generate();
        let token = self.create_with(&secret, new).await?;
        Ok((token, secret))
    }

    /// Makes a token with a secret chosen elsewhere.
    pub async fn create_with(
        &self,
        secret: &TokenSecret,
        new: &NewToken,
    ) -> Result<Token, CreateError> {
        new.check()?;
        let client = self.pool.get().await?;
        if let Some(user) = new.user_id {
            let stream = format!("user-{user}");
            let found = client
                .query_opt(
                    "select 1 from events where stream_id = $1 and version = 1",
                    &[&stream],
                )
                .await?;
            if found.is_none() {
                return Err(TokenRuleError::UnknownUser(user).into());
            }
        }
        let scopes: Vec<&str> = new.scopes.iter().map(Scope::as_str).collect();
        let lifetime = new.expires_in.map(|d| d.as_secs_f64());
        let row = client
            .query_one(
                &format!(
                    "insert into api.tokens (id, name, secret_hash, scopes, user_id, expires_at, created_by)
                     values ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), $7)
                     returning {COLUMNS}"
                ),
                &[&secret.id, &new.name, &secret.hash(), &scopes, &new.user_id, &lifetime, &new.created_by],
            )
            .await?;
        Ok(token_from_row(&row)?.0)
    }

    /// Every token, newest first.
    pub async fn list(&self) -> Result<Vec<Token>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!("select {COLUMNS} from api.tokens order by created_at desc, id desc"),
                &[],
            )
            .await?;
        rows.iter().map(|row| Ok(token_from_row(row)?.0)).collect()
    }

    /// One token.
    pub async fn get(&self, id: Uuid) -> Result<Option<Token>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("select {COLUMNS} from api.tokens where id = $1"),
                &[&id],
            )
            .await?;
        row.map(|row| Ok(token_from_row(&row)?.0)).transpose()
    }

    /// Revokes a token (again: nothing changes); `None` when there is none.
    /// Every process hears of it through the table's trigger.
    pub async fn revoke(&self, id: Uuid) -> Result<Option<Token>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!(
                    "update api.tokens set revoked_at = coalesce(revoked_at, now()) where id = $1
                     returning {COLUMNS}"
                ),
                &[&id],
            )
            .await?;
        self.forget(id);
        row.map(|row| Ok(token_from_row(&row)?.0)).transpose()
    }

    /// Whether a working admin token exists.
    pub async fn admin_exists(&self) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "select exists (select 1 from api.tokens where 'admin' = any(scopes)
                   and revoked_at is null and (expires_at is null or expires_at > now()))",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Creates an admin token with `secret` unless a working admin token
    /// exists (`ORDO_BOOTSTRAP_TOKEN_FILE`); true when it did. Processes
    /// starting together take turns on an advisory lock.
    pub async fn bootstrap(&self, secret: &TokenSecret) -> Result<bool, CreateError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let key = eventstore::leadership::LockKey::new("bootstrap", "admin token").get();
        tx.execute("select pg_advisory_xact_lock($1)", &[&key])
            .await?;
        let exists: bool = tx
            .query_one(
                "select exists (select 1 from api.tokens where 'admin' = any(scopes)
                   and revoked_at is null and (expires_at is null or expires_at > now()))
                 or exists (select 1 from api.tokens where id = $1)",
                &[&secret.id],
            )
            .await?
            .get(0);
        if exists {
            return Ok(false);
        }
        tx.execute(
            "insert into api.tokens (id, name, secret_hash, scopes, created_by)
             values ($1, 'bootstrap admin', $2, array['admin'], 'system')",
            &[&secret.id, &secret.hash()],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The token `presented` is, if it is a working one.
    pub async fn verify(
        &self,
        presented: &TokenSecret,
    ) -> Result<Result<Token, Refusal>, StoreError> {
        let (token, hash) = match self.cached_entry(presented.id) {
            Some(entry) => entry,
            None => {
                let generation = self.generation();
                let client = self.pool.get().await?;
                let row = client
                    .query_opt(
                        &format!("select {COLUMNS} from api.tokens where id = $1"),
                        &[&presented.id],
                    )
                    .await?;
                let Some(row) = row else {
                    return Ok(Err(Refusal::Unknown));
                };
                let (token, hash) = token_from_row(&row)?;
                if let Some(generation) = generation {
                    self.remember(&token, &hash, generation);
                }
                (token, hash)
            }
        };
        if !presented.matches(&hash) {
            return Ok(Err(Refusal::Unknown));
        }
        if token.revoked_at.is_some() {
            return Ok(Err(Refusal::Revoked));
        }
        if token.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Ok(Err(Refusal::Expired));
        }
        Ok(Ok(token))
    }

    /// The listener's count of changes, when it is listening.
    fn generation(&self) -> Option<u64> {
        let changes = self.changes.as_ref()?;
        changes
            .is_listening()
            .then(|| *changes.subscribe().borrow())
    }

    fn cached_entry(&self, id: Uuid) -> Option<(Token, Vec<u8>)> {
        let generation = self.generation()?;
        let cache = self.cache.lock().ok()?;
        let entry = cache.get(&id)?;
        (entry.generation == generation && entry.at.elapsed() < CACHE_TTL)
            .then(|| (entry.token.clone(), entry.hash.clone()))
    }

    fn remember(&self, token: &Token, hash: &[u8], generation: u64) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(
                token.id,
                Cached {
                    token: token.clone(),
                    hash: hash.to_vec(),
                    at: Instant::now(),
                    generation,
                },
            );
        }
    }

    fn forget(&self, id: Uuid) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(scopes: &[Scope], user_id: Option<Uuid>) -> NewToken {
        NewToken {
            name: "t".into(),
            scopes: scopes.iter().copied().collect(),
            user_id,
            expires_in: None,
            created_by: "system".into(),
        }
    }

    #[test]
    fn tokens_obey_their_rules() {
        let user = Some(Uuid::now_v7());
        assert_eq!(new(&[], None).check(), Err(TokenRuleError::NoScope));
        assert_eq!(
            new(&[Scope::Customer], None).check(),
            Err(TokenRuleError::CustomerWithoutUser)
        );
        assert_eq!(
            new(&[Scope::Ops], user).check(),
            Err(TokenRuleError::UserWithoutCustomer)
        );
        assert_eq!(
            new(&[Scope::Customer, Scope::OrdersRead], user).check(),
            Err(TokenRuleError::CustomerMixed)
        );
        assert!(new(&[Scope::Customer], user).check().is_ok());
        assert!(new(&[Scope::OrdersRead, Scope::Ops], None).check().is_ok());
        let mut named = new(&[Scope::Ops], None);
        named.name = "a\u{7}b".into();
        assert_eq!(named.check(), Err(TokenRuleError::BadName));
        let mut short = new(&[Scope::Ops], None);
        short.expires_in = Some(Duration::ZERO);
        assert_eq!(short.check(), Err(TokenRuleError::BadLifetime));
    }
}
