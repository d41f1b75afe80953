//! Placing an order: the one command decided against other aggregates'
//! states (the ordering user's, every ordered product's).

use domain::ids::{OrderId, ProductId, UserId};
use domain::order::{Order, OrderError};
use domain::product::Product;
use domain::user::User;
use domain::values::Quantity;

use domain::event::ClaimKind;
use rand::seq::IndexedRandom as _;
use rand::Rng as _;

use super::{CommandContext, ExecuteError, Executed, Executor};
use crate::store::ClaimChange;

/// Picks of a slot before a placement gives up as changed concurrently.
const SLOT_ATTEMPTS: usize = 8;

impl Executor {
    /// Places order `order_id` for `user_id`: the one command decided
    /// against other aggregates' states. The user must exist and be active,
    /// every product must exist, and each line takes the product's price as
    /// it is now; [`domain::order::place_order`] says so, and what it
    /// refuses is [`ExecuteError::Rejected`]. The resulting
    /// `OrderCommand::Place` is then executed on the order's stream like any
    /// command (retried on conflict, a repeated command id replayed).
    ///
    /// The user and the products are read from the event log, not from the
    /// read models: those may lag behind the log, and a user registered or a
    /// price changed a moment ago must count. One query reads whatever they
    /// have seen since this process cached them. Only the order's stream is
    /// checked at the append: a product repriced or a user deactivated in
    /// the meantime does not undo an order placed on what was read.
    pub async fn place_order(
        &self,
        order_id: OrderId,
        user_id: UserId,
        lines: &[(ProductId, Quantity)],
        ctx: &CommandContext,
    ) -> Result<Executed<Order>, ExecuteError<OrderError>> {
        let streams: Vec<String> = lines
            .iter()
            .map(|(product, _)| product.stream_id())
            .collect();
        let (user, products) = self
            .load_together::<User, Product>(&user_id.stream_id(), &streams)
            .await?;
        let requested: Vec<_> = lines
            .iter()
            .zip(&products)
            .map(|((product, quantity), loaded)| (*product, *quantity, &*loaded.state))
            .collect();
        let command = domain::order::place_order(order_id, &user.state, &requested)
            .map_err(ExecuteError::Rejected)?;
        let stream = order_id.stream_id();
        let Some(cap) = self.unpaid_cap else {
            return self.execute::<Order>(&stream, command, ctx).await;
        };
        // The order takes one of its user's `cap` slots in the append that
        // places it (a unique claim: two orders never hold one slot, so
        // however many race, at most `cap` are placed), and gives it back
        // when it is paid, cancelled or rejected (`Order::claims`). A slot
        // is first picked at random; when it is taken, a free one is picked
        // from those held now.
        let kind = ClaimKind::UnpaidOrder(user_id).name();
        let mut held: Option<Vec<(String, String)>> = None;
        for _ in 0..SLOT_ATTEMPTS {
            let slot = match &held {
                None => rand::rng().random_range(0..cap),
                Some(held) => {
                    if held.iter().any(|(_, holder)| *holder == stream) {
                        // This order holds a slot: a repeat of a placement
                        // that went through, answered as such.
                        return self.execute::<Order>(&stream, command, ctx).await;
                    }
                    let taken: std::collections::HashSet<&str> =
                        held.iter().map(|(value, _)| value.as_str()).collect();
                    let free: Vec<u32> = (0..cap)
                        .filter(|k| !taken.contains(k.to_string().as_str()))
                        .collect();
                    match free.choose(&mut rand::rng()) {
                        Some(slot) => *slot,
                        None => {
                            return Err(ExecuteError::Rejected(OrderError::TooManyUnpaid { cap }))
                        }
                    }
                }
            };
            let claim = ClaimChange {
                kind: kind.clone(),
                value: slot.to_string(),
                take: true,
            };
            match self
                .execute_claiming::<Order>(
                    &stream,
                    command.clone(),
                    ctx,
                    std::slice::from_ref(&claim),
                )
                .await
            {
                Err(ExecuteError::Duplicate { kind: taken, .. }) if taken == kind => {
                    held = Some(self.store().claims_of_kind(&kind).await?);
                }
                other => return other,
            }
        }
        Err(ExecuteError::Conflict { stream_id: stream })
    }
}
