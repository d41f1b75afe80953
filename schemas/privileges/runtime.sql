-- What the runtime role may do: exactly what ordo's roles (API, relay,
-- projectors, saga coordinator, and the operators' commands rebuild, check,
-- status, events, token) do, table by table, column by column where a
-- column must stay the server's to set. Applied after the migrations by
-- every `ordo migrate`, as the owner, with {{role}} replaced by the quoted
-- role name (ORDO_RUNTIME_ROLE); it first takes back whatever the role held,
-- so the list below is the whole of it.
--
-- Not granted, on purpose: UPDATE, DELETE or TRUNCATE on the event log (it is
-- append-only; a trigger refuses those to everyone anyway), setting an
-- event's position, transaction id or time, any DDL (the role owns nothing;
-- rebuilding read models goes through three owner functions of migration
-- 0009), and anything on the migrations table but reading it.

revoke all on all tables in schema public, read, read_rebuild, saga, api from {{role}};
revoke all on all sequences in schema public, read, read_rebuild, saga, api from {{role}};
revoke all on all functions in schema public, read, read_rebuild, saga, api from {{role}};
revoke all on schema read, read_rebuild, saga, api from {{role}};
-- PostgreSQL 15 and later no longer let everyone create objects in `public`;
-- a database made by an older version or from another template may still.
revoke create on schema public from public;

grant usage on schema public, read, read_rebuild, saga, api to {{role}};

-- The log: read it, append to it. Position, transaction id and recorded_at
-- are the server's.
grant select on events to {{role}};
grant insert (event_id, stream_id, stream_type, version, type, schema_version,
              data, metadata, correlation_id) on events to {{role}};
-- Unique values claimed and released in the appending statement.
grant select, delete on unique_claims to {{role}};
grant insert (kind, value, stream_id) on unique_claims to {{role}};
-- Commands already executed: written once, with the append.
grant select on commands to {{role}};
grant insert (command_id, stream_id, first_version, last_version, last_position)
    on commands to {{role}};
-- A cache of folded state, replaced as streams grow.
grant select, insert, update on snapshots to {{role}};
-- The relay's checkpoint.
grant select, insert, update on relay_checkpoints to {{role}};
-- Whether the schema is current, for `ordo up` and /ready.
grant select on ordo_migrations to {{role}};
grant execute on function ordo_log_horizon() to {{role}};

-- Read models: projectors upsert rows, nothing deletes them; a rebuild
-- replaces whole tables through the owner's functions.
grant select, insert, update on read.users, read.user_orders, read.products, read.orders
    to {{role}};
grant select, update (position, transaction_id, stream_sequence, status, error,
                      failed_event, updated_at) on read.checkpoints to {{role}};
grant execute on function ordo_rebuild_prepare(text), ordo_rebuild_discard(text),
                          ordo_rebuild_swap(text) to {{role}};

-- The saga coordinator's state, its history (appended), its timers and the
-- messages it has handled.
grant select, insert, update on saga.sagas, saga.checkpoint to {{role}};
grant select, insert on saga.history, saga.processed to {{role}};
grant select, insert, update, delete on saga.timers to {{role}};

-- The API: idempotency answers (written once) and tokens (created, then only
-- revoked).
grant select, insert on api.idempotency to {{role}};
grant select on api.tokens to {{role}};
grant insert (id, name, secret_hash, scopes, user_id, expires_at, created_by)
    on api.tokens to {{role}};
grant update (revoked_at) on api.tokens to {{role}};
