//! Reading the global log: events after a position in log order, below the
//! horizon ([`super::horizon`] says which), filtered or not; the log's head;
//! and [`LogRow`], the ways a row of the log is decoded.

use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use super::horizon::Below;
use super::request::LogFilter;
use crate::error::StoreError;
use crate::event::RecordedEvent;
use crate::position::Position;

/// The log query behind [`EventStore::read_log`], on a given connection.
///
/// [`EventStore::read_log`]: super::EventStore::read_log
pub async fn read_log<T: LogRow, C: tokio_postgres::GenericClient>(
    client: &C,
    after: Position,
    filter: &LogFilter,
    limit: i64,
) -> Result<Vec<T>, StoreError> {
    read_log_below(client, None, after, filter, limit, Below::Oldest)
        .await
        .map(|(rows, _)| rows)
}

/// [`read_log`] below the chosen horizon; with [`Below::OldestAppender`]
/// also the plain horizon of the same snapshot, as a transaction id.
/// `cached`, the pooled connection `client` is, keeps the statement of an
/// unfiltered read prepared.
pub(super) async fn read_log_below<T: LogRow, C: tokio_postgres::GenericClient>(
    client: &C,
    cached: Option<&deadpool_postgres::ClientWrapper>,
    after: Position,
    filter: &LogFilter,
    limit: i64,
    below: Below,
) -> Result<(Vec<T>, Option<u64>), StoreError> {
    let after_tx = after.transaction_sql();
    let (horizon, plain) = (below.bound(), below.extra_column());
    let mut sql = format!(
        "select {}{plain} from events
          where (transaction_id, position) > ($1::text::xid8, $2)
            and transaction_id < {horizon}",
        T::COLUMNS
    );
    let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![
        (&after_tx, Type::TEXT),
        (&after.position, Type::INT8),
        (&limit, Type::INT8),
    ];
    let conditions: [(Option<&(dyn ToSql + Sync)>, Type, &str); 7] = [
        (as_param(&filter.stream_id), Type::TEXT, "stream_id ="),
        (as_param(&filter.stream_type), Type::TEXT, "stream_type ="),
        (as_param(&filter.event_type), Type::TEXT, "type ="),
        (
            as_param(&filter.correlation_id),
            Type::UUID,
            "correlation_id =",
        ),
        (as_param(&filter.since), Type::TIMESTAMPTZ, "recorded_at >="),
        (as_param(&filter.until), Type::TIMESTAMPTZ, "recorded_at <"),
        (as_param(&filter.actor), Type::TEXT, "metadata->>'actor' ="),
    ];
    for (value, ty, condition) in conditions {
        if let Some(value) = value {
            params.push((value, ty));
            sql.push_str(&format!(" and {condition} ${}", params.len()));
        }
    }
    sql.push_str(" order by transaction_id, position limit $3");
    // The whole log in order (the relay, a rebuild, an unfiltered page) is
    // a prepared statement: its plan is the primary key's range whatever
    // the log's size when it was prepared, and planning it on every call
    // was the largest share of the server's planning under load (the
    // figure is in docs/BENCHMARKS.md). A filtered read is planned for the
    // values at hand, in one round trip (an unnamed statement: parse, bind
    // and execute sent together): planned generically it becomes, while
    // the log is small, a scan of every row past the cursor sorted at the
    // end, which a reader far behind would pay in full.
    let rows = match cached {
        Some(cached) if params.len() == 3 => {
            let statement = cached.prepare_cached(&sql).await?;
            cached
                .query(&statement, &[&after_tx, &after.position, &limit])
                .await?
        }
        _ => client.query_typed(&sql, &params).await?,
    };
    let plain = below.plain_horizon(rows.first())?;
    let rows = rows.iter().map(T::from_row).collect::<Result<_, _>>()?;
    Ok((rows, plain))
}

/// A filter's value as a statement parameter, when it is set.
fn as_param<T: ToSql + Sync>(value: &Option<T>) -> Option<&(dyn ToSql + Sync)> {
    value.as_ref().map(|v| v as &(dyn ToSql + Sync))
}

/// The last position of the whole log (committed, below the horizon or not).
pub(super) async fn head(client: &deadpool_postgres::Object) -> Result<Position, StoreError> {
    let row = client
        .query_opt(
            "select transaction_id::text as transaction_text, position from events
                  order by transaction_id desc, position desc limit 1",
            &[],
        )
        .await?;
    Ok(match row {
        Some(row) => Position::from_row(&row, 0, 1)?,
        None => Position::START,
    })
}

/// The id of the event at a position, if there is one, read on `client`
/// (a pooled connection or a transaction of one).
pub async fn event_at(
    client: &impl deadpool_postgres::GenericClient,
    position: Position,
) -> Result<Option<Uuid>, StoreError> {
    let statement = client
        .prepare_cached(
            "select event_id from events where transaction_id = $1::text::xid8 and position = $2",
        )
        .await?;
    Ok(client
        .query_opt(
            &statement,
            &[&position.transaction_sql(), &position.position],
        )
        .await?
        .map(|row| row.get(0)))
}

/// A way of reading rows of the log.
pub trait LogRow: Sized + Send + 'static {
    /// The select list.
    const COLUMNS: &'static str;
    /// Decodes one row selected with [`LogRow::COLUMNS`].
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, StoreError>;
    /// Its position.
    fn position(&self) -> Position;
}

impl LogRow for RecordedEvent {
    const COLUMNS: &'static str = RecordedEvent::COLUMNS;

    fn from_row(row: &tokio_postgres::Row) -> Result<Self, StoreError> {
        RecordedEvent::from_row(row)
    }

    fn position(&self) -> Position {
        self.position
    }
}
