//! The command executor: load an aggregate, let the domain decide, append what
//! it decided, and on a concurrent change start over from fresh state.
//!
//! Loading reads the latest snapshot of the stream (if one in this build's
//! layout exists) and the events after it. Products see one event per
//! reservation, so their streams grow long; a snapshot every
//! [`SNAPSHOT_EVERY`] versions keeps a load to a handful of rows.
//!
//! - this module: [`Executor`]: load, execute, retry on conflict.
//! - `cache`: the states this process loaded or wrote recently.
//! - `place_order`: [`Executor::place_order`], the one command decided
//!   against other aggregates' states.

mod cache;
mod place_order;

use std::sync::Arc;
use std::time::Duration;

use domain::aggregate::Aggregate;
use domain::event::{ClaimAction, DomainEvent};
use rand::Rng as _;
use uuid::Uuid;

use self::cache::StateCache;
use crate::error::StoreError;
use crate::event::{Metadata, NewEvent};
use crate::position::Position;
use crate::store::{AppendRequest, ClaimChange, EventStore, ExpectedVersion};
use crate::telemetry::{attr, Attribute, Hop, Kind, TraceParent};

/// Versions between snapshots.
pub const SNAPSHOT_EVERY: u64 = 64;
/// Bump when a state type changes meaning without changing shape, so old
/// snapshots are ignored (a change of shape is noticed when decoding fails).
const SNAPSHOT_LAYOUT: u32 = 1;
/// Events read per round trip when loading.
const LOAD_PAGE: i64 = 1000;
/// Attempts on `Conflict` before giving up.
const MAX_ATTEMPTS: u32 = 10;

/// Where a command comes from: ids stored as the events' metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandContext {
    /// Executing the same id again returns the first result and appends nothing.
    pub command_id: Option<String>,
    /// Shared by everything one request or order causes.
    pub correlation_id: Option<Uuid>,
    /// The event or request that caused this command.
    pub causation_id: Option<Uuid>,
    /// The request's trace id.
    pub trace_id: Option<String>,
    /// The trace the command belongs to: its `append` span is a child of
    /// this context, and its events carry the append's.
    pub trace: TraceParent,
    /// Who asks: `token:<id>`, `jwt:<issuer>#<sub>`, `saga`, `system`.
    pub actor: Option<String>,
}

impl CommandContext {
    /// The events' metadata; `trace` is the append span's context.
    fn metadata(&self, trace: TraceParent) -> Metadata {
        Metadata {
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            command_id: self.command_id.clone(),
            trace_id: self
                .trace_id
                .clone()
                .or_else(|| trace.trace_id().map(str::to_owned)),
            traceparent: trace.traceparent,
            tracestate: trace.tracestate,
            actor: self.actor.clone(),
        }
    }
}

/// An aggregate as loaded from the store.
#[derive(Debug, Clone)]
pub struct Loaded<A: Aggregate> {
    /// Its state after every event, shared with this process's cache of
    /// states (a product's open reservations make it large).
    pub state: Arc<A::State>,
    /// Its version (0: no such stream).
    pub version: u64,
    /// Version of the snapshot it started from (0: none).
    snapshot_version: u64,
}

/// What executing a command did.
#[derive(Debug, Clone)]
pub struct Executed<A: Aggregate> {
    /// The stream.
    pub stream_id: String,
    /// The stream's version afterwards.
    pub version: u64,
    /// Position of the last event written; `None` when the command decided
    /// nothing needed to change (no event).
    pub position: Option<Position>,
    /// The events written (empty for a replay or a no-op).
    pub events: Vec<A::Event>,
    /// Their ids.
    pub event_ids: Vec<Uuid>,
    /// The state afterwards, shared with this process's cache of states.
    pub state: Arc<A::State>,
    /// True when the command id had already been executed.
    pub replayed: bool,
}

/// Why a command was not executed.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E: std::error::Error + 'static> {
    /// The domain refused it.
    #[error(transparent)]
    Rejected(E),
    /// A unique value it needs is taken.
    #[error("{kind} {value:?} is already taken")]
    Duplicate {
        /// `email`, `sku`.
        kind: String,
        /// The value.
        value: String,
    },
    /// Other writers kept changing the stream; every attempt lost.
    #[error("stream {stream_id} kept changing concurrently; try again")]
    Conflict {
        /// The contended stream.
        stream_id: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl<E: std::error::Error + 'static> From<StoreError> for ExecuteError<E> {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Duplicate { kind, value } => ExecuteError::Duplicate { kind, value },
            StoreError::Conflict { stream_id, .. } => ExecuteError::Conflict { stream_id },
            other => ExecuteError::Store(other),
        }
    }
}

/// Executes commands against the store.
#[derive(Debug, Clone)]
pub struct Executor {
    store: EventStore,
    cache: Arc<StateCache>,
    /// Orders a user may hold placed and not yet paid, cancelled or
    /// rejected (`None`: no limit); see [`Executor::place_order`].
    unpaid_cap: Option<u32>,
}

impl Executor {
    /// An executor on `store`.
    pub fn new(store: EventStore) -> Executor {
        Executor {
            store,
            cache: Arc::new(StateCache::new(cache::CAPACITY)),
            unpaid_cap: None,
        }
    }

    /// Places orders only while their user holds fewer than `cap` unpaid
    /// ones (`None`: no limit).
    pub fn with_unpaid_cap(mut self, cap: Option<u32>) -> Executor {
        self.unpaid_cap = cap.filter(|c| *c > 0);
        self
    }

    /// An executor on another store (another pool) sharing this one's cache
    /// of recent states: roles of one process that run commands on the same
    /// streams (the API places an order, the saga confirms it) then load each
    /// other's writes without a query for a snapshot.
    pub fn sharing_cache(&self, store: EventStore) -> Executor {
        Executor {
            store,
            cache: self.cache.clone(),
            unpaid_cap: self.unpaid_cap,
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Where loading `stream_id` starts: this process's cached state, else
    /// the latest snapshot (one query), else the empty stream.
    async fn starting_point<A: Aggregate>(
        &self,
        stream_id: &str,
    ) -> Result<(Arc<A::State>, u64, u64), StoreError> {
        if let Some((version, state, snapshot_version)) = self.cache.get::<A>(stream_id) {
            return Ok((state, version, snapshot_version));
        }
        let format = snapshot_format::<A>();
        let (state, version) = match self.store.load_snapshot(stream_id, &format).await? {
            Some((version, state)) => match serde_json::from_value::<A::State>(state) {
                Ok(state) => (state, version),
                Err(e) => {
                    tracing::debug!(stream_id, error = %e, "ignoring unreadable snapshot");
                    (A::State::default(), 0)
                }
            },
            None => (A::State::default(), 0),
        };
        Ok((Arc::new(state), version, version))
    }

    /// Loads an aggregate: from this process's cache of recent states, or
    /// the latest snapshot; then the events after it (usually none, one
    /// query either way when cached).
    pub async fn load<A: Aggregate>(&self, stream_id: &str) -> Result<Loaded<A>, StoreError> {
        let (mut state, mut version, snapshot_version) =
            self.starting_point::<A>(stream_id).await?;
        loop {
            let page = self
                .store
                .read_stream(stream_id, version, LOAD_PAGE)
                .await?;
            let full = page.len() as i64 == LOAD_PAGE;
            if !page.is_empty() {
                let mut owned = Arc::unwrap_or_clone(state);
                for recorded in page {
                    owned = A::evolve(owned, &decode::<A>(&recorded)?);
                    version = recorded.version;
                }
                state = Arc::new(owned);
            }
            if !full {
                break;
            }
        }
        self.cache
            .put::<A>(stream_id, version, state.clone(), snapshot_version);
        Ok(Loaded {
            state,
            version,
            snapshot_version,
        })
    }

    /// Loads one aggregate of type `A` and several of type `B` as they are
    /// now, like [`Executor::load`] on each, but with the events after every
    /// cached state read in one query: what a decision spanning streams (an
    /// order's user and products) needs, for one round trip when cached.
    pub async fn load_together<A: Aggregate, B: Aggregate>(
        &self,
        first: &str,
        rest: &[String],
    ) -> Result<(Loaded<A>, Vec<Loaded<B>>), StoreError> {
        let (a_state, a_version, a_snapshot) = self.starting_point::<A>(first).await?;
        let mut bs = Vec::with_capacity(rest.len());
        for stream_id in rest {
            bs.push(self.starting_point::<B>(stream_id).await?);
        }
        let mut tails: Vec<(&str, u64)> = Vec::with_capacity(1 + rest.len());
        tails.push((first, a_version));
        tails.extend(rest.iter().zip(&bs).map(|(s, b)| (s.as_str(), b.1)));
        let events = self.store.read_stream_tails(&tails).await?;

        let mut a = Loaded::<A> {
            state: a_state,
            version: a_version,
            snapshot_version: a_snapshot,
        };
        let mut b: Vec<Loaded<B>> = bs
            .into_iter()
            .map(|(state, version, snapshot_version)| Loaded {
                state,
                version,
                snapshot_version,
            })
            .collect();
        for recorded in events {
            // Rows come grouped by stream, in the order asked; a stream asked
            // for twice gets its tail twice, and only the first fold counts.
            if recorded.stream_id == first && recorded.version == a.version + 1 {
                evolve_shared::<A>(&mut a.state, &decode::<A>(&recorded)?);
                a.version = recorded.version;
                continue;
            }
            for (stream_id, loaded) in rest.iter().zip(b.iter_mut()) {
                if *stream_id == recorded.stream_id && recorded.version == loaded.version + 1 {
                    evolve_shared::<B>(&mut loaded.state, &decode::<B>(&recorded)?);
                    loaded.version = recorded.version;
                    break;
                }
            }
        }
        self.cache
            .put::<A>(first, a.version, a.state.clone(), a.snapshot_version);
        for (stream_id, loaded) in rest.iter().zip(&b) {
            self.cache.put::<B>(
                stream_id,
                loaded.version,
                loaded.state.clone(),
                loaded.snapshot_version,
            );
        }
        Ok((a, b))
    }

    /// The aggregate as it stood at a position or time: its events up to
    /// there, folded (time travel; no snapshot, they only describe "now").
    pub async fn load_as_of<A: Aggregate>(
        &self,
        stream_id: &str,
        as_of: crate::store::AsOf,
    ) -> Result<Loaded<A>, StoreError> {
        let mut state = A::State::default();
        let mut version = 0;
        for recorded in self.store.read_stream_as_of(stream_id, as_of).await? {
            state = A::evolve(state, &decode::<A>(&recorded)?);
            version = recorded.version;
        }
        Ok(Loaded {
            state: Arc::new(state),
            version,
            snapshot_version: 0,
        })
    }

    /// Loads, decides and appends, retrying from fresh state on `Conflict` up
    /// to a bound, with jittered pauses so contending writers spread out.
    #[tracing::instrument(level = "debug", skip_all, fields(stream_id, command_id = ctx.command_id.as_deref()))]
    pub async fn execute<A: Aggregate>(
        &self,
        stream_id: &str,
        command: A::Command,
        ctx: &CommandContext,
    ) -> Result<Executed<A>, ExecuteError<A::Error>> {
        self.execute_claiming::<A>(stream_id, command, ctx, &[])
            .await
    }

    /// [`Executor::execute`], the append also taking `extra` claims (an
    /// unpaid-order slot a placement holds).
    pub(crate) async fn execute_claiming<A: Aggregate>(
        &self,
        stream_id: &str,
        command: A::Command,
        ctx: &CommandContext,
        extra: &[ClaimChange],
    ) -> Result<Executed<A>, ExecuteError<A::Error>> {
        // The command's hop: a child of the trace it came with; its events
        // carry this span's context, so their publishes continue from it.
        let hop = Hop::start("append", Kind::Internal, &ctx.trace, || {
            let mut attributes = vec![
                Attribute::new(attr::DB_SYSTEM, "postgresql"),
                Attribute::new(attr::DB_OPERATION, "append"),
                Attribute::new(attr::STREAM_ID, stream_id.to_owned()),
            ];
            if let Some(command_id) = &ctx.command_id {
                attributes.push(Attribute::new(attr::COMMAND_ID, command_id.clone()));
            }
            attributes
        });
        let trace = hop.carry(&ctx.trace);
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match self
                .execute_once::<A>(stream_id, command.clone(), ctx, &trace, attempt == 1, extra)
                .await
            {
                Err(ExecuteError::Conflict { .. }) if attempt < MAX_ATTEMPTS => {
                    let ceiling = 1u64 << attempt.min(7);
                    let pause = rand::rng().random_range(0..=ceiling);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                other => break other,
            }
        };
        if hop.is_recording() {
            hop.set(|| Attribute::new(attr::ATTEMPT, i64::from(attempt)));
            match &result {
                Ok(executed) => {
                    hop.set(|| Attribute::new(attr::STREAM_VERSION, executed.version as i64));
                    hop.set(|| Attribute::new(attr::BATCH_SIZE, executed.event_ids.len() as i64));
                    if let Some(position) = executed.position {
                        hop.set(|| Attribute::new(attr::POSITION, position.to_string()));
                    }
                    if executed.replayed {
                        hop.set(|| Attribute::new("ordo.replayed", true));
                    }
                }
                Err(e) => hop.fail(|| e.to_string()),
            }
        }
        result
    }

    /// One attempt. With `trust_cache`, a state this process cached is
    /// decided on without asking the store whether the stream moved since:
    /// if it did, the append's version check fails and the next attempt
    /// loads afresh, so nothing is ever written on a stale state. A refusal
    /// or a no-op from a cached state is never answered as is: the state is
    /// loaded afresh and the command decided again first.
    async fn execute_once<A: Aggregate>(
        &self,
        stream_id: &str,
        command: A::Command,
        ctx: &CommandContext,
        trace: &TraceParent,
        trust_cache: bool,
        extra: &[ClaimChange],
    ) -> Result<Executed<A>, ExecuteError<A::Error>> {
        // No look-up of the command id first: a command already executed is
        // caught by the append (the id is unique) or, when the stream has
        // moved on so that nothing or a refusal follows, checked then.
        // A cached state is used only when it yields events to append.
        //
        // A stream this process has not cached is taken, on that first try,
        // to be new: most are (an order placed under a fresh id), and for
        // one that is not the append's "no stream yet" check fails, or the
        // empty state refuses the command, and the state is then loaded.
        let from_cache = trust_cache
            .then(|| {
                self.cache
                    .get::<A>(stream_id)
                    .unwrap_or_else(|| (0, Arc::default(), 0))
            })
            .and_then(|(version, state, snapshot_version)| {
                match A::decide(&state, command.clone()) {
                    Ok(events) if !events.is_empty() => Some((
                        Loaded {
                            state,
                            version,
                            snapshot_version,
                        },
                        Ok(events),
                    )),
                    _ => None,
                }
            });
        let (loaded, decided) = match from_cache {
            Some(decided) => decided,
            None => {
                let loaded = self.load::<A>(stream_id).await?;
                let decided = A::decide(&loaded.state, command);
                (loaded, decided)
            }
        };
        let events = match decided {
            Ok(events) => events,
            Err(refusal) => {
                // The same command may have run before (its effect is why it
                // is refused now): then this is a retry.
                if let Some(command_id) = &ctx.command_id {
                    if let Some(done) = self.store.executed_command(command_id).await? {
                        return self.replay::<A>(stream_id, ctx, done).await;
                    }
                }
                return Err(ExecuteError::Rejected(refusal));
            }
        };
        if events.is_empty() {
            // The same command may have run before (its effect is why
            // nothing is left to do): then answer as a retry.
            if let Some(command_id) = &ctx.command_id {
                if let Some(done) = self.store.executed_command(command_id).await? {
                    return self.replay::<A>(stream_id, ctx, done).await;
                }
            }
            return Ok(Executed {
                stream_id: stream_id.to_owned(),
                version: loaded.version,
                position: None,
                event_ids: Vec::new(),
                events,
                state: loaded.state,
                replayed: false,
            });
        }
        let new_events: Vec<NewEvent> = events
            .iter()
            .map(|e| NewEvent {
                event_id: Uuid::now_v7(),
                event_type: e.event_type().to_owned(),
                schema_version: e.schema_version() as i32,
                data: e.to_data(),
            })
            .collect();
        // Each event's claims in the state just before it (most commands
        // make one event: the loaded state, not cloned).
        let mut claims: Vec<ClaimChange> = extra.to_vec();
        let mut folded: Option<A::State> = None;
        for (i, event) in events.iter().enumerate() {
            let next = {
                let before: &A::State = folded.as_ref().unwrap_or(&*loaded.state);
                claims.extend(A::claims(before, event).into_iter().map(|c| ClaimChange {
                    kind: c.kind.name(),
                    value: c.value,
                    take: c.action == ClaimAction::Take,
                }));
                (i + 1 < events.len()).then(|| A::evolve(before.clone(), event))
            };
            if next.is_some() {
                folded = next;
            }
        }
        let metadata = ctx.metadata(trace.clone());
        let expected = match loaded.version {
            0 => ExpectedVersion::NoStream,
            n => ExpectedVersion::Exact(n),
        };
        let appended = self
            .store
            .append(AppendRequest {
                stream_id,
                stream_type: A::STREAM_TYPE.as_str(),
                expected,
                events: &new_events,
                metadata: &metadata,
                claims: &claims,
            })
            .await?;
        if appended.replayed {
            // The same command id committed concurrently.
            return self.replay::<A>(stream_id, ctx, appended).await;
        }
        // The cache's copy of the state decided on is superseded now: let
        // go of it, so the state is evolved in place rather than copied
        // whole (unless someone else is reading it this moment).
        self.cache.forget(stream_id, loaded.version);
        let state = Arc::new(
            events
                .iter()
                .fold(Arc::unwrap_or_clone(loaded.state), A::evolve),
        );
        // Back in the cache before anything is awaited, so the stream is
        // missing from it only for the moment of the fold.
        let snapshot_due = appended.last_version - loaded.snapshot_version >= SNAPSHOT_EVERY;
        let snapshot_version = if snapshot_due {
            appended.last_version
        } else {
            loaded.snapshot_version
        };
        self.cache.put::<A>(
            stream_id,
            appended.last_version,
            state.clone(),
            snapshot_version,
        );
        if snapshot_due {
            self.snapshot::<A>(stream_id, appended.last_version, &state)
                .await;
        }
        Ok(Executed {
            stream_id: stream_id.to_owned(),
            version: appended.last_version,
            position: Some(appended.position),
            event_ids: new_events.iter().map(|e| e.event_id).collect(),
            events,
            state,
            replayed: false,
        })
    }

    async fn replay<A: Aggregate>(
        &self,
        stream_id: &str,
        ctx: &CommandContext,
        done: crate::store::Appended,
    ) -> Result<Executed<A>, ExecuteError<A::Error>> {
        if done.stream_id != stream_id {
            return Err(ExecuteError::Store(StoreError::CommandIdReused {
                command_id: ctx.command_id.clone().unwrap_or_default(),
                stream_id: done.stream_id,
            }));
        }
        let loaded = self.load::<A>(stream_id).await?;
        Ok(Executed {
            stream_id: stream_id.to_owned(),
            version: done.last_version,
            position: Some(done.position),
            event_ids: Vec::new(),
            events: Vec::new(),
            state: loaded.state,
            replayed: true,
        })
    }

    /// Best effort: a failed snapshot only costs the next load some reading.
    async fn snapshot<A: Aggregate>(&self, stream_id: &str, version: u64, state: &A::State) {
        let result = match serde_json::to_value(state) {
            Ok(value) => {
                self.store
                    .save_snapshot(stream_id, version, &snapshot_format::<A>(), &value)
                    .await
            }
            Err(e) => Err(e.into()),
        };
        if let Err(e) = result {
            tracing::warn!(stream_id, error = %e, "could not store snapshot");
        }
    }
}

/// Folds one event into a shared state: in place when nobody else holds
/// it, on a copy otherwise.
fn evolve_shared<A: Aggregate>(state: &mut Arc<A::State>, event: &A::Event) {
    let owned = Arc::unwrap_or_clone(std::mem::take(state));
    *state = Arc::new(A::evolve(owned, event));
}

/// A stored event as the aggregate's event type (upcast when older).
pub fn decode<A: Aggregate>(recorded: &crate::RecordedEvent) -> Result<A::Event, StoreError> {
    A::Event::from_stored(
        &recorded.event_type,
        u32::try_from(recorded.schema_version).unwrap_or(u32::MAX),
        recorded.data.clone(),
    )
    .map_err(|e| StoreError::Decode {
        event_id: recorded.event_id,
        event_type: recorded.event_type.clone(),
        schema_version: recorded.schema_version,
        reason: e.to_string(),
    })
}

fn snapshot_format<A: Aggregate>() -> String {
    format!("{}:{SNAPSHOT_LAYOUT}", A::STREAM_TYPE.as_str())
}
