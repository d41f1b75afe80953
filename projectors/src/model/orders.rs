//! Projection `orders`: `read.orders`, each order with its lines and status.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use domain::event::AnyEvent;
use domain::ids::StreamType;
use domain::order::{OrderEvent, OrderStatus};
use rust_decimal::Decimal;
use serde_json::json;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::event::ProjectionEvent;
use crate::projection::{expect_next, ApplyError};
use crate::writes::{params, Writes};

/// One row of `read.orders`.
#[derive(Debug, Clone)]
struct Row {
    user_id: Uuid,
    status: OrderStatus,
    lines: serde_json::Value,
    total: Decimal,
    reason: Option<String>,
    placed_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
}

pub(crate) async fn plan(
    reader: &impl GenericClient,
    schema: &str,
    events: &[ProjectionEvent],
    writes: &mut Writes,
) -> Result<(), ApplyError> {
    let Some(mut rows) = super::touched_rows(
        reader,
        events,
        StreamType::Order,
        &format!("{schema}.orders"),
        "id, user_id, status, lines, total::text, reason, placed_at, updated_at, version",
        |row| {
            let status: &str = row.get(2);
            Ok(Row {
                user_id: row.get(1),
                status: OrderStatus::parse(status).ok_or_else(|| {
                    eventstore::StoreError::Internal(format!("unknown order status {status:?}"))
                })?,
                lines: row.get(3),
                total: super::decimal(row.get::<_, &str>(4))?,
                reason: row.get(5),
                placed_at: row.get(6),
                updated_at: row.get(7),
                version: row.get(8),
            })
        },
    )
    .await?
    else {
        return Ok(());
    };
    let mut changed = BTreeSet::new();

    for (index, event) in events.iter().enumerate() {
        if event.stream_type != Some(StreamType::Order) {
            continue;
        }
        let poison = |reason: String| ApplyError::poison(events, index, reason);
        let (id, order) = super::decoded(event, "an order", |any| match any {
            AnyEvent::Order(order) => Some(order),
            _ => None,
        })
        .map_err(poison)?;
        expect_next(rows.get(&id).map_or(0, |r| r.version), event.version).map_err(poison)?;
        if let OrderEvent::OrderPlaced {
            user_id,
            lines,
            total,
            ..
        } = order
        {
            let mut views = Vec::with_capacity(lines.len());
            for line in lines {
                let line_total = line.line_total().map_err(|e| poison(e.to_string()))?;
                views.push(json!({
                    "product_id": line.product_id,
                    "quantity": line.quantity.get(),
                    "unit_price": line.unit_price.to_string(),
                    "line_total": line_total.to_string(),
                }));
            }
            rows.insert(
                id,
                Row {
                    user_id: user_id.as_uuid(),
                    status: OrderStatus::Pending,
                    lines: serde_json::Value::Array(views),
                    total: total.amount(),
                    reason: None,
                    placed_at: event.recorded_at,
                    updated_at: event.recorded_at,
                    version: event.version as i64,
                },
            );
            changed.insert(id);
            continue;
        }
        let row = rows
            .get_mut(&id)
            .ok_or_else(|| poison("order does not exist".into()))?;
        let (next, reason) = match order {
            OrderEvent::OrderPlaced { .. } => (OrderStatus::Pending, None),
            OrderEvent::OrderConfirmed => (OrderStatus::Confirmed, None),
            OrderEvent::OrderRejected { reason, .. } => {
                (OrderStatus::Rejected, Some(reason.as_str().to_owned()))
            }
            OrderEvent::OrderPaid { .. } => (OrderStatus::Paid, None),
            OrderEvent::OrderShipped => (OrderStatus::Shipped, None),
            OrderEvent::OrderDelivered => (OrderStatus::Delivered, None),
            OrderEvent::OrderCancelled { reason } => {
                (OrderStatus::Cancelled, Some(reason.as_str().to_owned()))
            }
        };
        if !row.status.can_transition_to(next) {
            return Err(poison(format!(
                "an order cannot go from {} to {}",
                row.status, next
            )));
        }
        row.status = next;
        if reason.is_some() {
            row.reason = reason;
        }
        row.updated_at = event.recorded_at;
        row.version = event.version as i64;
        changed.insert(id);
    }

    if changed.is_empty() {
        return Ok(());
    }
    let (mut id, mut user_id, mut status, mut lines, mut total, mut reason) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let (mut placed_at, mut updated_at, mut version) = (Vec::new(), Vec::new(), Vec::new());
    for key in changed {
        let Some(row) = rows.remove(&key) else {
            continue;
        };
        id.push(key);
        user_id.push(row.user_id);
        status.push(row.status.as_str());
        lines.push(row.lines);
        total.push(row.total.to_string());
        reason.push(row.reason);
        placed_at.push(row.placed_at);
        updated_at.push(row.updated_at);
        version.push(row.version);
    }
    writes.push(
        format!(
            "insert into {schema}.orders (id, user_id, status, lines, total, reason, placed_at, updated_at, version)
             select id, user_id, status, lines, total::numeric, reason, placed_at, updated_at, version
               from unnest($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[], $5::text[], $6::text[],
                           $7::timestamptz[], $8::timestamptz[], $9::int8[])
                 as r(id, user_id, status, lines, total, reason, placed_at, updated_at, version)
             on conflict (id) do update
               set status = excluded.status, reason = excluded.reason,
                   updated_at = excluded.updated_at, version = excluded.version"
        ),
        params![id, user_id, status, lines, total, reason, placed_at, updated_at, version],
    );
    Ok(())
}
