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

use crate::auth::tokens::{CreateError, NewToken, Token, TokenRuleError};
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
    /// How long it works: a duration like `30d`, `12h`, `90s`, or a number
    /// of seconds. Absent: until revoked.
    #[serde(default, deserialize_with = "lifetime")]
    #[schema(value_type = Option<String>, example = "30d")]
    pub expires_in: Option<std::time::Duration>,
}

impl JsonInput for CreateToken {}

fn lifetime<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<std::time::Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Lifetime {
        Seconds(u64),
        Text(String),
    }
    match Option::<Lifetime>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Lifetime::Seconds(s)) => Ok(Some(std::time::Duration::from_secs(s))),
        Some(Lifetime::Text(text)) => humantime::parse_duration(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("expires_in {text:?}: {e}"))),
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

impl From<TokenRuleError> for ApiError {
    fn from(e: TokenRuleError) -> Self {
        ApiError::Validation(e.to_string())
    }
}
