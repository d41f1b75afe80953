//! Running one command through the event store's executor: with its
//! deterministic id and the order's correlation, one at a time per stream,
//! transient failures retried with backoff before they are reported.

use std::sync::atomic::Ordering;

use domain::fulfilment::SagaCommand;
use domain::ids::OrderId;
use eventstore::executor::CommandContext;

use super::engine::{Engine, Work};
use super::term::TermError;
use crate::commands::{self, Outcome};
use crate::hooks::{Injected, Step};

impl Engine {
    /// Runs one command (as many times as the hooks say); its outcomes.
    pub(crate) async fn run_work(
        &self,
        order_id: OrderId,
        work: &Work,
    ) -> Result<Vec<Outcome>, TermError> {
        if !work.delay.is_zero() {
            tokio::time::sleep(work.delay).await;
        }
        // No check that the command is still pending: running one that was
        // answered meanwhile is harmless (its id makes the executor replay
        // it, and the state machine ignores the repeated answer), and the
        // check would cost a query for every command.
        let command_id = work.command.command_id.clone();
        let injected_failure = match self.hooks.check(&Step::BeforeCommand {
            order_id,
            command_id: command_id.clone(),
        }) {
            Ok(()) => false,
            Err(Injected::FailCommand) => true,
            Err(Injected::Crash) => return Err(TermError::Injected),
        };
        let ctx = CommandContext {
            command_id: Some(command_id),
            correlation_id: work.correlation,
            causation_id: work.cause,
            trace_id: None,
            trace: work.trace.clone(),
            // Timers' commands (the payment timeout) come this way too.
            actor: Some(crate::ACTOR.to_owned()),
        };
        let mut outcomes = Vec::new();
        for _ in 0..self.hooks.times() {
            outcomes.push(if injected_failure {
                Outcome::Transient("injected failure".to_owned())
            } else {
                self.run_with_retries(&work.command, &ctx).await
            });
        }
        Ok(outcomes)
    }

    /// Runs a command, retrying transient failures with backoff.
    async fn run_with_retries(&self, command: &SagaCommand, ctx: &CommandContext) -> Outcome {
        // The semaphore only closes when the runner is dropped.
        let _permit = self.permits.acquire().await.ok();
        let mut attempt = 0;
        loop {
            let outcome = {
                let _turn = self
                    .stream_locks
                    .lock(commands::target_stream(command))
                    .await;
                commands::execute(&self.executor, command, ctx).await
            };
            self.stats.executed.fetch_add(1, Ordering::Relaxed);
            match outcome {
                Outcome::Transient(e) if attempt < self.config.command_retries => {
                    tracing::debug!(command_id = %command.command_id, error = %e, attempt, "command failed; retrying");
                    tokio::time::sleep(self.config.backoff(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}
