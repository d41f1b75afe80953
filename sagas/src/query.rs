//! What `GET /sagas/{order_id}` shows: the saga's phase, its lines, the
//! commands it is waiting on, its timers and its whole history of steps and
//! compensations.

use chrono::{DateTime, Utc};
use domain::fulfilment::{LineStatus, SagaCommandKind, SagaPhase, SagaStep};
use domain::ids::{OrderId, ProductId};
use domain::order::Rejection;
use domain::values::{CancelReason, Quantity};
use serde::Serialize;
use uuid::Uuid;

use crate::error::SagaError;

/// One order's saga, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SagaView {
    /// The order.
    pub order_id: OrderId,
    /// Where the saga is (`reserving`, `awaiting_payment`, `rejected`, ...).
    pub phase: SagaPhase,
    /// True once it reached a final phase with nothing outstanding.
    pub finished: bool,
    /// True when a human must look: a compensation was given up on, or the
    /// runner parked the saga (see `parked`).
    pub needs_attention: bool,
    /// Why the runner stopped acting on this saga, if it did.
    pub parked: Option<String>,
    /// The order's lines and where each one's stock is.
    pub lines: Vec<LineView>,
    /// Commands issued and not yet answered.
    pub pending: Vec<PendingStep>,
    /// Timers set.
    pub timers: Vec<TimerView>,
    /// The refusal the order was rejected for.
    pub rejection: Option<Rejection>,
    /// Why the order was cancelled.
    pub cancel_reason: Option<CancelReason>,
    /// Everything the saga did and saw, oldest first.
    pub history: Vec<SagaStep>,
    /// The order's correlation id, shared by every command the saga issued.
    pub correlation_id: Option<Uuid>,
    /// Bumped on every change.
    pub version: i64,
    /// When the saga started.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// One order line in the saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineView {
    /// Its index in the order (part of its command ids).
    pub line: usize,
    /// The product.
    pub product_id: ProductId,
    /// Units ordered.
    pub quantity: Quantity,
    /// `pending`, `reserved`, `refused` (with `reason`), `released`, `shipped`.
    #[serde(flatten)]
    pub status: LineStatus,
}

/// A command issued and not yet answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingStep {
    /// Its deterministic id, e.g. `<order>:reserve:1`.
    pub command_id: String,
    /// True for compensations (releases).
    pub compensation: bool,
    /// How many times it was issued.
    pub attempts: u32,
    /// When it was last issued.
    pub issued_at: DateTime<Utc>,
    /// What it does.
    pub command: SagaCommandKind,
}

/// A timer of the saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimerView {
    /// `payment`.
    pub kind: String,
    /// When it fires.
    pub due_at: DateTime<Utc>,
}

/// The saga of `order_id`, if there is one.
pub async fn saga(
    client: &tokio_postgres::Client,
    order_id: OrderId,
) -> Result<Option<SagaView>, SagaError> {
    let Some(row) = client
        .query_opt(
            "select state, parked, correlation_id, version, created_at, updated_at
               from saga.sagas where order_id = $1",
            &[&order_id.as_uuid()],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut state: domain::fulfilment::SagaState =
        serde_json::from_value(row.try_get::<_, serde_json::Value>(0)?).map_err(|e| {
            SagaError::CorruptState {
                order_id: order_id.as_uuid(),
                reason: e.to_string(),
            }
        })?;
    let parked: Option<String> = row.try_get(1)?;
    // Steps still in the state (stored before `saga.history` existed) are
    // the oldest; then the stored ones, in the order they were written.
    let mut history = std::mem::take(&mut state.history);
    for stored in client
        .query(
            "select steps from saga.history where order_id = $1 order by version",
            &[&order_id.as_uuid()],
        )
        .await?
    {
        let steps: Vec<SagaStep> =
            serde_json::from_value(stored.try_get(0)?).map_err(|e| SagaError::CorruptState {
                order_id: order_id.as_uuid(),
                reason: format!("history: {e}"),
            })?;
        history.extend(steps);
    }
    let timers = client
        .query(
            "select kind, due_at from saga.timers where order_id = $1 order by due_at",
            &[&order_id.as_uuid()],
        )
        .await?
        .iter()
        .map(|r| TimerView {
            kind: r.get(0),
            due_at: r.get(1),
        })
        .collect();
    Ok(Some(SagaView {
        order_id,
        phase: state.phase,
        finished: state.is_finished(),
        needs_attention: state.needs_attention() || parked.is_some(),
        parked,
        lines: state
            .lines
            .iter()
            .enumerate()
            .map(|(line, l)| LineView {
                line,
                product_id: l.product_id,
                quantity: l.quantity,
                status: l.status,
            })
            .collect(),
        pending: state
            .pending
            .iter()
            .map(|p| PendingStep {
                command_id: p.command.command_id.clone(),
                compensation: p.command.is_compensation(),
                attempts: p.attempts,
                issued_at: p.issued_at,
                command: p.command.kind.clone(),
            })
            .collect(),
        timers,
        rejection: state.rejection,
        cancel_reason: state.cancel_reason,
        history,
        correlation_id: row.try_get(2)?,
        version: row.try_get(3)?,
        created_at: row.try_get(4)?,
        updated_at: row.try_get(5)?,
    }))
}

/// Orders whose saga needs a human, most recently changed first (at most `limit`).
pub async fn needing_attention(
    client: &tokio_postgres::Client,
    limit: i64,
) -> Result<Vec<OrderId>, SagaError> {
    Ok(client
        .query(
            "select order_id from saga.sagas
              where attention
              order by updated_at desc limit $1",
            &[&limit],
        )
        .await?
        .iter()
        .map(|r| OrderId::new(r.get(0)))
        .collect())
}
