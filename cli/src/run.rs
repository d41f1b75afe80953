//! What each subcommand does.

use anyhow::Context as _;
use eventstore::EventStore;
use projectors::Projection;
use system::{Roles, Settings, System};

use crate::config::{BenchScenario, Cli, Command, GlobalArgs, HttpArgs, SagaArgs};
use crate::shutdown;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // The long-running roles export traces when an OTLP endpoint is set.
    let role = match &cli.command {
        Command::Up { .. } => Some("up"),
        Command::Api { .. } => Some("api"),
        Command::Relay => Some("relay"),
        Command::Projector { .. } => Some("projector"),
        Command::Saga { .. } => Some("saga"),
        _ => None,
    };
    let tracing = role.map(crate::telemetry::Tracing::init).transpose()?;
    let result = run_command(cli).await;
    if let Some(tracing) = tracing {
        tracing.shutdown().await;
    }
    result
}

async fn run_command(cli: Cli) -> anyhow::Result<()> {
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
            let nats = eventstore::nats::connect(&global.nats()?, "ordo-check").await?;
            crate::ops::check(&pool, &async_nats::jetstream::new(nats), &global.stream).await
        }
        Command::Status => {
            let pool = global.database_url.pool(2)?;
            check_postgres(&global, &pool).await?;
            crate::ops::status(&EventStore::new(pool), &global.stream).await
        }
        Command::Token { action } => {
            if matches!(action, crate::config::TokenAction::Generate) {
                return crate::token::run(
                    &api::auth::TokenStore::new(global.database_url.pool(1)?),
                    action,
                )
                .await;
            }
            ensure_schema(&global).await?;
            let pool = global.database_url.pool(2)?;
            check_postgres(&global, &pool).await?;
            crate::token::run(&api::auth::TokenStore::new(pool), action).await
        }
        Command::Bench { scenario } => bench(&global, scenario).await,
        Command::NatsConfig(args) => crate::nats_config::run(&global, &args),
        Command::ProtectStream => protect_stream(&global).await,
    }
}

/// `ordo protect-stream`: deny_delete and deny_purge on the existing stream.
async fn protect_stream(global: &GlobalArgs) -> anyhow::Result<()> {
    let nats = eventstore::nats::connect(&global.nats()?, "ordo-protect-stream").await?;
    let js = async_nats::jetstream::new(nats);
    match eventstore::nats::protect_stream(&js, &global.stream, &global.subject_prefix).await? {
        eventstore::nats::Protection::Already => println!(
            "stream {} already denies message deletes and purges",
            global.stream
        ),
        eventstore::nats::Protection::Added => println!(
            "stream {} now denies message deletes and purges (deny_delete, deny_purge)",
            global.stream
        ),
    }
    Ok(())
}

async fn migrate(global: &GlobalArgs) -> anyhow::Result<()> {
    let owner = global
        .migrate_database_url
        .as_ref()
        .unwrap_or(&global.database_url);
    let report = eventstore::migrations::migrate_with(owner, &global.runtime_role).await?;
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

/// Migrates when this process may (as ORDO_MIGRATE_DATABASE_URL, or as
/// DATABASE_URL when its role owns the schema); otherwise checks that every
/// migration is applied, failing with what to run when not.
async fn ensure_schema(global: &GlobalArgs) -> anyhow::Result<()> {
    use eventstore::migrations::SchemaCheck;
    match eventstore::migrations::ensure_current(
        &global.database_url,
        global.migrate_database_url.as_ref(),
        &global.runtime_role,
    )
    .await?
    {
        SchemaCheck::Migrated(_) => {}
        SchemaCheck::Current => tracing::info!(
            "DATABASE_URL's role may not migrate; every migration is applied, going on"
        ),
    }
    Ok(())
}

/// Fails fast, with the readable error, when PostgreSQL is not there.
async fn check_postgres(global: &GlobalArgs, pool: &deadpool_postgres::Pool) -> anyhow::Result<()> {
    drop(pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => global.database_url.classify(e),
        other => eventstore::StoreError::from(other),
    })?);
    Ok(())
}

/// The settings every role is built from.
fn settings(
    global: &GlobalArgs,
    http: Option<&HttpArgs>,
    saga: Option<&SagaArgs>,
) -> anyhow::Result<Settings> {
    let mut settings = Settings::new(
        global.database_url.clone(),
        global.nats()?,
        global.stream.clone(),
        global.subject_prefix.clone(),
    );
    settings.unprotected_stream = global.unprotected_stream();
    if let Some(http) = http {
        settings.api_connections = usize::from(http.api_connections);
        settings.admission_lag = http.admission_lag;
        settings.max_connections = http.max_connections as usize;
        settings.max_unpaid_orders = http.max_unpaid_orders.0;
        let auth = &http.auth;
        settings.auth = system::AuthSettings {
            enabled: auth.auth == crate::config::Switch::On,
            bootstrap_token_file: auth.bootstrap_token_file.clone(),
            public_catalogue: auth.public_catalogue,
            rate_limit: auth.rate_limit,
            trusted_proxies: auth.trusted_proxies.0.clone(),
            jwt: match (&auth.jwt_issuer, &auth.jwt_audience, &auth.jwt_jwks) {
                (Some(issuer), Some(audience), Some(jwks)) => Some(api::auth::jwt::JwtConfig {
                    issuer: issuer.clone(),
                    audience: audience.clone(),
                    jwks: jwks.clone(),
                    user_claim: auth.jwt_user_claim.clone(),
                }),
                _ => None,
            },
        };
    }
    if let Some(saga) = saga {
        settings.payment_timeout = saga.payment_timeout;
    }
    Ok(settings)
}

async fn bind(http: &HttpArgs) -> anyhow::Result<tokio::net::TcpListener> {
    if http.auth.auth == crate::config::Switch::Off && !http.http_addr.ip().is_loopback() {
        anyhow::bail!(
            "ORDO_AUTH=off is allowed only on a loopback address, and ORDO_HTTP_ADDR is {}; \
             create tokens (`ordo token create --scope admin`) instead",
            http.http_addr
        );
    }
    tokio::net::TcpListener::bind(http.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}; set ORDO_HTTP_ADDR", http.http_addr))
}

async fn up(global: &GlobalArgs, http: &HttpArgs, saga: &SagaArgs) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal();
    ensure_schema(global).await?;
    let system = System::connect(settings(global, Some(http), Some(saga))?, "ordo-up").await?;
    let listener = bind(http).await?;
    let mut roles = Roles::new(shutdown);
    system.start_all(&mut roles, listener).await?;
    roles.run_until_stopped().await
}

async fn api(global: &GlobalArgs, http: &HttpArgs) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal();
    let system = System::connect(settings(global, Some(http), None)?, "ordo-api").await?;
    let listener = bind(http).await?;
    let mut roles = Roles::new(shutdown);
    let state = system.api().await?;
    system.start_api(&mut roles, state, listener);
    roles.run_until_stopped().await
}

async fn relay(global: &GlobalArgs) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal();
    let system = System::connect(settings(global, None, None)?, "ordo-relay").await?;
    let mut roles = Roles::new(shutdown);
    system.start_relay(&mut roles)?;
    roles.run_until_stopped().await
}

async fn projector(global: &GlobalArgs, names: Vec<Projection>) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal();
    let system = System::connect(settings(global, None, None)?, "ordo-projector").await?;
    let projections = if names.is_empty() {
        Projection::ALL.to_vec()
    } else {
        names
    };
    let mut roles = Roles::new(shutdown);
    system.start_projectors(&mut roles, &projections)?;
    roles.run_until_stopped().await
}

async fn saga_only(global: &GlobalArgs, saga: &SagaArgs) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal();
    let system = System::connect(settings(global, None, Some(saga))?, "ordo-saga").await?;
    let mut roles = Roles::new(shutdown);
    system.start_saga(&mut roles, None)?;
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
            http_addr,
            json,
            drain,
            acked,
            token,
        } => {
            let url = url.unwrap_or_else(|| format!("http://{http_addr}"));
            let settings = crate::bench::place_orders::Settings {
                duration,
                concurrency,
                users,
                products,
                url,
                drain,
                acked,
                token,
            };
            crate::bench::place_orders::run(settings, json.as_deref()).await
        }
    }
}
