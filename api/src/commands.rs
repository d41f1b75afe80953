//! What every command endpoint shares: [`Command`], the one extractor every
//! command handler takes (state, request metadata, idempotency key, route,
//! body as sent and as read), and what runs a command through it:
//! idempotency keys, the metadata events are stamped with, executing through
//! the executor, and the answer.

use std::future::Future;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::aggregate::Aggregate;
use domain::order::Order;
use domain::product::Product;
use domain::user::User;
use eventstore::executor::{CommandContext, ExecuteError, Executed};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{Actor, Caller};
use crate::error::ApiError;
use crate::extract::{Body, CommandInput, IdPath, IdempotencyKey, RequestMeta};
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

/// What a command handler is given: everything about the request a command
/// needs, read in one place, so that what every command must know of its
/// caller is added here once.
///
/// Read in the order failures are reported: the metadata, the
/// `Idempotency-Key` (400), the `{id}` of the path (400), the body (413,
/// 400), then the body as `T` (415, 400).
#[derive(Debug)]
pub struct Command<T> {
    /// Handles to the store, the executor and the pools.
    pub state: AppState,
    /// Who asks; a customer is confined to its own user and orders.
    pub caller: Caller,
    /// Where the request comes from: request id, trace.
    pub meta: RequestMeta,
    /// `Idempotency-Key`, checked, and prefixed by the caller's actor
    /// (unless anonymous).
    pub idempotency_key: Option<String>,
    /// What an idempotency key is bound to and an id derived from it is
    /// derived from: the method and the route's path with the id it names,
    /// like `POST /orders/<uuid>/pay`.
    pub route: String,
    /// The `{id}` of the path: the aggregate a command on an existing one
    /// is for.
    target: Option<Uuid>,
    /// The body as sent: a repeat under one idempotency key must send the
    /// same bytes.
    pub body: Bytes,
    /// The body as `T` reads it.
    pub input: T,
}

impl<T: CommandInput> FromRequest<AppState> for Command<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let caller = Caller::from_request_parts(&mut parts, state).await?;
        let meta = RequestMeta::from_request_parts(&mut parts, state).await?;
        let IdempotencyKey { key } = IdempotencyKey::from_request_parts(&mut parts, state).await?;
        // One caller's keys are not another's: a key names a request of
        // its caller's only, so nobody can replay (or learn of) another
        // caller's answer by guessing a key.
        let key = key.map(|key| match &caller.actor {
            Actor::Anonymous => key,
            actor => format!("{actor} {key}"),
        });
        let (route, target) = route(&mut parts, state).await?;
        let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
        let Body(body) = Body::from_request(Request::from_parts(parts, body), state).await?;
        let input = T::read(content_type.as_ref(), &body)?;
        Ok(Command {
            state: state.clone(),
            caller,
            meta,
            idempotency_key: key,
            route,
            target,
            body,
            input,
        })
    }
}

/// The route a command came by (see [`Command::route`]), named from the
/// router's own template so that no handler spells it, and the `{id}` in it.
/// The id is written as parsed (hyphenated, lowercase): one aggregate is one
/// route however the client spelled it.
async fn route<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<(String, Option<Uuid>), ApiError> {
    let template = parts
        .extensions
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .ok_or_else(|| ApiError::Internal("a command reached outside the router".into()))?;
    if !template.contains("{id}") {
        return Ok((format!("{} {template}", parts.method), None));
    }
    let IdPath(id) = IdPath::from_request_parts(parts, state).await?;
    let path = template.replace("{id}", &id.to_string());
    Ok((format!("{} {path}", parts.method), Some(id)))
}

/// What the API adds to an aggregate to run its commands.
pub trait Resource: Aggregate {
    /// The correlation id of the events of a command on aggregate `id`;
    /// `None`: the request's own id.
    fn correlation(id: Uuid) -> Option<Uuid> {
        let _ = id;
        None
    }

    /// The status an answer about this aggregate carries.
    fn status(state: &Self::State) -> Option<String> {
        let _ = state;
        None
    }

    /// The user it belongs to, for confining customers: `None` when it is
    /// nobody's (or does not exist).
    fn owner(id: Uuid, state: &Self::State) -> Option<Uuid>;

    /// What a missing one is answered with; also what a customer is
    /// answered about one that is not theirs, word for word.
    fn not_found(id: Uuid) -> ApiError {
        ApiError::NotFound(format!("no {} {id}", Self::STREAM_TYPE.as_str()))
    }
}

impl Resource for User {
    fn owner(id: Uuid, state: &Self::State) -> Option<Uuid> {
        state.user().map(|_| id)
    }
}

impl Resource for Product {
    fn owner(_: Uuid, _: &Self::State) -> Option<Uuid> {
        None
    }
}

impl Resource for Order {
    /// Everything an order causes shares its id as correlation id.
    fn correlation(id: Uuid) -> Option<Uuid> {
        Some(id)
    }

    fn status(state: &Self::State) -> Option<String> {
        state.status().map(|status| status.as_str().to_owned())
    }

    fn owner(_: Uuid, state: &Self::State) -> Option<Uuid> {
        state.order().map(|order| order.user_id.as_uuid())
    }
}

impl<T> Command<T> {
    /// The id of a new aggregate: the client's, or — under an
    /// `Idempotency-Key` — one derived from the key, so concurrent retries of
    /// one create all land on the same stream (and the executor's command id
    /// makes them one), or a fresh time-ordered one.
    pub fn new_id(&self, client_id: Option<Uuid>) -> Uuid {
        if let Some(id) = client_id {
            return id;
        }
        match &self.idempotency_key {
            Some(key) => {
                let digest =
                    Sha256::digest([self.route.as_bytes(), b"\0", key.as_bytes()].concat());
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(&digest[..16]);
                uuid::Builder::from_random_bytes(bytes).into_uuid()
            }
            None => Uuid::now_v7(),
        }
    }

    /// Creates aggregate `A` (its id from [`Command::new_id`]), answered
    /// with `status`.
    pub async fn create<A: Resource>(
        &self,
        client_id: Option<Uuid>,
        status: StatusCode,
        command: impl FnOnce(Uuid) -> A::Command,
    ) -> Result<Response, ApiError> {
        let id = self.new_id(client_id);
        self.run::<A, _, _>(id, client_id, |ctx| async move {
            let (_, answer) = execute::<A>(&self.state, id, command(id), &ctx).await?;
            Ok((status, answer))
        })
        .await
    }

    /// A command on the existing aggregate the path names, answered `200 OK`
    /// with its new version and position.
    pub async fn update<A: Resource>(&self, command: A::Command) -> Result<Response, ApiError> {
        let id = self.target.ok_or_else(|| {
            ApiError::Internal(format!("{} names no aggregate to update", self.route))
        })?;
        self.confine::<A>(id).await?;
        self.run::<A, _, _>(id, None, |ctx| async move {
            let (_, answer) = execute::<A>(&self.state, id, command, &ctx).await?;
            Ok((StatusCode::OK, answer))
        })
        .await
    }

    /// A customer may act only on its own user and orders: anything else
    /// is answered as if it did not exist.
    pub async fn confine<A: Resource>(&self, id: Uuid) -> Result<(), ApiError> {
        confine::<A>(&self.state, &self.caller, id).await
    }

    /// Runs a command on aggregate `id` of type `A` under the request's
    /// `Idempotency-Key`, if it has one (see [`idempotent`]); `run` receives
    /// the metadata its events carry. `client_id`: the id a create was given
    /// by the client, which makes a repeat with the same body a retry even
    /// without a key.
    pub async fn run<A: Resource, F, Fut>(
        &self,
        id: Uuid,
        client_id: Option<Uuid>,
        run: F,
    ) -> Result<Response, ApiError>
    where
        F: FnOnce(CommandContext) -> Fut,
        Fut: Future<Output = Result<(StatusCode, CommandResponse), ApiError>>,
    {
        let key = self.idempotency_key.as_deref();
        idempotent(
            &self.state,
            key,
            &self.route,
            &self.body,
            |key_command_id| {
                let command_id = key_command_id.or_else(|| {
                    client_id.map(|client_id| {
                        let stream_id = A::STREAM_TYPE.stream_id(client_id);
                        format!("create:{stream_id}:{}", request_hash(&[&self.body]))
                    })
                });
                run(self.context(A::correlation(id), command_id))
            },
        )
        .await
    }

    /// The metadata of a command: who caused it, what it belongs to.
    fn context(&self, correlation: Option<Uuid>, command_id: Option<String>) -> CommandContext {
        let causation = self.meta.causation_id();
        CommandContext {
            command_id,
            correlation_id: Some(correlation.unwrap_or(causation)),
            causation_id: Some(causation),
            trace_id: Some(self.meta.trace()),
            trace: self.meta.trace.clone(),
            actor: Some(self.caller.actor.to_string()),
        }
    }
}

/// `Ok` when `caller` may see aggregate `id` of type `A`; a customer is
/// told that another user's does not exist, in the very words a missing one
/// gets.
pub async fn confine<A: Resource>(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<(), ApiError> {
    if caller.confined_to().is_none() {
        return Ok(());
    }
    let loaded = state
        .executor
        .load::<A>(&A::STREAM_TYPE.stream_id(id))
        .await?;
    caller.may_see(A::owner(id, &loaded.state), || A::not_found(id))
}

/// A hex SHA-256 of the parts of a request.
fn request_hash(parts: &[&[u8]]) -> String {
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
async fn idempotent<F, Fut>(
    state: &AppState,
    key: Option<&str>,
    route: &str,
    body: &[u8],
    run: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(Option<String>) -> Fut,
    Fut: Future<Output = Result<(StatusCode, CommandResponse), ApiError>>,
{
    let Some(key) = key else {
        let (status, answer) = run(None).await?;
        return Ok((status, Json(answer)).into_response());
    };
    let hash = request_hash(&[route.as_bytes(), body]);
    let client = state.pool.get().await?;
    if let Some(answer) = stored(&client, key, &hash).await? {
        return Ok(answer);
    }
    let (status, answer) = run(Some(format!("idem:{key}"))).await?;
    let body = serde_json::to_value(&answer).map_err(|e| ApiError::Internal(e.to_string()))?;
    let inserted = client
        .execute(
            "insert into api.idempotency (key, request_hash, status, body) values ($1, $2, $3, $4)
             on conflict (key) do nothing",
            &[&key, &hash, &(status.as_u16() as i16), &body],
        )
        .await?;
    if inserted == 0 {
        // Another request stored an answer under this key meanwhile.
        if let Some(answer) = stored(&client, key, &hash).await? {
            return Ok(answer);
        }
    }
    Ok((status, Json(body)).into_response())
}

/// The answer stored under `key`, if there is one: replayed when it answered
/// the same request (`hash`), refused when another.
async fn stored(
    client: &deadpool_postgres::Client,
    key: &str,
    hash: &str,
) -> Result<Option<Response>, ApiError> {
    let Some(row) = client
        .query_opt(
            "select request_hash, status, body from api.idempotency where key = $1",
            &[&key],
        )
        .await?
    else {
        return Ok(None);
    };
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
    Ok(Some(response))
}

/// Executes a command and shapes the answer.
pub async fn execute<A: Resource>(
    state: &AppState,
    id: Uuid,
    command: A::Command,
    ctx: &CommandContext,
) -> Result<(Executed<A>, CommandResponse), ApiError> {
    let stream_id = A::STREAM_TYPE.stream_id(id);
    let outcome = state.executor.execute::<A>(&stream_id, command, ctx).await;
    answer(state, id, outcome).await
}

/// Counts what executing a command on aggregate `id` came to, and shapes the
/// answer.
pub async fn answer<A: Resource>(
    state: &AppState,
    id: Uuid,
    outcome: Result<Executed<A>, ExecuteError<A::Error>>,
) -> Result<(Executed<A>, CommandResponse), ApiError> {
    let label = match &outcome {
        Ok(_) => "ok",
        Err(ExecuteError::Rejected(_)) => "rejected",
        Err(ExecuteError::Duplicate { .. }) => "duplicate",
        Err(ExecuteError::Conflict { .. }) => "conflict",
        Err(ExecuteError::Store(_)) => "error",
    };
    metrics::counter!("ordo_commands_total", "aggregate" => A::STREAM_TYPE.as_str(), "outcome" => label)
        .increment(1);
    let executed = outcome.map_err(|e| match e {
        ExecuteError::Store(eventstore::StoreError::CommandIdReused { .. }) => {
            ApiError::IdempotencyMismatch(
                "this Idempotency-Key was used for a different request".into(),
            )
        }
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
        status: A::status(&executed.state),
    };
    Ok((executed, answer))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt as _;

    use super::*;

    async fn named(template: &str, path: &str) -> (String, Option<Uuid>) {
        let app = Router::new().route(
            template,
            post(|request: Request| async move {
                let (mut parts, _) = request.into_parts();
                let (route, id) = route(&mut parts, &()).await.unwrap();
                Json((route, id))
            }),
        );
        let request = Request::post(path).body(axum::body::Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    /// Idempotency keys are bound to these strings, and ids derived from
    /// keys are derived from them: they are what the handlers always wrote,
    /// the id as parsed whatever its spelling in the path.
    #[tokio::test]
    async fn routes_are_named_by_method_and_path_with_the_id_as_parsed() {
        assert_eq!(
            named("/users", "/users").await,
            ("POST /users".into(), None)
        );
        let id = Uuid::parse_str("0192a8c4-7e1f-7000-8000-00000000abcd").unwrap();
        assert_eq!(
            named(
                "/orders/{id}/pay",
                "/orders/0192A8C4-7E1F-7000-8000-00000000ABCD/pay"
            )
            .await,
            (format!("POST /orders/{id}/pay"), Some(id))
        );
    }
}
