//! Reading requests: JSON bodies, ids in paths, query strings and the
//! headers that matter (request id, trace, idempotency key), every failure a
//! problem+json answer rather than axum's plain-text rejections.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::ApiError;

/// The most a body may hold.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Parses a JSON body. `required`: an empty body is an error; otherwise it
/// means `T::default()`-like `null` (the caller decides).
pub fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
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

/// A JSON body that may be absent (`POST /orders/{id}/cancel`): no body
/// means `None`; a body must be JSON.
pub fn optional_json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    json_body(headers, body).map(Some)
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

/// A UUID from a path or query, or 400.
pub fn parse_uuid(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        let shown: String = raw.chars().take(80).collect();
        ApiError::BadRequest(format!("{what} {shown:?} is not a UUID"))
    })
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
    /// `Idempotency-Key`.
    pub idempotency_key: Option<String>,
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
        // traceparent: version-traceid-parentid-flags
        let trace_id = header("traceparent").and_then(|t| {
            let id = t.split('-').nth(1)?;
            (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id != "0".repeat(32))
                .then(|| id.to_ascii_lowercase())
        });
        let idempotency_key = match parts.headers.get("idempotency-key") {
            None => None,
            Some(value) => {
                let key = value
                    .to_str()
                    .map_err(|_| ApiError::BadRequest("Idempotency-Key must be ASCII".into()))?;
                if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(ApiError::BadRequest(
                        "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
                    ));
                }
                Some(key.to_owned())
            }
        };
        Ok(RequestMeta {
            request_id,
            trace_id,
            idempotency_key,
        })
    }
}
