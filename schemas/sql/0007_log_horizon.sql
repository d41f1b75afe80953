-- The horizon of the transactions that may append events.
--
-- Readers follow the log below the horizon: the oldest transaction still
-- running, server-wide (`pg_snapshot_xmin(pg_current_snapshot())`). That
-- waits for every write, whatever it writes: a saga's state, a projection's
-- rows, another database's work, a forgotten `begin` in psql. Only
-- transactions that may still append an event need waiting for, and
-- `ordo_log_horizon()` is the oldest of those. It reads the lock table, which
-- costs enough under load that followers use it only after the plain horizon
-- has held them back for a second (eventstore/src/follow.rs): a long
-- transaction that cannot append then delays them by that much, not until
-- it ends.
--
-- A running transaction may append if it holds a lock on `events` that lets
-- it write (or cannot be seen in `pg_locks` any more, having just ended).
-- That is exact because of one rule, enforced below: a transaction appends
-- events only if its first write did. A statement that inserts into
-- `events` locks the table before it writes anything, so such a
-- transaction holds the lock from before its id exists until it ends, and
-- one that holds an id but not the lock can never append.
--
-- Why it never skips an event (the statement's snapshot S; then pg_locks,
-- read once; then, for the transactions it shows running without a lock on
-- `events`, whether they are still running):
-- - ids from S's xmax on were assigned after S: the horizon is at most xmax;
-- - below xmax and not running in S: ended before S, so visible or aborted;
-- - running in S, then not shown running by pg_locks, or ended by the time
--   it is asked about: it counts, and its events (invisible in S) stay above
--   the horizon;
-- - running in S and still running after pg_locks showed it without a lock
--   on `events`: it had appended nothing then (the lock is kept until the
--   transaction has ended), and by the rule it never will. Only these are
--   passed over.
-- Other databases' transactions never lock this `events`, so they are
-- passed over too.
--
-- The race in the third case is real: a transaction ending releases its
-- lock on `events` (a fast-path lock) before the lock on its id, and
-- pg_locks reads the two at different moments. Without the status check,
-- eventstore/tests/horizon.rs catches readers skipping events within
-- seconds.

-- PL/pgSQL, not SQL: its query is planned once per session, where a SQL
-- function that cannot be inlined is planned again on every call (half a
-- millisecond, more than the read it serves). A stable function runs in its
-- caller's snapshot, so `pg_current_snapshot()` here is the snapshot the
-- caller reads `events` with.
create function ordo_log_horizon() returns xid8
    language plpgsql stable
as $$
declare
    s constant pg_snapshot := pg_current_snapshot();
    oldest xid8;
begin
    if pg_snapshot_xmin(s) = pg_snapshot_xmax(s) then
        return pg_snapshot_xmax(s);
    end if;
    with locks as materialized (
        select locktype, database, relation, transactionid, virtualtransaction, mode, granted
          from pg_locks
         where locktype in ('relation', 'transactionid')
    ),
    -- transactions running as pg_locks saw them (each holds the lock on its
    -- own id), with no lock on `events` that lets them write
    quiet as (
        select t.transactionid
          from locks t
         where t.locktype = 'transactionid'
           and t.mode = 'ExclusiveLock'
           and t.granted
           and t.virtualtransaction not in (
               select r.virtualtransaction
                 from locks r
                where r.locktype = 'relation'
                  and r.database = (select oid from pg_database
                                     where datname = current_database())
                  and r.relation = 'events'::regclass
                  -- reading the log inside a transaction does not make it
                  -- a writer
                  and r.mode in ('RowExclusiveLock', 'ShareRowExclusiveLock',
                                 'ExclusiveLock', 'AccessExclusiveLock'))
    )
    select min(x) into oldest
      from pg_snapshot_xip(s) as x
     where case
               -- pg_locks is not one atomic picture: a transaction ending
               -- drops its lock on `events` before the lock on its id. So a
               -- quiet one is passed over only if it is still running after
               -- pg_locks was read (CASE evaluates the lookup, hence
               -- pg_locks, first); then it was running, without the lock,
               -- when its locks were read.
               when xid(x) in (select transactionid from quiet)
                   then pg_xact_status(x) <> 'in progress'
               else true
           end;
    return least(pg_snapshot_xmax(s), oldest);
end
$$;

comment on function ordo_log_horizon() is
    'Events with a smaller transaction id are final: none can still commit. See migration 0007.';

-- The rule: appending to `events` must be a transaction's first write. A
-- transaction that already holds an id when it first inserts an event is
-- refused, whatever it is (ordo's own writes all are single statements).
create function ordo_events_first_write() returns trigger
    language plpgsql
as $$
begin
    if pg_current_xact_id_if_assigned() is not null
       and current_setting('ordo.appending', true) is distinct from 'on' then
        raise exception 'events must be appended by a transaction''s first write'
            using errcode = '55000',
                  hint = 'Append in a transaction of its own, or before anything else the transaction writes: readers of the log rely on it (migration 0007).';
    end if;
    perform set_config('ordo.appending', 'on', true);
    return null;
end
$$;

create trigger events_first_write
    before insert on events
    for each statement execute function ordo_events_first_write();
