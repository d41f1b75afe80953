//! Reading requests: JSON bodies, ids in paths, query strings and the
//! headers that matter (request id, trace, idempotency key), every failure a
//! problem+json answer rather than axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use chrono::{DateTime, Timelike, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use utoipa::IntoParams;
use uuid::Uuid;

use eventstore::telemetry::{self, TraceParent};

use crate::error::ApiError;

/// The most a body may hold.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Parses a JSON body strictly: a JSON media type (415 otherwise), then
/// exactly `T` (400 otherwise).
fn json_body<T: DeserializeOwned>(
    content_type: Option<&HeaderValue>,
    body: &[u8],
) -> Result<T, ApiError> {
    let content_type = content_type
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" && !essence.ends_with("+json") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "expected Content-Type: application/json, got {:?}",
            if content_type.is_empty() {
                "nothing"
            } else {
                content_type
            }
        )));
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            ApiError::BadRequest(format!("malformed JSON: {e}"))
        }
        _ => ApiError::BadRequest(format!("invalid request body: {e}")),
    })
}

/// How a command reads its body (see `commands::Command`).
pub trait CommandInput: Sized + Send {
    /// The body as this input, from the request's `Content-Type` and bytes.
    fn read(content_type: Option<&HeaderValue>, body: &[u8]) -> Result<Self, ApiError>;
}

/// A request body that is JSON of this shape and nothing else; as a
/// command's input it is required, as `Option<Self>` it may be left out.
pub trait JsonInput: DeserializeOwned + Send {}

impl<T: JsonInput> CommandInput for T {
    fn read(content_type: Option<&HeaderValue>, body: &[u8]) -> Result<Self, ApiError> {
        json_body(content_type, body)
    }
}

/// An optional body (`POST /orders/{id}/cancel`): no body, or a JSON
/// `null`, is `None`; a body must be JSON.
impl<T: JsonInput> CommandInput for Option<T> {
    fn read(content_type: Option<&HeaderValue>, body: &[u8]) -> Result<Self, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        json_body::<Option<T>>(content_type, body)
    }
}

/// No input: the command takes none (`ship`, `deactivate`, ...). Whatever
/// body comes is not read; it only counts in the request an idempotency key
/// is bound to.
#[derive(Debug, Clone, Copy)]
pub struct NoInput;

impl CommandInput for NoInput {
    fn read(_: Option<&HeaderValue>, _: &[u8]) -> Result<Self, ApiError> {
        Ok(NoInput)
    }
}

/// The raw body, at most [`BODY_LIMIT`] bytes: over it, 413 problem+json
/// (axum's own rejection is plain text).
#[derive(Debug, Clone)]
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(request, state)
            .await
            .map(Body)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest(e.body_text())
                }
            })
    }
}

/// An id in the path that must be a UUID.
#[derive(Debug, Clone, Copy)]
pub struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        parse_uuid(&raw, "id").map(IdPath)
    }
}

/// A UUID from a path or query, or 400. Only the hyphenated form
/// (`8-4-4-4-12` hex digits, any case) is a UUID here, as in JSON Schema's
/// `uuid` format; not the braced, URN or bare-hex spellings.
pub fn parse_uuid(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    hyphenated_uuid(raw).ok_or_else(|| {
        let shown: String = raw.chars().take(80).collect();
        ApiError::BadRequest(format!("{what} {shown:?} is not a UUID"))
    })
}

fn hyphenated_uuid(raw: &str) -> Option<Uuid> {
    // 36 characters can only be the hyphenated form.
    (raw.len() == 36)
        .then(|| Uuid::try_parse(raw).ok())
        .flatten()
}

/// For `#[serde(deserialize_with)]` on body ids: a hyphenated UUID.
pub fn uuid_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Uuid, D::Error> {
    let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
    hyphenated_uuid(&raw).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "{:?} is not a UUID (8-4-4-4-12 hex digits)",
            raw.chars().take(80).collect::<String>()
        ))
    })
}

/// [`uuid_field`] for an optional id (absent or `null`: none).
pub fn optional_uuid_field<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Uuid>, D::Error> {
    #[derive(Deserialize)]
    struct Id(#[serde(deserialize_with = "uuid_field")] Uuid);
    Ok(Option::<Id>::deserialize(deserializer)?.map(|Id(id)| id))
}

/// An RFC 3339 time from a query, or 400: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`
/// with `T` (or `t`) between date and time, as JSON Schema's `date-time`
/// format has it; a leap second only at 23:59:60 UTC.
pub fn parse_time(raw: &str, what: &str) -> Result<DateTime<Utc>, ApiError> {
    let bad = || ApiError::BadRequest(format!("{what} must be an RFC 3339 time"));
    if !matches!(raw.as_bytes().get(10), Some(b'T' | b't')) {
        return Err(bad());
    }
    let time = DateTime::parse_from_rfc3339(raw).map_err(|_| bad())?;
    let utc = time.with_timezone(&Utc);
    if time.nanosecond() >= 1_000_000_000 && (utc.hour(), utc.minute()) != (23, 59) {
        return Err(bad());
    }
    Ok(utc)
}

/// The `Idempotency-Key` header: as the OpenAPI document describes it, and
/// as read (1 to 255 visible ASCII characters, or 400).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// Retry safely: a repeat with the same key and body answers as the first
    /// did and executes nothing; the same key with another request is 409
    /// `idempotency_mismatch`. 1 to 255 visible ASCII characters.
    #[param(
        rename = "Idempotency-Key",
        value_type = String,
        required = false,
        pattern = "^[!-~]{1,255}$",
        example = "order-2026-11-23-0001"
    )]
    pub key: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey { key: None });
        };
        let key = value
            .to_str()
            .map_err(|_| ApiError::BadRequest("Idempotency-Key must be ASCII".into()))?;
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::BadRequest(
                "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
            ));
        }
        Ok(IdempotencyKey {
            key: Some(key.to_owned()),
        })
    }
}

/// `{id}` in a path, as the OpenAPI document describes it.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdParam {
    /// The id: a UUID, hyphenated.
    pub id: Uuid,
}

/// A query string, unknown parameters refused.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        Ok(ApiQuery(value))
    }
}

/// What a request says about where it comes from.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// `X-Request-Id` (set by the server when the client sent none).
    pub request_id: String,
    /// The W3C trace id of `traceparent`, when there is one.
    pub trace_id: Option<String>,
    /// The W3C trace context the request's commands continue: the HTTP
    /// server span's when tracing is on, else the caller's.
    pub trace: TraceParent,
}

impl RequestMeta {
    /// The id that becomes the events' causation (and, outside orders,
    /// correlation) id: the request id when it is a UUID, else a new one.
    pub fn causation_id(&self) -> Uuid {
        Uuid::parse_str(&self.request_id).unwrap_or_else(|_| Uuid::new_v4())
    }

    /// The trace id stored with the events: the trace's, or the request id.
    pub fn trace(&self) -> String {
        self.trace_id
            .clone()
            .unwrap_or_else(|| self.request_id.clone())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let request_id = header("x-request-id").unwrap_or_else(|| Uuid::new_v4().to_string());
        // The server span (crate::metrics::track) has replaced the caller's
        // traceparent with its own when tracing is on.
        let trace = TraceParent::new(
            header(telemetry::TRACEPARENT).as_deref(),
            header(telemetry::TRACESTATE).as_deref(),
        );
        Ok(RequestMeta {
            request_id,
            trace_id: trace.trace_id().map(str::to_owned),
            trace,
        })
    }
}
