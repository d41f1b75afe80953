//! What every saga test needs: a private database and stream with a relay
//! feeding it, helpers to create users, products and orders through the
//! executor, runners to start and stop, and waiting for outcomes.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use domain::fulfilment::SagaPhase;
use domain::ids::{OrderId, ProductId, UserId};
use domain::order::{place_order, Order, OrderCommand, OrderState, OrderStatus};
use domain::product::{Product, ProductCommand, ProductState};
use domain::user::{User, UserCommand};
use domain::values::{Email, Money, Name, Quantity, Sku};
use eventstore::executor::{CommandContext, Executor};
use eventstore::EventStore;
use sagas::{Hooks, ManualClock, RunnerConfig, SagaError, SagaRunner, SagaStats, SagaView};
use test_support::shop::{spawn_relay, RunningRelay};
pub use test_support::wait_for;
use test_support::{Running, TestEnv};
use uuid::Uuid;

/// The payment timeout tests use (the manual clock makes it pass).
pub const PAYMENT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// One test's world.
pub struct Harness {
    pub env: TestEnv,
    pub executor: Executor,
    pub clock: Arc<ManualClock>,
    relay: Option<RunningRelay>,
}

/// A saga runner started by a test.
pub struct RunningSagas {
    pub running: Running<Result<(), SagaError>>,
    pub stats: Arc<SagaStats>,
}

impl RunningSagas {
    pub async fn stop(self) {
        self.running.stop().await.expect("runner ends cleanly");
    }

    /// Waits up to `within` for the runner to end by itself (an injected
    /// crash); gives it back still running if it did not.
    pub async fn crashed_or_running(
        mut self,
        within: Duration,
    ) -> Result<Result<(), SagaError>, RunningSagas> {
        match self.running.ended_within(within).await {
            Some(result) => Ok(result),
            None => Err(self),
        }
    }

    /// Waits for the runner to end by itself (an injected crash).
    pub async fn crashed(mut self, within: Duration) -> Result<(), SagaError> {
        match self.running.ended_within(within).await {
            Some(result) => result,
            None => panic!("the runner did not crash within {within:?}"),
        }
    }
}

impl Harness {
    /// A fresh database and stream, with a relay publishing to it.
    pub async fn new() -> Harness {
        Harness::on(TestEnv::new().await)
    }

    /// The same on an environment of the test's choosing (a private NATS).
    pub fn on(env: TestEnv) -> Harness {
        let executor = Executor::new(EventStore::new(env.pool.clone()));
        let mut harness = Harness {
            env,
            executor,
            clock: Arc::new(ManualClock::starting_now()),
            relay: None,
        };
        harness.start_relay();
        harness
    }

    pub fn start_relay(&mut self) {
        self.relay = Some(spawn_relay(&self.env));
    }

    pub async fn stop_relay(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.running.stop().await;
        }
    }

    /// Settings that make retries and polls quick.
    pub fn config(&self) -> RunnerConfig {
        let mut config = self.env.system().saga_config();
        config.payment_timeout = PAYMENT_TIMEOUT;
        config.max_compensation_attempts = 3;
        config.command_retries = 2;
        config.retry_backoff = Duration::from_millis(2);
        config.max_backoff = Duration::from_millis(20);
        config.timer_poll = Duration::from_millis(20);
        config.standby_poll = Duration::from_millis(20);
        config
    }

    pub fn runner(&self, hooks: Hooks) -> SagaRunner {
        self.runner_with(self.config(), hooks)
    }

    /// A runner built as `ordo up` builds it, sharing the harness's cache
    /// of recent states, on the test's clock.
    pub fn runner_with(&self, config: RunnerConfig, hooks: Hooks) -> SagaRunner {
        self.env
            .system()
            .saga_with(config, Some(&self.executor))
            .expect("a saga runner")
            .with_clock(self.clock.clone())
            .with_hooks(hooks)
    }

    pub fn start(&self, runner: SagaRunner) -> RunningSagas {
        let stats = runner.stats();
        RunningSagas {
            running: Running::spawn(|stop| runner.run(stop)),
            stats,
        }
    }

    pub fn start_sagas(&self) -> RunningSagas {
        self.start(self.runner(Hooks::default()))
    }

    pub async fn user(&self) -> UserId {
        let user_id = UserId::new(Uuid::new_v4());
        let command = UserCommand::Register {
            user_id,
            email: Email::parse(&format!("{}@example.com", Uuid::new_v4().simple())).unwrap(),
            name: Name::parse("Ada").unwrap(),
        };
        self.executor
            .execute::<User>(&user_id.stream_id(), command, &CommandContext::default())
            .await
            .unwrap();
        user_id
    }

    pub async fn product(&self, stock: u32) -> ProductId {
        let product_id = ProductId::new(Uuid::new_v4());
        let command = ProductCommand::Create {
            product_id,
            sku: Sku::parse(&format!(
                "SKU-{}",
                &Uuid::new_v4().simple().to_string()[..12]
            ))
            .unwrap(),
            name: Name::parse("Widget").unwrap(),
            price: Money::parse("2.50").unwrap(),
            stock,
        };
        self.executor
            .execute::<Product>(&product_id.stream_id(), command, &CommandContext::default())
            .await
            .unwrap();
        product_id
    }

    pub async fn discontinue(&self, product: ProductId) {
        self.executor
            .execute::<Product>(
                &product.stream_id(),
                ProductCommand::Discontinue,
                &CommandContext::default(),
            )
            .await
            .unwrap();
    }

    /// Places an order as the API would: prices captured from the products.
    pub async fn place(&self, user: UserId, lines: &[(ProductId, u32)]) -> OrderId {
        let order_id = OrderId::new(Uuid::new_v4());
        let user_state = self
            .executor
            .load::<User>(&user.stream_id())
            .await
            .unwrap()
            .state;
        let mut products = Vec::new();
        for (product, quantity) in lines {
            products.push((
                *product,
                Quantity::new(*quantity).unwrap(),
                self.stock(*product).await,
            ));
        }
        let refs: Vec<_> = products.iter().map(|(p, q, s)| (*p, *q, s)).collect();
        let command = place_order(order_id, &user_state, &refs).unwrap();
        self.executor
            .execute::<Order>(
                &order_id.stream_id(),
                command,
                &CommandContext {
                    correlation_id: Some(Uuid::new_v4()),
                    ..CommandContext::default()
                },
            )
            .await
            .unwrap();
        order_id
    }

    pub async fn order_command(&self, order: OrderId, command: OrderCommand) {
        self.executor
            .execute::<Order>(&order.stream_id(), command, &CommandContext::default())
            .await
            .unwrap();
    }

    pub async fn pay(&self, order: OrderId) {
        let total = self.order(order).await.total().unwrap();
        self.order_command(order, OrderCommand::Pay { amount: total })
            .await;
    }

    pub async fn order(&self, order: OrderId) -> OrderState {
        self.executor
            .load::<Order>(&order.stream_id())
            .await
            .unwrap()
            .state
            .as_ref()
            .clone()
    }

    pub async fn status(&self, order: OrderId) -> Option<OrderStatus> {
        self.order(order).await.status()
    }

    pub async fn stock(&self, product: ProductId) -> ProductState {
        self.executor
            .load::<Product>(&product.stream_id())
            .await
            .unwrap()
            .state
            .as_ref()
            .clone()
    }

    /// Event types of a stream, in order.
    pub async fn events(&self, stream_id: &str) -> Vec<String> {
        self.executor
            .store()
            .read_stream(stream_id, 0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }

    pub async fn saga(&self, order: OrderId) -> Option<SagaView> {
        let client = self.env.client().await;
        sagas::query::saga(&client, order).await.unwrap()
    }

    /// Waits until the order has a final outcome of the saga: confirmed
    /// with nothing pending, or rejected, cancelled, completed and finished.
    pub async fn settled(&self, order: OrderId) -> SagaView {
        wait_for(Duration::from_secs(20), || async {
            let view = self.saga(order).await?;
            let quiet = view.pending.is_empty();
            let settled = match view.phase {
                SagaPhase::AwaitingPayment | SagaPhase::Paid => quiet,
                SagaPhase::Rejected | SagaPhase::Cancelled | SagaPhase::Completed => view.finished,
                SagaPhase::NeedsAttention => true,
                _ => false,
            };
            settled.then_some(view)
        })
        .await
    }

    pub async fn wait_phase(&self, order: OrderId, phase: SagaPhase) -> SagaView {
        wait_for(Duration::from_secs(20), || async {
            self.saga(order)
                .await
                .filter(|v| v.phase == phase && v.pending.is_empty())
        })
        .await
    }
}

impl Harness {
    /// The saga checkpoint's log position, if stored.
    pub async fn checkpoint(&self) -> Option<eventstore::Position> {
        let client = self.env.client().await;
        client
            .query_opt(
                "select transaction_id::text, position from saga.checkpoint",
                &[],
            )
            .await
            .unwrap()
            .map(|r| eventstore::Position::new(r.get::<_, String>(0).parse().unwrap(), r.get(1)))
    }

    /// Waits until the saga consumer has handled every event in the log.
    pub async fn caught_up(&self) {
        let head = self.executor.store().head().await.unwrap();
        wait_for(Duration::from_secs(20), || async {
            (self.checkpoint().await >= Some(head)).then_some(())
        })
        .await;
    }
}
