//! `ordo bench`: measurements of ordo next to the raw ceilings of the same
//! machine, taken in the same run.
//!
//! The store benchmarks (`append`, `relay`, `rebuild`) never write into the
//! configured database or stream: they work in a scratch database
//! (`<database>_bench_<random>`) on the same server and scratch JetStream
//! streams, and remove them afterwards.

pub mod append;
pub mod place_orders;
pub mod rebuild;
pub mod relay;

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use eventstore::db::{quote_ident, DatabaseUrl};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// A scratch database, dropped by [`Scratch::drop_database`].
#[derive(Debug)]
pub struct Scratch {
    /// Its URL.
    pub url: DatabaseUrl,
}

impl Scratch {
    /// Creates and migrates `<database>_bench_<random>` beside `base`.
    pub async fn create(base: &DatabaseUrl) -> anyhow::Result<Scratch> {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let url = base.with_database(&format!("{}_bench_{suffix}", base.database()));
        eventstore::migrations::migrate(&url)
            .await
            .with_context(|| format!("creating scratch database {}", url.database()))?;
        Ok(Scratch { url })
    }

    /// Drops it (unless `ORDO_BENCH_KEEP` is set, for looking inside).
    pub async fn drop_database(self) -> anyhow::Result<()> {
        if std::env::var_os("ORDO_BENCH_KEEP").is_some() {
            eprintln!("ORDO_BENCH_KEEP: kept database {}", self.url.database());
            return Ok(());
        }
        let admin = self.url.with_database("postgres").connect().await?;
        admin
            .batch_execute(&format!(
                "drop database if exists {} with (force)",
                quote_ident(self.url.database())
            ))
            .await?;
        Ok(())
    }
}

/// Latencies in microseconds, reported in milliseconds.
pub fn new_histogram() -> Histogram<u64> {
    // 1 µs to 1 h, 3 significant digits; cannot fail with these bounds.
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// Records one latency.
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    let _ = histogram.record(micros.min(histogram.high()));
}

/// p50, p90, p99, max in ms, as JSON fields named `<prefix>_<p>_ms`.
pub fn latency_fields(prefix: &str, histogram: &Histogram<u64>, into: &mut Map<String, Value>) {
    for (name, quantile) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99)] {
        into.insert(
            format!("{prefix}_{name}_ms"),
            json!(histogram.value_at_quantile(quantile) as f64 / 1000.0),
        );
    }
    into.insert(
        format!("{prefix}_max_ms"),
        json!(histogram.max() as f64 / 1000.0),
    );
}

/// A line of the printed table.
pub fn line(label: &str, value: impl std::fmt::Display) {
    println!("  {label:<38} {value}");
}

/// "12,345/s".
pub fn rate(per_sec: f64) -> String {
    let whole = per_sec.round() as u64;
    let digits = whole.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{grouped}/s")
}

/// Writes the figures as pretty JSON when asked to.
pub fn write_json(path: Option<&Path>, figures: &Map<String, Value>) -> anyhow::Result<()> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(figures)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}

/// A payload the size of a typical `OrderPlaced` with three lines.
pub fn sample_payload() -> Value {
    let line = |n: u32| {
        json!({
            "product_id": uuid::Uuid::new_v4(),
            "quantity": n,
            "unit_price": "19.99",
        })
    };
    json!({
        "order_id": uuid::Uuid::new_v4(),
        "user_id": uuid::Uuid::new_v4(),
        "lines": [line(1), line(2), line(3)],
        "total": "119.94",
    })
}

/// The machine, for the record.
pub fn machine_fields(into: &mut Map<String, Value>) {
    into.insert(
        "cpus".into(),
        json!(std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)),
    );
    into.insert("measured_at".into(), json!(chrono::Utc::now().to_rfc3339()));
}
