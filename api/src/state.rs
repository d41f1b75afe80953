//! State shared by every handler.

use std::time::Duration;

use eventstore::executor::Executor;
use eventstore::EventStore;
use metrics_exporter_prometheus::PrometheusHandle;

/// Handles to PostgreSQL, NATS and metrics; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Connections for reads: read models, the log, idempotency records.
    pub pool: deadpool_postgres::Pool,
    /// The NATS connection, for readiness.
    pub nats: async_nats::Client,
    /// The event store on the connections of commands.
    pub store: EventStore,
    /// The event store on the connections for reads (`GET /events`,
    /// timelines), so that reading the log never waits behind commands.
    pub log: EventStore,
    /// Commands go through it.
    pub executor: Executor,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// How long `min_position` may wait.
    pub read_wait: Duration,
    /// Recent counts of long projection lags (`/projections`, `/metrics`).
    pub lag_cache: std::sync::Arc<projectors::status::LagCache>,
    /// Each read model's applied position, watched for `min_position`.
    pub applied: std::sync::Arc<crate::applied::Applied>,
    /// When new orders wait at the door (off unless [`AppState::with_admission`]).
    pub admission: std::sync::Arc<crate::admission::Admission>,
    /// Who may call what (off unless [`AppState::with_auth`]).
    pub auth: crate::auth::Auth,
    /// Requests per second per caller (off unless [`AppState::with_rate_limit`]).
    pub rate: crate::auth::rate::RateLimits,
}

impl AppState {
    /// State over a pool and a NATS connection (installs the metrics
    /// recorder on first use).
    pub fn new(pool: deadpool_postgres::Pool, nats: async_nats::Client) -> AppState {
        AppState::with_pools(pool.clone(), pool, nats)
    }

    /// State whose commands run on `commands` and whose reads on `reads`.
    ///
    /// The commands' pool is the API's admission control: on saturated
    /// CPUs a command waits for one of its few connections rather than
    /// adding to work the saga and projectors then fall behind on. Reads
    /// (an order's status, the log, projection lag) are cheap and must not
    /// queue behind that: they have their own connections.
    pub fn with_pools(
        commands: deadpool_postgres::Pool,
        reads: deadpool_postgres::Pool,
        nats: async_nats::Client,
    ) -> AppState {
        let store = EventStore::new(commands);
        let applied = std::sync::Arc::new(crate::applied::Applied::new(reads.clone()));
        AppState {
            executor: Executor::new(store.clone()),
            store,
            log: EventStore::new(reads.clone()),
            pool: reads,
            nats,
            metrics: crate::metrics::handle(),
            read_wait: Duration::from_secs(5),
            lag_cache: std::sync::Arc::default(),
            applied,
            admission: crate::admission::Admission::off(),
            auth: crate::auth::Auth::off(),
            rate: crate::auth::rate::RateLimits::off(),
        }
    }

    /// Orders are placed only while their user holds fewer than `cap`
    /// unpaid ones (`None`: no limit).
    pub fn with_unpaid_cap(mut self, cap: Option<u32>) -> AppState {
        self.executor = self.executor.with_unpaid_cap(cap);
        self
    }

    /// Callers are checked by `auth`.
    pub fn with_auth(mut self, auth: crate::auth::Auth) -> AppState {
        self.auth = auth;
        self
    }

    /// Callers are held to `rate`.
    pub fn with_rate_limit(mut self, rate: crate::auth::rate::RateLimits) -> AppState {
        self.rate = rate;
        self
    }

    /// New orders wait while the saga or a projection is more than `limit`
    /// events behind the log (0: never); see [`crate::admission`].
    pub fn with_admission(mut self, limit: u64) -> AppState {
        self.admission = crate::admission::Admission::spawn(self.pool.clone(), limit);
        self
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}
