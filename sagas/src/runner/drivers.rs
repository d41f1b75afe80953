//! Per-order drivers: each order with queued commands has one task that
//! runs them one after another, feeds their outcomes back and queues what
//! those lead to, until none are left. So an order's commands never race
//! each other, while different orders' run side by side.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use domain::fulfilment::SagaCommandKind;
use domain::ids::OrderId;
use tokio::task::JoinSet;

use super::engine::{Engine, Work};
use super::term::{crash_on, TermError};
use crate::commands;
use crate::hooks::Step;

/// The queues of commands waiting to run, one per order with a driver.
type Queues = Arc<Mutex<HashMap<OrderId, VecDeque<Work>>>>;

/// A term's drivers. Dropping them aborts every one.
pub(crate) struct Drivers {
    engine: Arc<Engine>,
    queues: Queues,
    tasks: JoinSet<Result<(), TermError>>,
}

impl Drivers {
    pub fn new(engine: Arc<Engine>) -> Drivers {
        Drivers {
            engine,
            queues: Arc::default(),
            tasks: JoinSet::new(),
        }
    }

    /// Queues commands for an order, starting its driver if it has none.
    pub fn enqueue(&mut self, order_id: OrderId, works: Vec<Work>) {
        if works.is_empty() {
            return;
        }
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = queues.get_mut(&order_id) {
            push_unique(queue, works);
            return;
        }
        let mut queue = VecDeque::new();
        push_unique(&mut queue, works);
        queues.insert(order_id, queue);
        self.tasks
            .spawn(drive(self.engine.clone(), self.queues.clone(), order_id));
    }

    /// Waits for a driver to end (pending forever while none runs): `Ok`
    /// when it ran its queue dry, the failure that ends the term otherwise.
    pub async fn next_ended(&mut self) -> Option<Result<(), TermError>> {
        let joined = self.tasks.join_next().await?;
        Some(match joined {
            Ok(result) => result,
            Err(e) => Err(TermError::internal(format!("a saga driver died: {e}"))),
        })
    }
}

fn push_unique(queue: &mut VecDeque<Work>, works: Vec<Work>) {
    for work in works {
        if !queue
            .iter()
            .any(|w| w.command.command_id == work.command.command_id)
        {
            queue.push_back(work);
        }
    }
}

/// What a driver runs next: the first queued command and, when it is a
/// stock command, the stock commands queued right behind it on other
/// products. Those were issued together (an order's reservations, its
/// releases) and touch different streams, so they run at once; an order
/// command waits for what was queued before it, as the state machine asked.
fn next_works(queue: &mut VecDeque<Work>) -> Vec<Work> {
    let Some(first) = queue.pop_front() else {
        return Vec::new();
    };
    let mut works = vec![first];
    if !is_stock_command(&works[0]) {
        return works;
    }
    while let Some(next) = queue.front() {
        let stream = commands::target_stream(&next.command);
        if !is_stock_command(next)
            || works
                .iter()
                .any(|w| commands::target_stream(&w.command) == stream)
        {
            break;
        }
        works.extend(queue.pop_front());
    }
    works
}

fn is_stock_command(work: &Work) -> bool {
    matches!(
        work.command.kind,
        SagaCommandKind::ReserveStock { .. }
            | SagaCommandKind::ReleaseStock { .. }
            | SagaCommandKind::ShipStock { .. }
    )
}

/// Runs an order's queued commands until none are left.
async fn drive(engine: Arc<Engine>, queues: Queues, order_id: OrderId) -> Result<(), TermError> {
    loop {
        let works = {
            let mut queues = queues.lock().unwrap_or_else(|p| p.into_inner());
            let works = queues
                .get_mut(&order_id)
                .map(next_works)
                .unwrap_or_default();
            if works.is_empty() {
                queues.remove(&order_id);
                return Ok(());
            }
            works
        };
        let follow = engine.perform(order_id, works).await?;
        if !follow.is_empty() {
            let mut queues = queues.lock().unwrap_or_else(|p| p.into_inner());
            push_unique(queues.entry(order_id).or_default(), follow);
        }
    }
}

impl Engine {
    /// Runs queued commands of one order at once (commands on different
    /// streams that the state machine issued together) and records their
    /// outcomes together, so the saga row is written once for all of them;
    /// returns the commands that led to.
    #[tracing::instrument(level = "debug", skip_all, fields(%order_id, commands = works.len()))]
    async fn perform(&self, order_id: OrderId, works: Vec<Work>) -> Result<Vec<Work>, TermError> {
        let runs = works.iter().map(|work| self.run_work(order_id, work));
        let outcomes = futures::future::try_join_all(runs).await?;
        let ahead = self.foresee(&works, &outcomes);
        let mut requests = Vec::new();
        for (work, outcomes) in works.iter().zip(outcomes) {
            crash_on(self.hooks.check(&Step::AfterCommand {
                order_id,
                command_id: work.command.command_id.clone(),
            }))?;
            for outcome in outcomes {
                requests.push(self.outcome_request(order_id, work, outcome, false));
            }
        }
        // The reservations' echoes are expected by now (just above): the
        // consumer skips them while the confirmation runs.
        let ahead = match ahead {
            Some(work) => self.run_ahead(order_id, work).await?,
            None => None,
        };
        let mut works = works;
        if let Some((work, outcome)) = ahead {
            crash_on(self.hooks.check(&Step::AfterCommand {
                order_id,
                command_id: work.command.command_id.clone(),
            }))?;
            requests.push(self.outcome_request(order_id, &work, outcome, true));
            works.push(work);
        }
        let follow = self.feed(requests).await?;
        for work in &works {
            crash_on(self.hooks.check(&Step::OutcomeCommitted {
                order_id,
                command_id: work.command.command_id.clone(),
            }))?;
        }
        Ok(follow)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;
    use domain::fulfilment::SagaCommand;
    use domain::ids::ProductId;
    use domain::values::Quantity;
    use uuid::Uuid;

    fn work(id: &str, kind: SagaCommandKind) -> Work {
        Work {
            command: SagaCommand {
                command_id: id.to_owned(),
                kind,
            },
            cause: None,
            correlation: None,
            delay: Duration::ZERO,
            issued_from: None,
            trace: Default::default(),
        }
    }

    #[test]
    fn stock_commands_queued_together_run_together_and_order_commands_alone() {
        let order_id = OrderId::new(Uuid::new_v4());
        let (p1, p2) = (
            ProductId::new(Uuid::new_v4()),
            ProductId::new(Uuid::new_v4()),
        );
        let reserve = |product_id| SagaCommandKind::ReserveStock {
            product_id,
            order_id,
            quantity: Quantity::new(1).unwrap(),
        };
        let release = |product_id| SagaCommandKind::ReleaseStock {
            product_id,
            order_id,
        };
        let ids = |works: Vec<Work>| -> Vec<String> {
            works.into_iter().map(|w| w.command.command_id).collect()
        };
        let mut queue: VecDeque<Work> = [
            work("reserve:0", reserve(p1)),
            work("reserve:1", reserve(p2)),
            work("confirm", SagaCommandKind::ConfirmOrder { order_id }),
            work("release:0", release(p1)),
            work("release:0 again", release(p1)),
            work("release:1", release(p2)),
        ]
        .into();
        assert_eq!(ids(next_works(&mut queue)), ["reserve:0", "reserve:1"]);
        assert_eq!(ids(next_works(&mut queue)), ["confirm"]);
        assert_eq!(
            ids(next_works(&mut queue)),
            ["release:0"],
            "never two commands on one stream at once"
        );
        assert_eq!(
            ids(next_works(&mut queue)),
            ["release:0 again", "release:1"]
        );
        assert!(next_works(&mut queue).is_empty());
    }
}
