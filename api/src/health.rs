//! Liveness, readiness, metrics and the state of the projections.
//!
//! `/health` answers while the process runs: it touches nothing, so a slow
//! database never makes an orchestrator kill a healthy process. `/ready`
//! answers 200 only when PostgreSQL and NATS answer and the schema is current.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::responses::{BadRequest, NotFound, Unavailable};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::reads::{wait, ReadParams};
use crate::AppState;

/// How long `/ready` waits for each dependency.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `/health`, `/ready`, `/metrics`, `/projections`, `/projections/{name}`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(projections))
        .routes(routes!(projection))
}

/// The process runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(pattern = "^ok$")]
    pub status: String,
}

/// Whether PostgreSQL and NATS answer and the schema is current.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not ready`.
    #[schema(pattern = "^(ready|not ready)$")]
    pub status: String,
    /// `ok`, `migrations pending`, `unavailable` or `timed out`.
    pub postgres: String,
    /// `ok` or `unavailable`.
    pub nats: String,
}

#[utoipa::path(get, path = "/health", tag = "operations",
    security(()),
    responses((status = 200, description = "The process runs", body = Health)))]
async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/ready", tag = "operations",
    security(()),
    responses((status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "PostgreSQL or NATS unavailable, or migrations pending", body = Readiness,
            headers(("Retry-After" = u32, description = "Seconds to wait before asking again")))))]
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
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

async fn postgres_ready(state: &AppState) -> Result<bool, eventstore::StoreError> {
    let client = state.pool.get().await?;
    eventstore::migrations::is_current(&client).await
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    security(("bearer" = ["ops"])),
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String,
        content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> Response {
    // Gauges that are cheapest to read at scrape time.
    if let Ok(client) = state.pool.get().await {
        if let Ok(statuses) =
            projectors::status::projections_cached(&**client, &state.lag_cache).await
        {
            for status in statuses {
                let name = status.name.clone();
                metrics::gauge!("ordo_projection_lag_events", "projection" => name.clone())
                    .set(status.lag_events as f64);
                metrics::gauge!("ordo_projection_lag_seconds", "projection" => name)
                    .set(status.lag_seconds);
            }
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// One projection's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionState {
    /// `users`, `products`, `orders`.
    pub name: String,
    /// The last event applied.
    #[schema(value_type = crate::doc::PositionDoc)]
    pub position: String,
    /// Committed events not applied yet (up to a million). A lag under a
    /// thousand events is counted on every call; a longer one is recounted
    /// at most once a second.
    pub lag_events: i64,
    /// Age of the oldest of them.
    pub lag_seconds: f64,
    /// `running` or `failed`.
    pub status: String,
    /// Why it failed (only when it did).
    #[schema(required = false)]
    pub error: Option<String>,
    /// The event it failed on (only when it did).
    #[schema(required = false)]
    pub failed_event: Option<uuid::Uuid>,
}

#[utoipa::path(get, path = "/projections", tag = "operations",
    security(("bearer" = ["ops"])),
    responses((status = 200, description = "Every projection", body = Vec<ProjectionState>),
        (status = 503, response = Unavailable)))]
async fn projections(
    State(state): State<AppState>,
) -> Result<Json<Vec<projectors::status::ProjectionStatus>>, ApiError> {
    let client = state.pool.get().await?;
    Ok(Json(
        projectors::status::projections_cached(&**client, &state.lag_cache).await?,
    ))
}

/// `{name}` of a projection, as the OpenAPI document describes it.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ProjectionNameParam {
    /// `users`, `products` or `orders`.
    #[param(pattern = "^(users|products|orders)$", example = "orders")]
    pub name: String,
}

/// One projection's state. With `min_position`, the answer waits (up to 5 s)
/// until the projection has applied that position, as every read does: a
/// client that wrote can wait here for its write to reach a read model
/// without reading the model itself (the end-to-end benchmark does so).
#[utoipa::path(get, path = "/projections/{name}", tag = "operations",
    security(("bearer" = ["ops"])),
    params(ProjectionNameParam, ReadParams),
    responses((status = 200, description = "The projection", body = ProjectionState),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 503, response = Unavailable)))]
async fn projection(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiQuery(params): ApiQuery<ReadParams>,
) -> Result<Json<projectors::status::ProjectionStatus>, ApiError> {
    let projection: projectors::Projection = name.parse().map_err(|_| {
        ApiError::NotFound(format!(
            "no projection {:?} (users, products, orders)",
            name.chars().take(64).collect::<String>()
        ))
    })?;
    wait(&state, projection, params.min_position.as_deref()).await?;
    let client = state.pool.get().await?;
    Ok(Json(
        projectors::status::projection_cached(&**client, &state.lag_cache, projection.name())
            .await?,
    ))
}
