//! ordo's HTTP API.
//!
//! - [`state`]: what every handler shares (pools, connections, settings).
//! - [`health`]: `/health` and `/ready`.
//!
//! [`app`] builds the whole router, so tests can drive it without a socket;
//! [`serve`] runs it on a listener until shutdown, draining requests in flight.

pub mod health;
pub mod state;

use axum::Router;
use tokio_util::sync::CancellationToken;

pub use state::AppState;

/// Every route of the API.
pub fn app(state: AppState) -> Router {
    Router::new().merge(health::router()).with_state(state)
}

/// Serves [`app`] on `listener` until `shutdown` is cancelled, then lets
/// requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "HTTP API listening");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
