//! Each role's PostgreSQL connections: the name the server shows for them
//! (`application_name`, so `pg_stat_activity` tells who holds what) and how
//! many a process opens at most. Pools connect on first use.

use deadpool_postgres::Pool;
use eventstore::{DatabaseUrl, StoreError};

/// A role's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSpec {
    /// What the server calls these connections.
    pub name: &'static str,
    /// Most connections open at once (roles sized by a setting say 0 here).
    pub size: usize,
}

impl PoolSpec {
    /// A pool named `name` of at most `size` connections.
    pub const fn new(name: &'static str, size: usize) -> PoolSpec {
        PoolSpec { name, size }
    }

    /// The same pool with another size (for roles sized by a setting).
    pub const fn sized(self, size: usize) -> PoolSpec {
        PoolSpec { size, ..self }
    }

    /// `database`, its connections named as this pool's.
    pub fn url(&self, database: &DatabaseUrl) -> DatabaseUrl {
        database.named(self.name)
    }

    /// The pool on `database` (connecting on first use).
    pub fn pool(&self, database: &DatabaseUrl) -> Result<Pool, StoreError> {
        self.url(database).pool(self.size.max(1))
    }
}

/// The API's commands; sized by `ORDO_API_CONNECTIONS`. Few on purpose:
/// a command waits for one rather than admit orders faster than the saga
/// and projectors follow on saturated CPUs.
pub const API: PoolSpec = PoolSpec::new("ordo-api", 0);

/// The API's reads (read models, the log, `/projections`), as many again
/// as its commands, so that reads never queue behind commands.
pub const API_READS: PoolSpec = PoolSpec::new("ordo-api-reads", 0);

/// The relay's log reads and checkpoints.
pub const RELAY: PoolSpec = PoolSpec::new("ordo-relay", 8);

/// One session LISTENing for appends, waking the relay.
pub const LISTENER: PoolSpec = PoolSpec::new("ordo-listener", 1);

/// Every projector of a process, together.
pub const PROJECTOR: PoolSpec = PoolSpec::new("ordo-projector", 32);

/// The saga coordinator's own transactions: the consumer's, the feeder's,
/// the timer poller's, and one to spare.
pub const SAGA: PoolSpec = PoolSpec::new("ordo-saga", 4);

/// The commands the saga coordinator runs, many at once.
pub const SAGA_COMMANDS: PoolSpec = PoolSpec::new("ordo-saga-commands", 24);
