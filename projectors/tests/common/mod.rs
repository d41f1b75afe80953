//! What the projector tests share: a shop, a relay and running projectors.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use eventstore::Position;
use projectors::rebuild::{self, RebuildOptions, RebuildReport};
use projectors::runner::ProjectorStats;
use projectors::Projection;
use test_support::shop::{spawn_relay, RunningRelay, Shop};
use test_support::{Running, TestEnv};

pub struct RunningProjector {
    pub projection: Projection,
    pub running: Running<()>,
    pub stats: Arc<ProjectorStats>,
}

/// Starts the projector of `projection`, built as `ordo up` builds it,
/// applying at most `batch_size` events per transaction.
pub fn spawn_projector(
    env: &TestEnv,
    projection: Projection,
    batch_size: usize,
) -> RunningProjector {
    let system = env.system();
    let mut config = system.projector_config();
    config.batch_size = batch_size;
    let projector = system.projector_with(projection, config).unwrap();
    let stats = projector.stats();
    let running = Running::spawn(|stop| async move {
        projector.run(stop).await.unwrap();
    });
    RunningProjector {
        projection,
        running,
        stats,
    }
}

pub struct World {
    pub projectors: Vec<RunningProjector>,
    pub relay: RunningRelay,
    pub shop: Shop,
    pub env: TestEnv,
}

impl World {
    pub async fn start() -> World {
        let env = TestEnv::new().await;
        let shop = Shop::new(&env);
        let relay = spawn_relay(&env);
        let projectors = Projection::ALL
            .iter()
            .map(|p| spawn_projector(&env, *p, 200))
            .collect();
        World {
            projectors,
            relay,
            shop,
            env,
        }
    }

    /// Waits until every projection has applied `position`.
    pub async fn wait(&self, position: Position) {
        for projection in Projection::ALL {
            let reached = projectors::query::wait_for(
                &self.env.pool,
                projection,
                position,
                Duration::from_secs(30),
            )
            .await
            .unwrap();
            assert!(reached, "{projection} did not reach {position}");
        }
    }

    /// Waits until every projection has applied the whole log.
    pub async fn settle(&self) {
        let head = self.shop.store.head().await.unwrap();
        self.wait(head).await;
    }

    /// Recomputes every read model from the log and compares.
    pub async fn recompute(&self) -> RebuildReport {
        let options = RebuildOptions {
            projections: Projection::ALL.to_vec(),
            dry_run: true,
            batch_size: 1000,
        };
        rebuild::rebuild(&self.env.pool, &self.env.stream, &options, |_| {})
            .await
            .unwrap()
    }

    pub async fn assert_read_models_equal_the_fold(&self) {
        let report = self.recompute().await;
        assert!(
            report.identical(),
            "read models differ from the log: {:#?}",
            report.projections
        );
    }
}
