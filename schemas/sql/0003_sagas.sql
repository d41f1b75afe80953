-- The order-fulfilment saga's durable state (crate `sagas`).
--
-- Handling one message is one transaction over these tables: the saga's new
-- state, the id of the message handled, the timers it sets and the consumer's
-- checkpoint. Commands run only after that commit, with deterministic ids, so
-- a crash anywhere is repaired by re-issuing what the state says is pending.

create schema if not exists saga;

-- One saga per order: the pure state machine's state (`domain::fulfilment::SagaState`)
-- plus what the runner needs beside it.
create table saga.sagas (
    order_id        uuid        not null primary key,
    -- SagaState as JSON: phase, lines, pending commands, history
    state           jsonb       not null,
    -- copies of state fields, so status queries need not parse the JSON
    phase           text        not null,
    finished        boolean     not null,
    -- bumped on every change; GET /sagas shows it
    version         bigint      not null default 1,
    -- the order's correlation id (from OrderPlaced); every command carries it
    correlation_id  uuid,
    -- the OrderPlaced event that started the saga
    origin_event_id uuid,
    -- command id -> the event that caused it, for commands still pending, so a
    -- command re-issued after a restart keeps its causation id
    causes          jsonb       not null default '{}'::jsonb,
    -- set when the runner met something the state machine cannot express (an
    -- undecodable event, a permanent refusal); the runner stops acting on the
    -- saga until someone clears it (`update saga.sagas set parked = null`)
    parked          text,
    parked_at       timestamptz,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);

-- recovery re-issues the pending commands of unfinished sagas
create index sagas_unfinished on saga.sagas (order_id) where not finished;
-- `ordo status` and the needs-attention metric count these
create index sagas_attention on saga.sagas (order_id)
    where phase = 'needs_attention' or parked is not null;

-- Durable timers, written in the same transaction as the saga state that set
-- them. The poller takes due rows with `for update skip locked`, so several
-- pollers never fire one timer twice.
create table saga.timers (
    order_id uuid        not null,
    -- `payment`: the payment timeout of a confirmed order
    kind     text        not null,
    due_at   timestamptz not null,
    set_at   timestamptz not null default now(),
    constraint timers_pkey primary key (order_id, kind)
);
create index timers_due on saga.timers (due_at);

-- Messages already handled, by event id (the `Nats-Msg-Id`): a message
-- delivered again, however much later and whatever the checkpoint says, is a
-- no-op. Only messages that concern a saga are recorded.
create table saga.processed (
    message_id   uuid        not null primary key,
    order_id     uuid        not null,
    processed_at timestamptz not null default now()
);

-- Where the saga consumer is on each JetStream stream: the last message
-- handled (log position and stream sequence), written in the same transaction
-- as the state changes that message caused.
create table saga.checkpoint (
    stream_name     text        not null primary key,
    transaction_id  xid8        not null default '0',
    position        bigint      not null default 0,
    stream_sequence bigint      not null default 0,
    updated_at      timestamptz not null default now()
);
