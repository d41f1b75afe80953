//! The log's horizon: what readers of the log read below, what holds it
//! back, and whether events wait beyond it.
//!
//! The log is ordered by `(transaction_id, position)` ([`crate::position`]).
//! Transaction ids below the oldest transaction still running are final: no
//! event with a smaller id can still commit. A read of the log takes only
//! events below that horizon, so what it returns never changes and an event
//! committing later always sorts after it. There are two horizons:
//!
//! - The plain one, [`Below::Oldest`]: `pg_snapshot_xmin` of the statement's
//!   snapshot, the oldest transaction of the whole server holding an id. It
//!   costs one comparison, but it waits for every write, whatever it writes:
//!   a saga's state, a projection's rows, another database's work, a
//!   forgotten `begin` in psql.
//! - The appenders' one, [`Below::OldestAppender`]: `ordo_log_horizon()`,
//!   the oldest transaction that may still append an event. It is exact
//!   because appending must be a transaction's first write (a trigger
//!   enforces it): a transaction holding an id but no lock on `events` that
//!   lets it write can never append, so it may be passed over.
//!   `schemas/sql/0007_log_horizon.sql` defines both function and trigger
//!   and holds the argument that no event is ever skipped. It reads the lock
//!   table, which costs enough under load that followers use it only after
//!   the plain horizon has held them back for
//!   [`crate::follow::LOOK_PAST_OTHERS_AFTER`]; reads of it are the "past
//!   others" reads ([`super::EventStore::read_log_past_others_as`]).
//!
//! Besides the predicates the log reads use, this module answers the two
//! questions asked about the horizon: whether events have committed beyond
//! it ([`pending_beyond_horizon`], so a reader that found nothing looks
//! again soon instead of waiting for a notification that may never come),
//! and who holds it back ([`horizon`], for the relay's gauge and warning and
//! `ordo status`).

use crate::error::StoreError;

/// What holds the log's horizon back: the oldest transaction still running.
#[derive(Debug, Clone, PartialEq)]
pub struct Horizon {
    /// Transactions below this id are finished; readers read below it.
    pub xmin: u64,
    /// The oldest transaction holding a transaction id, if any.
    pub holder: Option<HorizonHolder>,
}

/// The backend whose transaction is the oldest in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct HorizonHolder {
    /// Its process id (`pg_terminate_backend(pid)` ends it).
    pub pid: i32,
    /// Its database.
    pub database: Option<String>,
    /// How long its transaction has been open.
    pub age_seconds: f64,
    /// `active`, `idle in transaction`, ...
    pub state: Option<String>,
    /// True when it may append events (it holds a lock on `events` that
    /// lets it write). Followers wait for such a transaction until it ends;
    /// one that cannot append they pass over after
    /// [`crate::follow::LOOK_PAST_OTHERS_AFTER`].
    pub may_append: bool,
    /// The start of what it is running.
    pub query: Option<String>,
}

/// Which transactions a read of the log waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Below {
    /// Every transaction of the server holding an id: the plain horizon,
    /// one comparison with the statement's snapshot.
    Oldest,
    /// Only transactions that may append events (`ordo_log_horizon()`,
    /// migration 0007): it looks at the lock table, so it costs more.
    OldestAppender,
}

impl Below {
    /// The transaction id every event read must be below.
    pub(super) fn bound(self) -> &'static str {
        match self {
            Below::Oldest => "pg_snapshot_xmin(pg_current_snapshot())",
            Below::OldestAppender => "(select ordo_log_horizon())",
        }
    }

    /// What a read selects after each row's own columns: for a read past
    /// others, the plain horizon of the same snapshot, as text, so the
    /// follower can tell when plain reads would do again.
    pub(super) fn extra_column(self) -> &'static str {
        match self {
            Below::Oldest => "",
            Below::OldestAppender => ", pg_snapshot_xmin(pg_current_snapshot())::text",
        }
    }

    /// The plain horizon a read past others selected with
    /// [`Below::extra_column`], from the last column of its first row
    /// (`None`: a plain read, or no row read).
    pub(super) fn plain_horizon(
        self,
        first: Option<&tokio_postgres::Row>,
    ) -> Result<Option<u64>, StoreError> {
        match (self, first) {
            (Below::OldestAppender, Some(row)) => {
                let text: String = row.try_get(row.len() - 1)?;
                Ok(Some(text.parse().map_err(|_| {
                    StoreError::Internal(format!("unreadable transaction id {text:?}"))
                })?))
            }
            _ => Ok(None),
        }
    }
}

/// True when events have committed beyond the plain horizon.
pub(super) async fn pending_beyond_horizon(
    client: &deadpool_postgres::Object,
) -> Result<bool, StoreError> {
    let statement = client
        .prepare_cached(
            // The newest visible event against the horizon: one step
            // down the primary key. (`exists (... where transaction_id
            // >= horizon)` reads like the same question, but the planner
            // answers it with a scan of the whole table.)
            "select coalesce((select transaction_id from events
                                   order by transaction_id desc limit 1)
                                 >= pg_snapshot_xmin(pg_current_snapshot()), false)",
        )
        .await?;
    Ok(client.query_one(&statement, &[]).await?.get(0))
}

/// Where the plain horizon is and who holds it.
pub(super) async fn horizon(client: &deadpool_postgres::Object) -> Result<Horizon, StoreError> {
    let xmin: String = client
        .query_one("select pg_snapshot_xmin(pg_current_snapshot())::text", &[])
        .await?
        .get(0);
    let holder = client
        .query_opt(
            "select pid, datname::text, extract(epoch from now() - xact_start)::float8,
                        state, left(query, 200),
                        exists (select 1 from pg_locks l
                                 where l.pid = a.pid
                                   and l.locktype = 'relation'
                                   and l.database = (select oid from pg_database
                                                      where datname = current_database())
                                   and l.relation = 'events'::regclass
                                   and l.mode in ('RowExclusiveLock', 'ShareRowExclusiveLock',
                                                  'ExclusiveLock', 'AccessExclusiveLock'))
                   from pg_stat_activity a
                  where backend_xid is not null and pid <> pg_backend_pid()
                  order by age(backend_xid) desc
                  limit 1",
            &[],
        )
        .await?
        .map(|row| HorizonHolder {
            pid: row.get(0),
            database: row.get(1),
            age_seconds: row.get::<_, Option<f64>>(2).unwrap_or(0.0),
            state: row.get(3),
            query: row.get(4),
            may_append: row.get(5),
        });
    Ok(Horizon {
        xmin: xmin.parse().unwrap_or(0),
        holder,
    })
}
