-- The HTTP API's memory of `Idempotency-Key`s: a retry with the same key and
-- the same request gets the first response back and executes nothing.

create schema if not exists api;

create table api.idempotency (
    key          text        not null primary key,
    -- method, path and body of the first request, hashed
    request_hash text        not null,
    status       smallint    not null,
    body         jsonb       not null,
    created_at   timestamptz not null default now()
);
