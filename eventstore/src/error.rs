//! The event store's error type.

use std::error::Error as _;

/// Everything that can go wrong talking to the event store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL did not answer at all; the message says how to fix it.
    #[error("cannot reach PostgreSQL at {url}: {reason}; set DATABASE_URL or run scripts/up")]
    Unreachable {
        /// The URL with any password removed.
        url: String,
        /// Why, in a few words ("connection refused").
        reason: String,
    },
    /// TLS to PostgreSQL could not be set up: the `sslrootcert` file cannot
    /// be read, the server offers no TLS, or its certificate failed
    /// verification.
    #[error("TLS to PostgreSQL at {url} failed (sslmode={sslmode}): {reason}")]
    Tls {
        /// The URL with any password removed.
        url: String,
        /// The `sslmode` in effect.
        sslmode: String,
        /// What failed, in a few words.
        reason: String,
    },
    /// The server has no `pg_hba.conf` rule for a connection without TLS
    /// (usually: it accepts only TLS), and the URL asked for none.
    #[error(
        "PostgreSQL at {url} refused a connection without TLS ({message}); if it requires TLS, add sslmode=require (or sslmode=verify-full with sslrootcert=<CA file>) to DATABASE_URL"
    )]
    TlsRequired {
        /// The URL with any password removed.
        url: String,
        /// The server's message.
        message: String,
    },
    /// `DATABASE_URL` could not be understood.
    #[error("invalid DATABASE_URL {url}: {reason}")]
    InvalidUrl {
        /// The URL with any password removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another writer appended to the stream first.
    #[error("stream {stream_id} was changed concurrently (expected {expected})")]
    Conflict {
        /// The stream that moved.
        stream_id: String,
        /// What the writer expected to find.
        expected: String,
    },
    /// A unique value (email, SKU) is already claimed by another stream.
    #[error("{kind} {value:?} is already taken")]
    Duplicate {
        /// What kind of value (`email`, `sku`).
        kind: String,
        /// The value itself, normalised.
        value: String,
    },
    /// A stored event could not be turned back into a domain event.
    #[error("event {event_id} ({event_type} v{schema_version}) cannot be decoded: {reason}")]
    Decode {
        /// The offending event.
        event_id: uuid::Uuid,
        /// Its type.
        event_type: String,
        /// Its stored schema version.
        schema_version: i32,
        /// What failed.
        reason: String,
    },
    /// A migration could not be applied, or the applied ones do not match the code.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Anything PostgreSQL reported.
    #[error("database error: {}", describe_pg(.0))]
    Database(#[from] tokio_postgres::Error),
    /// No pooled connection could be had.
    #[error("no database connection available: {0}")]
    Pool(String),
    /// The command id was executed concurrently by another caller; this is
    /// its result. [`crate::EventStore::append`] turns it into a replayed
    /// success, so callers only see it from lower-level functions.
    #[error("command already executed")]
    AlreadyExecuted(Box<crate::store::Appended>),
    /// A command id already executed against another stream: the caller
    /// reused an idempotency key for a different request.
    #[error("command id {command_id} was already used for {stream_id}")]
    CommandIdReused {
        /// The command id.
        command_id: String,
        /// The stream it was executed on.
        stream_id: String,
    },
    /// Something that should not happen did; the message says what.
    #[error("internal error: {0}")]
    Internal(String),
    /// (De)serialising JSON failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl StoreError {
    /// True when retrying later may succeed: PostgreSQL unreachable, restarting,
    /// or the pool exhausted. The API answers these with 503 and `Retry-After`.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unreachable { .. } | StoreError::Pool(_) => true,
            StoreError::Database(e) => is_connection_error(e),
            _ => false,
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => StoreError::Database(e),
            other => StoreError::Pool(other.to_string()),
        }
    }
}

/// True for errors that mean the connection or server is gone, not that the
/// statement was wrong.
pub fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // admin_shutdown, crash_shutdown, cannot_connect_now, connection_exception family
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || c == "57P01" || c == "57P02" || c == "57P03"
        }
        None => e
            .source()
            .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some()),
    }
}

/// A one-line description of a PostgreSQL error: the server's message when
/// there is one, otherwise the innermost cause.
pub fn describe_pg(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_owned();
    }
    if let Some(tls) = crate::tls::rustls_error(e) {
        return format!("TLS: {tls}");
    }
    if let Some(io) = e.source().and_then(|s| s.downcast_ref::<std::io::Error>()) {
        return io_reason(io);
    }
    e.to_string()
}

/// "connection refused" rather than "Connection refused (os error 111)".
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::Other => e.to_string(),
        kind => kind.to_string(),
    }
}
