//! What every read endpoint shares: `min_position` (read your own writes).

use eventstore::Position;
use projectors::Projection;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ApiError;
use crate::AppState;

/// `?min_position=<token>`: wait until the read model has applied it.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadParams {
    /// A `position` token from a command's answer; the read waits (up to 5 s)
    /// until the read model has applied it, or answers 503 `projection_lagging`.
    pub min_position: Option<String>,
}

/// Parses a position token, or 400.
pub fn position(token: &str) -> Result<Position, ApiError> {
    token
        .parse()
        .map_err(|e: eventstore::position::InvalidPosition| ApiError::BadRequest(e.to_string()))
}

/// Waits for `projection` to reach `min_position`, if given.
pub async fn wait(
    state: &AppState,
    projection: Projection,
    min_position: Option<&str>,
) -> Result<(), ApiError> {
    let Some(token) = min_position else {
        return Ok(());
    };
    let position = position(token)?;
    if projectors::query::wait_for(&state.pool, projection, position, state.read_wait).await? {
        Ok(())
    } else {
        metrics::counter!("ordo_projection_lagging_total", "projection" => projection.name())
            .increment(1);
        Err(ApiError::ProjectionLagging)
    }
}
