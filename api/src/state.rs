//! State shared by every handler.

use std::time::Duration;

use eventstore::executor::Executor;
use eventstore::EventStore;
use metrics_exporter_prometheus::PrometheusHandle;

/// Handles to PostgreSQL, NATS and metrics; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Connections to the event store and read models.
    pub pool: deadpool_postgres::Pool,
    /// The NATS connection, for readiness.
    pub nats: async_nats::Client,
    /// The event store.
    pub store: EventStore,
    /// Commands go through it.
    pub executor: Executor,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// How long `min_position` may wait.
    pub read_wait: Duration,
    /// Recent counts of long projection lags (`/projections`, `/metrics`).
    pub lag_cache: std::sync::Arc<projectors::status::LagCache>,
}

impl AppState {
    /// State over a pool and a NATS connection (installs the metrics
    /// recorder on first use).
    pub fn new(pool: deadpool_postgres::Pool, nats: async_nats::Client) -> AppState {
        let store = EventStore::new(pool.clone());
        AppState {
            executor: Executor::new(store.clone()),
            store,
            pool,
            nats,
            metrics: crate::metrics::handle(),
            read_wait: Duration::from_secs(5),
            lag_cache: std::sync::Arc::default(),
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}
