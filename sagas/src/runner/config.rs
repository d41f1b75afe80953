//! A runner's settings, and the pause between retries they imply.

use std::time::Duration;

use domain::fulfilment::SagaConfig;
use eventstore::nats::{StreamName, SubjectPrefix, Unprotected};
use rand::Rng as _;

/// Settings of a saga runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The JetStream stream to consume (`ORDO_STREAM`).
    pub stream: StreamName,
    /// First token of every subject (`ORDO_SUBJECT_PREFIX`).
    pub prefix: SubjectPrefix,
    /// How long a confirmed order may stay unpaid (`ORDO_PAYMENT_TIMEOUT`).
    pub payment_timeout: Duration,
    /// Tries of a compensation before the saga needs attention.
    pub max_compensation_attempts: u32,
    /// In-process retries of a command after a transient failure, before
    /// the failure is reported to the state machine.
    pub command_retries: u32,
    /// First pause between retries; it doubles up to `max_backoff`.
    pub retry_backoff: Duration,
    /// Longest pause between retries (of commands, and of leadership terms).
    pub max_backoff: Duration,
    /// How often the leader looks for due timers.
    pub timer_poll: Duration,
    /// How often a standby tries to become the coordinator (and the leader
    /// checks it still is).
    pub standby_poll: Duration,
    /// Most messages handled in one transaction.
    pub batch_size: usize,
    /// Most commands running at once, over all orders.
    pub max_concurrent_commands: usize,
    /// Whether an existing stream that allows message deletes or purges is
    /// used (`ORDO_ALLOW_UNPROTECTED_STREAM`) or refused.
    pub unprotected: Unprotected,
}

impl RunnerConfig {
    /// Production defaults for a stream, prefix and payment timeout.
    pub fn new(stream: StreamName, prefix: SubjectPrefix, payment_timeout: Duration) -> Self {
        RunnerConfig {
            stream,
            prefix,
            payment_timeout,
            max_compensation_attempts: 5,
            command_retries: 3,
            retry_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            timer_poll: Duration::from_secs(1),
            standby_poll: Duration::from_secs(1),
            batch_size: 256,
            max_concurrent_commands: 128,
            unprotected: Unprotected::Refuse,
        }
    }

    /// The state machine's tunables.
    pub fn machine(&self) -> SagaConfig {
        SagaConfig {
            payment_timeout: chrono::Duration::from_std(self.payment_timeout)
                .unwrap_or_else(|_| chrono::Duration::days(365)),
            max_compensation_attempts: self.max_compensation_attempts.max(1),
        }
    }

    /// `retry_backoff × 2^attempt`, capped, with jitter so retries of many
    /// sagas spread out.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .retry_backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_backoff);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis.max(1)))
    }
}
