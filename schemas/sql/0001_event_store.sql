-- The event log and what guards it.
--
-- `events` is the source of truth. Readers follow it in (transaction_id, position)
-- order and only below the transaction horizon (the oldest transaction still in
-- flight), so an event whose transaction commits late is never skipped and
-- writers never wait on each other (see eventstore/src/log.rs).

create table events (
    -- global order within one transaction; a bigint identity is not enough on
    -- its own, because transactions commit in a different order than they draw it
    position       bigint generated always as identity,
    -- the writing transaction: rows are read in (transaction_id, position) order
    transaction_id xid8        not null default pg_current_xact_id(),
    -- unique by construction (UUIDv7 drawn by the writer); no index, because
    -- nothing looks events up by id and every index is paid on each append
    event_id       uuid        not null,
    stream_id      text        not null,
    stream_type    text        not null,
    version        bigint      not null check (version > 0),
    type           text        not null,
    schema_version integer     not null,
    data           jsonb       not null,
    -- causation, command id, trace id (correlation has its own column)
    metadata       jsonb       not null default '{}'::jsonb,
    -- an order's timeline is an index range scan on this
    correlation_id uuid,
    recorded_at    timestamptz not null default now(),
    -- the log order is the primary key: readers scan it, nothing else needs
    -- `position` alone
    constraint events_pkey primary key (transaction_id, position),
    -- optimistic concurrency: two appends at the same version cannot both commit
    constraint events_stream_version_key unique (stream_id, version)
);

create index events_correlation on events (correlation_id, transaction_id, position)
    where correlation_id is not null;
-- recorded_at grows with the log, so a BRIN index serves --since/--until for
-- almost nothing on the write path
create index events_recorded_at on events using brin (recorded_at);

-- Values that must be unique across streams (emails, SKUs), claimed in the same
-- statement that appends the event needing them.
create table unique_claims (
    kind       text        not null,
    value      text        not null,
    stream_id  text        not null,
    claimed_at timestamptz not null default now(),
    constraint unique_claims_pkey primary key (kind, value)
);

-- Commands already executed, by their id: the same id again returns this result
-- and appends nothing. Sagas rely on it far beyond JetStream's duplicate window.
create table commands (
    command_id     text        not null,
    stream_id      text        not null,
    first_version  bigint      not null,
    last_version   bigint      not null,
    transaction_id xid8        not null default pg_current_xact_id(),
    last_position  bigint      not null,
    recorded_at    timestamptz not null default now(),
    constraint commands_pkey primary key (command_id)
);

-- Folded state of long streams (a product sees one event per reservation), so
-- loading stays cheap. A cache: deleting every row changes nothing but speed.
create table snapshots (
    stream_id    text        not null primary key,
    version      bigint      not null,
    -- identifies the code's state layout; a snapshot of another layout is ignored
    state_format text        not null,
    state        jsonb       not null,
    taken_at     timestamptz not null default now()
);

-- Where the relay has published up to, per JetStream stream it feeds: the
-- last event published and the stream sequence it landed at.
create table relay_checkpoints (
    stream_name     text        not null primary key,
    transaction_id  xid8        not null,
    position        bigint      not null,
    stream_sequence bigint      not null default 0,
    updated_at      timestamptz not null default now()
);
