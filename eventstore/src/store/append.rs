//! Appending: the SQL of an append, built for each shape of request, and
//! an append written alone in its own statement.
//!
//! An append is one SQL statement, so one short implicit transaction and one
//! round trip: data-modifying CTEs insert the events, record the command id,
//! and take or release unique claims together, all or nothing. Concurrency is
//! optimistic: `unique (stream_id, version)` lets only one of two writers at
//! the same version commit, and the loser gets [`StoreError::Conflict`].
//! No counter row, no table lock: writers to different streams never wait for
//! each other.
//!
//! Group commit (the `group` module beside this one) writes appends that can
//! go together with a statement of its own, and falls back to
//! [`append_alone`] when that fails; this module knows nothing of it.

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::request::{AppendRequest, Appended, ClaimChange, ExpectedVersion};
use crate::error::StoreError;
use crate::event::Metadata;
use crate::position::Position;

/// How many times an `Any` append re-reads the stream's version after losing a
/// race before reporting the conflict.
const ANY_RETRIES: usize = 16;

/// `metadata` as stored: [`Metadata`] without the correlation id, which has
/// a column of its own.
#[derive(Debug, serde::Serialize)]
pub(super) struct StoredMetadata<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    causation_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tracestate: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<&'a str>,
}

/// Which append statement a request needs. Every variant is one statement;
/// they differ in what they bind and what rides along.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Shape {
    /// One event: scalars instead of unnested arrays.
    single: bool,
    /// `Any`: the version comes from the stream itself.
    any: bool,
    /// Record the command id.
    command: bool,
    /// Take unique claims.
    takes: bool,
    /// Release unique claims.
    releases: bool,
}

/// The append statement of a shape. Parameters: `$1` stream id, `$2` stream
/// type, `$3` expected version (ignored for `Any`), `$4..$7` event ids,
/// types, schema versions and payloads, `$8` metadata, `$9` correlation id,
/// then the command id and the claim arrays when present.
///
/// Versions: with `Exact(n)` (or `NoStream`, n = 0) the events become
/// n+1, n+2, ...; the unique `(stream_id, version)` index refuses them when
/// the stream has moved past n. The stream's current version is *not* looked
/// up: that probe cost every append a measurable part of its rate, and `n`
/// always comes from reading the stream (the executor loads before it
/// decides), so the stream cannot be behind it. `Any` looks the version up
/// and retries on a race.
fn append_sql(shape: Shape) -> String {
    let base = if shape.any {
        "(select coalesce(max(version), 0) from events where stream_id = $1)"
    } else {
        "$3::bigint"
    };
    if shape.single && !shape.command && !shape.takes && !shape.releases {
        // The common case, and the cheapest statement PostgreSQL runs.
        let check = if shape.any {
            " where $3::bigint is not null"
        } else {
            ""
        };
        return format!(
            "insert into events (event_id, stream_id, stream_type, version, type, schema_version,
                                 data, metadata, correlation_id)
             select $4, $1, $2, {base} + 1, $5, $6, $7, $8, $9{check}
             returning version, position, transaction_id::text, recorded_at"
        );
    }
    let source = if shape.single {
        "(select $4::uuid as event_id, $5::text as type, $6::int4 as schema_version,
                 $7::jsonb as data, 1::bigint as n) as e"
    } else {
        "unnest($4::uuid[], $5::text[], $6::int4[], $7::jsonb[])
                 with ordinality as e(event_id, type, schema_version, data, n)"
    };
    // `$3` must appear in every variant so its type is known.
    let mut sql = format!(
        "with appended as (
             insert into events (event_id, stream_id, stream_type, version, type, schema_version,
                                 data, metadata, correlation_id)
             select e.event_id, $1, $2, {base} + e.n, e.type, e.schema_version, e.data, $8, $9
               from {source}
              where $3::bigint is not null
             returning position, version, transaction_id, recorded_at
         )"
    );
    let mut next = 10;
    if shape.command {
        sql.push_str(&format!(
            ",
         recorded as (
             insert into commands (command_id, stream_id, first_version, last_version, last_position)
             select ${next}, $1, min(version), max(version), max(position) from appended
             having count(*) > 0
             returning 1
         )"
        ));
        next += 1;
    }
    // Claims taken, then claims released: each binds the next two
    // parameters, arrays of kinds and of values, read as rows `c(kind, value)`.
    let mut claims = || {
        let rows = format!(
            "unnest(${}::text[], ${}::text[]) as c(kind, value)",
            next,
            next + 1
        );
        next += 2;
        rows
    };
    if shape.takes {
        sql.push_str(&format!(
            ",
         claimed as (
             insert into unique_claims (kind, value, stream_id)
             select c.kind, c.value, $1 from {}
             returning 1
         )",
            claims()
        ));
    }
    if shape.releases {
        sql.push_str(&format!(
            ",
         released as (
             delete from unique_claims u
              using {}
              where u.kind = c.kind and u.stream_id = $1
                and (u.value = c.value or c.value = '')
             returning 1
         )",
            claims()
        ));
    }
    sql.push_str(
        "
         select version, position, transaction_id::text, recorded_at from appended order by position",
    );
    sql
}

/// The statement text of every shape, built once.
fn cached_sql(shape: Shape) -> &'static str {
    static CACHE: std::sync::OnceLock<std::collections::HashMap<Shape, String>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        let mut all = std::collections::HashMap::new();
        for bits in 0u8..32 {
            let shape = Shape {
                single: bits & 1 != 0,
                any: bits & 2 != 0,
                command: bits & 4 != 0,
                takes: bits & 8 != 0,
                releases: bits & 16 != 0,
            };
            all.insert(shape, append_sql(shape));
        }
        all
    });
    cache.get(&shape).map(String::as_str).unwrap_or_default()
}

impl<'a> StoredMetadata<'a> {
    pub(super) fn of(metadata: &'a Metadata) -> StoredMetadata<'a> {
        StoredMetadata {
            causation_id: metadata.causation_id,
            command_id: metadata.command_id.as_deref(),
            trace_id: metadata.trace_id.as_deref(),
            traceparent: metadata.traceparent.as_deref(),
            tracestate: metadata.tracestate.as_deref(),
            actor: metadata.actor.as_deref(),
        }
    }
}

/// One append in its own statement, on `client`: `Any` appends retry a lost
/// race, and a command id already executed answers with its first result.
pub(super) async fn append_alone(
    client: &deadpool_postgres::Object,
    request: &AppendRequest<'_>,
) -> Result<Appended, StoreError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match append_once(client, request).await {
            Err(StoreError::Conflict { .. })
                if request.expected == ExpectedVersion::Any && attempts < ANY_RETRIES =>
            {
                continue
            }
            Err(StoreError::AlreadyExecuted(done)) => return Ok(*done),
            other => return other,
        }
    }
}

async fn append_once(
    client: &deadpool_postgres::Object,
    request: &AppendRequest<'_>,
) -> Result<Appended, StoreError> {
    // No look-up of the command id first (it would cost every append a
    // round trip): a command id already executed makes the append fail on
    // `commands_pkey`, or on the stream's version when it moved on, and both
    // failures look the command up (see `append_error` and below).
    let command_id = request.metadata.command_id.as_deref();
    let takes: Vec<&ClaimChange> = request.claims.iter().filter(|c| c.take).collect();
    let releases: Vec<&ClaimChange> = request.claims.iter().filter(|c| !c.take).collect();
    let single = request.events.len() == 1;
    let shape = Shape {
        single,
        any: request.expected == ExpectedVersion::Any,
        command: command_id.is_some(),
        takes: !takes.is_empty(),
        releases: !releases.is_empty(),
    };
    let statement = client.prepare_cached(cached_sql(shape)).await?;

    let expected: i64 = match request.expected {
        ExpectedVersion::Any | ExpectedVersion::NoStream => 0,
        ExpectedVersion::Exact(n) => n as i64,
    };
    // Arrays are only bound for batches; a single event binds its fields.
    let batch = if single { &[][..] } else { request.events };
    let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
    let types: Vec<&str> = batch.iter().map(|e| e.event_type.as_str()).collect();
    let versions: Vec<i32> = batch.iter().map(|e| e.schema_version).collect();
    let data: Vec<&serde_json::Value> = batch.iter().map(|e| &e.data).collect();
    // The correlation id has its own column; the rest goes to `metadata`,
    // serialised straight into the statement's buffer.
    let metadata = tokio_postgres::types::Json(StoredMetadata::of(request.metadata));
    let taken = claim_columns(&takes);
    let released = claim_columns(&releases);

    let first = &request.events[0];
    let mut params: Vec<&(dyn ToSql + Sync)> = if single {
        vec![
            &request.stream_id,
            &request.stream_type,
            &expected,
            &first.event_id,
            &first.event_type,
            &first.schema_version,
            &first.data,
            &metadata,
            &request.metadata.correlation_id,
        ]
    } else {
        vec![
            &request.stream_id,
            &request.stream_type,
            &expected,
            &ids,
            &types,
            &versions,
            &data,
            &metadata,
            &request.metadata.correlation_id,
        ]
    };
    if let Some(command_id) = &command_id {
        params.push(command_id);
    }
    for (kinds, values) in [&taken, &released] {
        if !kinds.is_empty() {
            params.push(kinds);
            params.push(values);
        }
    }

    let rows = match client.query(&statement, &params).await {
        Ok(rows) => rows,
        Err(e) => return Err(append_error(client, request, e).await),
    };
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        // The version check filtered every row: the stream is elsewhere,
        // perhaps because this very command moved it.
        return Err(conflict_or_executed(client, request).await);
    };
    Ok(Appended {
        stream_id: request.stream_id.to_owned(),
        first_version: first.get::<_, i64>(0) as u64,
        last_version: last.get::<_, i64>(0) as u64,
        position: Position::from_row(last, 2, 1)?,
        recorded_at: last.get(3),
        replayed: false,
    })
}

/// Claims as the two arrays an append binds: their kinds and their values.
fn claim_columns<'c>(claims: &[&'c ClaimChange]) -> (Vec<&'c str>, Vec<&'c str>) {
    claims
        .iter()
        .map(|c| (c.kind.as_str(), c.value.as_str()))
        .unzip()
}

/// Turns a failed append into the error its cause deserves.
async fn append_error(
    client: &deadpool_postgres::Object,
    request: &AppendRequest<'_>,
    e: tokio_postgres::Error,
) -> StoreError {
    if e.code() != Some(&SqlState::UNIQUE_VIOLATION) {
        return StoreError::Database(e);
    }
    let constraint = e
        .as_db_error()
        .and_then(|db| db.constraint())
        .unwrap_or_default()
        .to_owned();
    match constraint.as_str() {
        "events_stream_version_key" => conflict_or_executed(client, request).await,
        "commands_pkey" => {
            // The same command committed concurrently: answer with its result.
            let command_id = request.metadata.command_id.as_deref().unwrap_or_default();
            match find_command(client, command_id).await {
                Ok(Some(done)) => StoreError::AlreadyExecuted(Box::new(done)),
                Ok(None) => StoreError::Database(e),
                Err(other) => other,
            }
        }
        "unique_claims_pkey" => {
            let taken = request.claims.iter().filter(|c| c.take);
            for claim in taken {
                let holder = client
                    .query_opt(
                        "select stream_id from unique_claims where kind = $1 and value = $2",
                        &[&claim.kind, &claim.value],
                    )
                    .await;
                if let Ok(Some(row)) = holder {
                    if row.get::<_, String>(0) != request.stream_id {
                        return StoreError::Duplicate {
                            kind: claim.kind.clone(),
                            value: claim.value.clone(),
                        };
                    }
                }
            }
            // Taken by this very stream, or released again since: retryable.
            StoreError::Conflict {
                stream_id: request.stream_id.to_owned(),
                expected: request.expected.to_string(),
            }
        }
        _ => StoreError::Database(e),
    }
}

/// A version conflict, unless the request's command id was executed
/// already (a retry whose first attempt moved the stream): then its result.
async fn conflict_or_executed(
    client: &deadpool_postgres::Object,
    request: &AppendRequest<'_>,
) -> StoreError {
    if let Some(command_id) = request.metadata.command_id.as_deref() {
        match find_command(client, command_id).await {
            Ok(Some(done)) => return StoreError::AlreadyExecuted(Box::new(done)),
            Ok(None) => {}
            Err(e) => return e,
        }
    }
    StoreError::Conflict {
        stream_id: request.stream_id.to_owned(),
        expected: request.expected.to_string(),
    }
}

/// The result of `command_id`'s first execution, if it was executed.
pub(super) async fn find_command(
    client: &deadpool_postgres::Object,
    command_id: &str,
) -> Result<Option<Appended>, StoreError> {
    let statement = client
        .prepare_cached(
            "select stream_id, first_version, last_version, transaction_id::text, last_position, recorded_at
               from commands where command_id = $1",
        )
        .await?;
    match client.query_opt(&statement, &[&command_id]).await? {
        None => Ok(None),
        Some(row) => Ok(Some(Appended {
            stream_id: row.get(0),
            first_version: row.get::<_, i64>(1) as u64,
            last_version: row.get::<_, i64>(2) as u64,
            position: Position::from_row(&row, 3, 4)?,
            recorded_at: row.get(5),
            replayed: true,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_statements_number_their_parameters_in_order() {
        let shape = |single, any, command, takes, releases| Shape {
            single,
            any,
            command,
            takes,
            releases,
        };
        let all = append_sql(shape(false, false, true, true, true));
        for n in 1..=14 {
            assert!(all.contains(&format!("${n}")), "${n} missing");
        }
        assert!(!all.contains("$15"));
        let takes_only = append_sql(shape(true, true, false, true, false));
        assert!(takes_only.contains("$10::text[], $11::text[]"));
        assert!(!takes_only.contains("$12"));
        let plain = cached_sql(shape(true, false, false, false, false));
        assert!(plain.trim_start().starts_with("insert into events") && plain.contains("$9"));
    }
}
