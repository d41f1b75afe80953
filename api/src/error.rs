//! Errors as `application/problem+json` (RFC 9457): one enum, one match from
//! variant to status. A 5xx never carries internal detail; the cause goes to
//! the log.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::aggregate::{ErrorKind, ErrorKindOf};
use eventstore::executor::ExecuteError;
use eventstore::StoreError;
use serde::Serialize;

/// Everything a request can end in that is not a success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, wrong types, unknown fields, a bad id in the path or query.
    #[error("{0}")]
    BadRequest(String),
    /// No such aggregate.
    #[error("{0}")]
    NotFound(String),
    /// An email or SKU already taken.
    #[error("{0}")]
    Duplicate(String),
    /// Not allowed in the current state.
    #[error("{0}")]
    InvalidTransition(String),
    /// Other writers kept changing the aggregate; every retry lost.
    #[error("{0}")]
    Conflict(String),
    /// The `Idempotency-Key` was used for another request.
    #[error("{0}")]
    IdempotencyMismatch(String),
    /// Valid JSON that breaks a rule.
    #[error("{0}")]
    Validation(String),
    /// The body is over the limit.
    #[error("the request body is larger than 64 KiB")]
    PayloadTooLarge,
    /// Not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// `min_position` not reached in time.
    #[error("the read model has not caught up with that position yet; retry shortly")]
    ProjectionLagging,
    /// PostgreSQL or NATS unavailable.
    #[error("{0}")]
    Unavailable(String),
    /// Something went wrong inside; details only in the log.
    #[error("internal error")]
    Internal(String),
}

/// An error answer (RFC 9457 problem details).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// A stable machine-readable word: `bad_request`, `not_found`, `duplicate`,
    /// `invalid_transition`, `idempotency_mismatch`, `conflict`, `validation`,
    /// `payload_too_large`, `unsupported_media_type`, `projection_lagging`,
    /// `unavailable`, `internal`.
    pub code: String,
}

impl ApiError {
    /// Status, `code` and title of each variant.
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", "Bad request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", "Not found"),
            ApiError::Duplicate(_) => (StatusCode::CONFLICT, "duplicate", "Already taken"),
            ApiError::InvalidTransition(_) => (
                StatusCode::CONFLICT,
                "invalid_transition",
                "Not allowed in the current state",
            ),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Changed concurrently"),
            ApiError::IdempotencyMismatch(_) => (
                StatusCode::CONFLICT,
                "idempotency_mismatch",
                "Idempotency key reused",
            ),
            ApiError::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid request",
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            ),
            ApiError::ProjectionLagging => (
                StatusCode::SERVICE_UNAVAILABLE,
                "projection_lagging",
                "Read model lagging",
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The domain's refusal, by kind.
    pub fn from_domain<E: std::error::Error + ErrorKindOf>(e: &E) -> ApiError {
        let detail = e.to_string();
        match e.kind() {
            ErrorKind::Validation => ApiError::Validation(detail),
            ErrorKind::NotFound => ApiError::NotFound(detail),
            ErrorKind::Duplicate => ApiError::Duplicate(detail),
            ErrorKind::InvalidTransition => ApiError::InvalidTransition(detail),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.parts();
        let detail = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(cause, "request failed");
                "something went wrong on our side; it has been logged".to_owned()
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(cause, "dependency unavailable");
                "a dependency (PostgreSQL or NATS) is unavailable; retry shortly".to_owned()
            }
            other => other.to_string(),
        };
        metrics::counter!("ordo_http_errors_total", "code" => code).increment(1);
        let body = Problem {
            kind: format!("https://ordo.dev/problems/{code}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            code: code.to_owned(),
        };
        let mut response = (status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            e if e.is_unavailable() => ApiError::Unavailable(e.to_string()),
            StoreError::Duplicate { kind, value } => {
                ApiError::Duplicate(format!("{kind} {value:?} is already taken"))
            }
            StoreError::Conflict { stream_id, .. } => {
                ApiError::Conflict(format!("{stream_id} changed concurrently; retry"))
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::from(e).into()
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::from(e).into()
    }
}

impl<E: std::error::Error + ErrorKindOf + 'static> From<ExecuteError<E>> for ApiError {
    fn from(e: ExecuteError<E>) -> Self {
        match e {
            ExecuteError::Rejected(e) => ApiError::from_domain(&e),
            ExecuteError::Duplicate { kind, value } => {
                ApiError::Duplicate(format!("{kind} {value:?} is already taken"))
            }
            ExecuteError::Conflict { stream_id } => {
                // Every retry lost the race: the client may retry.
                ApiError::Conflict(format!("{stream_id} kept changing concurrently; retry"))
            }
            ExecuteError::Store(e) => e.into(),
        }
    }
}
