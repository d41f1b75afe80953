//! The saga's tunables: how long an order may stay unpaid, and how often a
//! compensation is tried.

use chrono::Duration;

/// Tunables of the saga; they come from configuration, not from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaConfig {
    /// How long a confirmed order may stay unpaid (`ORDO_PAYMENT_TIMEOUT`).
    pub payment_timeout: Duration,
    /// How many times a compensation (a release) is tried before the saga
    /// gives up and asks for a human (`NeedsAttention`). At least 1.
    pub max_compensation_attempts: u32,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            payment_timeout: Duration::minutes(15),
            max_compensation_attempts: 5,
        }
    }
}
