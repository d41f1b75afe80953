//! Positions and lag, for `ordo status` and `GET /projections`.

use chrono::{DateTime, Utc};
use eventstore::{Position, StoreError};
use serde::Serialize;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::checkpoint;

/// Lag is counted up to this many events (beyond, it says "at least").
const LAG_COUNT_LIMIT: i64 = 1_000_000;

/// One projection's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectionStatus {
    /// Its name.
    pub name: String,
    /// The last event it applied.
    pub position: Position,
    /// Committed events it has not applied yet (capped at a million).
    pub lag_events: i64,
    /// Age of the oldest event it has not applied yet.
    pub lag_seconds: f64,
    /// `running` or `failed`.
    pub status: String,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The event it failed on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_event: Option<Uuid>,
    /// When its checkpoint last moved.
    pub updated_at: DateTime<Utc>,
}

/// Events after `position` in the log (capped) and the age of the first.
pub async fn lag_after<C: GenericClient>(
    client: &C,
    position: Position,
) -> Result<(i64, f64), StoreError> {
    let row = client
        .query_one(
            "select (select count(*) from (select 1 from events
                      where (transaction_id, position) > ($1::text::xid8, $2) limit $3) pending),
                    coalesce((select extract(epoch from now() - recorded_at)::float8 from events
                      where (transaction_id, position) > ($1::text::xid8, $2)
                      order by transaction_id, position limit 1), 0)",
            &[
                &position.transaction_sql(),
                &position.position,
                &LAG_COUNT_LIMIT,
            ],
        )
        .await?;
    Ok((row.try_get(0)?, row.try_get::<_, f64>(1)?.max(0.0)))
}

/// Every projection's state.
pub async fn projections<C: GenericClient>(
    client: &C,
) -> Result<Vec<ProjectionStatus>, StoreError> {
    let mut out = Vec::new();
    for cp in checkpoint::all(client).await? {
        let (lag_events, lag_seconds) = lag_after(client, cp.position).await?;
        out.push(ProjectionStatus {
            name: cp.projection,
            position: cp.position,
            lag_events,
            lag_seconds,
            status: cp.status,
            error: cp.error,
            failed_event: cp.failed_event,
            updated_at: cp.updated_at,
        });
    }
    Ok(out)
}
