//! The event log over HTTP: one stream, or the whole log in global order.

use axum::extract::{Path, State};
use axum::Json;
use eventstore::envelope::Envelope;
use eventstore::store::LogFilter;
use eventstore::Position;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::doc::{EventDoc, PositionDoc, StreamTypeDoc};
use crate::error::responses::{BadRequest, NotFound, Unavailable};
use crate::error::ApiError;
use crate::extract::{parse_time, parse_uuid, ApiQuery};
use crate::reads::{page_limit, position, PositionToken};
use crate::AppState;

/// Every event-log route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stream_events))
        .routes(routes!(log_events))
}

/// Default and largest page.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

/// Events, as envelopes.
#[derive(Debug, Serialize, ToSchema)]
pub struct Events {
    /// In order.
    #[schema(value_type = Vec<EventDoc>)]
    pub events: Vec<Envelope>,
}

/// A page of the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogPage {
    /// In global order.
    #[schema(value_type = Vec<EventDoc>)]
    pub events: Vec<Envelope>,
    /// Pass as `after` for the next page (also when this one is empty, to poll).
    #[schema(value_type = PositionDoc)]
    pub next: String,
}

/// `GET /streams/{stream_id}/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The first version to return (default 1; 0 means 1).
    #[param(minimum = 0)]
    pub from_version: Option<i64>,
    /// At most this many (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// `{stream_id}`, as the OpenAPI document describes it.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct StreamIdParam {
    /// `user-<uuid>`, `product-<uuid>` or `order-<uuid>`, the UUID hyphenated
    /// and in lowercase.
    #[param(
        pattern = "^(user|product|order)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        example = "order-0192a8c4-7e1f-7000-8000-00000000abcd"
    )]
    pub stream_id: String,
}

/// `GET /events`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Only events after this position token (any token: one past the end
    /// of the log gives an empty page).
    #[param(value_type = Option<PositionToken>, inline, example = "1234.5678")]
    pub after: Option<String>,
    /// At most this many (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Only events of this kind of stream.
    #[param(value_type = Option<StreamTypeDoc>)]
    pub stream_type: Option<String>,
    /// Only events of this type, e.g. `OrderPlaced`.
    #[serde(rename = "type")]
    #[param(
        rename = "type",
        pattern = "^[A-Za-z][A-Za-z0-9_]{0,63}$",
        example = "OrderPlaced"
    )]
    pub event_type: Option<String>,
    /// Only events with this correlation id.
    #[param(value_type = Option<Uuid>)]
    pub correlation_id: Option<String>,
    /// Recorded at or after this time.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    pub since: Option<String>,
    /// Recorded before this time.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    pub until: Option<String>,
    /// Only events caused by this actor: `token:<id>`, `jwt:<issuer>#<sub>`,
    /// `saga`, `system` or `anonymous`.
    #[param(max_length = 1024, example = "saga")]
    pub actor: Option<String>,
}

#[utoipa::path(get, path = "/streams/{stream_id}/events", tag = "events",
    security(("bearer" = ["events:read"])),
    params(StreamIdParam, StreamQuery),
    responses((status = 200, description = "The stream's events", body = Events),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 503, response = Unavailable)))]
async fn stream_events(
    State(state): State<AppState>,
    Path(stream_id): Path<String>,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Json<Events>, ApiError> {
    let (stream_type, id) = domain::ids::parse_stream_id(&stream_id).map_err(|_| {
        ApiError::BadRequest(format!(
            "{stream_id:?} is not a stream id (user-<uuid>, product-<uuid>, order-<uuid>)"
        ))
    })?;
    let stream_id = format!("{}-{id}", stream_type.as_str());
    let limit = page_limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let from = match query.from_version {
        None => 1,
        Some(v) if v >= 0 => v.max(1),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "from_version must not be negative".into(),
            ))
        }
    };
    if state.log.stream_version(&stream_id).await? == 0 {
        return Err(ApiError::NotFound(format!("no stream {stream_id}")));
    }
    let events = state
        .store
        .read_stream(&stream_id, (from - 1).unsigned_abs(), limit)
        .await?;
    Ok(Json(Events {
        events: events.iter().map(Envelope::from_recorded).collect(),
    }))
}

#[utoipa::path(get, path = "/events", tag = "events",
    security(("bearer" = ["events:read"])), params(LogQuery),
    responses((status = 200, description = "A page of the log", body = LogPage),
        (status = 400, response = BadRequest), (status = 503, response = Unavailable)))]
async fn log_events(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> Result<Json<LogPage>, ApiError> {
    let after = query
        .after
        .as_deref()
        .map(position)
        .transpose()?
        .unwrap_or(Position::START);
    let limit = page_limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    if let Some(stream_type) = &query.stream_type {
        if stream_type.parse::<domain::ids::StreamType>().is_err() {
            return Err(ApiError::BadRequest(
                "stream_type must be user, product or order".into(),
            ));
        }
    }
    if let Some(event_type) = &query.event_type {
        let valid = event_type.len() <= 64
            && event_type.starts_with(|c: char| c.is_ascii_alphabetic())
            && event_type
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ApiError::BadRequest(
                "type must be an event type name, like OrderPlaced".into(),
            ));
        }
    }
    if query.actor.as_ref().is_some_and(|actor| actor.len() > 1024) {
        return Err(ApiError::BadRequest(
            "actor is at most 1024 characters".into(),
        ));
    }
    let filter = LogFilter {
        stream_id: None,
        stream_type: query.stream_type,
        event_type: query.event_type,
        correlation_id: query
            .correlation_id
            .as_deref()
            .map(|c| parse_uuid(c, "correlation_id"))
            .transpose()?,
        since: query
            .since
            .as_deref()
            .map(|t| parse_time(t, "since"))
            .transpose()?,
        until: query
            .until
            .as_deref()
            .map(|t| parse_time(t, "until"))
            .transpose()?,
        actor: query.actor,
    };
    let events = state.log.read_log(after, &filter, limit).await?;
    let next = events.last().map_or(after, |e| e.position).to_string();
    Ok(Json(LogPage {
        events: events.iter().map(Envelope::from_recorded).collect(),
        next,
    }))
}
