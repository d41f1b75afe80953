//! Projection `products`: `read.products`, stock on hand and reserved per product.

use domain::event::AnyEvent;
use domain::ids::StreamType;
use domain::product::ProductEvent;
use rust_decimal::Decimal;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::event::ProjectionEvent;
use crate::projection::{expect_next, ApplyError};
use crate::writes::{params, Writes};

/// One row of `read.products`.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    sku: String,
    name: String,
    price: Decimal,
    on_hand: i64,
    reserved: i64,
    discontinued: bool,
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
        StreamType::Product,
        &format!("{schema}.products"),
        "id, sku, name, price::text, on_hand, reserved, discontinued, version",
        |row| {
            Ok(Row {
                sku: row.get(1),
                name: row.get(2),
                price: super::decimal(row.get::<_, &str>(3))?,
                on_hand: row.get::<_, i64>(4),
                reserved: row.get::<_, i64>(5),
                discontinued: row.get(6),
                version: row.get(7),
            })
        },
    )
    .await?
    else {
        return Ok(());
    };
    let mut changed = std::collections::BTreeSet::new();

    for (index, event) in events.iter().enumerate() {
        if event.stream_type != Some(StreamType::Product) {
            continue;
        }
        let poison = |reason: String| ApplyError::poison(events, index, reason);
        let (id, product) = super::decoded(event, "a product", |any| match any {
            AnyEvent::Product(product) => Some(product),
            _ => None,
        })
        .map_err(poison)?;
        let current = rows.get(&id).map_or(0, |r| r.version);
        expect_next(current, event.version).map_err(poison)?;
        match product {
            ProductEvent::ProductCreated {
                sku,
                name,
                price,
                stock,
                ..
            } => {
                rows.insert(
                    id,
                    Row {
                        sku: sku.as_str().to_owned(),
                        name: name.as_str().to_owned(),
                        price: price.amount(),
                        on_hand: i64::from(*stock),
                        reserved: 0,
                        discontinued: false,
                        version: 0,
                    },
                );
            }
            change => {
                let row = rows
                    .get_mut(&id)
                    .ok_or_else(|| poison("product does not exist".into()))?;
                evolve(row, change);
                if row.reserved < 0 || row.on_hand < 0 || row.reserved > row.on_hand {
                    return Err(poison(format!(
                        "stock would become on_hand {} reserved {}",
                        row.on_hand, row.reserved
                    )));
                }
            }
        }
        let Some(row) = rows.get_mut(&id) else {
            continue;
        };
        row.version = event.version as i64;
        changed.insert(id);
    }

    if changed.is_empty() {
        return Ok(());
    }
    let mut cols = Columns::default();
    for id in changed {
        let Some(row) = rows.get(&id) else { continue };
        cols.id.push(id);
        cols.sku.push(row.sku.clone());
        cols.name.push(row.name.clone());
        cols.price.push(row.price.to_string());
        cols.on_hand.push(row.on_hand);
        cols.reserved.push(row.reserved);
        cols.discontinued.push(row.discontinued);
        cols.version.push(row.version);
    }
    writes.push(
        format!(
            "insert into {schema}.products (id, sku, name, price, on_hand, reserved, discontinued, version)
             select id, sku, name, price::numeric, on_hand, reserved, discontinued, version
               from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[],
                           $7::bool[], $8::int8[])
                 as r(id, sku, name, price, on_hand, reserved, discontinued, version)
             on conflict (id) do update
               set sku = excluded.sku, name = excluded.name, price = excluded.price,
                   on_hand = excluded.on_hand, reserved = excluded.reserved,
                   discontinued = excluded.discontinued, version = excluded.version"
        ),
        params![cols.id, cols.sku, cols.name, cols.price, cols.on_hand, cols.reserved, cols.discontinued, cols.version],
    );
    Ok(())
}

/// Applies a change to an existing product's row.
fn evolve(row: &mut Row, event: &ProductEvent) {
    match event {
        ProductEvent::ProductCreated { .. } => {}
        ProductEvent::ProductRestocked { quantity } => row.on_hand += i64::from(quantity.get()),
        ProductEvent::ProductPriceChanged { price } => row.price = price.amount(),
        ProductEvent::ProductDiscontinued => row.discontinued = true,
        ProductEvent::StockReserved { quantity, .. } => row.reserved += i64::from(quantity.get()),
        ProductEvent::StockReleased { quantity, .. } => row.reserved -= i64::from(quantity.get()),
        ProductEvent::StockShipped { quantity, .. } => {
            row.reserved -= i64::from(quantity.get());
            row.on_hand -= i64::from(quantity.get());
        }
    }
}

/// The changed rows, column by column, for one `unnest` upsert.
#[derive(Default)]
struct Columns {
    id: Vec<Uuid>,
    sku: Vec<String>,
    name: Vec<String>,
    price: Vec<String>,
    on_hand: Vec<i64>,
    reserved: Vec<i64>,
    discontinued: Vec<bool>,
    version: Vec<i64>,
}
