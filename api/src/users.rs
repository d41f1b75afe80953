//! `/users`: register, rename, deactivate; read one, find by email, list orders.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use domain::ids::UserId;
use domain::user::{User, UserCommand};
use domain::values::{Email, Name};
use projectors::query::{OrderView, UserView};
use projectors::Projection;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Caller;
use crate::commands::{Command, CommandResponse, Resource as _};
use crate::doc::{OrderDoc, UserDoc};
use crate::error::responses::{
    BadRequest, Conflict, NotFound, PayloadTooLarge, Unavailable, UnsupportedMediaType, Validation,
};
use crate::error::ApiError;
use crate::extract::{
    optional_uuid_field, ApiQuery, IdParam, IdPath, IdempotencyKey, JsonInput, NoInput,
};
use crate::input::{email_length, pattern_schema, validation, EMAIL_PATTERN, NAME_PATTERN};
use crate::reads::{wait, PositionToken, ReadParams};
use crate::AppState;

/// Every `/users` route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, find_by_email))
        .routes(routes!(rename))
        .routes(routes!(deactivate))
        .routes(routes!(get_user))
        .routes(routes!(user_orders))
}

/// `POST /users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterUser {
    /// Unique, case-insensitively.
    #[schema(schema_with = email_schema)]
    pub email: String,
    /// Display name.
    #[schema(schema_with = name_schema)]
    pub name: String,
    /// A client-chosen id; repeating the same request with it is a retry.
    #[serde(default, deserialize_with = "optional_uuid_field")]
    pub id: Option<Uuid>,
}

impl JsonInput for RegisterUser {}

/// The schema of an email in a request.
pub fn email_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    pattern_schema(
        EMAIL_PATTERN,
        Some(domain::values::Email::MAX_LEN),
        "An email: one `@`, a name before it, a dotted domain after it, no whitespace \
         or control characters (surrounding whitespace is trimmed), at most 254 characters. \
         Unique across users, case-insensitively.",
        "ada@example.com",
    )
}

/// The schema of a display name in a request.
pub fn name_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    pattern_schema(
        NAME_PATTERN,
        None,
        "A display name: 1 to 200 characters once surrounding whitespace is trimmed, \
         no control characters.",
        "Ada Lovelace",
    )
}

/// `POST /users/{id}/rename`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameUser {
    /// The new name.
    #[schema(schema_with = name_schema)]
    pub name: String,
}

impl JsonInput for RenameUser {}

/// Lists of users.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    /// The users.
    #[schema(value_type = Vec<UserDoc>)]
    pub items: Vec<UserView>,
}

/// Lists of orders.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderList {
    /// The orders, newest first.
    #[schema(value_type = Vec<OrderDoc>)]
    pub items: Vec<OrderView>,
}

/// `GET /users?email=`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EmailQuery {
    /// The email to look for (any case; surrounding whitespace is ignored;
    /// text that is no email finds nobody).
    pub email: String,
    /// See `min_position` on every read.
    #[param(value_type = Option<PositionToken>, inline, example = "1234.5678")]
    pub min_position: Option<String>,
}

#[utoipa::path(post, path = "/users", tag = "users",
    security(("bearer" = ["users:write"])), request_body = RegisterUser,
    params(IdempotencyKey),
    responses(
        (status = 201, description = "Registered", body = CommandResponse, links(
            ("GetUser" = (operation_id = "get_user", parameters(("id" = "$response.body#/id")))),
            ("RenameUser" = (operation_id = "rename", parameters(("id" = "$response.body#/id")))),
            ("DeactivateUser" = (operation_id = "deactivate", parameters(("id" = "$response.body#/id")))),
            ("UserOrders" = (operation_id = "user_orders", parameters(("id" = "$response.body#/id"))))
        )),
        (status = 400, response = BadRequest), (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge), (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Validation), (status = 503, response = Unavailable)))]
async fn register(command: Command<RegisterUser>) -> Result<Response, ApiError> {
    let input = &command.input;
    email_length(&input.email)?;
    let email = Email::parse(&input.email).map_err(validation("email"))?;
    let name = Name::parse(&input.name).map_err(validation("name"))?;
    command
        .create::<User>(input.id, StatusCode::CREATED, |id| UserCommand::Register {
            user_id: UserId::new(id),
            email,
            name,
        })
        .await
}

#[utoipa::path(post, path = "/users/{id}/rename", tag = "users",
    security(("bearer" = ["users:write"]), ("bearer" = ["customer"])), request_body = RenameUser,
    params(IdParam, IdempotencyKey),
    responses((status = 200, description = "Renamed", body = CommandResponse),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType), (status = 422, response = Validation),
        (status = 503, response = Unavailable)))]
async fn rename(command: Command<RenameUser>) -> Result<Response, ApiError> {
    let name = Name::parse(&command.input.name).map_err(validation("name"))?;
    command.update::<User>(UserCommand::Rename { name }).await
}

#[utoipa::path(post, path = "/users/{id}/deactivate", tag = "users",
    security(("bearer" = ["users:write"])),
    params(IdParam, IdempotencyKey),
    responses((status = 200, description = "Deactivated", body = CommandResponse),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable)))]
async fn deactivate(command: Command<NoInput>) -> Result<Response, ApiError> {
    command.update::<User>(UserCommand::Deactivate).await
}

#[utoipa::path(get, path = "/users/{id}", tag = "users",
    security(("bearer" = ["users:read"]), ("bearer" = ["customer"])), params(IdParam, ReadParams),
    responses((status = 200, description = "The user", body = UserDoc),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 503, response = Unavailable)))]
async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    ApiQuery(params): ApiQuery<ReadParams>,
) -> Result<Json<UserView>, ApiError> {
    caller.may_see(Some(id), || User::not_found(id))?;
    wait(&state, Projection::Users, params.min_position.as_deref()).await?;
    let client = state.pool.get().await?;
    projectors::query::user(&**client, id)
        .await?
        .map(Json)
        .ok_or_else(|| User::not_found(id))
}

#[utoipa::path(get, path = "/users", tag = "users",
    security(("bearer" = ["users:read"])), params(EmailQuery),
    responses((status = 200, description = "The user with that email, if any", body = UserList),
        (status = 400, response = BadRequest), (status = 503, response = Unavailable)))]
async fn find_by_email(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EmailQuery>,
) -> Result<Json<UserList>, ApiError> {
    wait(&state, Projection::Users, query.min_position.as_deref()).await?;
    let client = state.pool.get().await?;
    let items = match Email::parse(&query.email) {
        Ok(email) => projectors::query::users_by_email(&**client, email.as_str()).await?,
        // Not an email anybody could have registered with.
        Err(_) => Vec::new(),
    };
    Ok(Json(UserList { items }))
}

#[utoipa::path(get, path = "/users/{id}/orders", tag = "users",
    security(("bearer" = ["orders:read"]), ("bearer" = ["customer"])), params(IdParam, ReadParams),
    responses((status = 200, description = "The user's orders, newest first", body = OrderList),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 503, response = Unavailable)))]
async fn user_orders(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    ApiQuery(params): ApiQuery<ReadParams>,
) -> Result<Json<OrderList>, ApiError> {
    caller.may_see(Some(id), || User::not_found(id))?;
    wait(&state, Projection::Users, params.min_position.as_deref()).await?;
    wait(&state, Projection::Orders, params.min_position.as_deref()).await?;
    let client = state.pool.get().await?;
    if projectors::query::user(&**client, id).await?.is_none() {
        return Err(User::not_found(id));
    }
    let items = projectors::query::user_orders(&**client, id, 1000).await?;
    Ok(Json(OrderList { items }))
}
