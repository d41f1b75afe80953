//! `ordo bench rebuild`: how fast every projection is rebuilt from the log,
//! next to the raw rate of reading the same log.
//!
//! A scratch database is seeded with a realistic history — users, products,
//! orders placed, stock reserved, confirmed, some paid and shipped — made of
//! real domain events with consistent stream versions, marked as published,
//! then `rebuild --all` runs on it.

use std::collections::HashMap;
use std::time::Instant;

use domain::event::DomainEvent;
use domain::ids::{OrderId, ProductId, UserId};
use domain::order::{OrderEvent, OrderLine};
use domain::product::ProductEvent;
use domain::user::UserEvent;
use domain::values::{Email, Money, Name, Quantity, Sku};
use eventstore::nats::StreamName;
use projectors::rebuild::{self, RebuildOptions};
use projectors::Projection;
use rand::Rng as _;
use serde_json::{json, Map};
use uuid::Uuid;

use super::{line, rate, Scratch};
use crate::config::GlobalArgs;

/// Rows per seeding statement.
const SEED_CHUNK: usize = 5000;
const PRODUCTS: usize = 1000;
const USERS: usize = 10_000;

/// Runs the benchmark.
pub async fn run(
    global: &GlobalArgs,
    events: u64,
    json_path: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    anyhow::ensure!(events >= 100, "--events must be at least 100");
    let scratch = Scratch::create(&global.database_url).await?;
    let result = measure(&scratch, &global.stream, events).await;
    scratch.drop_database().await?;
    let (seeded, raw_read, report) = result?;

    let mut figures = Map::new();
    super::machine_fields(&mut figures);
    figures.insert("events".into(), json!(seeded));
    figures.insert("raw_log_read_events_per_sec".into(), json!(raw_read));
    figures.insert(
        "rebuild_events_per_sec".into(),
        json!(report.events_per_sec()),
    );
    figures.insert(
        "rebuild_seconds".into(),
        json!(report.elapsed.as_secs_f64()),
    );
    println!("ordo bench rebuild: {seeded} events, all projections");
    line("raw log read (select, no decoding)", rate(raw_read));
    line(
        "ordo rebuild --all",
        format!(
            "{} ({:.1} s, {:.0}% of raw)",
            rate(report.events_per_sec()),
            report.elapsed.as_secs_f64(),
            report.events_per_sec() / raw_read * 100.0
        ),
    );
    super::write_json(json_path, &figures)
}

async fn measure(
    scratch: &Scratch,
    stream: &StreamName,
    events: u64,
) -> anyhow::Result<(u64, f64, projectors::rebuild::RebuildReport)> {
    let pool = scratch.url.pool(10)?;
    println!("seeding {events} events ...");
    let seeded = seed(&pool, stream, events).await?;
    let client = pool.get().await?;
    client.batch_execute("vacuum analyze events").await?;

    // Raw ceiling: read every row of the log in the same batches, no decoding.
    let started = Instant::now();
    let mut after = (String::from("0"), 0i64);
    let mut read = 0u64;
    loop {
        let rows = client
            .query(
                // the text column must not be called transaction_id, or the
                // order by would sort by it as text
                "select transaction_id::text as tx, position, data from events
                  where (transaction_id, position) > ($1::text::xid8, $2)
                  order by transaction_id, position limit 20000",
                &[&after.0, &after.1],
            )
            .await?;
        let Some(last) = rows.last() else { break };
        after = (last.get(0), last.get(1));
        read += rows.len() as u64;
    }
    let raw_read = read as f64 / started.elapsed().as_secs_f64();

    let options = RebuildOptions {
        projections: Projection::ALL.to_vec(),
        dry_run: false,
        batch_size: 20_000,
    };
    let report = rebuild::rebuild(&pool, stream, &options, |_| {}).await?;
    pool.close();
    Ok((seeded, raw_read, report))
}

/// Accumulates rows and writes them in large statements.
struct Seeder<'a> {
    client: &'a deadpool_postgres::Object,
    versions: HashMap<String, i64>,
    stream_id: Vec<String>,
    stream_type: Vec<&'static str>,
    version: Vec<i64>,
    event_type: Vec<&'static str>,
    data: Vec<serde_json::Value>,
    written: u64,
}

impl Seeder<'_> {
    /// Adds `event` to the stream of `aggregate`, of the event's stream type.
    async fn push<E: DomainEvent>(&mut self, aggregate: Uuid, event: &E) -> anyhow::Result<()> {
        let stream_id = E::STREAM_TYPE.stream_id(aggregate);
        let version = self.versions.entry(stream_id.clone()).or_insert(0);
        *version += 1;
        self.version.push(*version);
        self.stream_id.push(stream_id);
        self.stream_type.push(E::STREAM_TYPE.as_str());
        self.event_type.push(event.event_type());
        self.data.push(event.to_data());
        if self.stream_id.len() >= SEED_CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    /// Adds, for each of `lines`, `event(quantity)` to the line's product.
    async fn push_per_line(
        &mut self,
        lines: &[OrderLine],
        event: impl Fn(Quantity) -> ProductEvent,
    ) -> anyhow::Result<()> {
        for line in lines {
            self.push(line.product_id.as_uuid(), &event(line.quantity))
                .await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.stream_id.is_empty() {
            return Ok(());
        }
        self.client
            .execute(
                "insert into events (event_id, stream_id, stream_type, version, type, schema_version, data)
                 select gen_random_uuid(), s, st, v, t, 1, d
                   from unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::jsonb[]) as r(s, st, v, t, d)",
                &[
                    &self.stream_id as &(dyn deadpool_postgres::tokio_postgres::types::ToSql + Sync),
                    &self.stream_type,
                    &self.version,
                    &self.event_type,
                    &self.data,
                ],
            )
            .await?;
        self.written += self.stream_id.len() as u64;
        self.stream_id.clear();
        self.stream_type.clear();
        self.version.clear();
        self.event_type.clear();
        self.data.clear();
        Ok(())
    }
}

fn value<T, E: std::fmt::Display>(result: Result<T, E>) -> anyhow::Result<T> {
    result.map_err(|e| anyhow::anyhow!("{e}"))
}

/// Writes about `target` events of a consistent shop history.
async fn seed(
    pool: &deadpool_postgres::Pool,
    stream: &StreamName,
    target: u64,
) -> anyhow::Result<u64> {
    let client = pool.get().await?;
    let mut seeder = Seeder {
        client: &client,
        versions: HashMap::new(),
        stream_id: Vec::new(),
        stream_type: Vec::new(),
        version: Vec::new(),
        event_type: Vec::new(),
        data: Vec::new(),
        written: 0,
    };
    let products: Vec<ProductId> = (0..PRODUCTS)
        .map(|_| ProductId::new(Uuid::new_v4()))
        .collect();
    for (i, id) in products.iter().enumerate() {
        let event = ProductEvent::ProductCreated {
            product_id: *id,
            sku: value(Sku::parse(&format!("BENCH-{i}")))?,
            name: value(Name::parse("Bench product"))?,
            price: value(Money::parse("9.99"))?,
            stock: 100_000_000,
        };
        seeder.push(id.as_uuid(), &event).await?;
    }
    let users: Vec<UserId> = (0..USERS).map(|_| UserId::new(Uuid::new_v4())).collect();
    for (i, id) in users.iter().enumerate() {
        let event = UserEvent::UserRegistered {
            user_id: *id,
            email: value(Email::parse(&format!("bench{i}@example.com")))?,
            name: value(Name::parse("Bench user"))?,
        };
        seeder.push(id.as_uuid(), &event).await?;
    }
    let price = value(Money::parse("9.99"))?;
    let mut rng = rand::rng();
    while seeder.written + (seeder.stream_id.len() as u64) < target {
        let order_id = OrderId::new(Uuid::new_v4());
        let user_id = users[rng.random_range(0..users.len())];
        let count = rng.random_range(1..=3);
        let mut lines: Vec<OrderLine> = Vec::new();
        while lines.len() < count {
            let product_id = products[rng.random_range(0..products.len())];
            if lines.iter().all(|l| l.product_id != product_id) {
                lines.push(OrderLine {
                    product_id,
                    quantity: value(Quantity::new(rng.random_range(1..=3)))?,
                    unit_price: price,
                });
            }
        }
        let total = value(domain::order::order_total(&lines))?;
        let placed = OrderEvent::OrderPlaced {
            order_id,
            user_id,
            lines: lines.clone(),
            total,
        };
        let order = order_id.as_uuid();
        seeder.push(order, &placed).await?;
        seeder
            .push_per_line(&lines, |quantity| ProductEvent::StockReserved {
                order_id,
                quantity,
            })
            .await?;
        seeder.push(order, &OrderEvent::OrderConfirmed).await?;
        if rng.random_bool(0.5) {
            seeder
                .push(order, &OrderEvent::OrderPaid { amount: total })
                .await?;
            if rng.random_bool(0.5) {
                seeder.push(order, &OrderEvent::OrderShipped).await?;
                seeder
                    .push_per_line(&lines, |quantity| ProductEvent::StockShipped {
                        order_id,
                        quantity,
                    })
                    .await?;
            }
        }
    }
    seeder.flush().await?;
    let written = seeder.written;
    // Everything counts as published: the rebuild covers what the relay has.
    client
        .execute(
            "insert into relay_checkpoints (stream_name, transaction_id, position, stream_sequence)
             select $2, transaction_id, position, $1 from events
              order by transaction_id desc, position desc limit 1",
            &[&(written as i64), &stream.as_str()],
        )
        .await?;
    Ok(written)
}
