//! The read models, one module each: load the rows a batch touches, fold the
//! events into them, collect the writes of the changed rows ([`crate::writes`]).

pub mod orders;
pub mod products;
pub mod users;

use rust_decimal::Decimal;

/// Numeric columns travel as text, so no driver feature decides how a
/// decimal is encoded: `numeric::text` out, `$n::text::numeric` in.
pub(crate) fn decimal(text: &str) -> Result<Decimal, eventstore::StoreError> {
    text.parse().map_err(|_| {
        eventstore::StoreError::Internal(format!("bad numeric {text:?} in a read model"))
    })
}
