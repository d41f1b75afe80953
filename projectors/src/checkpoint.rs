//! Projection checkpoints: the last event each projection applied, kept in
//! the same transaction as the changes it made, so each event applies once.

use chrono::{DateTime, Utc};
use eventstore::{Position, StoreError};
use tokio_postgres::GenericClient;
use uuid::Uuid;

/// A projection's checkpoint row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The projection.
    pub projection: String,
    /// The last event applied.
    pub position: Position,
    /// The JetStream sequence of the last message consumed.
    pub stream_sequence: u64,
    /// `running` or `failed`.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    /// The event it failed on.
    pub failed_event: Option<Uuid>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "projection, transaction_id::text, position, stream_sequence, status, error, failed_event, updated_at";

fn from_row(row: &tokio_postgres::Row) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        projection: row.try_get(0)?,
        position: Position::from_row(row, 1, 2)?,
        stream_sequence: row.try_get::<_, i64>(3)? as u64,
        status: row.try_get(4)?,
        error: row.try_get(5)?,
        failed_event: row.try_get(6)?,
        updated_at: row.try_get(7)?,
    })
}

/// One projection's checkpoint.
pub async fn load<C: GenericClient>(
    client: &C,
    projection: &str,
) -> Result<Checkpoint, StoreError> {
    one(client, projection, "").await
}

/// One projection's checkpoint, locked until the transaction ends: the live
/// projector and a rebuild's swap take turns on this row.
pub async fn lock<C: GenericClient>(tx: &C, projection: &str) -> Result<Checkpoint, StoreError> {
    one(tx, projection, " for update").await
}

/// One projection's checkpoint, read with `locking` (a locking clause or
/// nothing).
async fn one<C: GenericClient>(
    client: &C,
    projection: &str,
    locking: &str,
) -> Result<Checkpoint, StoreError> {
    let row = client
        .query_opt(
            &format!("select {COLUMNS} from read.checkpoints where projection = $1{locking}"),
            &[&projection],
        )
        .await?
        .ok_or_else(|| {
            StoreError::Internal(format!("no checkpoint row for projection {projection}"))
        })?;
    from_row(&row)
}

/// Every checkpoint.
pub async fn all<C: GenericClient>(client: &C) -> Result<Vec<Checkpoint>, StoreError> {
    let rows = client
        .query(
            &format!("select {COLUMNS} from read.checkpoints order by projection"),
            &[],
        )
        .await?;
    rows.iter().map(from_row).collect()
}

/// Moves the checkpoint from `from` to `position` (inside the batch's
/// transaction), unless it is no longer at `from`: a rebuild's swap moved
/// it. Then nothing changes and the answer is `false`. Waits for a swap in
/// progress (which holds the row), so it is the first lock the live
/// projector's transaction takes, as it is a rebuild's.
pub async fn advance_from(
    tx: &impl deadpool_postgres::GenericClient,
    projection: &str,
    from: &Checkpoint,
    position: Position,
    stream_sequence: u64,
) -> Result<bool, StoreError> {
    let statement = tx
        .prepare_cached(
            "update read.checkpoints
                set transaction_id = $2::text::xid8, position = $3, stream_sequence = $4,
                    status = 'running', error = null, failed_event = null, updated_at = now()
              where projection = $1
                and transaction_id = $5::text::xid8 and position = $6 and stream_sequence = $7",
        )
        .await?;
    let moved = tx
        .execute(
            &statement,
            &[
                &projection,
                &position.transaction_sql(),
                &position.position,
                &(stream_sequence as i64),
                &from.position.transaction_sql(),
                &from.position.position,
                &(from.stream_sequence as i64),
            ],
        )
        .await?;
    Ok(moved == 1)
}

/// Records that the projection stopped on an event.
pub async fn mark_failed<C: GenericClient>(
    client: &C,
    projection: &str,
    event_id: Option<Uuid>,
    error: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "update read.checkpoints set status = 'failed', error = $2, failed_event = $3, updated_at = now()
              where projection = $1",
            &[&projection, &error, &event_id],
        )
        .await?;
    Ok(())
}

/// Marks a projection running again (a restart retries a failed event).
pub async fn mark_running<C: GenericClient>(
    client: &C,
    projection: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "update read.checkpoints set status = 'running', updated_at = now() where projection = $1",
            &[&projection],
        )
        .await?;
    Ok(())
}
