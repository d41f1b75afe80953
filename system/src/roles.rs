//! Running ordo's roles (api, relay, projectors, sagas) side by side in one
//! process: each is a named task; when one stops on its own the others are
//! told to stop too, and the report says which one it was.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long roles get to finish what they are doing once told to stop.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A set of named role tasks sharing one shutdown token.
#[derive(Debug)]
pub struct Roles {
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
    shutdown: CancellationToken,
}

impl Roles {
    /// An empty set watching `shutdown`.
    pub fn new(shutdown: CancellationToken) -> Self {
        Roles {
            tasks: JoinSet::new(),
            shutdown,
        }
    }

    /// The token every role of the set watches.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Starts a role.
    pub fn spawn<F>(&mut self, name: &'static str, role: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        tracing::info!(role = name, "starting");
        self.tasks.spawn(async move { (name, role.await) });
    }

    /// Runs until a signal arrives or a role stops by itself; then stops the
    /// others, waiting up to the shutdown deadline. An error names the role.
    pub async fn run_until_stopped(mut self) -> anyhow::Result<()> {
        let mut outcome = Ok(());
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            Some(joined) = self.tasks.join_next() => {
                let (name, result) = joined.context("a role panicked")?;
                outcome = match result {
                    Ok(()) => {
                        if !self.shutdown.is_cancelled() {
                            tracing::warn!(role = name, "role stopped by itself; stopping the others");
                        }
                        Ok(())
                    }
                    Err(e) => Err(e.context(format!("{name} failed"))),
                };
                self.shutdown.cancel();
            }
        }
        let drain = async {
            while let Some(joined) = self.tasks.join_next().await {
                match joined {
                    Ok((name, Err(e))) => tracing::error!(
                        role = name,
                        error = format!("{e:#}"),
                        "role failed while stopping"
                    ),
                    Ok((name, Ok(()))) => tracing::info!(role = name, "stopped"),
                    Err(e) => tracing::error!(error = %e, "a role panicked"),
                }
            }
        };
        if tokio::time::timeout(DEADLINE, drain).await.is_err() {
            tracing::warn!("roles did not stop within {DEADLINE:?}; exiting anyway");
        }
        outcome
    }
}
