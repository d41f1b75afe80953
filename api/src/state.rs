//! State shared by every handler.

/// Handles to PostgreSQL and NATS; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Connections to the event store and read models.
    pub pool: deadpool_postgres::Pool,
    /// The NATS connection, for readiness.
    pub nats: async_nats::Client,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}
