//! The read models, one module each: load the rows a batch touches, fold the
//! events into them, collect the writes of the changed rows ([`crate::writes`]).

pub mod orders;
pub mod products;
pub mod users;

use domain::event::AnyEvent;
use domain::ids::StreamType;
use rust_decimal::Decimal;
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
