//! What each subcommand does.

use anyhow::Context as _;
use eventstore::notify::LogListener;
use eventstore::EventStore;
use projectors::Projection;
use tokio_util::sync::CancellationToken;

use crate::config::{BenchScenario, Cli, Command, GlobalArgs, HttpArgs, SagaArgs};
use crate::roles::Roles;
use crate::shutdown;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let global = cli.global;
    match cli.command {
        Command::Up { http, saga } => up(&global, &http, &saga).await,
        Command::Api { http } => api(&global, &http).await,
        Command::Relay => relay(&global).await,
        Command::Migrate => migrate(&global).await,
        Command::Projector { names } => projector(&global, names).await,
        Command::Saga { saga } => saga_only(&global, &saga).await,
        Command::Rebuild {
            all,
            names,
            dry_run,
        } => {
            let pool = global.database_url.pool(10)?;
            check_postgres(&global, &pool).await?;
            let projections = if all { Projection::ALL.to_vec() } else { names };
            crate::ops::rebuild(&pool, &global.stream, projections, dry_run).await
        }
        Command::Events(args) => {
            let pool = global.database_url.pool(2)?;
            check_postgres(&global, &pool).await?;
            crate::events::run(&EventStore::new(pool), args).await
        }
        Command::Check => {
            let pool = global.database_url.pool(10)?;
            check_postgres(&global, &pool).await?;
            let nats = eventstore::nats::connect(&global.nats_url, "ordo-check").await?;
            crate::ops::check(&pool, &async_nats::jetstream::new(nats), &global.stream).await
        }
        Command::Status => {
            let pool = global.database_url.pool(2)?;
            check_postgres(&global, &pool).await?;
            crate::ops::status(&EventStore::new(pool), &global.stream).await
        }
        Command::Bench { scenario } => bench(&global, scenario).await,
    }
}

async fn migrate(global: &GlobalArgs) -> anyhow::Result<()> {
    let report = eventstore::migrations::migrate(&global.database_url).await?;
    if report.applied.is_empty() {
        println!(
            "schema is up to date ({} migrations)",
            report.already_applied.len()
        );
    } else {
        println!(
            "applied {} migration(s): {:?}; {} already applied",
            report.applied.len(),
            report.applied,
            report.already_applied.len()
        );
    }
    Ok(())
}

/// Connections the roles of one process share.
struct Connections {
    pool: deadpool_postgres::Pool,
    nats: async_nats::Client,
    listener: LogListener,
}

/// Fails fast, with the readable error, when PostgreSQL is not there.
async fn check_postgres(global: &GlobalArgs, pool: &deadpool_postgres::Pool) -> anyhow::Result<()> {
    drop(pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => global.database_url.classify(e),
        other => eventstore::StoreError::from(other),
    })?);
    Ok(())
}

/// Connects as `name` (to NATS); the shared pool, which only projectors work
/// on (every other role has its own), gives the server `pool_name`.
async fn connect(global: &GlobalArgs, name: &str, pool_name: &str) -> anyhow::Result<Connections> {
    let pool = global.database_url.named(pool_name).pool(32)?;
    check_postgres(global, &pool).await?;
    let nats = eventstore::nats::connect(&global.nats_url, name).await?;
    let listener = LogListener::spawn(global.database_url.named("ordo-listener"));
    Ok(Connections {
        pool,
        nats,
        listener,
    })
}

async fn bind(http: &HttpArgs) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(http.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}; set ORDO_HTTP_ADDR", http.http_addr))
}

/// The API role.
async fn api_role(
    state: api::AppState,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Ok(api::serve(listener, state, shutdown).await?)
}

/// The relay role.
fn relay_role(
    global: &GlobalArgs,
    connections: &Connections,
    shutdown: CancellationToken,
) -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static> {
    let url = global.database_url.named("ordo-relay");
    // Its reads on connections of its own: they then show apart from the
    // projectors' writes, and never queue behind them.
    let store = url.pool(8).map(EventStore::new)?;
    let relay = eventstore::relay::Relay::new(
        store,
        url,
        async_nats::jetstream::new(connections.nats.clone()),
        connections.listener.clone(),
        eventstore::relay::RelayConfig::new(global.stream.clone(), global.subject_prefix.clone()),
    );
    Ok(async move { Ok(relay.run(shutdown).await?) })
}

/// The projector roles, one per projection.
fn projector_roles(
    roles: &mut Roles,
    global: &GlobalArgs,
    connections: &Connections,
    projections: &[Projection],
    shutdown: &CancellationToken,
) {
    for projection in projections {
        let projector = projectors::Projector::new(
            *projection,
            connections.pool.clone(),
            global.database_url.named("ordo-projector"),
            async_nats::jetstream::new(connections.nats.clone()),
            projectors::ProjectorConfig::new(global.stream.clone(), global.subject_prefix.clone()),
        );
        let shutdown = shutdown.clone();
        roles.spawn(projection.role(), async move {
            Ok(projector.run(shutdown).await?)
        });
    }
}

async fn projector(global: &GlobalArgs, names: Vec<Projection>) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal();
    let connections = connect(global, "ordo-projector", "ordo-projector").await?;
    let projections = if names.is_empty() {
        Projection::ALL.to_vec()
    } else {
        names
    };
    let mut roles = Roles::new(shutdown.clone());
    projector_roles(&mut roles, global, &connections, &projections, &shutdown);
    roles.run_until_stopped().await
}

/// The saga role, on pools of its own (its command drivers run many
/// commands at once and must not starve the API of connections; its own
/// transactions have a few more, so they never wait behind its commands).
/// With `sharing`, its executor shares that one's cache of recent states
/// (`ordo up`: the saga then loads the orders the API just placed from memory).
fn saga_role(
    global: &GlobalArgs,
    saga: &SagaArgs,
    connections: &Connections,
    sharing: Option<&eventstore::executor::Executor>,
    shutdown: CancellationToken,
) -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static> {
    let store = EventStore::new(global.database_url.named("ordo-saga-commands").pool(24)?);
    let executor = match sharing {
        Some(executor) => executor.sharing_cache(store),
        None => eventstore::executor::Executor::new(store),
    };
    let config = sagas::RunnerConfig::new(
        global.stream.clone(),
        global.subject_prefix.clone(),
        saga.payment_timeout,
    );
    let runner = sagas::SagaRunner::new(
        executor,
        global.database_url.named("ordo-saga"),
        async_nats::jetstream::new(connections.nats.clone()),
        config,
    )?;
    Ok(async move { Ok(runner.run(shutdown).await?) })
}

async fn saga_only(global: &GlobalArgs, saga: &SagaArgs) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal();
    let connections = connect(global, "ordo-saga", "ordo-saga").await?;
    let mut roles = Roles::new(shutdown.clone());
    roles.spawn(
        "saga",
        saga_role(global, saga, &connections, None, shutdown)?,
    );
    roles.run_until_stopped().await
}

async fn up(global: &GlobalArgs, http: &HttpArgs, saga: &SagaArgs) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal();
    eventstore::migrations::migrate(&global.database_url).await?;
    let connections = connect(global, "ordo-up", "ordo-projector").await?;
    let listener = bind(http).await?;
    let mut roles = Roles::new(shutdown.clone());
    roles.spawn("relay", relay_role(global, &connections, shutdown.clone())?);
    projector_roles(
        &mut roles,
        global,
        &connections,
        &Projection::ALL,
        &shutdown,
    );
    let state = api_state(global, http, &connections)?;
    roles.spawn(
        "saga",
        saga_role(
            global,
            saga,
            &connections,
            Some(&state.executor),
            shutdown.clone(),
        )?,
    );
    roles.spawn("api", api_role(state, listener, shutdown));
    roles.run_until_stopped().await
}

/// The API's state: commands and reads on pools of their own, each of
/// `--api-connections`.
fn api_state(
    global: &GlobalArgs,
    http: &HttpArgs,
    connections: &Connections,
) -> anyhow::Result<api::AppState> {
    let size = usize::from(http.api_connections);
    Ok(api::AppState::with_pools(
        global.database_url.named("ordo-api").pool(size)?,
        global.database_url.named("ordo-api-reads").pool(size)?,
        connections.nats.clone(),
    )
    .with_admission(http.admission_lag))
}

async fn api(global: &GlobalArgs, http: &HttpArgs) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal();
    let connections = connect(global, "ordo-api", "ordo-api").await?;
    let listener = bind(http).await?;
    let mut roles = Roles::new(shutdown.clone());
    let state = api_state(global, http, &connections)?;
    roles.spawn("api", api_role(state, listener, shutdown));
    roles.run_until_stopped().await
}

async fn relay(global: &GlobalArgs) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal();
    let connections = connect(global, "ordo-relay", "ordo-relay").await?;
    let mut roles = Roles::new(shutdown.clone());
    roles.spawn("relay", relay_role(global, &connections, shutdown)?);
    roles.run_until_stopped().await
}

async fn bench(global: &GlobalArgs, scenario: BenchScenario) -> anyhow::Result<()> {
    match scenario {
        BenchScenario::Append {
            writers,
            events,
            batch,
            json,
        } => crate::bench::append::run(global, writers, events, batch, json.as_deref()).await,
        BenchScenario::Relay { events, json } => {
            crate::bench::relay::run(global, events, json.as_deref()).await
        }
        BenchScenario::Rebuild { events, json } => {
            crate::bench::rebuild::run(global, events, json.as_deref()).await
        }
        BenchScenario::PlaceOrders {
            duration,
            concurrency,
            users,
            products,
            url,
            http,
            json,
            drain,
            acked,
        } => {
            let url = url.unwrap_or_else(|| format!("http://{}", http.http_addr));
            let settings = crate::bench::place_orders::Settings {
                duration,
                concurrency,
                users,
                products,
                url,
                drain,
                acked,
            };
            crate::bench::place_orders::run(settings, json.as_deref()).await
        }
    }
}
