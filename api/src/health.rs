//! Liveness and readiness.
//!
//! `/health` answers while the process runs: it touches nothing, so a slow
//! database never makes an orchestrator kill a healthy process. `/ready` answers
//! 200 only when PostgreSQL and NATS answer and the schema is current.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::AppState;

/// How long `/ready` waits for each dependency.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `/health` and `/ready`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(state): State<AppState>) -> Response {
    let postgres = match tokio::time::timeout(PROBE_TIMEOUT, postgres_ready(&state)).await {
        Ok(Ok(true)) => "ok",
        Ok(Ok(false)) => "migrations pending",
        Ok(Err(_)) => "unavailable",
        Err(_) => "timed out",
    };
    let nats = match state.nats.connection_state() {
        async_nats::connection::State::Connected => "ok",
        _ => "unavailable",
    };
    let ready = postgres == "ok" && nats == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Json(json!({
        "status": if ready { "ready" } else { "not ready" },
        "postgres": postgres,
        "nats": nats,
    }));
    let mut response = (status, body).into_response();
    if !ready {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
    }
    response
}

async fn postgres_ready(state: &AppState) -> Result<bool, eventstore::StoreError> {
    let client = state.pool.get().await?;
    eventstore::migrations::is_current(&client).await
}
