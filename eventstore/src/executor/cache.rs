//! The executor's cache of states: what this process loaded or wrote
//! recently, kept so that loading a stream is one query for the events after
//! it, and forgotten oldest-used first when full.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use domain::aggregate::Aggregate;

/// States this process loaded or wrote recently, so loading one is a single
/// query for the events after it (usually none). Always safe: a cached state
/// is the exact fold of its stream up to its version, and newer events —
/// from this process or any other — are read on top of it.
pub(super) struct StateCache {
    capacity: usize,
    entries: Mutex<HashMap<String, CachedState>>,
    /// Counts uses, to tell recently used entries from old ones.
    ticks: AtomicU64,
}

/// One cached state.
struct CachedState {
    version: u64,
    snapshot_version: u64,
    state: Arc<dyn Any + Send + Sync>,
    /// The cache's tick when it was last read or written.
    used: u64,
}

impl std::fmt::Debug for StateCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCache")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl StateCache {
    pub(super) fn new(capacity: usize) -> Self {
        StateCache {
            capacity,
            entries: Mutex::new(HashMap::new()),
            ticks: AtomicU64::new(0),
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, CachedState>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// (version, state, snapshot version) of a stream, if cached.
    pub(super) fn get<A: Aggregate>(&self, stream_id: &str) -> Option<(u64, Arc<A::State>, u64)> {
        let tick = self.tick();
        let mut entries = self.entries();
        let entry = entries.get_mut(stream_id)?;
        let state = entry.state.clone().downcast::<A::State>().ok()?;
        entry.used = tick;
        Some((entry.version, state, entry.snapshot_version))
    }

    /// Drops a stream's state if it is cached at `version` (which is about
    /// to be superseded), so that the caller may hold the only reference.
    pub(super) fn forget(&self, stream_id: &str, version: u64) {
        let mut entries = self.entries();
        if entries.get(stream_id).is_some_and(|e| e.version == version) {
            entries.remove(stream_id);
        }
    }

    fn tick(&self) -> u64 {
        self.ticks.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn put<A: Aggregate>(
        &self,
        stream_id: &str,
        version: u64,
        state: Arc<A::State>,
        snapshot_version: u64,
    ) {
        if version == 0 {
            return;
        }
        let tick = self.tick();
        let mut entries = self.entries();
        if let Some(existing) = entries.get_mut(stream_id) {
            if existing.version >= version {
                existing.used = tick;
                return;
            }
        }
        if entries.len() >= self.capacity {
            // Forget the half used longest ago. Most streams are written a
            // few times and then left (an order placed and confirmed); the
            // few that every command reads (products, users) stay, where an
            // arbitrary half would drop them every few seconds under load,
            // each miss a snapshot read and a tail of events to fold.
            let mut ages: Vec<u64> = entries.values().map(|e| e.used).collect();
            let middle = ages.len() / 2;
            let (_, median, _) = ages.select_nth_unstable(middle);
            let median = *median;
            entries.retain(|_, e| e.used >= median);
        }
        entries.insert(
            stream_id.to_owned(),
            CachedState {
                version,
                snapshot_version,
                state,
                used: tick,
            },
        );
    }
}

/// Streams whose states are kept in memory.
pub(super) const CAPACITY: usize = 20_000;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use domain::user::User;

    #[test]
    fn a_full_cache_forgets_the_streams_used_longest_ago() {
        let cache = StateCache::new(4);
        let state = Arc::new(<User as Aggregate>::State::default());
        for stream in ["a", "b", "c", "d"] {
            cache.put::<User>(stream, 1, state.clone(), 0);
        }
        // a and d are read again; b and c are left alone.
        assert!(cache.get::<User>("a").is_some());
        assert!(cache.get::<User>("d").is_some());
        cache.put::<User>("e", 1, state.clone(), 0);
        let kept: Vec<bool> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|s| cache.get::<User>(s).is_some())
            .collect();
        assert_eq!(kept, [true, false, false, true, true]);
        // Writing a state counts as a use too, also when it is not newer.
        cache.put::<User>("f", 1, state.clone(), 0);
        cache.put::<User>("a", 1, state.clone(), 0);
        cache.put::<User>("g", 1, state.clone(), 0);
        assert!(cache.get::<User>("a").is_some(), "a was used just before");
    }

    #[test]
    fn cached_states_are_shared_not_copied_and_let_go_of_when_superseded() {
        let cache = StateCache::new(4);
        let state = Arc::new(<User as Aggregate>::State::default());
        cache.put::<User>("a", 3, state.clone(), 0);
        let (version, got, _) = cache.get::<User>("a").unwrap();
        assert_eq!(version, 3);
        assert!(Arc::ptr_eq(&got, &state), "the cached state itself");
        drop(got);
        // Another version than the one cached: kept.
        cache.forget("a", 2);
        assert_eq!(Arc::strong_count(&state), 2);
        // The version about to be superseded: dropped, so the state in hand
        // is evolved without a copy.
        cache.forget("a", 3);
        assert_eq!(Arc::strong_count(&state), 1);
        assert!(cache.get::<User>("a").is_none());
    }
}
