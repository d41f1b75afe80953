//! What every read endpoint shares: `min_position` (read your own writes),
//! position tokens, page limits.

use eventstore::Position;
use projectors::Projection;
use serde::Deserialize;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::error::ApiError;
use crate::AppState;

/// The grammar of a position token, as the OpenAPI document states it: the
/// writing transaction's id, a point, the event's position. Tokens the
/// server hands out always fit (19 digits reach past 10^18 transactions,
/// 18 digits past 10^17 events).
pub const POSITION_PATTERN: &str = r"^[0-9]{1,19}\.[0-9]{1,18}$";

/// A position token as a parameter's schema: a string of
/// [`POSITION_PATTERN`]. Parameters that take a token name it as their
/// `value_type`, inlined, so that the document states the one pattern
/// [`position`] parses.
#[derive(Debug)]
pub struct PositionToken;

impl PositionToken {
    /// The schema, to build on (`as_of` adds an example).
    pub fn object() -> ObjectBuilder {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(POSITION_PATTERN))
    }
}

impl PartialSchema for PositionToken {
    fn schema() -> RefOr<Schema> {
        PositionToken::object().into()
    }
}

impl ToSchema for PositionToken {}

/// `?min_position=<token>`: wait until the read model has applied it.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadParams {
    /// A `position` token from a command's answer; the read waits (up to 5 s)
    /// until the read model has applied it, or answers 503
    /// `projection_lagging`. A token past the end of the event log names no
    /// write and is 400.
    #[param(value_type = Option<PositionToken>, inline, example = "1234.5678")]
    pub min_position: Option<String>,
}

/// Parses a position token, or 400.
pub fn position(token: &str) -> Result<Position, ApiError> {
    let invalid = || {
        ApiError::BadRequest(
            eventstore::position::InvalidPosition(token.chars().take(64).collect()).to_string(),
        )
    };
    let (transaction, position) = token.split_once('.').ok_or_else(invalid)?;
    let digits =
        |s: &str, max: usize| (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(transaction, 19) || !digits(position, 18) {
        return Err(invalid());
    }
    token.parse().map_err(|_| invalid())
}

/// `?limit=`: how many items a page holds, `default` when not given, 1 to
/// `max` (400 otherwise).
pub fn page_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {max}"
        )))
    }
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
    let applied = {
        let client = state.pool.get().await?;
        projectors::query::applied_through(&**client, projection).await?
    };
    if applied >= position {
        return Ok(());
    }
    // No answer ever carried a token beyond the log's last event: waiting
    // for one would only end in a misleading 503 five seconds later.
    if position > state.log.head().await? {
        return Err(ApiError::BadRequest(format!(
            "min_position {token} is past the end of the event log; pass the position of an answer"
        )));
    }
    if state
        .applied
        .wait(projection.name(), position, state.read_wait)
        .await
    {
        Ok(())
    } else {
        metrics::counter!("ordo_projection_lagging_total", "projection" => projection.name())
            .increment(1);
        Err(ApiError::ProjectionLagging)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_follow_the_documented_pattern() {
        let pattern = regex::Regex::new(POSITION_PATTERN).unwrap();
        for token in [
            "1.1",
            "0.0",
            "1234.5678",
            "9999999999999999999.999999999999999999",
            "18446744073709551615.1",
            "1.9223372036854775807",
            "",
            ".",
            "1.",
            ".1",
            "1.2.3",
            "-1.1",
            "+1.1",
            " 1.1",
            "a.b",
        ] {
            assert_eq!(
                pattern.is_match(token),
                position(token).is_ok(),
                "{token:?}"
            );
        }
    }
}
