//! The confirmation run ahead: when the reservations a driver just ran lead
//! to the order's confirmation, it runs the confirmation straight after
//! them, before their outcomes are written, so that all are written in one
//! transaction and the confirmation does not wait for the first one: one
//! saga write and one commit fewer on every order's way to confirmed.
//!
//! It is safe because the order aggregate decides: a confirmation of an
//! order that moved on meanwhile is refused, and its outcome then dropped.
//! An outcome recorded by the feeder counts only if the saga as stored has
//! issued the same command by then; otherwise the saga learns of the
//! confirmation from its event, as of any other. A crash before the
//! outcomes are written leaves the reservations pending: they are
//! re-issued, replayed by their ids, and the confirmation issued again is
//! replayed by its id too.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use domain::ids::OrderId;

use super::engine::{Engine, Work};
use super::term::TermError;
use crate::commands::Outcome;

impl Engine {
    /// The order's confirmation, when the reservations just run (`works`,
    /// with their `outcomes`) lead to it: issued together from one state,
    /// every one succeeded once, and that state fed their successes issues
    /// exactly one command, a confirmation
    /// ([`domain::fulfilment::confirmation_ahead`] decides).
    pub(crate) fn foresee(&self, works: &[Work], outcomes: &[Vec<Outcome>]) -> Option<Work> {
        let from = works.first().and_then(|w| w.issued_from.clone())?;
        let together = works.iter().all(|w| {
            w.issued_from
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, &from))
        });
        // `issued_from` is only kept for reservations.
        let all_reserved = outcomes
            .iter()
            .all(|o| matches!(o.as_slice(), [Outcome::Succeeded { .. }]));
        if !together || !all_reserved {
            return None;
        }
        let command = domain::fulfilment::confirmation_ahead(
            &from,
            works.iter().map(|w| &w.command.command_id),
            self.now(),
            &self.machine,
        )?;
        // Caused, as the saga would record it, by the last reservation's event.
        let cause = outcomes.iter().rev().find_map(|o| match o.as_slice() {
            [Outcome::Succeeded { events, .. }] => events.last().copied(),
            _ => None,
        });
        Some(Work {
            command,
            cause: cause.or(works[0].cause),
            correlation: works[0].correlation,
            delay: Duration::ZERO,
            issued_from: None,
            trace: works[0].trace.clone(),
        })
    }

    /// Runs the command [`Engine::foresee`] foresaw; its outcome if it
    /// succeeded.
    pub(crate) async fn run_ahead(
        &self,
        order_id: OrderId,
        work: Work,
    ) -> Result<Option<(Work, Outcome)>, TermError> {
        let mut outcome = self.run_work(order_id, &work).await?;
        self.stats.ahead.fetch_add(1, Ordering::Relaxed);
        Ok(match outcome.pop() {
            Some(succeeded @ Outcome::Succeeded { .. }) if outcome.is_empty() => {
                Some((work, succeeded))
            }
            // Refused or failed: the saga, told of the reservations, issues
            // it again and hears its answer the ordinary way.
            _ => {
                self.stats.ahead_dropped.fetch_add(1, Ordering::Relaxed);
                None
            }
        })
    }
}
