//! Looking ahead: the confirmation that reservations issued together lead to,
//! known before their outcomes are recorded.

use chrono::{DateTime, Utc};

use super::{handle, SagaAction, SagaCommand, SagaCommandKind, SagaConfig, SagaInput, SagaState};

/// The order's confirmation, if the reservations issued together from
/// `issued_from` lead straight to it once they have all succeeded.
///
/// The saga runner may run an order's confirmation straight after the
/// reservations that lead to it, before their outcomes are recorded, so that
/// the outcomes of all of them are recorded in one transaction instead of
/// one for the reservations and another for the confirmation. This tells it
/// which command that is, by asking the state machine itself rather than
/// guessing: `issued_from` is the saga's state when it issued the
/// reservations, `succeeded` the ids of those reservations (each succeeded
/// exactly once), and each id is fed to [`handle`] as
/// [`SagaInput::CommandSucceeded`] at `now`, in the order given. Only when
/// that issues exactly one command, a [`SagaCommandKind::ConfirmOrder`], is
/// it returned. Anything else (nothing yet because a line is unanswered,
/// releases and a rejection, a saga that had moved on) takes the ordinary
/// course, with the outcomes recorded first.
///
/// Running it ahead of what the stored saga knows is safe because the order
/// aggregate decides: it refuses to confirm an order that moved on (cancelled,
/// rejected, confirmed already). And the command carries the id the saga
/// gives its confirmation (`<order>:confirm`), so when the saga issues it
/// again the event store absorbs it like any re-issued command.
///
/// `issued_from` is not changed: the successes are folded into a copy.
pub fn confirmation_ahead(
    issued_from: &SagaState,
    succeeded: impl IntoIterator<Item = impl AsRef<str>>,
    now: DateTime<Utc>,
    cfg: &SagaConfig,
) -> Option<SagaCommand> {
    let mut state = issued_from.clone();
    let mut issued = Vec::new();
    for command_id in succeeded {
        let input = SagaInput::CommandSucceeded {
            command_id: command_id.as_ref().to_owned(),
        };
        let (after, actions) = handle(state, input, now, cfg);
        state = after;
        issued.extend(actions.into_iter().filter_map(|action| match action {
            SagaAction::Issue(command) => Some(command),
            SagaAction::SetPaymentTimer { .. } | SagaAction::ClearPaymentTimer => None,
        }));
    }
    let [command]: [SagaCommand; 1] = issued.try_into().ok()?;
    matches!(command.kind, SagaCommandKind::ConfirmOrder { .. }).then_some(command)
}

#[cfg(test)]
mod tests {
    use crate::fulfilment::testing::*;
    use crate::fulfilment::*;
    use crate::values::CancelReason;

    /// The confirmation the saga itself issues for `oid()`.
    fn confirmation() -> SagaCommand {
        let SagaAction::Issue(command) = confirm() else {
            unreachable!("confirm() issues a command")
        };
        command
    }

    fn ahead(issued_from: &SagaState, succeeded: &[&str]) -> Option<SagaCommand> {
        let ids = succeeded.iter().map(|suffix| id(suffix));
        confirmation_ahead(issued_from, ids, t0(), &cfg())
    }

    #[test]
    fn every_reservation_of_a_multi_line_order_succeeding_leads_to_the_confirmation() {
        let issued_from = Saga::new().after([placed(3)]).state;
        assert_eq!(
            ahead(&issued_from, &["reserve:0", "reserve:1", "reserve:2"]),
            Some(confirmation())
        );
    }

    #[test]
    fn the_order_of_the_successes_does_not_matter() {
        let issued_from = Saga::new().after([placed(3)]).state;
        assert_eq!(
            ahead(&issued_from, &["reserve:2", "reserve:0", "reserve:1"]),
            Some(confirmation())
        );
    }

    #[test]
    fn a_single_line_order_leads_to_the_confirmation() {
        let issued_from = Saga::new().after([placed(1)]).state;
        assert_eq!(ahead(&issued_from, &["reserve:0"]), Some(confirmation()));
    }

    #[test]
    fn some_of_the_reservations_are_not_enough() {
        let issued_from = Saga::new().after([placed(3)]).state;
        assert_eq!(ahead(&issued_from, &["reserve:0", "reserve:2"]), None);
        assert_eq!(ahead(&issued_from, &[]), None);
    }

    #[test]
    fn a_refused_line_leads_to_the_rejection_not_ahead() {
        // Line 1 was refused before the others' outcomes: their successes
        // lead to releases and the rejection, which take the ordinary course.
        let issued_from = Saga::new().after([placed(3), refused(1)]).state;
        assert_eq!(ahead(&issued_from, &["reserve:0", "reserve:2"]), None);
    }

    #[test]
    fn a_saga_already_confirming_issues_nothing_more() {
        // The reservations' outcomes were recorded and the confirmation
        // issued: their successes are duplicates.
        let issued_from = Saga::new()
            .after([placed(2), reserved(0), reserved(1)])
            .state;
        assert_eq!(issued_from.phase, SagaPhase::Confirming);
        assert_eq!(ahead(&issued_from, &["reserve:0", "reserve:1"]), None);
    }

    #[test]
    fn a_saga_that_moved_on_leads_to_nothing() {
        let confirmed = Saga::new()
            .after([placed(2), reserved(0), reserved(1), ok("confirm")])
            .state;
        assert_eq!(confirmed.phase, SagaPhase::AwaitingPayment);
        assert_eq!(ahead(&confirmed, &["reserve:0", "reserve:1"]), None);

        let cancelled = Saga::new()
            .after([
                placed(2),
                reserved(0),
                reserved(1),
                ok("confirm"),
                SagaInput::OrderCancelled {
                    reason: CancelReason::customer_request(),
                },
            ])
            .state;
        assert_eq!(cancelled.phase, SagaPhase::Compensating);
        assert_eq!(ahead(&cancelled, &["reserve:0", "reserve:1"]), None);
    }

    #[test]
    fn the_state_given_is_left_as_it_was() {
        let issued_from = Saga::new().after([placed(2)]).state;
        let before = issued_from.clone();
        assert_eq!(
            ahead(&issued_from, &["reserve:0", "reserve:1"]),
            Some(confirmation())
        );
        assert_eq!(issued_from, before);
        assert_eq!(issued_from.phase, SagaPhase::Reserving);
        assert_eq!(issued_from.pending_commands().len(), 2);
    }
}
