//! Waiting in tests for something that happens in its own time (an event
//! published, a projection caught up, a saga settled), with a deadline and
//! never a fixed sleep.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is looked at again.
const POLL: Duration = Duration::from_millis(10);

/// How often a condition that costs nothing to look at (an atomic, a flag)
/// is looked at: often enough for tests that time what they wait for.
const QUICK_POLL: Duration = Duration::from_millis(2);

/// Looks with `check` until it returns something, and returns that; panics
/// after `within`.
pub async fn wait_for<T, F, Fut>(within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < within,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Looks with `look` until `done` holds of what it sees or `within` has
/// passed, and returns the last look either way: the test asserts on it,
/// so a miss fails with what was seen.
pub async fn poll<T, F, Fut>(within: Duration, mut look: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = Instant::now() + within;
    loop {
        let seen = look().await;
        if done(&seen) || Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `done` holds, looking every few milliseconds; panics with
/// `what` after `within`.
pub async fn eventually(what: &str, within: Duration, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(QUICK_POLL).await;
    }
}

/// Watches for `within` that `ok` keeps holding (for what must not happen,
/// such as a standby taking a held lock); panics with `what` if it fails.
pub async fn throughout(what: &str, within: Duration, ok: impl Fn() -> bool) {
    let start = Instant::now();
    while start.elapsed() < within {
        assert!(ok(), "{what}");
        tokio::time::sleep(QUICK_POLL).await;
    }
    assert!(ok(), "{what}");
}

/// [`poll`] for code that cannot await (a child process's state, a blocking
/// client): looks every `every` until `done` holds or `within` has passed,
/// and returns the last look.
pub fn poll_blocking<T>(
    within: Duration,
    every: Duration,
    mut look: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        let seen = look();
        if done(&seen) || Instant::now() >= deadline {
            return seen;
        }
        std::thread::sleep(every);
    }
}
