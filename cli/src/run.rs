//! What each subcommand does.

use anyhow::Context as _;

use crate::config::{Cli, Command, GlobalArgs, HttpArgs};
use crate::roles::Roles;
use crate::shutdown;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let global = cli.global;
    match cli.command {
        Command::Up { http, saga: _ } => up(&global, &http).await,
        Command::Api { http } => api(&global, &http).await,
        Command::Migrate => migrate(&global).await,
        Command::Relay => not_yet("relay", "the event store and relay"),
        Command::Projector { .. } => not_yet("projector", "the projectors"),
        Command::Saga { .. } => not_yet("saga", "the order-fulfilment saga"),
        Command::Rebuild { .. } => not_yet("rebuild", "the projectors"),
        Command::Events(_) => not_yet("events", "the event store and relay"),
        Command::Check => not_yet("check", "the projectors"),
        Command::Status => not_yet("status", "the projectors"),
        Command::Bench { .. } => not_yet("bench", "the benchmarks"),
    }
}

/// Subcommands whose capability has not been built yet say so plainly.
fn not_yet(command: &str, arrives_with: &str) -> anyhow::Result<()> {
    anyhow::bail!("`ordo {command}` is not available yet; it arrives with {arrives_with}")
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

/// Connections every role shares.
struct Connections {
    pool: deadpool_postgres::Pool,
    nats: async_nats::Client,
}

async fn connect(global: &GlobalArgs, name: &str) -> anyhow::Result<Connections> {
    let pool = global.database_url.pool(32)?;
    // Fail fast with the readable error when PostgreSQL is not there.
    drop(pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => global.database_url.classify(e),
        other => eventstore::StoreError::from(other),
    })?);
    let nats = eventstore::nats::connect(&global.nats_url, name).await?;
    Ok(Connections { pool, nats })
}

async fn bind(http: &HttpArgs) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(http.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}; set ORDO_HTTP_ADDR", http.http_addr))
}

async fn up(global: &GlobalArgs, http: &HttpArgs) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal();
    eventstore::migrations::migrate(&global.database_url).await?;
    let connections = connect(global, "ordo-up").await?;
    let listener = bind(http).await?;
    let mut roles = Roles::new(shutdown.clone());
    let state = api::AppState {
        pool: connections.pool.clone(),
        nats: connections.nats.clone(),
    };
    roles.spawn("api", async move {
        Ok(api::serve(listener, state, shutdown).await?)
    });
    roles.run_until_stopped().await
}

async fn api(global: &GlobalArgs, http: &HttpArgs) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal();
    let connections = connect(global, "ordo-api").await?;
    let listener = bind(http).await?;
    let mut roles = Roles::new(shutdown.clone());
    let state = api::AppState {
        pool: connections.pool,
        nats: connections.nats,
    };
    roles.spawn("api", async move {
        Ok(api::serve(listener, state, shutdown).await?)
    });
    roles.run_until_stopped().await
}
