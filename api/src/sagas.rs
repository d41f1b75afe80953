//! `GET /sagas/{order_id}`: an order's fulfilment saga — its state, pending
//! steps, timers, and the history of steps and compensations.

use axum::extract::State;
use axum::Json;
use domain::ids::OrderId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::doc::SagaDoc;
use crate::error::responses::{BadRequest, NotFound, Unavailable};
use crate::error::ApiError;
use crate::extract::IdPath;
use crate::AppState;

/// The saga route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_saga))
}

#[utoipa::path(get, path = "/sagas/{order_id}", tag = "orders",
    security(("bearer" = ["sagas:read"])),
    params(("order_id" = Uuid, Path, description = "The order's id: a UUID, hyphenated")),
    responses((status = 200, description = "The saga of the order", body = SagaDoc),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 503, response = Unavailable)))]
async fn get_saga(
    State(state): State<AppState>,
    IdPath(order_id): IdPath,
) -> Result<Json<sagas::SagaView>, ApiError> {
    let client = state.pool.get().await?;
    match sagas::query::saga(&client, OrderId::new(order_id)).await {
        Ok(Some(view)) => Ok(Json(view)),
        Ok(None) => Err(ApiError::NotFound(format!("no saga for order {order_id}"))),
        Err(e) if e.is_unavailable() => Err(ApiError::Unavailable(e.to_string())),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}
