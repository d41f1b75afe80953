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
    /// The route exists, the method does not.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// No valid bearer token (which check failed goes to the log only).
    #[error("a valid bearer token is required")]
    Unauthorized {
        /// Whether a token was given (then `error="invalid_token"`).
        token_given: bool,
    },
    /// A valid token without the scope the operation needs, or a customer
    /// naming another user.
    #[error("{0}")]
    Forbidden(String),
    /// Over the caller's rate.
    #[error("too many requests; retry after {retry_after} s")]
    RateLimited {
        /// Seconds until a request would be let in.
        retry_after: u64,
        /// `RateLimit-Policy` and `RateLimit` headers.
        headers: Vec<(&'static str, String)>,
    },
    /// A customer already holds the most unpaid orders allowed.
    #[error("{0}")]
    TooManyUnpaid(String),
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

/// An error answer (RFC 9457 problem details), served as
/// `application/problem+json`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `https://ordo.dev/problems/<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: String,
    /// The HTTP status.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// A stable machine-readable word.
    pub code: ProblemCode,
}

/// The `code` of a [`Problem`]: one stable word per kind of problem.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    /// 400: malformed JSON, wrong types, unknown fields, a malformed path or
    /// query value, a bad `Idempotency-Key`.
    BadRequest,
    /// 404: no such aggregate or route.
    NotFound,
    /// 405: the route does not take that method.
    MethodNotAllowed,
    /// 401: no token, or one that is malformed, unknown, expired or revoked.
    Unauthorized,
    /// 403: the token's scopes do not allow the operation.
    Forbidden,
    /// 409: a customer holds the most unpaid orders allowed.
    TooManyUnpaidOrders,
    /// 429: over the caller's rate.
    RateLimited,
    /// 409: an email or SKU already taken.
    Duplicate,
    /// 409: not allowed in the current state.
    InvalidTransition,
    /// 409: the aggregate kept changing concurrently; retry.
    Conflict,
    /// 409: the `Idempotency-Key` was used for a different request.
    IdempotencyMismatch,
    /// 413: the body is larger than 64 KiB.
    PayloadTooLarge,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 422: valid JSON that breaks a rule.
    Validation,
    /// 503: `min_position` not reached in time.
    ProjectionLagging,
    /// 503: PostgreSQL or NATS unavailable.
    Unavailable,
    /// 500: a fault on our side (never the answer to bad input).
    Internal,
}

/// Reusable problem+json answers of the OpenAPI document, one per status,
/// referenced by every operation that can give them.
pub mod responses {
    use super::Problem;

    /// The media type of every error answer.
    pub const PROBLEM_JSON: &str = "application/problem+json";

    /// Malformed JSON, wrong types, unknown fields, a path or query value
    /// that is not what the parameter says, or a bad `Idempotency-Key`
    /// (`bad_request`).
    #[derive(Debug, utoipa::ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct BadRequest(#[allow(dead_code)] Problem);

    /// No such aggregate (`not_found`).
    #[derive(Debug, utoipa::ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct NotFound(#[allow(dead_code)] Problem);

    /// An email or SKU already taken (`duplicate`), not allowed in the
    /// current state (`invalid_transition`), changed concurrently
    /// (`conflict`), an `Idempotency-Key` reused for a different request
    /// (`idempotency_mismatch`), or a user holding the most unpaid orders
    /// allowed (`too_many_unpaid_orders`).
    #[derive(Debug, utoipa::ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct Conflict(#[allow(dead_code)] Problem);

    /// The body is larger than 64 KiB (`payload_too_large`).
    #[derive(Debug, utoipa::ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct PayloadTooLarge(#[allow(dead_code)] Problem);

    /// The body is not JSON (`unsupported_media_type`).
    #[derive(Debug, utoipa::ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct UnsupportedMediaType(#[allow(dead_code)] Problem);

    /// Valid JSON that breaks a rule (`validation`).
    #[derive(Debug, utoipa::ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct Validation(#[allow(dead_code)] Problem);

    /// PostgreSQL or NATS unavailable (`unavailable`), or a read model that
    /// did not reach `min_position` within 5 s (`projection_lagging`).
    #[derive(Debug, utoipa::ToResponse)]
    #[response(
        content_type = "application/problem+json",
        headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))
    )]
    pub struct Unavailable(#[allow(dead_code)] Problem);

    /// No token, or one that is malformed, unknown, expired or revoked
    /// (`unauthorized`); which check failed is logged, never answered.
    #[derive(Debug, utoipa::ToResponse)]
    #[response(
        content_type = "application/problem+json",
        headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"ordo\"`, with `error=\"invalid_token\"` when a token was given"))
    )]
    pub struct Unauthorized(#[allow(dead_code)] Problem);

    /// The token's scopes do not allow this operation, or a customer named
    /// another user (`forbidden`).
    #[derive(Debug, utoipa::ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct Forbidden(#[allow(dead_code)] Problem);

    /// Over the caller's rate (`rate_limited`).
    #[derive(Debug, utoipa::ToResponse)]
    #[response(
        content_type = "application/problem+json",
        headers(
            ("Retry-After" = u32, description = "Seconds to wait before retrying"),
            ("RateLimit-Policy" = String, description = "The caller's quota: `\"per-caller\";q=<requests>;w=1`"),
            ("RateLimit" = String, description = "What is left: `\"per-caller\";r=0;t=<seconds>`")
        )
    )]
    pub struct TooManyRequests(#[allow(dead_code)] Problem);
}

impl ProblemCode {
    /// Every code, for tests and documentation.
    pub const ALL: [ProblemCode; 17] = [
        ProblemCode::BadRequest,
        ProblemCode::NotFound,
        ProblemCode::MethodNotAllowed,
        ProblemCode::Unauthorized,
        ProblemCode::Forbidden,
        ProblemCode::TooManyUnpaidOrders,
        ProblemCode::RateLimited,
        ProblemCode::Duplicate,
        ProblemCode::InvalidTransition,
        ProblemCode::Conflict,
        ProblemCode::IdempotencyMismatch,
        ProblemCode::PayloadTooLarge,
        ProblemCode::UnsupportedMediaType,
        ProblemCode::Validation,
        ProblemCode::ProjectionLagging,
        ProblemCode::Unavailable,
        ProblemCode::Internal,
    ];

    /// The word itself (what serde writes).
    pub const fn as_str(self) -> &'static str {
        match self {
            ProblemCode::BadRequest => "bad_request",
            ProblemCode::NotFound => "not_found",
            ProblemCode::MethodNotAllowed => "method_not_allowed",
            ProblemCode::Unauthorized => "unauthorized",
            ProblemCode::Forbidden => "forbidden",
            ProblemCode::TooManyUnpaidOrders => "too_many_unpaid_orders",
            ProblemCode::RateLimited => "rate_limited",
            ProblemCode::Duplicate => "duplicate",
            ProblemCode::InvalidTransition => "invalid_transition",
            ProblemCode::Conflict => "conflict",
            ProblemCode::IdempotencyMismatch => "idempotency_mismatch",
            ProblemCode::PayloadTooLarge => "payload_too_large",
            ProblemCode::UnsupportedMediaType => "unsupported_media_type",
            ProblemCode::Validation => "validation",
            ProblemCode::ProjectionLagging => "projection_lagging",
            ProblemCode::Unavailable => "unavailable",
            ProblemCode::Internal => "internal",
        }
    }
}

impl ApiError {
    /// Status, `code` and title of each variant.
    fn parts(&self) -> (StatusCode, ProblemCode, &'static str) {
        use ProblemCode as C;
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, C::BadRequest, "Bad request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, C::NotFound, "Not found"),
            ApiError::Duplicate(_) => (StatusCode::CONFLICT, C::Duplicate, "Already taken"),
            ApiError::InvalidTransition(_) => (
                StatusCode::CONFLICT,
                C::InvalidTransition,
                "Not allowed in the current state",
            ),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, C::Conflict, "Changed concurrently"),
            ApiError::IdempotencyMismatch(_) => (
                StatusCode::CONFLICT,
                C::IdempotencyMismatch,
                "Idempotency key reused",
            ),
            ApiError::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                C::Validation,
                "Invalid request",
            ),
            ApiError::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                C::MethodNotAllowed,
                "Method not allowed",
            ),
            ApiError::Unauthorized { .. } => (
                StatusCode::UNAUTHORIZED,
                C::Unauthorized,
                "Authentication required",
            ),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, C::Forbidden, "Forbidden"),
            ApiError::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                C::RateLimited,
                "Too many requests",
            ),
            ApiError::TooManyUnpaid(_) => (
                StatusCode::CONFLICT,
                C::TooManyUnpaidOrders,
                "Too many unpaid orders",
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                C::PayloadTooLarge,
                "Payload too large",
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                C::UnsupportedMediaType,
                "Unsupported media type",
            ),
            ApiError::ProjectionLagging => (
                StatusCode::SERVICE_UNAVAILABLE,
                C::ProjectionLagging,
                "Read model lagging",
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                C::Unavailable,
                "Service unavailable",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                C::Internal,
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
            ErrorKind::LimitReached => ApiError::TooManyUnpaid(detail),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.parts();
        let code = code.as_str();
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
            code: self.parts().1,
        };
        let mut response = (status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(responses::PROBLEM_JSON),
        );
        match &self {
            ApiError::Unauthorized { token_given } => {
                // RFC 6750 section 3.
                let challenge = if *token_given {
                    r#"Bearer realm="ordo", error="invalid_token""#
                } else {
                    r#"Bearer realm="ordo""#
                };
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            ApiError::RateLimited {
                retry_after,
                headers,
            } => {
                let headers_out = response.headers_mut();
                if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
                    headers_out.insert(header::RETRY_AFTER, value);
                }
                for (name, value) in headers {
                    if let Ok(value) = HeaderValue::from_str(value) {
                        headers_out.insert(*name, value);
                    }
                }
            }
            _ => {}
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn codes_serialise_as_their_words() {
        for code in ProblemCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
