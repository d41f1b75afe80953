//! What the projector tests share: a shop, a relay and running projectors.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use eventstore::Position;
use projectors::rebuild::{self, RebuildOptions, RebuildReport};
use projectors::runner::ProjectorStats;
use projectors::{Projection, Projector, ProjectorConfig};
use test_support::shop::{spawn_relay, RunningRelay, Shop};
use test_support::TestEnv;
use tokio_util::sync::CancellationToken;

pub struct RunningProjector {
    pub projection: Projection,
    pub task: tokio::task::JoinHandle<()>,
    pub stop: CancellationToken,
    pub stats: Arc<ProjectorStats>,
}

impl Drop for RunningProjector {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

pub fn spawn_projector(
    env: &TestEnv,
    projection: Projection,
    batch_size: usize,
) -> RunningProjector {
    let mut config = ProjectorConfig::new(env.stream.clone(), env.prefix.clone());
    config.batch_size = batch_size;
    let projector = Projector::new(
        projection,
        env.pool.clone(),
        env.database_url.clone(),
        env.jetstream.clone(),
        config,
    );
    let stats = projector.stats();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        projector.run(token).await.unwrap();
    });
    RunningProjector {
        projection,
        task,
        stop,
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
        let relay = spawn_relay(&env, &shop.store);
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
