//! `GET /sagas/{order_id}`: an order's fulfilment saga — its state, pending
//! steps, timers, and the history of steps and compensations.

use axum::extract::State;
use axum::Json;
use domain::ids::OrderId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, Problem};
use crate::extract::IdPath;
use crate::AppState;

/// The saga route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_saga))
}

#[utoipa::path(get, path = "/sagas/{order_id}", tag = "orders", params(("order_id" = Uuid, Path)),
    responses((status = 200, description = "The saga of the order", body = Object), (status = 400, body = Problem),
        (status = 404, body = Problem), (status = 503, body = Problem)))]
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
