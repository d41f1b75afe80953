//! `/tokens`: admins make, list and revoke ordo tokens over HTTP (the same
//! as `ordo token create|list|revoke`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::tokens::{CreateError, NewToken, Token};
use crate::auth::{Actor, Caller, Scopes, TokenStore};
use crate::error::responses::{
    BadRequest, Conflict, NotFound, PayloadTooLarge, Unavailable, UnsupportedMediaType, Validation,
};
use crate::error::ApiError;
use crate::extract::{optional_uuid_field, Body, IdParam, IdPath, JsonInput};
use crate::AppState;

/// Every `/tokens` route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}

/// `POST /tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What it may do: `customer` alone (with `user_id`), or staff scopes.
    #[schema(example = json!(["orders:read", "orders:fulfil"]))]
    pub scopes: Vec<String>,
    /// The user a `customer` token acts for.
    #[serde(default, deserialize_with = "optional_uuid_field")]
    pub user_id: Option<Uuid>,
    /// A label for people (at most 200 characters).
    #[serde(default)]
    pub name: Option<String>,
    /// How long it works: a number and a unit (`s`, `m`, `h`, `d`, `w`),
    /// like `30d` or `12h`, or a number of seconds; at most 100 years.
    /// Absent or null: until revoked.
    #[serde(default, deserialize_with = "lifetime")]
    #[schema(schema_with = lifetime_schema)]
    pub expires_in: Option<std::time::Duration>,
}

impl JsonInput for CreateToken {}

/// The pattern of a lifetime written as text.
const LIFETIME_PATTERN: &str = "^[1-9][0-9]{0,9}[smhdw]$";

/// The longest lifetime, in seconds (100 years).
const MAX_LIFETIME_SECS: u64 = 3_155_760_000;

fn lifetime_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(LIFETIME_PATTERN))
                .examples(["30d"]),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(MAX_LIFETIME_SECS as f64)),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

/// A lifetime as text: digits and one unit (`s`, `m`, `h`, `d`, `w`).
fn parse_lifetime(text: &str) -> Option<std::time::Duration> {
    let unit = text.chars().last()?;
    let digits = &text[..text.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number: u64 = digits.parse().ok()?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    };
    number
        .checked_mul(seconds)
        .map(std::time::Duration::from_secs)
}

fn lifetime<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<std::time::Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Lifetime {
        Seconds(serde_json::Number),
        Text(String),
    }
    match Option::<Lifetime>::deserialize(deserializer)? {
        None => Ok(None),
        // A whole number of seconds, however it is written (`612.0` is an
        // integer to JSON Schema); the rules then bound it.
        Some(Lifetime::Seconds(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(s), _) => Ok(Some(std::time::Duration::from_secs(s))),
            (None, Some(f)) if f.fract() == 0.0 && f >= 0.0 && f <= MAX_LIFETIME_SECS as f64 => {
                Ok(Some(std::time::Duration::from_secs(f as u64)))
            }
            _ => Err(serde::de::Error::custom(format!(
                "expires_in {n} is not a whole number of seconds from 1 to {MAX_LIFETIME_SECS}"
            ))),
        },
        Some(Lifetime::Text(text)) => parse_lifetime(&text).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "expires_in {:?} is not a lifetime like 30d, 12h or 90s",
                text.chars().take(40).collect::<String>()
            ))
        }),
    }
}

/// A token just made: the only time its secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The secret to send as `Authorization: Bearer <token>`.
    pub token: String,
    /// The token as stored.
    #[serde(flatten)]
    pub details: Token,
}

/// Every token.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    /// Newest first; never a secret.
    pub items: Vec<Token>,
}

fn store(state: &AppState) -> TokenStore {
    state
        .auth
        .tokens()
        .cloned()
        .unwrap_or_else(|| TokenStore::new(state.pool.clone()))
}

#[utoipa::path(post, path = "/tokens", tag = "tokens",
    security(("bearer" = ["admin"])), request_body = CreateToken,
    responses((status = 201, description = "Made; the secret is in `token`, shown this once", body = CreatedToken),
        (status = 400, response = BadRequest), (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType), (status = 422, response = Validation),
        (status = 503, response = Unavailable)))]
async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    use crate::extract::CommandInput as _;
    let input = CreateToken::read(headers.get(axum::http::header::CONTENT_TYPE), &body)?;
    let scopes = Scopes::parse(input.scopes.iter().map(String::as_str))
        .map_err(|e| ApiError::Validation(e.to_string()))?;
    let new = NewToken {
        name: input.name.unwrap_or_default(),
        scopes,
        user_id: input.user_id,
        expires_in: input.expires_in,
        created_by: caller.actor.to_string(),
    };
    match store(&state).create(&new).await {
        Ok((details, secret)) => Ok((
            StatusCode::CREATED,
            Json(CreatedToken {
                token: secret.expose(),
                details,
            }),
        )
            .into_response()),
        Err(CreateError::Rule(rule)) => Err(ApiError::Validation(rule.to_string())),
        Err(CreateError::Store(e)) => Err(e.into()),
    }
}

#[utoipa::path(get, path = "/tokens", tag = "tokens",
    security(("bearer" = ["admin"])),
    responses((status = 200, description = "Every token, newest first, without secrets", body = TokenList),
        (status = 503, response = Unavailable)))]
async fn list_tokens(State(state): State<AppState>) -> Result<Json<TokenList>, ApiError> {
    Ok(Json(TokenList {
        items: store(&state).list().await?,
    }))
}

#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens",
    security(("bearer" = ["admin"])), params(IdParam),
    responses((status = 200, description = "Revoked (again: unchanged); refused by every process within 2 s", body = Token),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 503, response = Unavailable)))]
async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<Token>, ApiError> {
    // An admin locking itself out by a slip is worse than one more step.
    if caller.actor == Actor::Token(id) {
        return Err(ApiError::InvalidTransition(
            "a token cannot revoke itself over HTTP; use another admin token, or `ordo token revoke`"
                .into(),
        ));
    }
    store(&state)
        .revoke(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no token {id}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// What the pattern admits is what the parser reads, and the other way
    /// round, for lifetimes from 1 second to the schema's maximum.
    #[test]
    fn lifetimes_read_as_their_pattern_says() {
        let pattern = regex::Regex::new(LIFETIME_PATTERN).unwrap();
        for (text, seconds) in [
            ("90s", 90),
            ("15m", 900),
            ("12h", 43_200),
            ("30d", 2_592_000),
            ("2w", 1_209_600),
        ] {
            assert!(pattern.is_match(text), "{text}");
            assert_eq!(
                parse_lifetime(text),
                Some(std::time::Duration::from_secs(seconds)),
                "{text}"
            );
        }
        for text in [
            "",
            "30",
            "d",
            "0d",
            "30y",
            "3 d",
            "-1d",
            "+1d",
            "1.5h",
            "99999999999w",
        ] {
            assert!(!pattern.is_match(text), "{text}");
        }
        for text in ["", "30", "d", "30y", "3 d", "-1d", "+1d", "1.5h"] {
            assert_eq!(parse_lifetime(text), None, "{text}");
        }
    }

    #[test]
    fn whole_seconds_read_however_written() {
        let read = |body: &str| serde_json::from_str::<CreateToken>(body).map(|t| t.expires_in);
        let body = |v: &str| format!(r#"{{"scopes":["ops"],"expires_in":{v}}}"#);
        assert_eq!(
            read(&body("612")).unwrap(),
            Some(std::time::Duration::from_secs(612))
        );
        assert_eq!(
            read(&body("612.0")).unwrap(),
            Some(std::time::Duration::from_secs(612))
        );
        assert_eq!(read(&body("null")).unwrap(), None);
        assert!(read(&body("1.5")).is_err());
        assert!(read(&body("-3")).is_err());
    }
}
