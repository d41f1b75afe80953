//! What every command endpoint shares: idempotency keys, the metadata events
//! are stamped with, executing through the executor, and the answer.

use std::future::Future;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::aggregate::Aggregate;
use eventstore::executor::{CommandContext, ExecuteError, Executed};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::RequestMeta;
use crate::AppState;

/// The answer to a command.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CommandResponse {
    /// The aggregate's id.
    pub id: Uuid,
    /// Its version after the command.
    pub version: u64,
    /// Position token just after the command's events: pass it as
    /// `min_position` to read your own write.
    pub position: String,
    /// The order's status (orders only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A hex SHA-256 of the parts of a request.
pub fn request_hash(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs a command under the request's `Idempotency-Key`, if it has one: a
/// repeat of the same request gets the stored answer and executes nothing;
/// another request under the same key is refused. `run` receives the command
/// id the key implies (the executor's own idempotency then also covers two
/// such requests racing each other).
pub async fn idempotent<F, Fut>(
    state: &AppState,
    meta: &RequestMeta,
    route: &str,
    body: &[u8],
    run: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(Option<String>) -> Fut,
    Fut: Future<Output = Result<(StatusCode, CommandResponse), ApiError>>,
{
    let Some(key) = &meta.idempotency_key else {
        let (status, answer) = run(None).await?;
        return Ok((status, Json(answer)).into_response());
    };
    let hash = request_hash(&[route.as_bytes(), body]);
    let client = state.pool.get().await?;
    if let Some(row) = client
        .query_opt(
            "select request_hash, status, body from api.idempotency where key = $1",
            &[key],
        )
        .await?
    {
        return stored(row, &hash);
    }
    let (status, answer) = run(Some(format!("idem:{key}"))).await?;
    let body = serde_json::to_value(&answer).map_err(|e| ApiError::Internal(e.to_string()))?;
    let inserted = client
        .execute(
            "insert into api.idempotency (key, request_hash, status, body) values ($1, $2, $3, $4)
             on conflict (key) do nothing",
            &[key, &hash, &(status.as_u16() as i16), &body],
        )
        .await?;
    if inserted == 0 {
        // Another request stored an answer under this key meanwhile.
        if let Some(row) = client
            .query_opt(
                "select request_hash, status, body from api.idempotency where key = $1",
                &[key],
            )
            .await?
        {
            return stored(row, &hash);
        }
    }
    Ok((status, Json(body)).into_response())
}

fn stored(row: tokio_postgres::Row, hash: &str) -> Result<Response, ApiError> {
    let first: String = row.get(0);
    if first != hash {
        return Err(ApiError::IdempotencyMismatch(
            "this Idempotency-Key was used for a different request".into(),
        ));
    }
    let status = StatusCode::from_u16(row.get::<_, i16>(1) as u16).unwrap_or(StatusCode::OK);
    let body: serde_json::Value = row.get(2);
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(response)
}

/// The id of a new aggregate: the client's, or — under an `Idempotency-Key`
/// — one derived from the key, so concurrent retries of one create all land
/// on the same stream (and the executor's command id makes them one), or a
/// fresh time-ordered one.
pub fn new_id(meta: &RequestMeta, route: &str, client_id: Option<Uuid>) -> Uuid {
    if let Some(id) = client_id {
        return id;
    }
    match &meta.idempotency_key {
        Some(key) => {
            let digest = Sha256::digest([route.as_bytes(), b"\0", key.as_bytes()].concat());
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            uuid::Builder::from_random_bytes(bytes).into_uuid()
        }
        None => Uuid::now_v7(),
    }
}

/// The metadata of a command: who caused it, what it belongs to.
pub fn context(
    meta: &RequestMeta,
    correlation: Option<Uuid>,
    command_id: Option<String>,
) -> CommandContext {
    let causation = meta.causation_id();
    CommandContext {
        command_id,
        correlation_id: Some(correlation.unwrap_or(causation)),
        causation_id: Some(causation),
        trace_id: Some(meta.trace()),
    }
}

/// A command on an existing aggregate, idempotent under `route`, answered
/// `200 OK` with its new version and position.
pub async fn update<A: Aggregate>(
    state: &AppState,
    meta: &RequestMeta,
    id: Uuid,
    route: &str,
    body: &[u8],
    command: A::Command,
) -> Result<Response, ApiError> {
    idempotent(state, meta, route, body, |key| async {
        let (_, answer) = execute::<A>(state, id, command, &context(meta, None, key)).await?;
        Ok((StatusCode::OK, answer))
    })
    .await
}

/// Executes a command and shapes the answer.
pub async fn execute<A: Aggregate>(
    state: &AppState,
    id: Uuid,
    command: A::Command,
    ctx: &CommandContext,
) -> Result<(Executed<A>, CommandResponse), ApiError> {
    let stream_id = format!("{}-{id}", A::STREAM_TYPE.as_str());
    let outcome = state.executor.execute::<A>(&stream_id, command, ctx).await;
    answer(state, id, outcome).await
}

/// Counts what executing a command on aggregate `id` came to, and shapes the
/// answer.
pub async fn answer<A: Aggregate>(
    state: &AppState,
    id: Uuid,
    outcome: Result<Executed<A>, ExecuteError<A::Error>>,
) -> Result<(Executed<A>, CommandResponse), ApiError> {
    let label = match &outcome {
        Ok(_) => "ok",
        Err(eventstore::executor::ExecuteError::Rejected(_)) => "rejected",
        Err(eventstore::executor::ExecuteError::Duplicate { .. }) => "duplicate",
        Err(eventstore::executor::ExecuteError::Conflict { .. }) => "conflict",
        Err(eventstore::executor::ExecuteError::Store(_)) => "error",
    };
    metrics::counter!("ordo_commands_total", "aggregate" => A::STREAM_TYPE.as_str(), "outcome" => label)
        .increment(1);
    let executed = outcome.map_err(|e| match e {
        eventstore::executor::ExecuteError::Store(eventstore::StoreError::CommandIdReused {
            ..
        }) => ApiError::IdempotencyMismatch(
            "this Idempotency-Key was used for a different request".into(),
        ),
        other => other.into(),
    })?;
    let position = match executed.position {
        Some(position) => position,
        // Nothing changed: the point after the stream's last event.
        None => state
            .store
            .stream_head(&executed.stream_id)
            .await?
            .unwrap_or_default(),
    };
    let answer = CommandResponse {
        id,
        version: executed.version,
        position: position.to_string(),
        status: None,
    };
    Ok((executed, answer))
}
