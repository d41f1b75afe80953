//! What can stop the saga runner or fail a saga query.

use eventstore::nats::BusError;
use eventstore::StoreError;

/// Why a saga operation failed.
///
/// `SagaRunner::run` retries transient trouble (PostgreSQL or NATS away) by
/// itself; it only returns the errors that retrying cannot fix.
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    /// PostgreSQL failed or is unreachable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// NATS or JetStream failed, or the stream is not ordo's.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A saga's stored state cannot be read by this build.
    #[error("the saga state of order {order_id} cannot be read: {reason}")]
    CorruptState {
        /// The order.
        order_id: uuid::Uuid,
        /// What failed.
        reason: String,
    },
    /// The runner lost its leadership lock (its PostgreSQL session ended).
    #[error("lost the saga coordinator lock")]
    LostLock,
    /// A test's failure hook ended the run (see `hooks`).
    #[error("the runner was stopped by an injected failure")]
    Injected,
}

impl SagaError {
    /// True when PostgreSQL or NATS is away and asking again later may work
    /// (the API answers these 503 with `Retry-After`).
    pub fn is_unavailable(&self) -> bool {
        match self {
            SagaError::Store(e) => e.is_unavailable(),
            SagaError::Bus(BusError::Unreachable { .. }) => true,
            _ => false,
        }
    }
}

impl From<tokio_postgres::Error> for SagaError {
    fn from(e: tokio_postgres::Error) -> Self {
        SagaError::Store(StoreError::Database(e))
    }
}

impl From<deadpool_postgres::PoolError> for SagaError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        SagaError::Store(StoreError::from(e))
    }
}

impl From<serde_json::Error> for SagaError {
    fn from(e: serde_json::Error) -> Self {
        SagaError::Store(StoreError::Json(e))
    }
}
