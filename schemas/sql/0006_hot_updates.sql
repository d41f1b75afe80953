-- Room for HOT updates of the rows rewritten several times per order.
--
-- A saga row is updated about three times per order, and every update that
-- changes an indexed column, or a column an index's predicate reads, must
-- add an entry to every index. `sagas_attention` read `phase`, which nearly
-- every update changes, so no update was HOT. It now reads `attention`, a
-- generated column that changes only when a saga starts or stops needing a
-- human. And pages keep free space, so the new version of a row fits next to
-- the old one.

alter table saga.sagas
    add column attention boolean
        generated always as (phase = 'needs_attention' or parked is not null) stored;
drop index saga.sagas_attention;
create index sagas_attention on saga.sagas (order_id) where attention;
alter table saga.sagas set (fillfactor = 70);

-- An order's read model row changes with each step of the order.
alter table read.orders set (fillfactor = 80);
