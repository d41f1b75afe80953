//! Snapshots: a stream's state folded up to a version, stored in a layout
//! (`state_format`) so that a load reads only the events after it; a
//! snapshot in another layout is ignored and overwritten.

use crate::error::StoreError;

/// The stored snapshot of a stream in the given layout, if any.
pub(super) async fn load_snapshot(
    client: &deadpool_postgres::Object,
    stream_id: &str,
    state_format: &str,
) -> Result<Option<(u64, serde_json::Value)>, StoreError> {
    let statement = client
        .prepare_cached(
            "select version, state from snapshots where stream_id = $1 and state_format = $2",
        )
        .await?;
    Ok(client
        .query_opt(&statement, &[&stream_id, &state_format])
        .await?
        .map(|row| (row.get::<_, i64>(0) as u64, row.get(1))))
}

/// Stores a snapshot unless a newer one is there.
pub(super) async fn save_snapshot(
    client: &deadpool_postgres::Object,
    stream_id: &str,
    version: u64,
    state_format: &str,
    state: &serde_json::Value,
) -> Result<(), StoreError> {
    let statement = client
        .prepare_cached(
            "insert into snapshots (stream_id, version, state_format, state)
                 values ($1, $2, $3, $4)
                 on conflict (stream_id) do update
                   set version = excluded.version, state_format = excluded.state_format,
                       state = excluded.state, taken_at = now()
                 where snapshots.version < excluded.version
                    or snapshots.state_format <> excluded.state_format",
        )
        .await?;
    client
        .execute(
            &statement,
            &[&stream_id, &(version as i64), &state_format, state],
        )
        .await?;
    Ok(())
}
