//! Schemas of what the API answers, for the OpenAPI document.
//!
//! The read models (`projectors`), envelopes (`eventstore`) and sagas
//! (`sagas`) are serialised by crates that know nothing of OpenAPI; these
//! types describe their JSON field by field, so that clients (and the
//! schemathesis sweep, `scripts/sweep`, which checks every answer against
//! them) know what comes back. They are never built, only described.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// An amount as answers write it: a decimal string with at least two
/// decimals, like `"19.99"`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Amount, value_type = String, pattern = r"^-?[0-9]+\.[0-9]{2,}$", example = "19.99")]
pub struct AmountDoc(pub String);

/// A position token: pass it as `min_position` (or `after`, `as_of`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Position, value_type = String, pattern = r"^[0-9]{1,20}\.[0-9]{1,20}$", example = "1234.5678")]
pub struct PositionDoc(pub String);

/// A user (`GET /users/{id}`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserDoc {
    /// The user's id.
    pub id: Uuid,
    /// The email, lowercased.
    pub email: String,
    /// Display name.
    pub name: String,
    /// False once deactivated.
    pub active: bool,
    /// Orders placed, whatever became of them.
    #[schema(minimum = 0)]
    pub orders_placed: i32,
    /// Sum of the totals of orders paid (and not cancelled afterwards).
    pub total_spent: AmountDoc,
    /// The user stream's version.
    #[schema(minimum = 0)]
    pub version: i64,
}

/// A product (`GET /products/{id}`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Product)]
pub struct ProductDoc {
    /// The product's id.
    pub id: Uuid,
    /// Its SKU, uppercased.
    pub sku: String,
    /// Its name.
    pub name: String,
    /// Current price.
    pub price: AmountDoc,
    /// Units in stock.
    #[schema(minimum = 0)]
    pub on_hand: i64,
    /// Units held for orders.
    #[schema(minimum = 0)]
    pub reserved: i64,
    /// `on_hand - reserved`.
    #[schema(minimum = 0)]
    pub available: i64,
    /// No longer sold.
    pub discontinued: bool,
    /// The product stream's version.
    #[schema(minimum = 0)]
    pub version: i64,
}

/// Where an order is in its lifecycle: the domain's statuses, by their
/// names (`domain::order::OrderStatus`), so the document cannot miss one.
#[derive(Debug, Serialize)]
pub struct OrderStatusDoc(pub String);

impl utoipa::PartialSchema for OrderStatusDoc {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(
                domain::order::OrderStatus::ALL.map(domain::order::OrderStatus::as_str),
            ))
            .description(Some(
                "Where an order is in its lifecycle: pending while stock is reserved, \
                 then confirmed or rejected; confirmed orders are paid or cancelled, \
                 paid ones shipped (or cancelled), shipped ones delivered.",
            ))
            .into()
    }
}

impl ToSchema for OrderStatusDoc {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("OrderStatus")
    }
}

/// One line of an order.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OrderLine)]
pub struct OrderLineDoc {
    /// The product.
    pub product_id: Uuid,
    /// Units.
    #[schema(minimum = 1)]
    pub quantity: u32,
    /// Price per unit when the order was placed.
    pub unit_price: AmountDoc,
    /// `quantity × unit_price`.
    pub line_total: AmountDoc,
}

/// An order (`GET /orders/{id}`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Order)]
pub struct OrderDoc {
    /// The order's id.
    pub id: Uuid,
    /// Who placed it.
    pub user_id: Uuid,
    /// Where it is in its lifecycle.
    pub status: OrderStatusDoc,
    /// What was ordered.
    pub lines: Vec<OrderLineDoc>,
    /// Sum of the line totals.
    pub total: AmountDoc,
    /// Why it was rejected or cancelled.
    pub reason: Option<String>,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The order stream's version.
    #[schema(minimum = 0)]
    pub version: i64,
}

/// The kind of aggregate a stream holds.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = StreamType)]
pub enum StreamTypeDoc {
    /// `user-<uuid>`.
    User,
    /// `product-<uuid>`.
    Product,
    /// `order-<uuid>`.
    Order,
}

/// One event: a CloudEvents 1.0 structured-mode JSON object.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Event)]
pub struct EventDoc {
    /// Always `1.0`.
    #[schema(example = "1.0")]
    pub specversion: String,
    /// The event id.
    pub id: Uuid,
    /// `/ordo/<streamtype>`.
    #[schema(example = "/ordo/order")]
    pub source: String,
    /// The event type, e.g. `OrderPlaced`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The stream id, e.g. `order-<uuid>`.
    pub subject: String,
    /// When it was recorded, RFC 3339 UTC.
    pub time: DateTime<Utc>,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// `schemas/events/<streamtype>/<Type>.v<N>.json`.
    pub dataschema: String,
    /// The payload, at `schemaversion`.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// The kind of stream.
    pub streamtype: StreamTypeDoc,
    /// The event's version within its stream.
    #[schema(minimum = 1)]
    pub streamversion: u64,
    /// Position token in the global log.
    pub position: PositionDoc,
    /// Version of `data`'s layout.
    #[schema(minimum = 1)]
    pub schemaversion: i32,
    /// Shared by everything one order (or request) causes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub correlationid: Option<Uuid>,
    /// The event or command that caused this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub causationid: Option<Uuid>,
    /// Who caused it: `token:<id>`, `jwt:<issuer>#<sub>`, `saga`, `system`
    /// or `anonymous`; absent on events written before actors were recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, example = "saga")]
    pub actor: Option<String>,
}

/// An order's fulfilment saga (`GET /sagas/{order_id}`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Saga)]
pub struct SagaDoc {
    /// The order.
    pub order_id: Uuid,
    /// Where the saga is (`reserving`, `awaiting_payment`, `rejected`, ...).
    pub phase: String,
    /// True once it reached a final phase with nothing outstanding.
    pub finished: bool,
    /// True when a human must look.
    pub needs_attention: bool,
    /// Why the runner stopped acting on this saga, if it did.
    pub parked: Option<String>,
    /// The order's lines and where each one's stock is.
    #[schema(value_type = Vec<Object>)]
    pub lines: Vec<serde_json::Value>,
    /// Commands issued and not yet answered.
    #[schema(value_type = Vec<Object>)]
    pub pending: Vec<serde_json::Value>,
    /// Timers set.
    #[schema(value_type = Vec<Object>)]
    pub timers: Vec<serde_json::Value>,
    /// The refusal the order was rejected for.
    #[schema(value_type = Option<Object>)]
    pub rejection: Option<serde_json::Value>,
    /// Why the order was cancelled.
    pub cancel_reason: Option<String>,
    /// Everything the saga did and saw, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub history: Vec<serde_json::Value>,
    /// The order's correlation id.
    pub correlation_id: Option<Uuid>,
    /// Bumped on every change.
    pub version: i64,
    /// When the saga started.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}
