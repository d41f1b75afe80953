//! The read models, one module each: load the rows a batch touches, fold the
//! events into them, collect the writes of the changed rows ([`crate::writes`]).

pub mod orders;
pub mod products;
pub mod users;

use std::collections::BTreeMap;

use domain::event::AnyEvent;
use domain::ids::StreamType;
use rust_decimal::Decimal;
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::event::ProjectionEvent;

/// Numeric columns travel as text, so no driver feature decides how a
/// decimal is encoded: `numeric::text` out, `$n::text::numeric` in.
pub(crate) fn decimal(text: &str) -> Result<Decimal, eventstore::StoreError> {
    text.parse().map_err(|_| {
        eventstore::StoreError::Internal(format!("bad numeric {text:?} in a read model"))
    })
}

/// The ids of the aggregates of `stream_type` that `events` touch.
pub(crate) fn aggregate_ids(events: &[ProjectionEvent], stream_type: StreamType) -> Vec<Uuid> {
    events
        .iter()
        .filter(|e| e.stream_type == Some(stream_type))
        .filter_map(|e| e.aggregate_id)
        .collect()
}

/// The aggregate's id and the domain event `pick` finds in `event` (`kind`
/// names what it looks for: "an order"), or why the event cannot be applied.
pub(crate) fn decoded<'a, T>(
    event: &'a ProjectionEvent,
    kind: &str,
    pick: impl FnOnce(&'a AnyEvent) -> Option<&'a T>,
) -> Result<(Uuid, &'a T), String> {
    let decoded = match &event.decoded {
        Ok(any) => pick(any).ok_or_else(|| format!("not {kind} event"))?,
        Err(reason) => return Err(reason.clone()),
    };
    let id = event
        .aggregate_id
        .ok_or_else(|| "stream id has no uuid".to_owned())?;
    Ok((id, decoded))
}

/// The rows of the aggregates of `stream_type` that `events` touch (see
/// [`load_rows`]); `None` when they touch none, and the model has nothing to
/// do.
pub(crate) async fn touched_rows<R>(
    reader: &impl GenericClient,
    events: &[ProjectionEvent],
    stream_type: StreamType,
    table: &str,
    columns: &str,
    read: impl FnMut(&tokio_postgres::Row) -> Result<R, eventstore::StoreError>,
) -> Result<Option<BTreeMap<Uuid, R>>, eventstore::StoreError> {
    let ids = aggregate_ids(events, stream_type);
    if ids.is_empty() {
        return Ok(None);
    }
    load_rows(reader, table, columns, &ids, read)
        .await
        .map(Some)
}

/// The rows a batch touches: `select <columns> from <table> where <key> =
/// any(ids)`, the key being the first of `columns`; `read` turns each row
/// into what the model folds events into. Planned per call (`query_typed`):
/// a prepared plan made while a table was small could scan it whole later.
pub(crate) async fn load_rows<R>(
    reader: &impl GenericClient,
    table: &str,
    columns: &str,
    ids: &[Uuid],
    mut read: impl FnMut(&tokio_postgres::Row) -> Result<R, eventstore::StoreError>,
) -> Result<BTreeMap<Uuid, R>, eventstore::StoreError> {
    let key = columns.split(',').next().unwrap_or("id").trim();
    let rows = reader
        .query_typed(
            &format!("select {columns} from {table} where {key} = any($1)"),
            &[(&ids, Type::UUID_ARRAY)],
        )
        .await?;
    let mut loaded = BTreeMap::new();
    for row in &rows {
        loaded.insert(row.get(0), read(row)?);
    }
    Ok(loaded)
}
