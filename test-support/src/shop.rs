//! A shop to test with: users, products and orders made through the real
//! executor and domain, and a relay feeding the test's JetStream stream.

use domain::ids::{OrderId, ProductId, UserId};
use domain::order::{Order, OrderCommand};
use domain::product::{Product, ProductCommand};
use domain::user::{User, UserCommand};
use domain::values::{CancelReason, Email, Money, Name, Quantity, Sku};
use eventstore::executor::{CommandContext, Executor};
use eventstore::relay::{RelayConfig, RelayStats};
use eventstore::{EventStore, Position};
use uuid::Uuid;

use crate::{Running, TestEnv};

/// Executes domain commands against a test's database.
#[derive(Debug, Clone)]
pub struct Shop {
    /// The store.
    pub store: EventStore,
    /// The executor on it.
    pub executor: Executor,
}

/// A command's metadata with a correlation of its own.
fn correlated() -> CommandContext {
    CommandContext {
        correlation_id: Some(Uuid::new_v4()),
        actor: Some("system".into()),
        ..Default::default()
    }
}

fn quantity(n: u32) -> Quantity {
    Quantity::new(n).unwrap_or_else(|e| panic!("quantity {n}: {e}"))
}

impl Shop {
    /// A shop on `env`'s database.
    pub fn new(env: &TestEnv) -> Shop {
        Shop::on(EventStore::new(env.pool.clone()))
    }

    /// A shop on `store` (a migrated database of the test's choosing).
    pub fn on(store: EventStore) -> Shop {
        Shop {
            executor: Executor::new(store.clone()),
            store,
        }
    }

    async fn run<A: domain::aggregate::Aggregate>(
        &self,
        stream: &str,
        command: A::Command,
    ) -> Position
    where
        A::Error: std::fmt::Debug,
    {
        let executed = self
            .executor
            .execute::<A>(stream, command, &correlated())
            .await
            .unwrap_or_else(|e| panic!("command on {stream}: {e:?}"));
        executed
            .position
            .unwrap_or_else(|| panic!("command on {stream} changed nothing"))
    }

    /// Registers a user with a unique email.
    pub async fn register_user(&self, name: &str) -> (UserId, Position) {
        let id = UserId::new(Uuid::new_v4());
        let email = Email::parse(&format!("{}@example.com", Uuid::new_v4().simple()))
            .unwrap_or_else(|e| panic!("email: {e}"));
        let name = Name::parse(name).unwrap_or_else(|e| panic!("name: {e}"));
        let position = self
            .run::<User>(
                &id.stream_id(),
                UserCommand::Register {
                    user_id: id,
                    email,
                    name,
                },
            )
            .await;
        (id, position)
    }

    /// Renames a user.
    pub async fn rename_user(&self, id: UserId, name: &str) -> Position {
        let name = Name::parse(name).unwrap_or_else(|e| panic!("name: {e}"));
        self.run::<User>(&id.stream_id(), UserCommand::Rename { name })
            .await
    }

    /// Creates a product with a unique SKU.
    pub async fn create_product(&self, stock: u32, price: &str) -> (ProductId, Position) {
        let id = ProductId::new(Uuid::new_v4());
        let command = ProductCommand::Create {
            product_id: id,
            sku: Sku::parse(&format!(
                "SKU-{}",
                &Uuid::new_v4().simple().to_string()[..12]
            ))
            .unwrap_or_else(|e| panic!("sku: {e}")),
            name: Name::parse("Widget").unwrap_or_else(|e| panic!("name: {e}")),
            price: Money::parse(price).unwrap_or_else(|e| panic!("price: {e}")),
            stock,
        };
        let position = self.run::<Product>(&id.stream_id(), command).await;
        (id, position)
    }

    /// Adds stock.
    pub async fn restock(&self, id: ProductId, n: u32) -> Position {
        self.run::<Product>(
            &id.stream_id(),
            ProductCommand::Restock {
                quantity: quantity(n),
            },
        )
        .await
    }

    /// Places an order (prices captured from the products now).
    pub async fn place_order(
        &self,
        user: UserId,
        lines: &[(ProductId, u32)],
    ) -> (OrderId, Position) {
        let order_id = OrderId::new(Uuid::new_v4());
        let lines: Vec<_> = lines.iter().map(|(id, n)| (*id, quantity(*n))).collect();
        let executed = self
            .executor
            .place_order(order_id, user, &lines, &correlated())
            .await
            .unwrap_or_else(|e| panic!("place an order: {e:?}"));
        let position = executed
            .position
            .unwrap_or_else(|| panic!("placing {order_id} changed nothing"));
        (order_id, position)
    }

    /// The order as it stands now.
    async fn order(&self, order: OrderId) -> std::sync::Arc<domain::order::OrderState> {
        self.executor
            .load::<Order>(&order.stream_id())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .state
    }

    /// What the saga does for an order whose stock is there: reserve every
    /// line, then confirm.
    pub async fn reserve_and_confirm(&self, order: OrderId) -> Position {
        let state = self.order(order).await;
        for line in state.lines() {
            self.run::<Product>(
                &line.product_id.stream_id(),
                ProductCommand::ReserveStock {
                    order_id: order,
                    quantity: line.quantity,
                },
            )
            .await;
        }
        self.run::<Order>(&order.stream_id(), OrderCommand::Confirm)
            .await
    }

    /// Pays the order's total.
    pub async fn pay(&self, order: OrderId) -> Position {
        let state = self.order(order).await;
        let amount = state
            .total()
            .unwrap_or_else(|| panic!("order {order} has no total"));
        self.run::<Order>(&order.stream_id(), OrderCommand::Pay { amount })
            .await
    }

    /// Cancels the order and releases its stock, as the saga would.
    pub async fn cancel(&self, order: OrderId) -> Position {
        let state = self.order(order).await;
        let reason = CancelReason::parse("customer_request").unwrap_or_else(|e| panic!("{e}"));
        let mut position = self
            .run::<Order>(&order.stream_id(), OrderCommand::Cancel { reason })
            .await;
        for line in state.lines() {
            position = self
                .run::<Product>(
                    &line.product_id.stream_id(),
                    ProductCommand::ReleaseStock { order_id: order },
                )
                .await;
        }
        position
    }
}

/// A relay running for a test.
#[derive(Debug)]
pub struct RunningRelay {
    /// Its task.
    pub running: Running<()>,
    /// Its figures.
    pub stats: std::sync::Arc<RelayStats>,
}

/// Starts a relay from `env`'s database to its stream, built as `ordo up`
/// builds it.
pub fn spawn_relay(env: &TestEnv) -> RunningRelay {
    spawn_relay_with(env, env.system().relay_config())
}

/// The same with settings of the test's (a batch size).
pub fn spawn_relay_with(env: &TestEnv, config: RelayConfig) -> RunningRelay {
    spawn_relay_of(&env.system(), config)
}

/// Starts the relay of `system` (connected as its settings say).
pub fn spawn_relay_of(system: &system::System, config: RelayConfig) -> RunningRelay {
    let relay = system
        .relay_with(config)
        .unwrap_or_else(|e| panic!("relay: {e}"));
    let stats = relay.stats();
    let running = Running::spawn(|stop| async move {
        if let Err(e) = relay.run(stop).await {
            panic!("relay: {e}");
        }
    });
    RunningRelay { running, stats }
}
