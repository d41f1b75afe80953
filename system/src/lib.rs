//! ordo assembled: every role (HTTP API, relay, projectors, saga
//! coordinator) built from one [`Settings`], with the PostgreSQL pools each
//! role uses, their sizes and the names they show the server decided here,
//! once. `ordo up`, the single-role commands (`ordo api`, `ordo relay`,
//! `ordo projector`, `ordo saga`) and every test harness build their roles
//! through [`System`].
//!
//! - [`Settings`]: where the servers are, which stream, and the tunables.
//! - [`System`]: a NATS connection and the role factories.
//! - [`pools`]: each role's connections, by name and size.
//! - [`roles`]: roles running side by side in one process, stopped together.

pub mod pools;
pub mod roles;

use std::sync::OnceLock;
use std::time::Duration;

use async_nats::jetstream;
use eventstore::executor::Executor;
use eventstore::nats::{BusError, NatsConnect, StreamName, SubjectPrefix, Unprotected};
use eventstore::notify::LogListener;
use eventstore::relay::{Relay, RelayConfig};
use eventstore::{DatabaseUrl, EventStore, StoreError};
use projectors::{Projection, Projector, ProjectorConfig};
use sagas::{RunnerConfig, SagaRunner};

pub use roles::Roles;

/// Where a deployment's servers are, which stream it uses, and how it is
/// tuned: what every role of it is built from.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The event store and read models (`DATABASE_URL`).
    pub database_url: DatabaseUrl,
    /// The JetStream server and how to connect to it (`NATS_URL`,
    /// `NATS_USER`, `NATS_PASSWORD`, `NATS_CREDS`, `NATS_NKEY`,
    /// `NATS_TLS_*`, `NATS_INBOX_PREFIX`).
    pub nats: NatsConnect,
    /// The stream events are published to (`ORDO_STREAM`).
    pub stream: StreamName,
    /// First token of every subject (`ORDO_SUBJECT_PREFIX`).
    pub prefix: SubjectPrefix,
    /// Whether the relay and saga coordinator use an existing stream that
    /// allows message deletes or purges (`ORDO_ALLOW_UNPROTECTED_STREAM`).
    pub unprotected_stream: Unprotected,
    /// Confirmed orders unpaid this long are cancelled (`ORDO_PAYMENT_TIMEOUT`).
    pub payment_timeout: Duration,
    /// Connections of the API's commands, and as many again for its reads
    /// (`ORDO_API_CONNECTIONS`).
    pub api_connections: usize,
    /// New orders wait while a consumer lags more events than this; 0: never
    /// (`ORDO_ADMISSION_LAG`).
    pub admission_lag: u64,
    /// Who may call the API, and how often.
    pub auth: AuthSettings,
    /// Open HTTP connections at most (`ORDO_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Orders a user may hold placed and not yet paid, cancelled or rejected
    /// (`ORDO_MAX_UNPAID_ORDERS`). The command line defaults to 20;
    /// [`Settings::new`] leaves it unlimited, for tests that place many
    /// orders for one user.
    pub max_unpaid_orders: Option<u32>,
}

/// How the API checks its callers.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Tokens required (`ORDO_AUTH`, default on).
    pub enabled: bool,
    /// An admin token's secret to create at start when there is no admin
    /// token (`ORDO_BOOTSTRAP_TOKEN_FILE`).
    pub bootstrap_token_file: Option<std::path::PathBuf>,
    /// `GET /products` and `GET /products/{id}` without a token
    /// (`ORDO_PUBLIC_CATALOGUE`, default true).
    pub public_catalogue: bool,
    /// Requests a second per caller (`ORDO_RATE_LIMIT`). The command line
    /// defaults to `100/s`; [`Settings::new`] leaves it off, for tests that
    /// drive one process hard.
    pub rate_limit: api::auth::rate::RateSetting,
    /// Proxies whose `X-Forwarded-For` names the client (`ORDO_TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// JWTs of an OpenID provider, when configured (`ORDO_JWT_*`).
    pub jwt: Option<api::auth::jwt::JwtConfig>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            enabled: true,
            bootstrap_token_file: None,
            public_catalogue: true,
            rate_limit: api::auth::rate::RateSetting::Off,
            trusted_proxies: Vec::new(),
            jwt: None,
        }
    }
}

impl Settings {
    /// The settings of a deployment on these servers and stream, with the
    /// defaults of the command line for everything else. `nats` is a
    /// [`NatsConnect`], or a bare [`eventstore::nats::NatsUrl`] for an
    /// anonymous connection.
    pub fn new(
        database_url: DatabaseUrl,
        nats: impl Into<NatsConnect>,
        stream: StreamName,
        prefix: SubjectPrefix,
    ) -> Settings {
        Settings {
            database_url,
            nats: nats.into(),
            stream,
            prefix,
            unprotected_stream: Unprotected::Refuse,
            payment_timeout: Duration::from_secs(15 * 60),
            api_connections: 4,
            admission_lag: 300,
            auth: AuthSettings::default(),
            max_connections: 10_000,
            max_unpaid_orders: None,
        }
    }
}

/// What can stop a system from starting.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// PostgreSQL trouble.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// NATS trouble.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Authentication cannot be set up as configured.
    #[error("{0}")]
    Auth(String),
}

/// A deployment's roles, built on one NATS connection. Building a role
/// opens nothing yet: pools connect on first use.
#[derive(Debug)]
pub struct System {
    settings: Settings,
    nats: async_nats::Client,
    /// The projectors of one process share a pool.
    projector_pool: OnceLock<deadpool_postgres::Pool>,
    /// The relay's wake-up on appends, made when the first relay is.
    listener: OnceLock<LogListener>,
}

impl System {
    /// Checks that PostgreSQL answers (failing with the readable error when
    /// it does not) and connects to NATS as `client_name`.
    pub async fn connect(settings: Settings, client_name: &str) -> Result<System, SystemError> {
        let client = settings.database_url.connect().await?;
        eventstore::privileges::warn_if_superuser(&settings.database_url, &client).await?;
        drop(client);
        let nats = eventstore::nats::connect(&settings.nats, client_name).await?;
        Ok(System::with_nats(settings, nats))
    }

    /// A system on a NATS connection made elsewhere.
    pub fn with_nats(settings: Settings, nats: async_nats::Client) -> System {
        System {
            settings,
            nats,
            projector_pool: OnceLock::new(),
            listener: OnceLock::new(),
        }
    }

    /// What the system was built from.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The NATS connection every role shares.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// JetStream on that connection.
    pub fn jetstream(&self) -> jetstream::Context {
        jetstream::new(self.nats.clone())
    }

    /// The relay, on connections of its own: its reads then show apart from
    /// the projectors' writes, and never queue behind them.
    pub fn relay(&self) -> Result<Relay, StoreError> {
        self.relay_with(self.relay_config())
    }

    /// The default settings of the relay.
    pub fn relay_config(&self) -> RelayConfig {
        let mut config =
            RelayConfig::new(self.settings.stream.clone(), self.settings.prefix.clone());
        config.unprotected = self.settings.unprotected_stream;
        config
    }

    /// The relay with settings of the caller's.
    pub fn relay_with(&self, config: RelayConfig) -> Result<Relay, StoreError> {
        let database = &self.settings.database_url;
        let store = EventStore::new(pools::RELAY.pool(database)?);
        let listener = self
            .listener
            .get_or_init(|| LogListener::spawn(pools::LISTENER.url(database)))
            .clone();
        Ok(Relay::new(
            store,
            pools::RELAY.url(database),
            self.jetstream(),
            listener,
            config,
        ))
    }

    /// The default settings of a projector.
    pub fn projector_config(&self) -> ProjectorConfig {
        ProjectorConfig::new(self.settings.stream.clone(), self.settings.prefix.clone())
    }

    /// The projector of `projection`; the projectors of one system share
    /// their connections.
    pub fn projector(&self, projection: Projection) -> Result<Projector, StoreError> {
        self.projector_with(projection, self.projector_config())
    }

    /// The projector of `projection` with settings of the caller's.
    pub fn projector_with(
        &self,
        projection: Projection,
        config: ProjectorConfig,
    ) -> Result<Projector, StoreError> {
        let database = &self.settings.database_url;
        let pool = match self.projector_pool.get() {
            Some(pool) => pool.clone(),
            None => {
                let pool = pools::PROJECTOR.pool(database)?;
                self.projector_pool.get_or_init(|| pool).clone()
            }
        };
        Ok(Projector::new(
            projection,
            pool,
            pools::PROJECTOR.url(database),
            self.jetstream(),
            config,
        ))
    }

    /// The default settings of the saga coordinator.
    pub fn saga_config(&self) -> RunnerConfig {
        let mut config = RunnerConfig::new(
            self.settings.stream.clone(),
            self.settings.prefix.clone(),
            self.settings.payment_timeout,
        );
        config.unprotected = self.settings.unprotected_stream;
        config
    }

    /// The saga coordinator, on pools of its own: its commands run many at
    /// once and must not starve the API of connections, and its own
    /// transactions have a few more, so they never wait behind its commands.
    /// With `sharing`, its executor shares that one's cache of recent states
    /// (in one process with the API, the saga then loads the orders the API
    /// just placed from memory).
    pub fn saga(&self, sharing: Option<&Executor>) -> Result<SagaRunner, StoreError> {
        self.saga_with(self.saga_config(), sharing)
    }

    /// The saga coordinator with settings of the caller's.
    pub fn saga_with(
        &self,
        config: RunnerConfig,
        sharing: Option<&Executor>,
    ) -> Result<SagaRunner, StoreError> {
        let database = &self.settings.database_url;
        let store = EventStore::new(pools::SAGA_COMMANDS.pool(database)?);
        let executor = match sharing {
            Some(executor) => executor.sharing_cache(store),
            None => Executor::new(store),
        };
        Ok(SagaRunner::new(
            executor,
            pools::SAGA.pool(database)?,
            pools::SAGA.url(database),
            self.jetstream(),
            config,
        ))
    }

    /// The HTTP API's state: commands and reads on pools of their own, each
    /// of `api_connections`, admission by lag, authentication and rate
    /// limits as the settings say. Creates the bootstrap admin token when
    /// one is configured and no admin token exists; reads the JWT key set.
    pub async fn api(&self) -> Result<api::AppState, SystemError> {
        let (database, size) = (&self.settings.database_url, self.settings.api_connections);
        let reads = pools::API_READS.sized(size).pool(database)?;
        let state = api::AppState::with_pools(
            pools::API.sized(size).pool(database)?,
            reads.clone(),
            self.nats.clone(),
        );
        let state = match self.settings.admission_lag {
            0 => state,
            limit => state.with_admission(limit),
        }
        .with_unpaid_cap(self.settings.max_unpaid_orders);
        let auth = &self.settings.auth;
        let state = state.with_rate_limit(api::auth::rate::RateLimits::new(
            auth.rate_limit,
            auth.trusted_proxies.clone(),
        ));
        if !auth.enabled {
            tracing::warn!(
                "authentication is off (ORDO_AUTH=off): anyone who reaches the API may do anything"
            );
            return Ok(state);
        }
        let tokens = api::auth::TokenStore::cached(reads, pools::LISTENER.url(database));
        if let Some(file) = &auth.bootstrap_token_file {
            bootstrap(&tokens, file).await?;
        }
        if !tokens.admin_exists().await.unwrap_or(true) {
            tracing::warn!(
                "no admin token exists: every request but the public ones will be refused; \
                 make one with `ordo token create --scope admin`, or set ORDO_BOOTSTRAP_TOKEN_FILE"
            );
        }
        let jwt = match &auth.jwt {
            Some(config) => Some(
                api::auth::jwt::JwtVerifier::new(config.clone())
                    .await
                    .map_err(|e| SystemError::Auth(e.to_string()))?,
            ),
            None => None,
        };
        Ok(state.with_auth(api::auth::Auth::on(tokens, jwt, auth.public_catalogue)))
    }

    /// Starts the relay in `roles`.
    pub fn start_relay(&self, roles: &mut Roles) -> Result<(), StoreError> {
        let relay = self.relay()?;
        let shutdown = roles.shutdown();
        roles.spawn("relay", async move { Ok(relay.run(shutdown).await?) });
        Ok(())
    }

    /// Starts a projector for each of `projections` in `roles`.
    pub fn start_projectors(
        &self,
        roles: &mut Roles,
        projections: &[Projection],
    ) -> Result<(), StoreError> {
        for projection in projections {
            let projector = self.projector(*projection)?;
            let shutdown = roles.shutdown();
            roles.spawn(projection.role(), async move {
                Ok(projector.run(shutdown).await?)
            });
        }
        Ok(())
    }

    /// Starts the saga coordinator in `roles` (see [`System::saga`]).
    pub fn start_saga(
        &self,
        roles: &mut Roles,
        sharing: Option<&Executor>,
    ) -> Result<(), StoreError> {
        let runner = self.saga(sharing)?;
        let shutdown = roles.shutdown();
        roles.spawn("saga", async move { Ok(runner.run(shutdown).await?) });
        Ok(())
    }

    /// Starts the HTTP API on `listener` in `roles`, with `state`.
    pub fn start_api(
        &self,
        roles: &mut Roles,
        state: api::AppState,
        listener: tokio::net::TcpListener,
    ) {
        let shutdown = roles.shutdown();
        let limits = api::serve::ConnectionLimits {
            max_connections: self.settings.max_connections,
            ..api::serve::ConnectionLimits::default()
        };
        roles.spawn("api", async move {
            Ok(api::serve_with(listener, state, limits, shutdown).await?)
        });
    }

    /// Starts every role in `roles`, as `ordo up` runs them: the relay,
    /// every projector, the saga coordinator sharing the API's cache of
    /// recent states, and the API on `listener`.
    pub async fn start_all(
        &self,
        roles: &mut Roles,
        listener: tokio::net::TcpListener,
    ) -> Result<api::AppState, SystemError> {
        let state = self.api().await?;
        self.start_relay(roles)?;
        self.start_projectors(roles, &Projection::ALL)?;
        self.start_saga(roles, Some(&state.executor))?;
        self.start_api(roles, state.clone(), listener);
        Ok(state)
    }
}

/// Creates the admin token whose secret `file` holds, unless an admin token
/// exists already.
async fn bootstrap(
    tokens: &api::auth::TokenStore,
    file: &std::path::Path,
) -> Result<(), SystemError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        SystemError::Auth(format!("ORDO_BOOTSTRAP_TOKEN_FILE {}: {e}", file.display()))
    })?;
    let secret = api::auth::TokenSecret::from_operator(&text).map_err(|e| {
        SystemError::Auth(format!("ORDO_BOOTSTRAP_TOKEN_FILE {}: {e}", file.display()))
    })?;
    match tokens.bootstrap(&secret).await {
        Ok(true) => tracing::info!(id = %secret.id, "bootstrap admin token created"),
        Ok(false) => tracing::debug!("an admin token exists; bootstrap token not created"),
        Err(api::auth::tokens::CreateError::Store(e)) => return Err(e.into()),
        Err(api::auth::tokens::CreateError::Rule(e)) => {
            return Err(SystemError::Auth(e.to_string()))
        }
    }
    Ok(())
}
