//! `ordo check`: recompute every read model from the log, compare it with
//! the live tables, and verify the invariants of
//! `docs/reference/guarantees.md#invariants-checked-by-ordo-check`.
//! Meant for a quiet system: while orders are in flight, a pending order or a
//! reservation of a pending order is expected, not a fault.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull::OrderedConfig};
use eventstore::nats::StreamName;
use eventstore::store::LogFilter;
use eventstore::{Position, RecordedEvent, StoreError};
use futures::StreamExt as _;
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::rebuild::{self, RebuildError, RebuildOptions, RebuildReport};
use crate::Projection;

/// One invariant that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Its number in `docs/reference/guarantees.md#invariants-checked-by-ordo-check`.
    pub invariant: u8,
    /// What was found.
    pub detail: String,
}

/// Everything `ordo check` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    /// The read models recomputed and compared (invariant 4).
    pub read_models: RebuildReport,
    /// Invariants that do not hold (1, 2, 3, 5; 4 is in `read_models`).
    pub violations: Vec<Violation>,
    /// Events in the log.
    pub log_events: u64,
    /// Messages on the JetStream stream.
    pub stream_messages: u64,
}

impl CheckReport {
    /// True when everything holds.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.read_models.identical()
    }
}

/// Why the check could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Recomputing failed.
    #[error(transparent)]
    Rebuild(#[from] RebuildError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// JetStream failed.
    #[error("JetStream: {0}")]
    JetStream(String),
}

impl From<tokio_postgres::Error> for CheckError {
    fn from(e: tokio_postgres::Error) -> Self {
        CheckError::Store(e.into())
    }
}

/// At most this many examples per violated invariant.
const EXAMPLES: i64 = 5;

/// Runs every check.
pub async fn check(
    pool: &deadpool_postgres::Pool,
    jetstream: &jetstream::Context,
    stream: &StreamName,
) -> Result<CheckReport, CheckError> {
    let options = RebuildOptions {
        projections: Projection::ALL.to_vec(),
        dry_run: true,
        batch_size: 20_000,
    };
    let read_models = rebuild::rebuild(pool, stream, &options, |_| {}).await?;
    let client = pool.get().await.map_err(StoreError::from)?;
    let mut violations = invariants(&**client).await?;
    let (log_events, stream_messages, stream_violations) =
        compare_stream(&**client, jetstream, stream).await?;
    violations.extend(stream_violations);
    Ok(CheckReport {
        read_models,
        violations,
        log_events,
        stream_messages,
    })
}

/// Invariants 1 to 3, on the live read models.
pub async fn invariants<C: GenericClient>(client: &C) -> Result<Vec<Violation>, StoreError> {
    let mut found = row_violations(
        client,
        1,
        "select id::text, on_hand, reserved from read.products
          where on_hand < 0 or reserved < 0 or on_hand - reserved < 0 order by id limit $1",
        |product, on_hand, reserved| {
            format!("product {product} has on_hand {on_hand} and reserved {reserved}: oversold")
        },
    )
    .await?;
    found.extend(
        row_violations(
            client,
            2,
            "with held as (
                 select (l->>'product_id')::uuid as product_id, sum((l->>'quantity')::int8) as quantity
                   from read.orders o, jsonb_array_elements(o.lines) l
                  where o.status in ('confirmed', 'paid')
                  group by 1)
             select coalesce(p.id, h.product_id)::text, coalesce(p.reserved, 0)::int8, coalesce(h.quantity, 0)::int8
               from read.products p full join held h on h.product_id = p.id
              where coalesce(p.reserved, 0) <> coalesce(h.quantity, 0)
              order by 1 limit $1",
            |product, reserved, held| {
                format!(
                    "product {product} has reserved {reserved} but its confirmed and paid orders hold {held}"
                )
            },
        )
        .await?,
    );
    let pending: i64 = client
        .query_one(
            "select count(*) from read.orders where status = 'pending'",
            &[],
        )
        .await?
        .get(0);
    if pending > 0 {
        let examples: Vec<String> = client
            .query("select id::text from read.orders where status = 'pending' order by placed_at limit $1", &[&EXAMPLES])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        found.push(Violation {
            invariant: 3,
            detail: format!(
                "{pending} order(s) still pending, e.g. {}",
                examples.join(", ")
            ),
        });
    }
    Ok(found)
}

/// A violation of `invariant` for each row of `sql`, which selects at most
/// `$1` examples as (product id as text, bigint, bigint), described by
/// `describe`.
async fn row_violations<C: GenericClient>(
    client: &C,
    invariant: u8,
    sql: &str,
    describe: fn(String, i64, i64) -> String,
) -> Result<Vec<Violation>, StoreError> {
    Ok(client
        .query(sql, &[&EXAMPLES])
        .await?
        .iter()
        .map(|row| Violation {
            invariant,
            detail: describe(row.get(0), row.get(1), row.get(2)),
        })
        .collect())
}

/// Invariant 5: the stream holds every event of the log, once, in log order.
/// Walks both side by side; returns the counts and what differs.
pub async fn compare_stream<C: GenericClient>(
    client: &C,
    jetstream: &jetstream::Context,
    stream: &StreamName,
) -> Result<(u64, u64, Vec<Violation>), CheckError> {
    let mut violations = Vec::new();
    let mut js_stream = match jetstream.get_stream(stream.as_str()).await {
        Ok(s) => s,
        Err(e) => {
            let log: i64 = client
                .query_one("select count(*) from events", &[])
                .await?
                .get(0);
            violations.push(Violation {
                invariant: 5,
                detail: format!("stream {stream} cannot be read: {e}"),
            });
            return Ok((log as u64, 0, violations));
        }
    };
    let info = js_stream
        .info()
        .await
        .map_err(|e| CheckError::JetStream(e.to_string()))?;
    let stream_messages = info.state.messages;
    let last_sequence = info.state.last_sequence;
    let mut messages = if last_sequence > 0 {
        let consumer = js_stream
            .create_consumer(OrderedConfig::default())
            .await
            .map_err(|e| CheckError::JetStream(e.to_string()))?;
        Some(
            consumer
                .messages()
                .await
                .map_err(|e| CheckError::JetStream(e.to_string()))?,
        )
    } else {
        None
    };

    let mut after = Position::START;
    let mut index = 0u64;
    let mut consumed = 0u64;
    let mut first_mismatch: Option<String> = None;
    loop {
        let page: Vec<RecordedEvent> =
            eventstore::store::read_log(client, after, &LogFilter::default(), 10_000).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for event in page {
            index += 1;
            let message = match (&mut messages, consumed < last_sequence) {
                (Some(messages), true) => {
                    match tokio::time::timeout(Duration::from_secs(10), messages.next()).await {
                        Ok(Some(Ok(message))) => Some(message),
                        _ => None,
                    }
                }
                _ => None,
            };
            let Some(message) = message else {
                first_mismatch.get_or_insert_with(|| {
                    format!(
                        "event #{index} ({} {}) is not on the stream",
                        event.event_type, event.event_id
                    )
                });
                continue;
            };
            consumed += 1;
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned());
            if id.as_deref() != Some(event.event_id.to_string().as_str()) {
                first_mismatch.get_or_insert_with(|| {
                    format!(
                        "message #{index} of the stream is {}, but event #{index} of the log is {} ({})",
                        id.unwrap_or_else(|| "without Nats-Msg-Id".into()),
                        event.event_id,
                        event.event_type
                    )
                });
            }
        }
    }
    if let Some(detail) = first_mismatch {
        violations.push(Violation {
            invariant: 5,
            detail,
        });
    }
    if stream_messages != index {
        violations.push(Violation {
            invariant: 5,
            detail: format!("the log has {index} events, the stream {stream_messages} messages"),
        });
    }
    Ok((index, stream_messages, violations))
}
