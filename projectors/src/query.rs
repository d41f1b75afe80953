//! What the HTTP API reads from the read models, and read-your-writes.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use eventstore::{Position, StoreError};
use rust_decimal::Decimal;
use serde::Serialize;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::Projection;

/// Money as the API writes it: a string with at least two decimals.
fn money(text: &str) -> Result<String, StoreError> {
    let mut d: Decimal = crate::model::decimal(text)?;
    d = d.normalize();
    if d.scale() < 2 {
        d.rescale(2);
    }
    Ok(d.to_string())
}

/// The row of `read.<table>` with this id, if there is one, as `from_row`
/// reads `columns`.
async fn by_id<C: GenericClient, T>(
    client: &C,
    columns: &str,
    table: &str,
    id: Uuid,
    from_row: fn(&tokio_postgres::Row) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let row = client
        .query_opt(
            &format!("select {columns} from read.{table} where id = $1"),
            &[&id],
        )
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// `GET /users/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserView {
    /// The user's id.
    pub id: Uuid,
    /// Normalised email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// False once deactivated.
    pub active: bool,
    /// Orders placed, whatever became of them.
    pub orders_placed: i32,
    /// Sum of the totals of orders paid (and not cancelled afterwards).
    pub total_spent: String,
    /// The user stream's version.
    pub version: i64,
}

const USER_COLUMNS: &str = "id, email, name, active, orders_placed, total_spent::text, version";

fn user_row(row: &tokio_postgres::Row) -> Result<UserView, StoreError> {
    Ok(UserView {
        id: row.try_get(0)?,
        email: row.try_get(1)?,
        name: row.try_get(2)?,
        active: row.try_get(3)?,
        orders_placed: row.try_get(4)?,
        total_spent: money(row.try_get(5)?)?,
        version: row.try_get(6)?,
    })
}

/// One user.
pub async fn user<C: GenericClient>(client: &C, id: Uuid) -> Result<Option<UserView>, StoreError> {
    by_id(client, USER_COLUMNS, "users", id, user_row).await
}

/// Users with this (normalised) email: at most one.
pub async fn users_by_email<C: GenericClient>(
    client: &C,
    email: &str,
) -> Result<Vec<UserView>, StoreError> {
    let rows = client
        .query(
            &format!("select {USER_COLUMNS} from read.users where email = $1 order by id"),
            &[&email],
        )
        .await?;
    rows.iter().map(user_row).collect()
}

/// `GET /products/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProductView {
    /// The product's id.
    pub id: Uuid,
    /// Its SKU.
    pub sku: String,
    /// Its name.
    pub name: String,
    /// Current price.
    pub price: String,
    /// Units in stock.
    pub on_hand: i64,
    /// Units held for orders.
    pub reserved: i64,
    /// `on_hand - reserved`.
    pub available: i64,
    /// No longer sold.
    pub discontinued: bool,
    /// The product stream's version.
    pub version: i64,
}

const PRODUCT_COLUMNS: &str =
    "id, sku, name, price::text, on_hand, reserved, discontinued, version";

fn product_row(row: &tokio_postgres::Row) -> Result<ProductView, StoreError> {
    let on_hand: i64 = row.try_get(4)?;
    let reserved: i64 = row.try_get(5)?;
    Ok(ProductView {
        id: row.try_get(0)?,
        sku: row.try_get(1)?,
        name: row.try_get(2)?,
        price: money(row.try_get(3)?)?,
        on_hand,
        reserved,
        available: on_hand - reserved,
        discontinued: row.try_get(6)?,
        version: row.try_get(7)?,
    })
}

/// One product.
pub async fn product<C: GenericClient>(
    client: &C,
    id: Uuid,
) -> Result<Option<ProductView>, StoreError> {
    by_id(client, PRODUCT_COLUMNS, "products", id, product_row).await
}

/// A page of products in id order, after `after`; and the cursor of the next
/// page when there is one.
pub async fn products<C: GenericClient>(
    client: &C,
    limit: i64,
    after: Option<Uuid>,
) -> Result<(Vec<ProductView>, Option<Uuid>), StoreError> {
    let rows = client
        .query(
            &format!(
                "select {PRODUCT_COLUMNS} from read.products
                  where $1::uuid is null or id > $1 order by id limit $2"
            ),
            &[&after, &(limit + 1)],
        )
        .await?;
    let mut items: Vec<ProductView> = rows.iter().map(product_row).collect::<Result<_, _>>()?;
    let next = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|p| p.id)
    } else {
        None
    };
    Ok((items, next))
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OrderLineView {
    /// The product.
    pub product_id: Uuid,
    /// Units.
    pub quantity: u32,
    /// Price per unit when the order was placed.
    pub unit_price: String,
    /// `quantity × unit_price`.
    pub line_total: String,
}

/// `GET /orders/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderView {
    /// The order's id.
    pub id: Uuid,
    /// Who placed it.
    pub user_id: Uuid,
    /// Where it is in its lifecycle.
    pub status: String,
    /// What was ordered.
    pub lines: Vec<OrderLineView>,
    /// Sum of the line totals.
    pub total: String,
    /// Why it was rejected or cancelled.
    pub reason: Option<String>,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The order stream's version.
    pub version: i64,
}

const ORDER_COLUMNS: &str =
    "id, user_id, status, lines, total::text, reason, placed_at, updated_at, version";

fn order_row(row: &tokio_postgres::Row) -> Result<OrderView, StoreError> {
    Ok(OrderView {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        status: row.try_get(2)?,
        lines: serde_json::from_value(row.try_get(3)?)?,
        total: money(row.try_get(4)?)?,
        reason: row.try_get(5)?,
        placed_at: row.try_get(6)?,
        updated_at: row.try_get(7)?,
        version: row.try_get(8)?,
    })
}

/// One order.
pub async fn order<C: GenericClient>(
    client: &C,
    id: Uuid,
) -> Result<Option<OrderView>, StoreError> {
    by_id(client, ORDER_COLUMNS, "orders", id, order_row).await
}

/// A user's orders, newest first.
pub async fn user_orders<C: GenericClient>(
    client: &C,
    user_id: Uuid,
    limit: i64,
) -> Result<Vec<OrderView>, StoreError> {
    let rows = client
        .query(
            &format!(
                "select {ORDER_COLUMNS} from read.orders where user_id = $1
                  order by placed_at desc, id desc limit $2"
            ),
            &[&user_id, &limit],
        )
        .await?;
    rows.iter().map(order_row).collect()
}

/// The position a projection has applied through.
pub async fn applied_through<C: GenericClient>(
    client: &C,
    projection: Projection,
) -> Result<Position, StoreError> {
    Ok(crate::checkpoint::load(client, projection.name())
        .await?
        .position)
}

/// Waits until `projection` has applied everything up to `position`, at
/// most `timeout`. True when it has; false on timeout (the API answers 503
/// `projection_lagging`).
pub async fn wait_for(
    pool: &deadpool_postgres::Pool,
    projection: Projection,
    position: Position,
    timeout: Duration,
) -> Result<bool, StoreError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        // A connection per look, not held while waiting: readers waiting
        // for a lagging projection must not take the pool from commands.
        let applied = applied_through(&**pool.get().await?, projection).await?;
        if applied >= position {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}
