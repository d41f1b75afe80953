//! ordo's HTTP API: commands and queries over users, products and orders,
//! the event log, sagas and operations, described by an OpenAPI document.
//!
//! - [`users`], [`products`], [`orders`]: commands and queries of each resource.
//! - [`log`]: the event log (`/streams/{id}/events`, `/events`).
//! - [`sagas`]: `GET /sagas/{order_id}`.
//! - [`health`]: `/health`, `/ready`, `/metrics`, `/projections`.
//! - [`admission`]: new orders wait while the consumers lag.
//! - [`commands`]: [`commands::Command`], what every command handler is
//!   given; idempotency keys, event metadata, executing, answering.
//! - [`reads`]: `min_position` (read your own writes), waited for through
//!   [`applied`], one watcher of the checkpoints for every waiter.
//! - [`extract`], [`input`]: reading requests strictly and amounts exactly,
//!   and the schemas that state exactly what they accept.
//! - [`error`]: problem+json answers; [`metrics`]: Prometheus.
//! - [`doc`]: schemas of the answers, for the OpenAPI document.
//! - [`state`]: what handlers share.
//! - [`auth`]: who is calling and whether they may: tokens, JWTs, scopes
//!   declared per operation, rate limits; [`tokens`]: `/tokens`.
//!
//! [`app`] builds the whole router, so tests can drive it without a socket;
//! [`serve`] runs it until shutdown, letting requests in flight finish.

pub mod admission;
pub mod applied;
pub mod auth;
pub mod commands;
pub mod doc;
pub mod error;
pub mod extract;
pub mod health;
pub mod input;
pub mod log;
pub mod metrics;
pub mod orders;
pub mod products;
pub mod reads;
pub mod sagas;
pub mod serve;
pub mod state;
pub mod tokens;
pub mod users;

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use state::AppState;

use crate::error::ApiError;

/// The API's description; paths are collected from the routers.
#[derive(OpenApi)]
#[openapi(
    info(title = "ordo", description = "An event-sourced order system: users, products, orders, their event log."),
    components(schemas(error::Problem, error::ProblemCode), responses(
        error::responses::BadRequest,
        error::responses::NotFound,
        error::responses::Conflict,
        error::responses::PayloadTooLarge,
        error::responses::UnsupportedMediaType,
        error::responses::Validation,
        error::responses::Unavailable,
        error::responses::Unauthorized,
        error::responses::Forbidden,
        error::responses::TooManyRequests
    )),
    tags(
        (name = "users"), (name = "products"), (name = "orders"),
        (name = "events", description = "The event log"),
        (name = "operations", description = "Health, metrics, projections"),
        (name = "tokens", description = "ordo tokens (admins)")
    )
)]
struct ApiDoc;

/// Declares the bearer scheme, and adds to every operation the answers of
/// the authentication middleware: 401 and 403 where a token is required,
/// 429 everywhere.
struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        use utoipa::openapi::{Ref, RefOr};
        let scopes = auth::Scope::ALL
            .map(|s| format!("- `{}`: {}", s.as_str(), s.describe()))
            .join("\n");
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            auth::policy::SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(format!(
                        "An ordo token (`ordo_...`, from `ordo token create` or `POST /tokens`) \
                         or a JWT of the configured OpenID provider. Each operation lists the \
                         scopes that let a caller in (any one of them; `admin` always). \
                         Scopes:\n{scopes}"
                    )))
                    .build(),
            ),
        );
        for item in api.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let public = operation.security.as_ref().is_some_and(|alternatives| {
                    serde_json::to_value(alternatives)
                        .ok()
                        .and_then(|v| v.as_array().cloned())
                        .unwrap_or_default()
                        .iter()
                        .any(|a| a.as_object().is_some_and(|o| o.is_empty()))
                });
                let responses = &mut operation.responses.responses;
                if !public {
                    responses.insert(
                        "401".into(),
                        RefOr::Ref(Ref::from_response_name("Unauthorized")),
                    );
                    responses.insert(
                        "403".into(),
                        RefOr::Ref(Ref::from_response_name("Forbidden")),
                    );
                }
                responses.insert(
                    "429".into(),
                    RefOr::Ref(Ref::from_response_name("TooManyRequests")),
                );
            }
        }
    }
}

/// Every route, and the OpenAPI document describing them.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(users::router())
        .merge(products::router())
        .merge(orders::router())
        .merge(log::router())
        .merge(sagas::router())
        .merge(health::router())
        .merge(tokens::router())
        .split_for_parts();
    // After the routes are merged: it adds to every operation.
    utoipa::Modify::modify(&SecurityAddon, &mut api);
    (router, api)
}

/// The OpenAPI document alone.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().1
}

/// The OpenAPI document as served at `/openapi.json`.
///
/// utoipa 5 writes the fields of a Link object in snake case
/// (`operation_id`); OpenAPI spells them in camel case (`operationId`), and
/// tools ignore or reject links without it. They are renamed here.
pub fn document(api: &utoipa::openapi::OpenApi) -> serde_json::Value {
    let mut document = serde_json::to_value(api).unwrap_or_default();
    if let Some(paths) = document.get_mut("paths").and_then(|p| p.as_object_mut()) {
        let links = paths
            .values_mut()
            .filter_map(|item| item.as_object_mut())
            .flat_map(|item| item.values_mut())
            .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
            .flat_map(|responses| responses.values_mut())
            .filter_map(|response| response.get_mut("links")?.as_object_mut())
            .flat_map(|links| links.values_mut())
            .filter_map(|link| link.as_object_mut());
        for link in links {
            for (from, to) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(value) = link.remove(from) {
                    link.insert(to.to_owned(), value);
                }
            }
        }
    }
    document
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole API with its middleware.
pub fn app(state: AppState) -> Router {
    let (router, api) = routes();
    let document = std::sync::Arc::new(document(&api));
    router
        .route(
            "/openapi.json",
            get(move || async move { Json((*document).clone()) }),
        )
        .route("/docs", get(docs))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .route_layer(axum::middleware::from_fn(crate::metrics::track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(CompressionLayer::new())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    // axum adds the `Allow` header.
    ApiError::MethodNotAllowed("this route does not take that method".into())
}

/// An interactive page over `/openapi.json` (Scalar, loaded by the browser).
async fn docs() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        Html(
            r#"<!doctype html>
<html>
  <head>
    <title>ordo API</title>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
  </head>
  <body>
    <script id="api-reference" data-url="/openapi.json"></script>
    <script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference"></script>
  </body>
</html>"#,
        ),
    )
}

/// Serves [`app`] on `listener` until `shutdown` is cancelled, then lets
/// requests in flight finish; connections within the default
/// [`serve::ConnectionLimits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(
        listener,
        state,
        serve::ConnectionLimits::default(),
        shutdown,
    )
    .await
}

/// [`serve`] within `limits`.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: serve::ConnectionLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, max_connections = limits.max_connections, "HTTP API listening");
    serve::serve_app(listener, app(state), limits, shutdown).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// The document declares the bearer scheme, and every operation the
    /// answers of the authentication middleware: 401 and 403 where a token
    /// is needed, 429 everywhere.
    #[test]
    fn every_operation_documents_the_answers_of_authentication() {
        let spec = super::document(&super::openapi());
        assert_eq!(
            spec["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let mut checked = 0;
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let responses = &operation["responses"];
                let public = operation["security"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a.as_object().unwrap().is_empty());
                for status in ["401", "403"] {
                    assert_eq!(
                        !responses[status].is_null(),
                        !public,
                        "{method} {path} {status}"
                    );
                }
                assert!(!responses["429"].is_null(), "{method} {path} 429");
                checked += 1;
            }
        }
        assert!(checked > 20);
    }

    /// Position-token parameters must say what `reads` parses: each names
    /// `reads::PositionToken` as its type, and none may spell a pattern of
    /// its own.
    #[test]
    fn every_token_parameter_carries_the_position_pattern() {
        let spec = super::document(&super::openapi());
        let mut seen = 0;
        for item in spec["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    if ["min_position", "after"].contains(&parameter["name"].as_str().unwrap()) {
                        assert_eq!(
                            parameter["schema"]["pattern"],
                            crate::reads::POSITION_PATTERN,
                            "{parameter}"
                        );
                        seen += 1;
                    }
                }
            }
        }
        assert!(seen >= 7, "{seen}");
    }

    /// Every link names its target operation the way OpenAPI spells it, and
    /// that operation exists.
    #[test]
    fn links_name_existing_operations_by_operation_id() {
        let spec = super::document(&super::openapi());
        let mut ids = std::collections::BTreeSet::new();
        let mut targets = Vec::new();
        for item in spec["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                ids.insert(operation["operationId"].as_str().unwrap().to_owned());
                for response in operation["responses"].as_object().unwrap().values() {
                    for link in response["links"].as_object().into_iter().flatten() {
                        targets.push(link.1["operationId"].as_str().unwrap().to_owned());
                    }
                }
            }
        }
        assert!(targets.len() >= 15, "{targets:?}");
        for target in targets {
            assert!(ids.contains(&target), "{target}");
        }
    }
}
