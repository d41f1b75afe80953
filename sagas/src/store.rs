//! The saga tables (`schemas/sql/0003_sagas.sql`): loading and saving saga
//! rows, timers, handled message ids and the consumer's checkpoint.
//!
//! Functions take the transaction (or client) to run in, because the point of
//! these tables is that everything one input causes commits together.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use domain::fulfilment::{
    self, SagaAction, SagaCommand, SagaConfig, SagaInput, SagaState, SagaStep,
};
use domain::ids::OrderId;
use eventstore::Position;
use tokio_postgres::types::Json;
use uuid::Uuid;

use crate::error::SagaError;

/// The only timer kind so far: a confirmed order's payment timeout.
pub const PAYMENT_TIMER: &str = "payment";

/// Columns [`SagaRow::from_row`] reads, in order.
const ROW_COLUMNS: &str =
    "order_id, state, version, correlation_id, origin_event_id, causes, parked";

/// One saga as stored, and what handling inputs changed in it.
#[derive(Debug, Clone)]
pub struct SagaRow {
    /// The order.
    pub order_id: OrderId,
    /// The state machine's state.
    pub state: SagaState,
    /// 0 until first stored.
    pub version: i64,
    /// The order's correlation id, from `OrderPlaced`.
    pub correlation_id: Option<Uuid>,
    /// The `OrderPlaced` event.
    pub origin_event_id: Option<Uuid>,
    /// Causation id of each pending command.
    pub causes: BTreeMap<String, Uuid>,
    /// Why the runner stopped acting on this saga, if it did.
    pub parked: Option<String>,
    /// True when the stored state could not be read by this build: the row
    /// is then parked and never overwritten, so nothing is lost.
    pub corrupt: bool,
    /// History steps not stored yet. They are taken out of `state` as the
    /// state machine adds them and stored apart (`saga.history`), so the
    /// row, rewritten several times per order, stays small.
    pub steps: Vec<SagaStep>,
    /// The timer change to write: `Some(Some(t))` set, `Some(None)` clear.
    pub timer: Option<Option<DateTime<Utc>>>,
    /// True when something must be written.
    pub dirty: bool,
}

impl SagaRow {
    /// A saga not stored yet.
    pub fn new(order_id: OrderId) -> SagaRow {
        SagaRow {
            order_id,
            state: SagaState::default(),
            version: 0,
            correlation_id: None,
            origin_event_id: None,
            causes: BTreeMap::new(),
            parked: None,
            corrupt: false,
            steps: Vec::new(),
            timer: None,
            dirty: false,
        }
    }

    fn from_row(row: &tokio_postgres::Row) -> Result<SagaRow, SagaError> {
        let mut saga = SagaRow::new(OrderId::new(row.try_get(0)?));
        saga.version = row.try_get(2)?;
        saga.correlation_id = row.try_get(3)?;
        saga.origin_event_id = row.try_get(4)?;
        // `Json<T>` reads the column straight into its type: no
        // `serde_json::Value` tree built only to be walked again.
        saga.causes = row
            .try_get::<_, Json<BTreeMap<String, Uuid>>>(5)
            .map(|causes| causes.0)
            .unwrap_or_default();
        saga.parked = row.try_get(6)?;
        match row.try_get::<_, Json<SagaState>>(1) {
            Ok(Json(state)) => {
                saga.state = state;
                // A state stored before `saga.history` existed: its steps
                // move there with the next save.
                saga.steps = std::mem::take(&mut saga.state.history);
            }
            Err(e) => {
                saga.corrupt = true;
                if saga.parked.is_none() {
                    tracing::error!(order_id = %saga.order_id, error = %e, "saga state unreadable; parking it");
                    saga.park(format!("stored saga state unreadable: {e}"));
                }
            }
        }
        Ok(saga)
    }

    /// Stops the runner acting on this saga; the reason shows in
    /// `GET /sagas/{order_id}` and counts as needing attention.
    pub fn park(&mut self, reason: String) {
        if self.parked.is_none() {
            metrics::counter!("ordo_saga_outcomes_total", "outcome" => "parked").increment(1);
            self.parked = Some(reason);
            self.dirty = true;
        }
    }

    /// Feeds one input to the state machine (`times` times: twice when a test
    /// repeats every step) and records what it asked for. Returns the
    /// commands issued; timer actions are kept for [`save`].
    pub fn apply(
        &mut self,
        input: &SagaInput,
        now: DateTime<Utc>,
        cfg: &SagaConfig,
        times: usize,
        cause: Option<Uuid>,
    ) -> Vec<SagaCommand> {
        if self.corrupt {
            return Vec::new();
        }
        let mut issued = Vec::new();
        for _ in 0..times {
            let before = self.state.clone();
            let (state, actions) = fulfilment::handle(before.clone(), input.clone(), now, cfg);
            if state != before {
                self.dirty = true;
                count_outcome(before.phase, state.phase);
            }
            self.state = state;
            self.steps.append(&mut self.state.history);
            for action in actions {
                match action {
                    SagaAction::Issue(command) => issued.push(command),
                    SagaAction::SetPaymentTimer { due_at } => {
                        self.timer = Some(Some(due_at));
                        self.dirty = true;
                    }
                    SagaAction::ClearPaymentTimer => {
                        self.timer = Some(None);
                        self.dirty = true;
                    }
                }
            }
        }
        let cause = cause.or(self.origin_event_id);
        for command in &issued {
            if let Some(cause) = cause {
                self.causes.insert(command.command_id.clone(), cause);
            }
        }
        // Only pending commands need a remembered cause.
        let pending: HashSet<&str> = self
            .state
            .pending
            .iter()
            .map(|p| p.command.command_id.as_str())
            .collect();
        let before = self.causes.len();
        self.causes.retain(|id, _| pending.contains(id.as_str()));
        if self.causes.len() != before {
            self.dirty = true;
        }
        issued
    }

    /// Records `event_id` as the cause of `commands`.
    pub fn caused_by(&mut self, commands: &[SagaCommand], event_id: Uuid) {
        for command in commands {
            self.causes.insert(command.command_id.clone(), event_id);
        }
        self.dirty = true;
    }

    /// The causation id of a pending command.
    pub fn cause_of(&self, command_id: &str) -> Option<Uuid> {
        self.causes
            .get(command_id)
            .copied()
            .or(self.origin_event_id)
    }
}

/// Counts sagas reaching an outcome (a phase worth a dashboard line).
fn count_outcome(from: fulfilment::SagaPhase, to: fulfilment::SagaPhase) {
    use fulfilment::SagaPhase as P;
    if from == to {
        return;
    }
    let outcome = match to {
        P::AwaitingPayment => "confirmed",
        P::Rejected => "rejected",
        P::Cancelled => "cancelled",
        P::Completed => "completed",
        P::NeedsAttention => "needs_attention",
        _ => return,
    };
    metrics::counter!("ordo_saga_outcomes_total", "outcome" => outcome).increment(1);
}

/// Loads sagas and locks their rows until the transaction ends (in order_id
/// order; see the runner for why that cannot deadlock).
///
/// Each saga is its own lookup by primary key, in a lateral subquery: the
/// plan is the index whatever the table's size when the statement was
/// prepared. (`where order_id = any($1)`, prepared while the table held
/// about a thousand rows, keeps a sequential scan as it grows, unless
/// statistics are refreshed.)
pub async fn load_for_update(
    tx: &impl GenericClient,
    order_ids: &[Uuid],
) -> Result<HashMap<OrderId, SagaRow>, SagaError> {
    let mut ids = order_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let sql = format!(
        "select s.* from unnest($1::uuid[]) with ordinality as k(order_id, n)
           cross join lateral (
             select {ROW_COLUMNS} from saga.sagas where order_id = k.order_id for update
           ) s
          order by k.n"
    );
    let statement = tx.prepare_cached(&sql).await?;
    let mut out = HashMap::new();
    for row in tx.query(&statement, &[&ids]).await? {
        let saga = SagaRow::from_row(&row)?;
        out.insert(saga.order_id, saga);
    }
    Ok(out)
}

/// Writes a saga row and its timer change, if anything changed.
pub async fn save(
    tx: &impl GenericClient,
    saga: &SagaRow,
    now: DateTime<Utc>,
) -> Result<(), SagaError> {
    save_all(tx, std::iter::once(saga), now).await
}

/// Writes every changed saga row and timer change: one statement for the
/// rows, one for the timers set and one for those cleared, however many
/// sagas a batch touched.
pub async fn save_all<'a>(
    tx: &impl GenericClient,
    sagas: impl IntoIterator<Item = &'a SagaRow>,
    now: DateTime<Utc>,
) -> Result<(), SagaError> {
    let mut ids = Vec::new();
    let mut states = Vec::new();
    let mut phases = Vec::new();
    let mut finished = Vec::new();
    let mut correlations = Vec::new();
    let mut origins = Vec::new();
    let mut causes = Vec::new();
    let mut parked = Vec::new();
    let mut steps = Vec::new();
    let (mut timer_ids, mut timer_due) = (Vec::new(), Vec::new());
    let mut cleared = Vec::new();
    // In order_id order, like every lock ordo's sagas take: two processes
    // inserting the same new sagas then wait for each other, never deadlock.
    let mut sagas: Vec<&SagaRow> = sagas.into_iter().filter(|s| s.dirty).collect();
    sagas.sort_unstable_by_key(|s| s.order_id.as_uuid());
    for saga in sagas {
        let id = saga.order_id.as_uuid();
        if saga.corrupt {
            // Park it without touching the state this build cannot read.
            let statement = tx
                .prepare_cached(
                    "update saga.sagas set parked = $2, parked_at = $3, updated_at = $3
                      where order_id = $1 and parked is null",
                )
                .await?;
            tx.execute(&statement, &[&id, &saga.parked, &now]).await?;
            continue;
        }
        ids.push(id);
        states.push(Json(&saga.state));
        phases.push(saga.state.phase.as_str());
        finished.push(saga.state.is_finished());
        correlations.push(saga.correlation_id);
        origins.push(saga.origin_event_id);
        causes.push(Json(&saga.causes));
        parked.push(saga.parked.as_deref());
        steps.push(Json(&saga.steps));
        match saga.timer {
            Some(Some(due_at)) => {
                timer_ids.push(id);
                timer_due.push(due_at);
            }
            Some(None) => cleared.push(id),
            None => {}
        }
    }
    // The three statements are sent back to back, not one after the other's
    // answer: the transaction around them holds the log's horizon while it
    // is open (see `crate::runner`).
    let rows = async {
        if ids.is_empty() {
            return Ok(0);
        }
        let statement = tx
            .prepare_cached(
                "with saved as (
                 insert into saga.sagas (order_id, state, phase, finished, version, correlation_id,
                                         origin_event_id, causes, parked, parked_at, created_at, updated_at)
                 select r.order_id, r.state, r.phase, r.finished, 1, r.correlation_id,
                        r.origin_event_id, r.causes, r.parked,
                        case when r.parked is null then null else $9::timestamptz end, $9, $9
                   from unnest($1::uuid[], $2::jsonb[], $3::text[], $4::bool[], $5::uuid[],
                               $6::uuid[], $7::jsonb[], $8::text[])
                        as r(order_id, state, phase, finished, correlation_id, origin_event_id, causes, parked)
                 on conflict (order_id) do update set
                     state = excluded.state,
                     phase = excluded.phase,
                     finished = excluded.finished,
                     version = saga.sagas.version + 1,
                     correlation_id = coalesce(saga.sagas.correlation_id, excluded.correlation_id),
                     origin_event_id = coalesce(saga.sagas.origin_event_id, excluded.origin_event_id),
                     causes = excluded.causes,
                     parked = excluded.parked,
                     parked_at = case when excluded.parked is null then null
                                      else coalesce(saga.sagas.parked_at, excluded.parked_at) end,
                     updated_at = excluded.updated_at
                 returning order_id, version
                 )
                 insert into saga.history (order_id, version, steps)
                 select s.order_id, s.version, h.steps
                   from saved s
                   join unnest($1::uuid[], $10::jsonb[]) as h(order_id, steps) using (order_id)
                  where jsonb_array_length(h.steps) > 0",
            )
            .await?;
        tx.execute(
            &statement,
            &[
                &ids,
                &states,
                &phases,
                &finished,
                &correlations,
                &origins,
                &causes,
                &parked,
                &now,
                &steps,
            ],
        )
        .await
    };
    let set = async {
        if timer_ids.is_empty() {
            return Ok(0);
        }
        let statement = tx
            .prepare_cached(
                "insert into saga.timers (order_id, kind, due_at, set_at)
                 select t.order_id, $2, t.due_at, $3 from unnest($1::uuid[], $4::timestamptz[]) as t(order_id, due_at)
                 on conflict (order_id, kind) do update
                   set due_at = excluded.due_at, set_at = excluded.set_at",
            )
            .await?;
        tx.execute(&statement, &[&timer_ids, &PAYMENT_TIMER, &now, &timer_due])
            .await
    };
    let clear = async {
        if cleared.is_empty() {
            return Ok(0);
        }
        // One delete by primary key per timer, sent together: a statement
        // for all (`order_id = any($1)`) would be planned as a scan of the
        // table while it is small, and keep that plan as it grows.
        let statement = tx
            .prepare_cached("delete from saga.timers where order_id = $1 and kind = $2")
            .await?;
        let statement = &statement;
        let deletes = cleared
            .iter()
            .map(|id| async move { tx.execute(statement, &[id, &PAYMENT_TIMER]).await });
        Ok(futures::future::try_join_all(deletes).await?.iter().sum())
    };
    futures::try_join!(rows, set, clear)?;
    Ok(())
}

/// Records messages as handled (each with the saga it concerns); returns the
/// ids recorded now, which are the ones not handled before. A message given
/// twice counts once.
///
/// One insert answers both questions, through the primary key's index. A
/// `select … where message_id = any($1)` first would need a plan, and a
/// prepared one made while the table was small (a sequential scan, which
/// is cheapest then) is kept while the table grows unless statistics are
/// refreshed: on a server without autovacuum each batch then read the whole
/// table.
pub async fn record_processed(
    tx: &impl GenericClient,
    ids: &[Uuid],
    order_ids: &[Uuid],
) -> Result<HashSet<Uuid>, SagaError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let statement = tx
        .prepare_cached(
            "insert into saga.processed (message_id, order_id)
             select * from unnest($1::uuid[], $2::uuid[]) on conflict do nothing
             returning message_id",
        )
        .await?;
    Ok(tx
        .query(&statement, &[&ids, &order_ids])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Where the consumer is on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// The last event handled (or skipped as irrelevant).
    pub position: Position,
    /// The stream sequence of the last message handled.
    pub sequence: u64,
}

/// The consumer's checkpoint on `stream` (the start when none is stored).
pub async fn load_checkpoint(
    client: &tokio_postgres::Client,
    stream: &str,
) -> Result<Checkpoint, SagaError> {
    let row = client
        .query_opt(
            "select transaction_id::text, position, stream_sequence
               from saga.checkpoint where stream_name = $1",
            &[&stream],
        )
        .await?;
    Ok(match row {
        Some(row) => Checkpoint {
            position: Position::new(row.get::<_, String>(0).parse().unwrap_or(0), row.get(1)),
            sequence: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
        },
        None => Checkpoint::default(),
    })
}

/// Stores the consumer's checkpoint.
pub async fn save_checkpoint(
    tx: &impl GenericClient,
    stream: &str,
    checkpoint: Checkpoint,
) -> Result<(), SagaError> {
    let statement = tx
        .prepare_cached(
            "insert into saga.checkpoint (stream_name, transaction_id, position, stream_sequence)
             values ($1, $2::text::xid8, $3, $4)
             on conflict (stream_name) do update
               set transaction_id = excluded.transaction_id, position = excluded.position,
                   stream_sequence = excluded.stream_sequence, updated_at = now()",
        )
        .await?;
    tx.execute(
        &statement,
        &[
            &stream,
            &checkpoint.position.transaction_sql(),
            &checkpoint.position.position,
            &i64::try_from(checkpoint.sequence).unwrap_or(i64::MAX),
        ],
    )
    .await?;
    Ok(())
}

/// Unfinished, unparked sagas with commands pending: what a new coordinator
/// re-issues (each command id makes that harmless if it already ran).
pub async fn with_pending_commands(client: &impl GenericClient) -> Result<Vec<SagaRow>, SagaError> {
    let sql = format!(
        "select {ROW_COLUMNS} from saga.sagas
          where not finished and parked is null and jsonb_array_length(state->'pending') > 0
          order by updated_at"
    );
    let rows = client.query(&sql, &[]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let saga = SagaRow::from_row(row)?;
        if !saga.corrupt {
            out.push(saga);
        }
    }
    Ok(out)
}

/// Due timers with their sagas, both rows locked; rows someone else holds
/// are skipped, never waited for.
pub async fn due_timers(
    tx: &impl GenericClient,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<SagaRow>, SagaError> {
    let sql = format!(
        "select {} from saga.timers t join saga.sagas s on s.order_id = t.order_id
          where t.kind = $1 and t.due_at <= $2 and s.parked is null
          order by t.due_at
          limit $3
          for update of t, s skip locked",
        ROW_COLUMNS
            .split(", ")
            .map(|c| format!("s.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let statement = tx.prepare_cached(&sql).await?;
    let rows = tx
        .query(&statement, &[&PAYMENT_TIMER, &now, &limit])
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(SagaRow::from_row(row)?);
    }
    Ok(out)
}

/// How many sagas need a human: given-up compensations and parked sagas.
pub async fn count_needing_attention(client: &impl GenericClient) -> Result<i64, SagaError> {
    Ok(client
        .query_one("select count(*) from saga.sagas where attention", &[])
        .await?
        .get(0))
}
