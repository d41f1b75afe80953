//! `/orders`: place, pay, ship, deliver, cancel; read one (now or as it
//! stood then), and its timeline.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use domain::aggregate::Aggregate;
use domain::ids::{OrderId, ProductId, UserId};
use domain::order::{Order, OrderCommand, OrderState, MAX_LINES};
use domain::values::{CancelReason, Quantity};
use eventstore::envelope::Envelope;
use eventstore::store::{AsOf, LogFilter};
use eventstore::Position;
use projectors::query::{OrderLineView, OrderView};
use projectors::Projection;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Caller;
use crate::commands::{answer, confine, Command, CommandResponse, Resource as _};
use crate::doc::{EventDoc, OrderDoc};
use crate::error::responses::{
    BadRequest, Conflict, NotFound, PayloadTooLarge, Unavailable, UnsupportedMediaType, Validation,
};
use crate::error::ApiError;
use crate::extract::{
    optional_uuid_field, parse_time, uuid_field, ApiQuery, IdParam, IdPath, IdempotencyKey,
    JsonInput, NoInput,
};
use crate::input::{pattern_schema, validation, AmountInput, WholeInput, REASON_PATTERN};
use crate::reads::{position, wait, PositionToken};
use crate::AppState;

/// Every `/orders` route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(place))
        .routes(routes!(pay))
        .routes(routes!(ship))
        .routes(routes!(deliver))
        .routes(routes!(cancel))
        .routes(routes!(get_order))
        .routes(routes!(timeline))
}

/// `POST /orders`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// Who orders; must be an active user (422 otherwise).
    #[serde(deserialize_with = "uuid_field")]
    pub user_id: Uuid,
    /// 1 to 100 lines, each product at most once (422 otherwise); every
    /// product must exist (422 otherwise).
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<LineInput>,
    /// A client-chosen id; repeating the same request with it is a retry.
    #[serde(default, deserialize_with = "optional_uuid_field")]
    pub id: Option<Uuid>,
}

impl JsonInput for PlaceOrder {}

/// One line of `POST /orders`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineInput {
    /// The product.
    #[serde(deserialize_with = "uuid_field")]
    pub product_id: Uuid,
    /// Units.
    #[schema(schema_with = WholeInput::quantity_schema)]
    pub quantity: WholeInput,
}

/// `POST /orders/{id}/pay`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pay {
    /// Must equal the order's total (422 otherwise).
    #[schema(schema_with = AmountInput::schema)]
    pub amount: AmountInput,
}

impl JsonInput for Pay {}

/// `POST /orders/{id}/cancel`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    /// Why (default `customer_request`).
    #[serde(default)]
    #[schema(schema_with = reason_schema)]
    pub reason: Option<String>,
}

impl JsonInput for Cancel {}

fn reason_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    utoipa::openapi::schema::OneOfBuilder::new()
        .item(pattern_schema(
            REASON_PATTERN,
            None,
            "1 to 200 characters once surrounding whitespace is trimmed, no control characters",
            "changed my mind",
        ))
        .item(
            utoipa::openapi::schema::ObjectBuilder::new().schema_type(utoipa::openapi::Type::Null),
        )
        .description(Some(
            "Why the order is cancelled; absent or null: `customer_request`.",
        ))
        .into()
}

/// `GET /orders/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrderQuery {
    /// See `min_position` on every read (ignored with `as_of`, which reads
    /// the event log itself).
    #[param(value_type = Option<PositionToken>, inline, example = "1234.5678")]
    pub min_position: Option<String>,
    /// A position token or an RFC 3339 time: the order as it stood then,
    /// folded from the event log.
    #[param(schema_with = as_of_schema)]
    pub as_of: Option<String>,
}

fn as_of_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    OneOfBuilder::new()
        .item(PositionToken::object().examples(["1234.5678"]))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                .examples(["2026-11-23T10:00:00Z"]),
        )
        .into()
}

/// `GET /orders/{id}/timeline`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Timeline {
    /// Every event the order caused, in log order.
    #[schema(value_type = Vec<EventDoc>)]
    pub events: Vec<Envelope>,
}

#[utoipa::path(post, path = "/orders", tag = "orders",
    security(("bearer" = ["orders:write"]), ("bearer" = ["customer"])), request_body = PlaceOrder,
    params(IdempotencyKey),
    responses((status = 202, description = "Accepted, pending: stock is being reserved", body = CommandResponse,
        links(
            ("GetOrder" = (operation_id = "get_order", parameters(("id" = "$response.body#/id")))),
            ("Timeline" = (operation_id = "timeline", parameters(("id" = "$response.body#/id")))),
            ("Saga" = (operation_id = "get_saga", parameters(("order_id" = "$response.body#/id")))),
            ("Pay" = (operation_id = "pay", parameters(("id" = "$response.body#/id")))),
            ("Ship" = (operation_id = "ship", parameters(("id" = "$response.body#/id")))),
            ("Deliver" = (operation_id = "deliver", parameters(("id" = "$response.body#/id")))),
            ("Cancel" = (operation_id = "cancel", parameters(("id" = "$response.body#/id"))))
        )),
        (status = 400, response = BadRequest), (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge), (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Validation), (status = 503, response = Unavailable)))]
async fn place(command: Command<PlaceOrder>) -> Result<Response, ApiError> {
    let input = &command.input;
    // Checked before the lines are read, so that a request with too many
    // lines is told so rather than about one of them.
    if input.lines.is_empty() {
        return Err(ApiError::Validation(
            "an order needs at least one line".into(),
        ));
    }
    if input.lines.len() > MAX_LINES {
        return Err(ApiError::Validation(format!(
            "an order has at most {MAX_LINES} lines"
        )));
    }
    let mut lines = Vec::with_capacity(input.lines.len());
    for (i, line) in input.lines.iter().enumerate() {
        let quantity: Quantity = line.quantity.quantity(&format!("lines[{i}].quantity"))?;
        lines.push((ProductId::new(line.product_id), quantity));
    }
    command.caller.may_act_for(input.user_id)?;
    let id = command.new_id(input.id);
    let state = &command.state;
    state.admission.admit().await;
    command
        .run::<Order, _, _>(id, input.id, |ctx| async move {
            let placed = state
                .executor
                .place_order(OrderId::new(id), UserId::new(input.user_id), &lines, &ctx)
                .await;
            let (_, mut answer) = answer::<Order>(state, id, placed).await?;
            // The answer to a placement, also to a repeat of it: the order
            // as placed, before the saga has reserved anything.
            answer.status = Some("pending".into());
            Ok((StatusCode::ACCEPTED, answer))
        })
        .await
}

#[utoipa::path(post, path = "/orders/{id}/pay", tag = "orders",
    security(("bearer" = ["orders:write"]), ("bearer" = ["customer"])), request_body = Pay,
    params(IdParam, IdempotencyKey),
    responses((status = 200, description = "Paid", body = CommandResponse),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType), (status = 422, response = Validation),
        (status = 503, response = Unavailable)))]
async fn pay(command: Command<Pay>) -> Result<Response, ApiError> {
    let amount = command.input.amount.money("amount")?;
    command.update::<Order>(OrderCommand::Pay { amount }).await
}

#[utoipa::path(post, path = "/orders/{id}/ship", tag = "orders",
    security(("bearer" = ["orders:fulfil"])),
    params(IdParam, IdempotencyKey),
    responses((status = 200, description = "Shipped", body = CommandResponse),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable)))]
async fn ship(command: Command<NoInput>) -> Result<Response, ApiError> {
    command.update::<Order>(OrderCommand::Ship).await
}

#[utoipa::path(post, path = "/orders/{id}/deliver", tag = "orders",
    security(("bearer" = ["orders:fulfil"])),
    params(IdParam, IdempotencyKey),
    responses((status = 200, description = "Delivered", body = CommandResponse),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable)))]
async fn deliver(command: Command<NoInput>) -> Result<Response, ApiError> {
    command.update::<Order>(OrderCommand::Deliver).await
}

#[utoipa::path(post, path = "/orders/{id}/cancel", tag = "orders",
    security(("bearer" = ["orders:write"]), ("bearer" = ["customer"])),
    request_body(content = Option<Cancel>, description = "Optional: no body means `customer_request`"),
    params(IdParam, IdempotencyKey),
    responses((status = 200, description = "Cancelled", body = CommandResponse),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 409, response = Conflict), (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType), (status = 422, response = Validation),
        (status = 503, response = Unavailable)))]
async fn cancel(command: Command<Option<Cancel>>) -> Result<Response, ApiError> {
    // No body, or a JSON `null`: no reason given.
    let reason = command
        .input
        .as_ref()
        .and_then(|cancel| cancel.reason.as_deref())
        .unwrap_or(CancelReason::CUSTOMER_REQUEST);
    let reason = CancelReason::parse(reason).map_err(validation("reason"))?;
    command
        .update::<Order>(OrderCommand::Cancel { reason })
        .await
}

#[utoipa::path(get, path = "/orders/{id}", tag = "orders",
    security(("bearer" = ["orders:read"]), ("bearer" = ["customer"])), params(IdParam, OrderQuery),
    responses((status = 200, description = "The order", body = OrderDoc),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 503, response = Unavailable)))]
async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    ApiQuery(query): ApiQuery<OrderQuery>,
) -> Result<Json<OrderView>, ApiError> {
    if let Some(as_of) = query.as_of.as_deref() {
        // Not used with `as_of`, but a malformed token is still malformed.
        query.min_position.as_deref().map(position).transpose()?;
        let as_of = parse_as_of(as_of)?;
        confine::<Order>(&state, &caller, id).await?;
        return as_it_stood(&state, id, as_of).await.map(Json);
    }
    wait(&state, Projection::Orders, query.min_position.as_deref()).await?;
    let client = state.pool.get().await?;
    let order = projectors::query::order(&**client, id)
        .await?
        .ok_or_else(|| Order::not_found(id))?;
    caller.may_see(Some(order.user_id), || Order::not_found(id))?;
    Ok(Json(order))
}

/// A position token, or an RFC 3339 time.
fn parse_as_of(text: &str) -> Result<AsOf, ApiError> {
    if let Ok(position) = position(text) {
        return Ok(AsOf::Position(position));
    }
    parse_time(text, "as_of").map(AsOf::Time).map_err(|_| {
        ApiError::BadRequest("as_of must be a position token or an RFC 3339 time".into())
    })
}

/// The order folded from its events up to `as_of`.
async fn as_it_stood(state: &AppState, id: Uuid, as_of: AsOf) -> Result<OrderView, ApiError> {
    let events = state
        .store
        .read_stream_as_of(&OrderId::new(id).stream_id(), as_of)
        .await?;
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Err(ApiError::NotFound(format!("order {id} did not exist then")));
    };
    let (placed_at, updated_at, version) = (first.recorded_at, last.recorded_at, last.version);
    let mut order = OrderState::default();
    for recorded in &events {
        let event = eventstore::executor::decode::<Order>(recorded)?;
        order = Order::evolve(order, &event);
    }
    let placed = order
        .order()
        .ok_or_else(|| ApiError::NotFound(format!("order {id} did not exist then")))?;
    let mut lines = Vec::with_capacity(placed.lines.len());
    for line in &placed.lines {
        let total = line
            .line_total()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        lines.push(OrderLineView {
            product_id: line.product_id.as_uuid(),
            quantity: line.quantity.get(),
            unit_price: line.unit_price.to_string(),
            line_total: total.to_string(),
        });
    }
    Ok(OrderView {
        id,
        user_id: placed.user_id.as_uuid(),
        status: placed.status.as_str().to_owned(),
        lines,
        total: placed.total.to_string(),
        reason: order.reason().map(str::to_owned),
        placed_at,
        updated_at,
        version: version as i64,
    })
}

#[utoipa::path(get, path = "/orders/{id}/timeline", tag = "orders",
    security(("bearer" = ["orders:read"]), ("bearer" = ["customer"])), params(IdParam),
    responses((status = 200, description = "Every event the order caused", body = Timeline),
        (status = 400, response = BadRequest), (status = 404, response = NotFound),
        (status = 503, response = Unavailable)))]
async fn timeline(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<Timeline>, ApiError> {
    confine::<Order>(&state, &caller, id).await?;
    let filter = LogFilter {
        correlation_id: Some(id),
        ..LogFilter::default()
    };
    let mut events = Vec::new();
    let mut after = Position::START;
    loop {
        let page = state.log.read_log(after, &filter, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        events.extend(page.iter().map(Envelope::from_recorded));
    }
    if events.is_empty() {
        return Err(Order::not_found(id));
    }
    Ok(Json(Timeline { events }))
}

#[cfg(test)]
mod tests {
    use domain::order::MAX_LINES;

    /// utoipa's attributes take numbers only as literals: the bound the
    /// document states must be the domain's.
    #[test]
    fn the_documented_line_bound_is_the_domains() {
        let spec = crate::document(&crate::openapi());
        let lines = &spec["components"]["schemas"]["PlaceOrder"]["properties"]["lines"];
        assert_eq!(lines["maxItems"], MAX_LINES);
        assert_eq!(lines["minItems"], 1);
    }
}
