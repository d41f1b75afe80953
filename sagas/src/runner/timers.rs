//! Timers: firing due payment timeouts. Timers are rows written with the
//! state that set them; a firing, with its row deleted, is one transaction
//! with the state change. Rows another poller holds are skipped, so no timer
//! fires twice, whoever polls.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use domain::fulfilment::{SagaCommand, SagaConfig, SagaInput};
use domain::ids::OrderId;

use super::engine::{Engine, Work};
use super::term::{crash_on, TermError};
use crate::error::SagaError;
use crate::hooks::Step;
use crate::store::{self, SagaRow};

/// Timers fired per transaction.
pub(crate) const TIMER_BATCH: i64 = 100;

/// Fires the timers due at `now` (at most a batch) in one transaction on
/// `client`: feeds `PaymentTimerFired` to each saga (`times` times, as
/// [`SagaRow::apply`]) and stores it; returns the sagas fired and the
/// commands they issued.
pub async fn fire_due(
    client: &mut deadpool_postgres::Object,
    now: DateTime<Utc>,
    machine: &SagaConfig,
    times: usize,
) -> Result<Vec<(SagaRow, Vec<SagaCommand>)>, SagaError> {
    let tx = client.transaction().await?;
    let due = store::due_timers(&tx, now, TIMER_BATCH).await?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let mut fired = Vec::with_capacity(due.len());
    for mut saga in due {
        let commands = saga.apply(&SagaInput::PaymentTimerFired, now, machine, times, None);
        // The row goes with the firing. Should the state machine still
        // hold a due time (it judged the firing early), the row stays as
        // the state says, so the timer is not lost.
        saga.timer = Some(saga.state.payment_due_at);
        saga.dirty = true;
        store::save(&tx, &saga, now).await?;
        tracing::info!(order_id = %saga.order_id, "payment timer fired");
        fired.push((saga, commands));
    }
    tx.commit().await?;
    Ok(fired)
}

impl Engine {
    /// Fires due timers; returns the commands to run, per order.
    #[tracing::instrument(level = "debug", skip_all)]
    pub(crate) async fn fire_due_timers(&self) -> Result<Vec<(OrderId, Vec<Work>)>, TermError> {
        let mut client = self.client().await?;
        let fired = fire_due(&mut client, self.now(), &self.machine, self.hooks.times()).await?;
        self.stats
            .timers_fired
            .fetch_add(fired.len() as u64, Ordering::Relaxed);
        let mut out = Vec::with_capacity(fired.len());
        for (saga, commands) in fired {
            crash_on(self.hooks.check(&Step::TimerCommitted {
                order_id: saga.order_id,
            }))?;
            self.count_issued(&commands);
            out.push((
                saga.order_id,
                self.works(&saga, commands, &Default::default()),
            ));
        }
        Ok(out)
    }
}
