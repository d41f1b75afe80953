//! Positions and lag, for `ordo status` and `GET /projections`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    /// Committed events it has not applied yet (capped at a million; see
    /// [`projections_cached`] for how fresh).
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

/// Lags shorter than this are counted afresh on every call (cheap).
const LAG_EXACT_BELOW: i64 = 1_000;
/// How long a count of a longer lag is reused: counting reads every event in
/// the lag, so a caller polling a projection that is far behind (a dashboard,
/// the end-to-end benchmark) would otherwise slow it further.
const LAG_RECOUNT_AFTER: Duration = Duration::from_secs(1);

/// Recent counts of long lags, per projection; see [`projections_cached`].
#[derive(Debug, Default)]
pub struct LagCache {
    counts: Mutex<HashMap<String, (Instant, i64)>>,
}

impl LagCache {
    fn recent(&self, projection: &str) -> Option<i64> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .get(projection)
            .filter(|(at, count)| *count >= LAG_EXACT_BELOW && at.elapsed() < LAG_RECOUNT_AFTER)
            .map(|(_, count)| *count)
    }

    fn remember(&self, projection: &str, count: i64) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.insert(projection.to_owned(), (Instant::now(), count));
    }
}

/// Events after `position` in the log (capped).
pub async fn lag_count<C: GenericClient>(
    client: &C,
    position: Position,
) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            "select count(*) from (select 1 from events
              where (transaction_id, position) > ($1::text::xid8, $2) limit $3) pending",
            &[
                &position.transaction_sql(),
                &position.position,
                &LAG_COUNT_LIMIT,
            ],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Age in seconds of the first event after `position` (0 when none).
pub async fn lag_age<C: GenericClient>(client: &C, position: Position) -> Result<f64, StoreError> {
    let row = client
        .query_one(
            "select coalesce((select extract(epoch from now() - recorded_at)::float8 from events
                      where (transaction_id, position) > ($1::text::xid8, $2)
                      order by transaction_id, position limit 1), 0)",
            &[&position.transaction_sql(), &position.position],
        )
        .await?;
    Ok(row.try_get::<_, f64>(0)?.max(0.0))
}

/// Events after `position` in the log (capped) and the age of the first.
pub async fn lag_after<C: GenericClient>(
    client: &C,
    position: Position,
) -> Result<(i64, f64), StoreError> {
    Ok((
        lag_count(client, position).await?,
        lag_age(client, position).await?,
    ))
}

/// Every projection's state, every lag counted afresh.
pub async fn projections<C: GenericClient>(
    client: &C,
) -> Result<Vec<ProjectionStatus>, StoreError> {
    projections_with(client, None).await
}

/// Every projection's state for callers that poll (`GET /projections`,
/// `/metrics`): positions and ages are always fresh, and so is a lag under
/// a thousand events; a longer one may be a count up to a second old.
pub async fn projections_cached<C: GenericClient>(
    client: &C,
    cache: &LagCache,
) -> Result<Vec<ProjectionStatus>, StoreError> {
    projections_with(client, Some(cache)).await
}

/// One projection's state, as [`projections_cached`] gives it.
pub async fn projection_cached<C: GenericClient>(
    client: &C,
    cache: &LagCache,
    projection: &str,
) -> Result<ProjectionStatus, StoreError> {
    let cp = checkpoint::load(client, projection).await?;
    status_of(client, Some(cache), cp).await
}

async fn projections_with<C: GenericClient>(
    client: &C,
    cache: Option<&LagCache>,
) -> Result<Vec<ProjectionStatus>, StoreError> {
    let mut out = Vec::new();
    for cp in checkpoint::all(client).await? {
        out.push(status_of(client, cache, cp).await?);
    }
    Ok(out)
}

async fn status_of<C: GenericClient>(
    client: &C,
    cache: Option<&LagCache>,
    cp: checkpoint::Checkpoint,
) -> Result<ProjectionStatus, StoreError> {
    let lag_events = match cache.and_then(|c| c.recent(&cp.projection)) {
        Some(count) => count,
        None => {
            let count = lag_count(client, cp.position).await?;
            if let Some(cache) = cache {
                cache.remember(&cp.projection, count);
            }
            count
        }
    };
    let lag_seconds = lag_age(client, cp.position).await?;
    Ok(ProjectionStatus {
        name: cp.projection,
        position: cp.position,
        lag_events,
        lag_seconds,
        status: cp.status,
        error: cp.error,
        failed_event: cp.failed_event,
        updated_at: cp.updated_at,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_long_lags_are_reused_and_only_for_a_while() {
        let cache = LagCache::default();
        assert_eq!(cache.recent("orders"), None, "nothing counted yet");
        cache.remember("orders", LAG_EXACT_BELOW - 1);
        assert_eq!(
            cache.recent("orders"),
            None,
            "a short lag is always recounted"
        );
        cache.remember("orders", 50_000);
        assert_eq!(cache.recent("orders"), Some(50_000));
        assert_eq!(cache.recent("users"), None, "per projection");
        cache.counts.lock().unwrap().get_mut("orders").unwrap().0 -= LAG_RECOUNT_AFTER;
        assert_eq!(cache.recent("orders"), None, "an old count is recounted");
    }
}
