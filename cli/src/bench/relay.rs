//! `ordo bench relay`: how fast the relay moves the log to JetStream, next to
//! raw JetStream publishing of the same payloads with many acks in flight.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use eventstore::nats::{StreamName, SubjectPrefix};
use eventstore::notify::LogListener;
use eventstore::relay::{Relay, RelayConfig};
use eventstore::EventStore;
use serde_json::{json, Map};
use tokio_util::sync::CancellationToken;

use super::{line, rate, Scratch};
use crate::config::GlobalArgs;

/// Acks in flight for the raw ceiling.
const RAW_IN_FLIGHT: usize = 1024;

/// Runs the benchmark.
pub async fn run(
    global: &GlobalArgs,
    events: u64,
    json_path: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    anyhow::ensure!(events > 0, "--events must be at least 1");
    let nats = eventstore::nats::connect(&global.nats()?, "ordo-bench").await?;
    let js = jetstream::new(nats);
    let scratch = Scratch::create(&global.database_url).await?;
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase();
    let relay_stream: StreamName = format!("{}_BENCH_{suffix}", global.stream)
        .parse()
        .map_err(anyhow::Error::msg)?;
    let raw_stream: StreamName = format!("{}_RAW_{suffix}", global.stream)
        .parse()
        .map_err(anyhow::Error::msg)?;
    let relay_prefix: SubjectPrefix =
        format!("{}bench{}", global.subject_prefix, suffix.to_lowercase())
            .parse()
            .map_err(anyhow::Error::msg)?;
    let raw_prefix: SubjectPrefix =
        format!("{}raw{}", global.subject_prefix, suffix.to_lowercase())
            .parse()
            .map_err(anyhow::Error::msg)?;

    let result = measure(
        &scratch,
        &js,
        events,
        (&relay_stream, &relay_prefix),
        (&raw_stream, &raw_prefix),
    )
    .await;
    let _ = js.delete_stream(relay_stream.as_str()).await;
    let _ = js.delete_stream(raw_stream.as_str()).await;
    scratch.drop_database().await?;
    let (raw, relay) = result?;

    let mut figures = Map::new();
    super::machine_fields(&mut figures);
    figures.insert("events".into(), json!(events));
    figures.insert("raw_publish_in_flight".into(), json!(RAW_IN_FLIGHT));
    figures.insert("raw_publish_msgs_per_sec".into(), json!(raw));
    figures.insert("relay_events_per_sec".into(), json!(relay));
    figures.insert("relay_vs_raw_percent".into(), json!(relay / raw * 100.0));
    println!("ordo bench relay: {events} events");
    line(
        &format!("raw JetStream publish ({RAW_IN_FLIGHT} in flight)"),
        rate(raw),
    );
    line(
        "ordo relay (log → JetStream)",
        format!("{} ({:.0}% of raw)", rate(relay), relay / raw * 100.0),
    );
    super::write_json(json_path, &figures)
}

async fn measure(
    scratch: &Scratch,
    js: &jetstream::Context,
    events: u64,
    (relay_stream, relay_prefix): (&StreamName, &SubjectPrefix),
    (raw_stream, raw_prefix): (&StreamName, &SubjectPrefix),
) -> anyhow::Result<(f64, f64)> {
    let pool = scratch.url.pool(8)?;
    let payload = super::sample_payload();

    // Seed the log in large statements: one event per stream.
    let client = pool.get().await?;
    let mut seeded = 0u64;
    while seeded < events {
        let n = (events - seeded).min(50_000) as i64;
        client
            .execute(
                "insert into events (event_id, stream_id, stream_type, version, type, schema_version, data, correlation_id)
                 select gen_random_uuid(), 'order-' || gen_random_uuid(), 'order', 1, 'OrderPlaced', 1, $1, gen_random_uuid()
                   from generate_series(1::bigint, $2)",
                &[&payload, &n],
            )
            .await?;
        seeded += n as u64;
    }
    drop(client);

    // Raw ceiling: the envelope-sized payload published with many acks in flight.
    let sample = {
        let store = EventStore::new(pool.clone());
        // The log is read below the horizon, which any transaction of the
        // server still running (in whatever database) holds back: wait.
        let patience = Instant::now();
        let first = loop {
            let read = store
                .read_log(eventstore::Position::START, &Default::default(), 1)
                .await?;
            match read.into_iter().next() {
                Some(first) => break first,
                None if patience.elapsed() < std::time::Duration::from_secs(60) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await
                }
                None => anyhow::bail!(
                    "the seeded log stayed below the horizon for 60 s: a transaction of this \
                     PostgreSQL server is open that long (see `ordo status`)"
                ),
            }
        };
        serde_json::to_vec(&eventstore::envelope::Envelope::from_recorded(&first))?
    };
    eventstore::nats::ensure_stream(
        js,
        raw_stream,
        raw_prefix,
        eventstore::nats::Unprotected::Refuse,
    )
    .await?;
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < events {
        let chunk = (events - sent).min(RAW_IN_FLIGHT as u64);
        let mut acks = Vec::with_capacity(chunk as usize);
        for i in 0..chunk {
            let subject = format!("{raw_prefix}.order.{}.OrderPlaced", sent + i);
            acks.push(js.publish(subject, sample.clone().into()).await?);
        }
        for ack in acks {
            ack.await?;
        }
        sent += chunk;
    }
    let raw = events as f64 / started.elapsed().as_secs_f64();

    // The relay, from the start of the log.
    let store = EventStore::new(pool.clone());
    let relay = Relay::new(
        store,
        scratch.url.clone(),
        js.clone(),
        LogListener::spawn(scratch.url.clone()),
        RelayConfig::new(relay_stream.clone(), relay_prefix.clone()),
    );
    let stats = relay.stats();
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay.run(stop.clone()));
    let started = Instant::now();
    while stats.published.load(std::sync::atomic::Ordering::SeqCst) < events {
        anyhow::ensure!(!task.is_finished(), "the relay stopped early");
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the relay took over 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let relay_rate = events as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    task.await??;
    pool.close();
    Ok((raw, relay_rate))
}
