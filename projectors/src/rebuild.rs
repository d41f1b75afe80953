//! Rebuilding read models from the event log while the system keeps serving.
//!
//! 1. **Build beside.** Empty copies of the projection's tables are created in
//!    schema `read_rebuild` and filled from the PostgreSQL log (never from
//!    JetStream, which may have been trimmed) in large batches, up to what
//!    the relay had published when the rebuild started. A reader task fetches
//!    and decodes the next batch while the current one is written.
//! 2. **Catch up and swap, atomically.** One transaction locks the live
//!    checkpoint row (so the live projector's next batch waits), picks the
//!    sync point — the live checkpoint, or the relay's if that is further —
//!    applies the log up to it to the copies, replaces the live tables with
//!    them and sets the checkpoint to the sync point (log position *and*
//!    JetStream sequence). The live projector then continues from exactly
//!    there: nothing missed, nothing applied twice. Queries wait on the
//!    table locks for the instant of the swap and never see a half state.
//! 3. **Dry run** does the same but compares the copies with the live tables
//!    inside that transaction instead of swapping, and drops the copies.

use std::time::{Duration, Instant};

use eventstore::leadership::LockKey;
use eventstore::nats::StreamName;
use eventstore::store::LogFilter;
use eventstore::{Position, RecordedEvent, StoreError};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_postgres::GenericClient;

use crate::checkpoint;
use crate::event::ProjectionEvent;
use crate::projection::{ApplyError, Projection};

/// The schema rebuilt tables are built in.
pub const SHADOW: &str = "read_rebuild";

/// What to rebuild, and how.
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// The projections.
    pub projections: Vec<Projection>,
    /// Compare instead of swapping.
    pub dry_run: bool,
    /// Events per batch while building.
    pub batch_size: i64,
}

/// Where a rebuild is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Events applied so far.
    pub applied: u64,
    /// Events to apply in the build phase.
    pub total: u64,
}

/// Rows that differ between a live table and its rebuilt copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableDiff {
    /// `read.<table>`.
    pub table: String,
    /// Rows only the live table has (or has differently).
    pub only_live: i64,
    /// Rows only the rebuilt table has (or has differently).
    pub only_rebuilt: i64,
    /// A few of them, as JSON (`live: ...` / `rebuilt: ...`).
    pub examples: Vec<String>,
}

/// What became of one projection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectionOutcome {
    /// The projection.
    pub projection: String,
    /// The position its tables now reflect.
    pub position: Position,
    /// Differences found (dry run and check).
    pub differences: Vec<TableDiff>,
    /// Whether the rebuilt tables replaced the live ones.
    pub swapped: bool,
}

/// The result of a rebuild.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RebuildReport {
    /// One per projection.
    pub projections: Vec<ProjectionOutcome>,
    /// Events read from the log.
    pub events: u64,
    /// How long it took.
    pub elapsed: Duration,
}

impl RebuildReport {
    /// Events per second over the whole rebuild.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// True when a dry run or check found no difference.
    pub fn identical(&self) -> bool {
        self.projections.iter().all(|p| p.differences.is_empty())
    }
}

/// Why a rebuild did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// Another rebuild of the projection runs.
    #[error("a rebuild of {0} is already running")]
    Busy(Projection),
    /// An event in the log cannot be applied.
    #[error("rebuilding {projection}: {error}")]
    Poison {
        /// The projection.
        projection: Projection,
        /// The event and what is wrong with it.
        error: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<tokio_postgres::Error> for RebuildError {
    fn from(e: tokio_postgres::Error) -> Self {
        RebuildError::Store(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for RebuildError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        RebuildError::Store(e.into())
    }
}

/// One rebuild of a projection at a time, whoever starts it.
fn lock_key(projection: Projection) -> LockKey {
    LockKey::new("rebuild", projection)
}

/// Rebuilds (or, with `dry_run`, recomputes and compares) `options.projections`.
pub async fn rebuild(
    pool: &deadpool_postgres::Pool,
    stream: &StreamName,
    options: &RebuildOptions,
    progress: impl FnMut(Progress),
) -> Result<RebuildReport, RebuildError> {
    let mut projections = options.projections.clone();
    projections.sort();
    projections.dedup();
    // Session-level locks on one connection, released however this ends.
    let locks = pool.get().await?;
    let mut held = Vec::new();
    let mut result = Ok(());
    for projection in &projections {
        if lock_key(*projection).try_lock(&**locks).await? {
            held.push(*projection);
        } else {
            result = Err(RebuildError::Busy(*projection));
            break;
        }
    }
    let outcome = match result {
        Ok(()) => run(pool, stream, &projections, options, progress).await,
        Err(e) => Err(e),
    };
    for projection in held {
        lock_key(projection).unlock(&**locks).await?;
    }
    outcome
}

async fn run(
    pool: &deadpool_postgres::Pool,
    stream: &StreamName,
    projections: &[Projection],
    options: &RebuildOptions,
    mut progress: impl FnMut(Progress),
) -> Result<RebuildReport, RebuildError> {
    let started = Instant::now();
    let mut client = pool.get().await?;
    // The shadow tables are made, dropped and swapped in by functions the
    // schema's owner defined (migration 0009): the runtime role has no DDL.
    for projection in projections {
        for table in projection.tables() {
            client
                .execute("select ordo_rebuild_prepare($1)", &[table])
                .await?;
        }
    }

    // 1. Build up to what the relay had published.
    let bound = eventstore::relay::checkpoint(&**client, stream)
        .await?
        .map(|c| c.position)
        .unwrap_or(Position::START);
    let total: i64 = client
        .query_one(
            "select count(*) from events where (transaction_id, position) <= ($1::text::xid8, $2)",
            &[&bound.transaction_sql(), &bound.position],
        )
        .await?
        .get(0);
    let (tx_batches, mut batches) = mpsc::channel::<Result<Vec<ProjectionEvent>, StoreError>>(2);
    let reader = {
        let pool = pool.clone();
        let limit = options.batch_size.max(1);
        tokio::spawn(async move { read_until(pool, bound, limit, tx_batches).await })
    };
    let mut applied = 0u64;
    let mut built_to = Position::START;
    progress(Progress {
        applied,
        total: total as u64,
    });
    // Each projection writes on a connection of its own, so their batches
    // are applied side by side.
    let mut writers = Vec::with_capacity(projections.len());
    for _ in projections {
        writers.push(pool.get().await?);
    }
    while let Some(batch) = batches.recv().await {
        let batch = batch?;
        futures::future::try_join_all(
            writers
                .iter_mut()
                .zip(projections)
                .map(|(writer, projection)| apply_batch(writer, *projection, &batch)),
        )
        .await?;
        applied += batch.len() as u64;
        if let Some(last) = batch.last() {
            built_to = last.position;
        }
        progress(Progress {
            applied,
            total: total as u64,
        });
    }
    reader.abort();

    // 2. Catch up and swap (or compare), one transaction per projection.
    let mut outcomes = Vec::new();
    for projection in projections {
        let (outcome, caught_up) =
            swap(&mut client, stream, *projection, built_to, options.dry_run).await?;
        applied += caught_up;
        outcomes.push(outcome);
    }
    if options.dry_run {
        for projection in projections {
            for table in projection.tables() {
                client
                    .execute("select ordo_rebuild_discard($1)", &[table])
                    .await?;
            }
        }
    }
    Ok(RebuildReport {
        projections: outcomes,
        events: applied,
        elapsed: started.elapsed(),
    })
}

/// Reads the log up to `bound` in batches, decoded, into `out`.
async fn read_until(
    pool: deadpool_postgres::Pool,
    bound: Position,
    limit: i64,
    out: mpsc::Sender<Result<Vec<ProjectionEvent>, StoreError>>,
) {
    let mut after = Position::START;
    loop {
        let batch = match read_between(&pool, after, bound, limit).await {
            Ok(batch) => batch,
            Err(e) => {
                let _ = out.send(Err(e)).await;
                return;
            }
        };
        let Some(last) = batch.last() else { return };
        after = last.position;
        let done = (batch.len() as i64) < limit;
        if out.send(Ok(batch)).await.is_err() || done {
            return;
        }
    }
}

async fn read_between(
    pool: &deadpool_postgres::Pool,
    after: Position,
    bound: Position,
    limit: i64,
) -> Result<Vec<ProjectionEvent>, StoreError> {
    let client = pool.get().await?;
    read_between_on(&**client, after, bound, limit).await
}

/// Events in `(after, bound]`, at most `limit`, decoded.
async fn read_between_on<C: GenericClient>(
    client: &C,
    after: Position,
    bound: Position,
    limit: i64,
) -> Result<Vec<ProjectionEvent>, StoreError> {
    if after >= bound {
        return Ok(Vec::new());
    }
    let events: Vec<RecordedEvent> =
        eventstore::store::read_log(client, after, &LogFilter::default(), limit).await?;
    Ok(events
        .into_iter()
        .take_while(|e| e.position <= bound)
        .map(ProjectionEvent::from_recorded)
        .collect())
}

async fn apply_batch(
    client: &mut deadpool_postgres::Object,
    projection: Projection,
    batch: &[ProjectionEvent],
) -> Result<(), RebuildError> {
    let tx = client.transaction().await?;
    projection
        .apply(&tx, SHADOW, batch)
        .await
        .map_err(|e| poison(projection, e))?;
    tx.commit().await?;
    Ok(())
}

fn poison(projection: Projection, e: ApplyError) -> RebuildError {
    match e {
        ApplyError::Store(e) => RebuildError::Store(e),
        other => RebuildError::Poison {
            projection,
            error: other.to_string(),
        },
    }
}

/// Step 2 for one projection. Returns its outcome and the events applied
/// while catching up.
async fn swap(
    client: &mut deadpool_postgres::Object,
    stream: &StreamName,
    projection: Projection,
    built_to: Position,
    dry_run: bool,
) -> Result<(ProjectionOutcome, u64), RebuildError> {
    let name = projection.name();
    let tx = client.transaction().await?;
    let live = checkpoint::lock(&*tx, name).await?;
    let relay = eventstore::relay::checkpoint(&*tx, stream).await?;
    let (sync, sequence) = match relay {
        Some(relay) if relay.position > live.position => (relay.position, relay.stream_sequence),
        _ => (live.position, live.stream_sequence),
    };
    let mut caught_up = 0u64;
    let mut after = built_to;
    loop {
        let batch = read_between_on(&*tx, after, sync, 10_000).await?;
        let Some(last) = batch.last() else { break };
        after = last.position;
        projection
            .apply(&tx, SHADOW, &batch)
            .await
            .map_err(|e| poison(projection, e))?;
        caught_up += batch.len() as u64;
    }
    let mut differences = Vec::new();
    if dry_run {
        for table in projection.tables() {
            let diff = compare(&*tx, table).await?;
            if diff.only_live > 0 || diff.only_rebuilt > 0 {
                differences.push(diff);
            }
        }
        tx.rollback().await?;
        let outcome = ProjectionOutcome {
            projection: name.to_owned(),
            position: sync,
            differences,
            swapped: false,
        };
        return Ok((outcome, caught_up));
    }
    for table in projection.tables() {
        tx.execute("select ordo_rebuild_swap($1)", &[table]).await?;
    }
    // The live checkpoint is locked since it was read: it is still `live`.
    if !checkpoint::advance_from(&tx, name, &live, sync, sequence).await? {
        return Err(StoreError::Internal(format!(
            "the checkpoint of {name} moved while the rebuild held it"
        ))
        .into());
    }
    tx.commit().await?;
    tracing::info!(projection = name, position = %sync, "rebuilt tables swapped in");
    let outcome = ProjectionOutcome {
        projection: name.to_owned(),
        position: sync,
        differences,
        swapped: true,
    };
    Ok((outcome, caught_up))
}

/// Rows of `read.<table>` and `read_rebuild.<table>` that are not in the other.
async fn compare<C: GenericClient>(client: &C, table: &str) -> Result<TableDiff, StoreError> {
    let live_only = format!("select * from read.{table} except all select * from {SHADOW}.{table}");
    let rebuilt_only =
        format!("select * from {SHADOW}.{table} except all select * from read.{table}");
    let count = |sql: String| async move {
        let row = client
            .query_one(&format!("select count(*) from ({sql}) d"), &[])
            .await?;
        Ok::<i64, StoreError>(row.get(0))
    };
    let only_live = count(live_only.clone()).await?;
    let only_rebuilt = count(rebuilt_only.clone()).await?;
    let mut examples = Vec::new();
    for (label, sql) in [("live", live_only), ("rebuilt", rebuilt_only)] {
        for row in client
            .query(
                &format!("select row_to_json(d)::text from ({sql}) d limit 3"),
                &[],
            )
            .await?
        {
            examples.push(format!("{label}: {}", row.get::<_, String>(0)));
        }
    }
    Ok(TableDiff {
        table: format!("read.{table}"),
        only_live,
        only_rebuilt,
        examples,
    })
}
