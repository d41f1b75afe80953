//! `/products`: create, restock, change price, discontinue; read one, page all.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use domain::ids::ProductId;
use domain::product::{Product, ProductCommand};
use domain::values::{Name, Sku};
use projectors::query::ProductView;
use projectors::Projection;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::commands::{Command, CommandResponse};
use crate::doc::ProductDoc;
use crate::error::responses::{
    BadRequest, Conflict, NotFound, PayloadTooLarge, Unavailable, UnsupportedMediaType, Validation,
};
use crate::error::ApiError;
use crate::extract::{
    optional_uuid_field, parse_uuid, ApiQuery, IdParam, IdPath, IdempotencyKey, JsonInput, NoInput,
};
use crate::input::{pattern_schema, validation, AmountInput, WholeInput, SKU_PATTERN};
use crate::reads::{page_limit, wait, PositionToken, ReadParams};
use crate::users::name_schema;
use crate::AppState;

/// Every `/products` route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(restock))
        .routes(routes!(change_price))
        .routes(routes!(discontinue))
        .routes(routes!(get_product))
}

/// `POST /products`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    /// Unique stock-keeping unit.
    #[schema(schema_with = sku_schema)]
    pub sku: String,
    /// Display name.
    #[schema(schema_with = name_schema)]
    pub name: String,
    /// Price.
    #[schema(schema_with = AmountInput::schema)]
    pub price: AmountInput,
    /// Units in stock to begin with.
    #[schema(schema_with = WholeInput::stock_schema)]
    pub stock: WholeInput,
    /// A client-chosen id; repeating the same request with it is a retry.
    #[serde(default, deserialize_with = "optional_uuid_field")]
    pub id: Option<Uuid>,
}

impl JsonInput for CreateProduct {}

/// The schema of a SKU in a request.
pub fn sku_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    pattern_schema(
        SKU_PATTERN,
        None,
        "A stock-keeping unit: 1 to 64 letters, digits, `.`, `_` or `-` (surrounding \
         whitespace is trimmed). Unique, case-insensitively.",
        "MUG-RED-01",
    )
}

/// `POST /products/{id}/restock`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Restock {
    /// Units to add.
    #[schema(schema_with = WholeInput::quantity_schema)]
    pub quantity: WholeInput,
}

impl JsonInput for Restock {}

/// `POST /products/{id}/price`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePrice {
    /// The new price.
    #[schema(schema_with = AmountInput::schema)]
    pub price: AmountInput,
}

impl JsonInput for ChangePrice {}

/// A page of products.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductPage {
    /// The products, by id.
    #[schema(value_type = Vec<ProductDoc>)]
    pub items: Vec<ProductView>,
    /// Pass as `cursor` for the next page; null on the last.
    #[schema(value_type = Option<Uuid>)]
    pub next_cursor: Option<String>,
}

/// `GET /products?limit=&cursor=`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<Uuid>)]
    pub cursor: Option<String>,
    /// See `min_position` on every read.
    #[param(value_type = Option<PositionToken>, inline, example = "1234.5678")]
    pub min_position: Option<String>,
}

#[utoipa::path(post, path = "/products", tag = "products",
    security(("bearer" = ["products:write"])), request_body = CreateProduct,
    params(IdempotencyKey),
    responses((status = 201, description = "Created", body = CommandResponse, links(
            ("GetProduct" = (operation_id = "get_product", parameters(("id" = "$response.body#/id")))),
            ("Restock" = (operation_id = "restock", parameters(("id" = "$response.body#/id")))),
            ("ChangePrice" = (operation_id = "change_price", parameters(("id" = "$response.body#/id")))),
            ("Discontinue" = (operation_id = "discontinue", parameters(("id" = "$response.body#/id"))))
        )),
        (status = 400, response = BadRequest), (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge), (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Validation), (status = 503, response = Unavailable)))]
async fn create(command: Command<CreateProduct>) -> Result<Response, ApiError> {
    let input = &command.input;
    let sku = Sku::parse(&input.sku).map_err(validation("sku"))?;
    let name = Name::parse(&input.name).map_err(validation("name"))?;
    let price = input.price.money("price")?;
    let stock = input.stock.stock("stock")?;
    command
        .create::<Product>(input.id, StatusCode::CREATED, |id| ProductCommand::Create {
            product_id: ProductId::new(id),
            sku,
            name,
            price,
            stock,
        })
        .await
}

#[utoipa::path(post, path = "/products/{id}/restock", tag = "products",
    security(("bearer" = ["products:write"])), request_body = Restock,
    params(IdParam, IdempotencyKey),
    responses((status = 200, description = "Done", body = CommandResponse),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType), (status = 422, response = Validation),
        (status = 503, response = Unavailable)))]
async fn restock(command: Command<Restock>) -> Result<Response, ApiError> {
    let quantity = command.input.quantity.quantity("quantity")?;
    command
        .update::<Product>(ProductCommand::Restock { quantity })
        .await
}

#[utoipa::path(post, path = "/products/{id}/price", tag = "products",
    security(("bearer" = ["products:write"])), request_body = ChangePrice,
    params(IdParam, IdempotencyKey),
    responses((status = 200, description = "Done", body = CommandResponse),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType), (status = 422, response = Validation),
        (status = 503, response = Unavailable)))]
async fn change_price(command: Command<ChangePrice>) -> Result<Response, ApiError> {
    let price = command.input.price.money("price")?;
    command
        .update::<Product>(ProductCommand::ChangePrice { price })
        .await
}

#[utoipa::path(post, path = "/products/{id}/discontinue", tag = "products",
    security(("bearer" = ["products:write"])),
    params(IdParam, IdempotencyKey),
    responses((status = 200, description = "Discontinued", body = CommandResponse),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable)))]
async fn discontinue(command: Command<NoInput>) -> Result<Response, ApiError> {
    command.update::<Product>(ProductCommand::Discontinue).await
}

#[utoipa::path(get, path = "/products/{id}", tag = "products",
    security((), ("bearer" = [])), params(IdParam, ReadParams),
    responses((status = 200, description = "The product", body = ProductDoc),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 503, response = Unavailable)))]
async fn get_product(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ApiQuery(params): ApiQuery<ReadParams>,
) -> Result<Json<ProductView>, ApiError> {
    wait(&state, Projection::Products, params.min_position.as_deref()).await?;
    let client = state.pool.get().await?;
    projectors::query::product(&**client, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no product {id}")))
}

#[utoipa::path(get, path = "/products", tag = "products",
    security((), ("bearer" = [])), params(PageQuery),
    responses((status = 200, description = "A page of products", body = ProductPage),
        (status = 400, response = BadRequest), (status = 503, response = Unavailable)))]
async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<ProductPage>, ApiError> {
    let limit = page_limit(query.limit, 50, 500)?;
    let after = query
        .cursor
        .as_deref()
        .map(|c| parse_uuid(c, "cursor"))
        .transpose()?;
    wait(&state, Projection::Products, query.min_position.as_deref()).await?;
    let client = state.pool.get().await?;
    let (items, next) = projectors::query::products(&**client, limit, after).await?;
    Ok(Json(ProductPage {
        items,
        next_cursor: next.map(|id| id.to_string()),
    }))
}
