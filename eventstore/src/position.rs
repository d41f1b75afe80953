//! Positions in the global log.
//!
//! The log is ordered by `(transaction_id, position)`: the writing
//! transaction's id first, then the row's identity within it. A bigint identity
//! alone does not give a safe order: a transaction that drew position 10 can
//! commit after one that drew 11, and a reader already past 11 would never see
//! 10. Transaction ids below the horizon (the oldest transaction in flight)
//! are final, so reading in this order below the horizon never skips an
//! event. Only transactions that may append events need to be waited for:
//! one that cannot (it holds an id but no lock on `events`, and appending
//! must be a transaction's first write) may be passed over, which followers
//! do once it has held them for a while (`schemas/sql/0007_log_horizon.sql`
//! has the rule and the argument; [`crate::follow`] the follower's side).
//!
//! Users see a position as an opaque token, `"<transaction>.<position>"`.

use std::fmt;
use std::str::FromStr;

/// A point in the global log: the event at this position and everything before
/// it in log order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// The id (xid8) of the transaction that wrote the event.
    pub transaction_id: u64,
    /// The event's identity value within the log.
    pub position: i64,
}

impl Position {
    /// Before the first event.
    pub const START: Position = Position {
        transaction_id: 0,
        position: 0,
    };

    /// A position from its two parts.
    pub fn new(transaction_id: u64, position: i64) -> Self {
        Position {
            transaction_id,
            position,
        }
    }

    /// The transaction id as SQL text, for `$n::text::xid8`.
    pub fn transaction_sql(&self) -> String {
        self.transaction_id.to_string()
    }

    /// The position in columns `tx` (the transaction id as text, the form
    /// [`Position::transaction_sql`] writes) and `pos` of `row`.
    pub fn from_row(
        row: &tokio_postgres::Row,
        tx: usize,
        pos: usize,
    ) -> Result<Position, crate::StoreError> {
        let transaction: String = row.try_get(tx)?;
        let transaction_id = transaction.parse().map_err(|_| {
            crate::StoreError::Internal(format!("unexpected transaction id {transaction:?}"))
        })?;
        Ok(Position::new(transaction_id, row.try_get(pos)?))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.transaction_id, self.position)
    }
}

/// A position token that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a position token (expected the \"position\" of an answer, like \"1234.5678\")"
)]
pub struct InvalidPosition(pub String);

impl FromStr for Position {
    type Err = InvalidPosition;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidPosition(s.chars().take(64).collect());
        let (tx, pos) = s.split_once('.').ok_or_else(invalid)?;
        let all_digits =
            |t: &str| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(tx) || !all_digits(pos) {
            return Err(invalid());
        }
        Ok(Position {
            transaction_id: tx.parse().map_err(|_| invalid())?,
            position: pos.parse().map_err(|_| invalid())?,
        })
    }
}

impl serde::Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_round_trip_and_order_by_transaction_first() {
        let a = Position::new(7, 11);
        let b = Position::new(8, 10);
        assert!(
            a < b,
            "a later transaction comes later even with a smaller position"
        );
        assert_eq!(a.to_string().parse::<Position>().unwrap(), a);
        assert_eq!("0.0".parse::<Position>().unwrap(), Position::START);
    }

    #[test]
    fn rejects_anything_else() {
        for bad in [
            "",
            "12",
            "1.2.3",
            "a.1",
            "1.-2",
            "-1.2",
            "1 .2",
            "99999999999999999999999.1",
        ] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?}");
        }
    }
}
