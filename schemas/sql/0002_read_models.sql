-- Read models: tables the projectors keep up to date from the event stream and
-- the queries of the HTTP API read. They are derived data: `ordo rebuild`
-- recreates them from the event log beside the live ones and swaps them in.

create schema if not exists read;

-- Where each projection is: the last event applied (log position and JetStream
-- sequence), written in the same transaction as the changes it made.
create table read.checkpoints (
    projection      text        not null primary key,
    transaction_id  xid8        not null default '0',
    position        bigint      not null default 0,
    stream_sequence bigint      not null default 0,
    -- running | failed
    status          text        not null default 'running',
    -- why it failed, and on which event
    error           text,
    failed_event    uuid,
    updated_at      timestamptz not null default now()
);

insert into read.checkpoints (projection) values ('users'), ('products'), ('orders');

-- projection `users`
create table read.users (
    id            uuid        not null primary key,
    email         text        not null,
    name          text        not null,
    active        boolean     not null,
    orders_placed integer     not null default 0,
    -- sum of the totals of the user's orders that are paid (paid, shipped, delivered)
    total_spent   numeric     not null default 0,
    version       bigint      not null
);
create index users_email on read.users (email);

-- what the users projection needs to know of each order
create table read.user_orders (
    order_id uuid    not null primary key,
    user_id  uuid    not null,
    total    numeric not null,
    paid     boolean not null default false
);

-- projection `products`
create table read.products (
    id           uuid    not null primary key,
    sku          text    not null,
    name         text    not null,
    price        numeric not null,
    on_hand      bigint  not null,
    reserved     bigint  not null,
    discontinued boolean not null,
    version      bigint  not null
);

-- projection `orders`
create table read.orders (
    id         uuid        not null primary key,
    user_id    uuid        not null,
    status     text        not null,
    -- [{product_id, quantity, unit_price, line_total}]
    lines      jsonb       not null,
    total      numeric     not null,
    reason     text,
    placed_at  timestamptz not null,
    updated_at timestamptz not null,
    version    bigint      not null
);
create index orders_by_user on read.orders (user_id, placed_at desc, id desc);
