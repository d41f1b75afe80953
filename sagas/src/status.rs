//! What `ordo status` shows about the sagas: how far the consumer is, how
//! far behind the log, how many sagas are open or need a human, and when the
//! next timer fires.

use chrono::{DateTime, Utc};
use eventstore::nats::StreamName;
use eventstore::Position;
use serde::Serialize;

use crate::error::SagaError;
use crate::store;

/// The sagas' figures for one deployment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SagaStatus {
    /// The last event the saga consumer handled (`None`: it has not started).
    pub position: Option<Position>,
    /// Its JetStream sequence.
    pub stream_sequence: u64,
    /// When the checkpoint last moved.
    pub updated_at: Option<DateTime<Utc>>,
    /// Events in the log after `position`.
    pub lag_events: i64,
    /// Age of the oldest event not handled yet (0 when caught up).
    pub lag_seconds: f64,
    /// Sagas not finished (including those awaiting payment or shipping).
    pub unfinished: i64,
    /// Sagas needing a human: given-up compensations and parked sagas.
    pub needs_attention: i64,
    /// Timers set.
    pub timers: i64,
    /// When the next one fires.
    pub next_timer_due: Option<DateTime<Utc>>,
}

/// The sagas' figures for the deployment consuming `stream`.
pub async fn status(
    client: &tokio_postgres::Client,
    stream: &StreamName,
) -> Result<SagaStatus, SagaError> {
    let checkpoint = client
        .query_opt(
            "select updated_at from saga.checkpoint where stream_name = $1",
            &[&stream.as_str()],
        )
        .await?;
    let stored = store::load_checkpoint(client, stream.as_str()).await?;
    let position = checkpoint.as_ref().map(|_| stored.position);
    let lag = client
        .query_one(
            "select count(*), extract(epoch from now() - min(recorded_at))::float8
               from events where (transaction_id, position) > ($1::text::xid8, $2)",
            &[
                &stored.position.transaction_sql(),
                &stored.position.position,
            ],
        )
        .await?;
    let sagas = client
        .query_one(
            "select count(*) filter (where not finished),
                    count(*) filter (where attention)
               from saga.sagas",
            &[],
        )
        .await?;
    let timers = client
        .query_one("select count(*), min(due_at) from saga.timers", &[])
        .await?;
    Ok(SagaStatus {
        position,
        stream_sequence: stored.sequence,
        updated_at: checkpoint.map(|r| r.get(0)),
        lag_events: lag.get(0),
        lag_seconds: lag.get::<_, Option<f64>>(1).unwrap_or(0.0).max(0.0),
        unfinished: sagas.get(0),
        needs_attention: sagas.get(1),
        timers: timers.get(0),
        next_timer_due: timers.get(1),
    })
}
