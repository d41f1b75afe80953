-- ordo tokens: bearer secrets of the HTTP API (api/src/auth/tokens.rs).
--
-- A token is `ordo_<id>_<secret>`; only the SHA-256 of the secret is kept.
-- Revoking sets `revoked_at`; rows are never deleted, so that the actor
-- `token:<id>` of an old event still names a token.

create table api.tokens (
    id          uuid        not null primary key,
    name        text        not null default '',
    secret_hash bytea       not null check (length(secret_hash) = 32),
    scopes      text[]      not null check (cardinality(scopes) > 0),
    -- the user a customer token acts for
    user_id     uuid,
    created_at  timestamptz not null default now(),
    expires_at  timestamptz,
    revoked_at  timestamptz,
    -- the actor that made it: token:<id>, jwt:<iss>#<sub>, system
    created_by  text        not null
);

-- Every process caches verified tokens and drops its cache when told that a
-- token changed, whoever changed it.
create function api.tokens_changed() returns trigger
language plpgsql as $$
begin
    perform pg_notify('ordo_tokens', coalesce(new.id, old.id)::text);
    return null;
end
$$;

create trigger tokens_changed after update or delete on api.tokens
    for each row execute function api.tokens_changed();
