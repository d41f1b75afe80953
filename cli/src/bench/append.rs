//! `ordo bench append`: the event store's append rate next to a raw
//! single-row INSERT load with the same writers and payload size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstore::{AppendRequest, EventStore, ExpectedVersion, Metadata, NewEvent};
use hdrhistogram::Histogram;
use serde_json::{json, Map};

use super::{latency_fields, line, new_histogram, rate, record, Scratch};
use crate::config::GlobalArgs;

/// Streams each writer appends to (it knows their versions, so it appends
/// with `Exact`, like the executor does).
const STREAMS_PER_WRITER: usize = 64;

/// Runs the benchmark.
pub async fn run(
    global: &GlobalArgs,
    writers: usize,
    events: u64,
    batch: usize,
    json_path: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        writers > 0 && batch > 0 && events > 0,
        "writers, events and batch must be at least 1"
    );
    let scratch = Scratch::create(&global.database_url).await?;
    let result = measure(&scratch, writers, events, batch).await;
    scratch.drop_database().await?;
    let (raw, ordo) = result?;

    let mut figures = Map::new();
    super::machine_fields(&mut figures);
    figures.insert("writers".into(), json!(writers));
    figures.insert("events".into(), json!(events));
    figures.insert("batch".into(), json!(batch));
    let raw_rows = raw.per_sec * batch as f64;
    figures.insert("raw_insert_rows_per_sec".into(), json!(raw_rows));
    figures.insert("raw_insert_statements_per_sec".into(), json!(raw.per_sec));
    latency_fields("raw_insert_latency", &raw.latency, &mut figures);
    figures.insert(
        "append_events_per_sec".into(),
        json!(ordo.per_sec * batch as f64),
    );
    figures.insert("append_appends_per_sec".into(), json!(ordo.per_sec));
    latency_fields("append_latency", &ordo.latency, &mut figures);
    // Each append against a raw INSERT of as many rows: the same number of
    // transactions and rows, so events/s against rows/s.
    let percent = ordo.per_sec / raw.per_sec * 100.0;
    figures.insert("append_vs_raw_percent".into(), json!(percent));

    println!("ordo bench append: {writers} writers, {events} events, batch {batch}");
    let raw_label = if batch == 1 {
        "raw single-row INSERT".to_owned()
    } else {
        format!("raw {batch}-row INSERT (rows)")
    };
    line(&raw_label, rate(raw_rows));
    line(
        "ordo events",
        format!(
            "{} ({percent:.0}% of raw)",
            rate(ordo.per_sec * batch as f64)
        ),
    );
    line("ordo appends", rate(ordo.per_sec));
    line(
        "append latency p50 / p90 / p99 / max",
        format!(
            "{:.2} / {:.2} / {:.2} / {:.2} ms",
            figures["append_latency_p50_ms"]
                .as_f64()
                .unwrap_or_default(),
            figures["append_latency_p90_ms"]
                .as_f64()
                .unwrap_or_default(),
            figures["append_latency_p99_ms"]
                .as_f64()
                .unwrap_or_default(),
            figures["append_latency_max_ms"]
                .as_f64()
                .unwrap_or_default(),
        ),
    );
    super::write_json(json_path, &figures)
}

/// A rate and its latencies.
struct Measured {
    per_sec: f64,
    latency: Histogram<u64>,
}

async fn measure(
    scratch: &Scratch,
    writers: usize,
    events: u64,
    batch: usize,
) -> anyhow::Result<(Measured, Measured)> {
    let pool = scratch.url.pool(writers + 2)?;
    let payload = Arc::new(super::sample_payload());
    let appends = events.div_ceil(batch as u64);

    // Raw ceiling: as many single-row autocommit INSERTs as ordo makes appends,
    // of the same payload, into a table with only a primary key.
    pool.get()
        .await?
        .batch_execute(
            "create table bench_raw (id bigint generated always as identity primary key, payload jsonb not null)",
        )
        .await?;
    // Alternate the two loads in rounds, so drift on the machine (a
    // checkpoint, another process) lands on both alike.
    let mut raw = Totals::default();
    let mut ordo = Totals::default();
    let store = EventStore::new(pool.clone());
    for round in 0..ROUNDS {
        let share = appends * (round + 1) / ROUNDS - appends * round / ROUNDS;
        raw.add(
            share,
            run_writers(writers, share, |_, operations| {
                let (pool, payload) = (pool.clone(), payload.clone());
                async move {
                    let client = pool.get().await?;
                    // One statement per transaction, as many rows as an append
                    // has events: one row, or a batch through unnest.
                    let rows: Vec<&serde_json::Value> = vec![&*payload; batch];
                    let statement = client
                        .prepare_cached(if batch == 1 {
                            "insert into bench_raw (payload) values ($1)"
                        } else {
                            "insert into bench_raw (payload) select p from unnest($1::jsonb[]) as p"
                        })
                        .await?;
                    let mut latency = new_histogram();
                    for _ in 0..operations {
                        let started = Instant::now();
                        if batch == 1 {
                            client.execute(&statement, &[&*payload]).await?;
                        } else {
                            client.execute(&statement, &[&rows]).await?;
                        }
                        record(&mut latency, started.elapsed());
                    }
                    Ok(latency)
                }
            })
            .await?,
        )?;
        ordo.add(
            share,
            run_writers(writers, share, |_, operations| {
                let (store, payload) = (store.clone(), payload.clone());
                async move {
                    let streams: Vec<String> = (0..STREAMS_PER_WRITER)
                        .map(|_| format!("order-{}", uuid::Uuid::new_v4()))
                        .collect();
                    let mut versions = vec![0u64; STREAMS_PER_WRITER];
                    let metadata = Metadata {
                        correlation_id: Some(uuid::Uuid::new_v4()),
                        ..Metadata::default()
                    };
                    let mut latency = new_histogram();
                    // One set of events per writer, given fresh ids each time: the
                    // benchmark measures the store, not building payloads.
                    let mut events: Vec<NewEvent> = (0..batch)
                        .map(|_| NewEvent {
                            event_id: uuid::Uuid::now_v7(),
                            event_type: "OrderPlaced".into(),
                            schema_version: 1,
                            data: (*payload).clone(),
                        })
                        .collect();
                    for _ in 0..operations {
                        let s = rand::random_range(0..STREAMS_PER_WRITER);
                        for event in &mut events {
                            event.event_id = uuid::Uuid::now_v7();
                        }
                        let expected = match versions[s] {
                            0 => ExpectedVersion::NoStream,
                            v => ExpectedVersion::Exact(v),
                        };
                        let started = Instant::now();
                        let appended = store
                            .append(AppendRequest {
                                stream_id: &streams[s],
                                stream_type: "order",
                                expected,
                                events: &events,
                                metadata: &metadata,
                                claims: &[],
                            })
                            .await?;
                        record(&mut latency, started.elapsed());
                        versions[s] = appended.last_version;
                    }
                    Ok(latency)
                }
            })
            .await?,
        )?;
    }
    // Stop the store's background connections before the database goes.
    pool.close();
    Ok((raw.measured(), ordo.measured()))
}

/// Rounds of each load.
const ROUNDS: u64 = 4;

/// Operations, time and latencies summed over rounds.
#[derive(Default)]
struct Totals {
    operations: u64,
    elapsed: Duration,
    latency: Option<Histogram<u64>>,
}

impl Totals {
    fn add(
        &mut self,
        operations: u64,
        (elapsed, latency): (Duration, Histogram<u64>),
    ) -> anyhow::Result<()> {
        self.operations += operations;
        self.elapsed += elapsed;
        match &mut self.latency {
            Some(all) => all.add(latency)?,
            None => self.latency = Some(latency),
        }
        Ok(())
    }

    fn measured(self) -> Measured {
        Measured {
            per_sec: self.operations as f64
                / self.elapsed.max(Duration::from_micros(1)).as_secs_f64(),
            latency: self.latency.unwrap_or_else(new_histogram),
        }
    }
}

/// Runs `writers` tasks sharing `operations` between them; returns how long
/// it took and the merged latencies.
async fn run_writers<F, Fut>(
    writers: usize,
    operations: u64,
    make: F,
) -> anyhow::Result<(Duration, Histogram<u64>)>
where
    F: Fn(usize, u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Histogram<u64>>> + Send + 'static,
{
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(writers);
    for w in 0..writers {
        let share =
            operations * (w as u64 + 1) / writers as u64 - operations * w as u64 / writers as u64;
        tasks.push(tokio::spawn(make(w, share)));
    }
    let mut latency = new_histogram();
    for task in tasks {
        latency.add(task.await??)?;
    }
    Ok((started.elapsed(), latency))
}
