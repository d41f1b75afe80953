//! `/products`: create, restock, change price, discontinue; read one, page all.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
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

use crate::commands::{context, execute, idempotent, new_id, request_hash, CommandResponse};
use crate::error::{ApiError, Problem};
use crate::extract::{json_body, parse_uuid, ApiQuery, IdPath, RequestMeta};
use crate::input::{AmountInput, WholeInput};
use crate::reads::{wait, ReadParams};
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
    /// Unique stock-keeping unit: letters, digits, `.`, `_`, `-`.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Price, as a decimal string (`"19.99"`) or number, at most 4 decimals.
    #[schema(value_type = String, example = "19.99")]
    pub price: AmountInput,
    /// Units in stock to begin with.
    #[schema(value_type = u32)]
    pub stock: WholeInput,
    /// A client-chosen id; repeating the same request with it is a retry.
    #[serde(default)]
    pub id: Option<Uuid>,
}

/// `POST /products/{id}/restock`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Restock {
    /// Units to add, at least 1.
    #[schema(value_type = u32)]
    pub quantity: WholeInput,
}

/// `POST /products/{id}/price`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePrice {
    /// The new price.
    #[schema(value_type = String, example = "17.50")]
    pub price: AmountInput,
}

/// A page of products.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductPage {
    /// The products, by id.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<ProductView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// `GET /products?limit=&cursor=`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 500 (default 50).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// See `min_position` on every read.
    pub min_position: Option<String>,
}

fn validation(field: &str) -> impl Fn(domain::values::ValueError) -> ApiError + '_ {
    move |e| ApiError::Validation(format!("{field}: {e}"))
}

#[utoipa::path(post, path = "/products", tag = "products", request_body = CreateProduct,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = CommandResponse), (status = 400, body = Problem),
        (status = 409, description = "SKU taken", body = Problem), (status = 413, body = Problem),
        (status = 415, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem)))]
async fn create(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: CreateProduct = json_body(&headers, &body)?;
    let sku = Sku::parse(&input.sku).map_err(validation("sku"))?;
    let name = Name::parse(&input.name).map_err(validation("name"))?;
    let price = input.price.money("price")?;
    let stock = input.stock.stock("stock")?;
    let id = new_id(&meta, "POST /products", input.id);
    idempotent(&state, &meta, "POST /products", &body, |key| async {
        let command_id = key.or_else(|| {
            input
                .id
                .map(|id| format!("create:product-{id}:{}", request_hash(&[&body])))
        });
        let command = ProductCommand::Create {
            product_id: ProductId::new(id),
            sku,
            name,
            price,
            stock,
        };
        let (_, answer) =
            execute::<Product>(&state, id, command, &context(&meta, None, command_id)).await?;
        Ok((StatusCode::CREATED, answer))
    })
    .await
}

#[utoipa::path(post, path = "/products/{id}/restock", tag = "products", request_body = Restock,
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = CommandResponse), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn restock(
    State(state): State<AppState>,
    meta: RequestMeta,
    IdPath(id): IdPath,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: Restock = json_body(&headers, &body)?;
    let quantity = input.quantity.quantity("quantity")?;
    idempotent(
        &state,
        &meta,
        &format!("POST /products/{id}/restock"),
        &body,
        |key| async {
            let command = ProductCommand::Restock { quantity };
            let (_, answer) =
                execute::<Product>(&state, id, command, &context(&meta, None, key)).await?;
            Ok((StatusCode::OK, answer))
        },
    )
    .await
}

#[utoipa::path(post, path = "/products/{id}/price", tag = "products", request_body = ChangePrice,
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = CommandResponse), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn change_price(
    State(state): State<AppState>,
    meta: RequestMeta,
    IdPath(id): IdPath,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: ChangePrice = json_body(&headers, &body)?;
    let price = input.price.money("price")?;
    idempotent(
        &state,
        &meta,
        &format!("POST /products/{id}/price"),
        &body,
        |key| async {
            let command = ProductCommand::ChangePrice { price };
            let (_, answer) =
                execute::<Product>(&state, id, command, &context(&meta, None, key)).await?;
            Ok((StatusCode::OK, answer))
        },
    )
    .await
}

#[utoipa::path(post, path = "/products/{id}/discontinue", tag = "products",
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = CommandResponse), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem)))]
async fn discontinue(
    State(state): State<AppState>,
    meta: RequestMeta,
    IdPath(id): IdPath,
    body: Bytes,
) -> Result<Response, ApiError> {
    idempotent(
        &state,
        &meta,
        &format!("POST /products/{id}/discontinue"),
        &body,
        |key| async {
            let (_, answer) = execute::<Product>(
                &state,
                id,
                ProductCommand::Discontinue,
                &context(&meta, None, key),
            )
            .await?;
            Ok((StatusCode::OK, answer))
        },
    )
    .await
}

#[utoipa::path(get, path = "/products/{id}", tag = "products", params(("id" = Uuid, Path), ReadParams),
    responses((status = 200, description = "The product", body = Object), (status = 400, body = Problem),
        (status = 404, body = Problem), (status = 503, body = Problem)))]
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

#[utoipa::path(get, path = "/products", tag = "products", params(PageQuery),
    responses((status = 200, body = ProductPage), (status = 400, body = Problem), (status = 503, body = Problem)))]
async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<ProductPage>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 500".into(),
        ));
    }
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
