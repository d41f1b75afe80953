//! Placing an order: the one command decided against other aggregates'
//! states (the ordering user's, every ordered product's).

use domain::ids::{OrderId, ProductId, UserId};
use domain::order::{Order, OrderError};
use domain::product::Product;
use domain::user::User;
use domain::values::Quantity;

use super::{CommandContext, ExecuteError, Executed, Executor};

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
        self.execute::<Order>(&order_id.stream_id(), command, ctx)
            .await
    }
}
