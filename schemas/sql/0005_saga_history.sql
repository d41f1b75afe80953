-- A saga's history of steps, out of its row.
--
-- The history used to live in `saga.sagas.state`: four fifths of the row,
-- rewritten (and compressed, and read back) on every one of the row's several
-- updates per order. Now each save that adds steps appends one row here, and
-- the saga row stays small. `GET /sagas/{order_id}` reads both: any steps
-- still in the state (none after this migration) come first, then these in
-- version order.

create table saga.history (
    order_id uuid   not null,
    -- the saga row's version written together with these steps
    version  bigint not null,
    -- the steps (`domain::fulfilment::SagaStep`), oldest first
    steps    jsonb  not null,
    constraint history_pkey primary key (order_id, version)
);

insert into saga.history (order_id, version, steps)
select order_id, 0, state->'history'
  from saga.sagas
 where jsonb_typeof(state->'history') = 'array'
   and jsonb_array_length(state->'history') > 0;

update saga.sagas set state = state - 'history' where state ? 'history';
