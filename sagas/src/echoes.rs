//! The events the runner's own commands wrote, so the consumer can skip
//! their messages.
//!
//! When a command the saga issued succeeds, the runner feeds the saga that
//! success straight away; the event the command wrote then comes back through
//! JetStream and would tell the saga the same thing again: a locked row, a
//! state machine run that changes nothing, a handled-message row. Most
//! messages the saga sees are such echoes (every reservation, every
//! confirmation). Skipping them is safe because the success does not depend
//! on them: it is fed by the runner, and should that feed not commit (the
//! term ends first), the command is still pending in the stored state, so the
//! next term runs it again and its id makes the event store answer with the
//! same success. An echo that arrives before its command's success is known
//! here is handled like any other message.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Echoes remembered at most; beyond, the oldest are forgotten.
const CAPACITY: usize = 100_000;
/// How long an echo is waited for (it comes within milliseconds unless the
/// relay or NATS is away, and then handling it normally is fine).
const PATIENCE: Duration = Duration::from_secs(120);

/// Event ids written by this runner's commands and not yet seen come back.
#[derive(Debug, Default)]
pub(crate) struct Echoes {
    expected: Mutex<HashMap<Uuid, Instant>>,
}

impl Echoes {
    /// Remembers events a command of this runner just wrote.
    pub fn expect(&self, events: &[Uuid]) {
        if events.is_empty() {
            return;
        }
        let mut expected = self.expected.lock().unwrap_or_else(|e| e.into_inner());
        if expected.len() + events.len() > CAPACITY {
            expected.retain(|_, at| at.elapsed() < PATIENCE);
            if expected.len() + events.len() > CAPACITY {
                // Forgetting only costs handling those messages normally.
                expected.clear();
            }
        }
        let now = Instant::now();
        for id in events {
            expected.insert(*id, now);
        }
    }

    /// True (once) when `event` is the echo of a command of this runner.
    pub fn take(&self, event: &Uuid) -> bool {
        self.expected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(event)
            .is_some()
    }

    /// How many are awaited.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.expected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_is_recognised_once() {
        let echoes = Echoes::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        echoes.expect(&[a]);
        assert!(echoes.take(&a));
        assert!(!echoes.take(&a), "only once");
        assert!(!echoes.take(&b), "never written here");
    }

    #[test]
    fn memory_stays_bounded() {
        let echoes = Echoes::default();
        for _ in 0..(CAPACITY / 1000 + 5) {
            let ids: Vec<Uuid> = (0..1000).map(|_| Uuid::now_v7()).collect();
            echoes.expect(&ids);
        }
        assert!(echoes.len() <= CAPACITY);
    }
}
