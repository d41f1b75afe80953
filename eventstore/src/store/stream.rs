//! Reading streams: one stream's version, head and events, the tails of
//! several streams in one statement, and a stream as it stood at a position
//! or time.

use super::request::AsOf;
use crate::error::StoreError;
use crate::event::RecordedEvent;
use crate::position::Position;

/// The current version of a stream (0 when it does not exist).
pub(super) async fn stream_version(
    client: &deadpool_postgres::Object,
    stream_id: &str,
) -> Result<u64, StoreError> {
    let statement = client
        .prepare_cached("select coalesce(max(version), 0) from events where stream_id = $1")
        .await?;
    let row = client.query_one(&statement, &[&stream_id]).await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// The position of a stream's last event (`None`: no such stream).
pub(super) async fn stream_head(
    client: &deadpool_postgres::Object,
    stream_id: &str,
) -> Result<Option<Position>, StoreError> {
    let statement = client
        .prepare_cached(
            "select transaction_id::text, position from events
                  where stream_id = $1 order by version desc limit 1",
        )
        .await?;
    match client.query_opt(&statement, &[&stream_id]).await? {
        Some(row) => Ok(Some(Position::from_row(&row, 0, 1)?)),
        None => Ok(None),
    }
}

/// Events of one stream with a version above `after_version`, in order, at
/// most `limit`.
pub(super) async fn read_stream(
    client: &deadpool_postgres::Object,
    stream_id: &str,
    after_version: u64,
    limit: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let statement = client.prepare_cached(&READ_STREAM_SQL).await?;
    let rows = client
        .query(&statement, &[&stream_id, &(after_version as i64), &limit])
        .await?;
    rows.iter().map(RecordedEvent::from_row).collect()
}

/// The events of several streams after a version each, in one statement:
/// ordered by stream (as given) and version.
pub(super) async fn read_stream_tails(
    client: &deadpool_postgres::Object,
    tails: &[(&str, u64)],
) -> Result<Vec<RecordedEvent>, StoreError> {
    let streams: Vec<&str> = tails.iter().map(|(stream_id, _)| *stream_id).collect();
    let after: Vec<i64> = tails
        .iter()
        .map(|(_, v)| i64::try_from(*v).unwrap_or(i64::MAX))
        .collect();
    // One statement for all the streams, each read as the single-stream
    // read is: a lateral subquery with a limit is never merged into a
    // join, so its plan stays the stream's index range whatever the
    // table's size when the statement was prepared. (A plain join over
    // `unnest`, prepared while `events` is small, would keep a scan of
    // the whole table.) One statement instead of one per stream: an
    // order's user and products are read by every `POST /orders`.
    let statement = client.prepare_cached(&READ_STREAM_TAILS_SQL).await?;
    let rows = client
        .query(&statement, &[&streams, &after, &i64::MAX])
        .await?;
    rows.iter().map(RecordedEvent::from_row).collect()
}

/// Events of one stream as it stood at a position or time, in order.
pub(super) async fn read_stream_as_of(
    client: &deadpool_postgres::Object,
    stream_id: &str,
    as_of: AsOf,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = match as_of {
        AsOf::Position(p) => {
            let sql = format!(
                "select {} from events where stream_id = $1
                       and (transaction_id, position) <= ($2::text::xid8, $3)
                     order by version",
                RecordedEvent::COLUMNS
            );
            client
                .query(&sql, &[&stream_id, &p.transaction_sql(), &p.position])
                .await?
        }
        AsOf::Time(t) => {
            let sql = format!(
                "select {} from events where stream_id = $1 and recorded_at <= $2 order by version",
                RecordedEvent::COLUMNS
            );
            client.query(&sql, &[&stream_id, &t]).await?
        }
    };
    rows.iter().map(RecordedEvent::from_row).collect()
}

/// The events of several streams (`$1`), each after its version (`$2`), at
/// most `$3` a stream: grouped by stream in the order given, each stream's
/// in order.
static READ_STREAM_TAILS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "select e.* from unnest($1::text[], $2::bigint[]) with ordinality as t(stream_id, after, n)
           cross join lateral (
             select {} from events
              where stream_id = t.stream_id and version > t.after
              order by version limit $3
           ) e
          order by t.n, e.version",
        RecordedEvent::COLUMNS
    )
});

/// One stream's events after a version, in order, at most `$3`.
static READ_STREAM_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "select {} from events where stream_id = $1 and version > $2 order by version limit $3",
        RecordedEvent::COLUMNS
    )
});
