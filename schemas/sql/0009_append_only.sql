-- The event log is append-only, for everyone, and the runtime role needs no DDL.
--
-- 1. A trigger refuses UPDATE, DELETE and TRUNCATE on `events`, whoever asks,
--    the owner and superusers included: a mistaken statement in psql cannot
--    rewrite history. (The runtime role has no such privilege in the first
--    place: see schemas/privileges/runtime.sql.) A migration that must rewrite
--    stored events lifts the guard for its own transaction only: the migration
--    runner sets `ordo.rewrite_events` for a file that declares
--    `-- ordo: rewrites events` in its first lines, and logs that it did.
--
-- 2. Rebuilding a read model builds new tables beside the live ones and swaps
--    them in. That is DDL, which the runtime role may not do; these three
--    functions do exactly those steps, as the owner, for the read model tables
--    only (`read.*` but the checkpoints), so the role needs nothing more than
--    EXECUTE on them.

create function ordo_events_append_only() returns trigger
    language plpgsql
as $$
begin
    if current_setting('ordo.rewrite_events', true) = 'on' then
        return case when tg_level = 'ROW' and tg_op = 'UPDATE' then new else old end;
    end if;
    raise exception 'the event log is append-only: % on events is refused', tg_op
        using errcode = '42501',
              hint = 'Events are never changed or removed; append a correcting event instead. '
                  || 'A schema migration that must rewrite stored events declares it (see migration 0009).';
end
$$;

create trigger events_append_only
    before update or delete on events
    for each row execute function ordo_events_append_only();

create trigger events_no_truncate
    before truncate on events
    for each statement execute function ordo_events_append_only();

create schema if not exists read_rebuild;

-- An empty `read_rebuild.<name>` shaped like `read.<name>`, with its grants.
create function ordo_rebuild_prepare(name text) returns void
    language plpgsql security definer
    set search_path = pg_catalog
as $$
declare
    g record;
begin
    if name is null or name = 'checkpoints' or not exists (
        select 1 from pg_tables where schemaname = 'read' and tablename = name
    ) then
        raise exception 'no read model table named %', coalesce(quote_literal(name), 'null')
            using errcode = '42P01';
    end if;
    execute format('drop table if exists read_rebuild.%I', name);
    execute format('create table read_rebuild.%I (like read.%I including all)', name, name);
    for g in
        select grantee, privilege_type
          from information_schema.role_table_grants
         where table_schema = 'read' and table_name = name and grantee <> current_user
    loop
        execute format('grant %s on read_rebuild.%I to %I', g.privilege_type, name, g.grantee);
    end loop;
end
$$;

-- Drops `read_rebuild.<name>` (after a dry run, or a failed rebuild).
create function ordo_rebuild_discard(name text) returns void
    language plpgsql security definer
    set search_path = pg_catalog
as $$
begin
    if name is null or name = 'checkpoints' or not exists (
        select 1 from pg_tables where schemaname = 'read' and tablename = name
    ) then
        raise exception 'no read model table named %', coalesce(quote_literal(name), 'null')
            using errcode = '42P01';
    end if;
    execute format('drop table if exists read_rebuild.%I', name);
end
$$;

-- Replaces `read.<name>` by `read_rebuild.<name>`, in the caller's transaction.
create function ordo_rebuild_swap(name text) returns void
    language plpgsql security definer
    set search_path = pg_catalog
as $$
begin
    if name is null or name = 'checkpoints' or not exists (
        select 1 from pg_tables where schemaname = 'read' and tablename = name
    ) then
        raise exception 'no read model table named %', coalesce(quote_literal(name), 'null')
            using errcode = '42P01';
    end if;
    if to_regclass(format('read_rebuild.%I', name)) is null then
        raise exception 'read_rebuild.% does not exist: nothing to swap in', name
            using errcode = '42P01';
    end if;
    execute format('drop table read.%I', name);
    execute format('alter table read_rebuild.%I set schema read', name);
end
$$;

revoke all on function ordo_rebuild_prepare(text), ordo_rebuild_discard(text), ordo_rebuild_swap(text)
    from public;
