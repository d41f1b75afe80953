//! The command line and configuration (`docs/reference/cli.md`,
//! `docs/reference/configuration.md`).
//!
//! Every setting is an environment variable and also a flag (clap's `env`), and
//! is parsed into a typed value when the process starts, so a bad value stops
//! it with a one-line message before anything runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use eventstore::db::DatabaseUrl;
use eventstore::nats::{
    BusError, ConsumerName, InboxPrefix, NatsAuth, NatsConnect, NatsPassword, NatsTls, NatsUrl,
    StreamName, SubjectPrefix, Unprotected,
};

/// ordo: an event-sourced order system on PostgreSQL and NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "ordo", version, propagate_version = true)]
pub struct Cli {
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Settings every subcommand understands.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// PostgreSQL holding the event store and read models; the database is created if missing.
    /// TLS: add `?sslmode=verify-full&sslrootcert=<CA file>` (or `sslmode=require`).
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://127.0.0.1:5432/ordo",
          value_parser = parse_database_url, global = true, hide_env_values = true)]
    pub database_url: DatabaseUrl,

    /// PostgreSQL as the schema's owner, for `ordo migrate` (and `ordo up`,
    /// which migrates first); default: DATABASE_URL. Every other connection
    /// uses DATABASE_URL, which should name a login role that is a member of
    /// the runtime role.
    #[arg(long = "migrate-database-url", env = "ORDO_MIGRATE_DATABASE_URL",
          value_parser = parse_database_url, global = true, hide_env_values = true)]
    pub migrate_database_url: Option<DatabaseUrl>,

    /// The NOLOGIN role migrations create (if missing) and give exactly the
    /// privileges ordo's processes use; grant it to the login role of
    /// DATABASE_URL. Two deployments on one server use different names.
    #[arg(
        long = "runtime-role",
        env = "ORDO_RUNTIME_ROLE",
        default_value = "ordo_runtime",
        global = true
    )]
    pub runtime_role: eventstore::privileges::RuntimeRole,

    /// NATS server with JetStream.
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    pub nats_url: NatsUrl,

    /// NATS user, with NATS_PASSWORD (`ordo nats-config` writes one per role).
    #[arg(long = "nats-user", env = "NATS_USER", global = true)]
    pub nats_user: Option<String>,

    /// Password of NATS_USER.
    #[arg(
        long = "nats-password",
        env = "NATS_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub nats_password: Option<NatsPassword>,

    /// NATS credentials file (a user JWT and its nkey seed), instead of a user and password.
    #[arg(long = "nats-creds", env = "NATS_CREDS", global = true)]
    pub nats_creds: Option<PathBuf>,

    /// File holding a NATS user nkey seed, instead of a user and password.
    #[arg(long = "nats-nkey", env = "NATS_NKEY", global = true)]
    pub nats_nkey: Option<PathBuf>,

    /// CA certificate(s), PEM, that signed the NATS server's certificate; any NATS_TLS_* setting requires TLS.
    #[arg(long = "nats-tls-ca", env = "NATS_TLS_CA", global = true)]
    pub nats_tls_ca: Option<PathBuf>,

    /// Client certificate, PEM, for a NATS server that verifies its clients (with NATS_TLS_KEY).
    #[arg(long = "nats-tls-cert", env = "NATS_TLS_CERT", global = true)]
    pub nats_tls_cert: Option<PathBuf>,

    /// Private key, PEM, of NATS_TLS_CERT.
    #[arg(long = "nats-tls-key", env = "NATS_TLS_KEY", global = true)]
    pub nats_tls_key: Option<PathBuf>,

    /// Prefix of the subjects NATS replies arrive on [default: _INBOX_<NATS_USER> with NATS_USER, else _INBOX].
    #[arg(long = "nats-inbox-prefix", env = "NATS_INBOX_PREFIX", global = true)]
    pub nats_inbox_prefix: Option<InboxPrefix>,

    /// Run on an existing stream that allows message deletes or purges (`ordo protect-stream` stops that).
    #[arg(
        long = "allow-unprotected-stream",
        env = "ORDO_ALLOW_UNPROTECTED_STREAM",
        global = true
    )]
    pub allow_unprotected_stream: bool,

    /// JetStream stream events are published to.
    #[arg(
        id = "nats_stream",
        long = "nats-stream",
        env = "ORDO_STREAM",
        default_value = "ORDO_EVENTS",
        global = true
    )]
    pub stream: StreamName,

    /// First token of every event subject (`<prefix>.<streamtype>.<id>.<Type>`).
    #[arg(
        long = "subject-prefix",
        env = "ORDO_SUBJECT_PREFIX",
        default_value = "events",
        global = true
    )]
    pub subject_prefix: SubjectPrefix,

    /// Log filter, in `RUST_LOG` syntax (`info`, `ordo=debug,tower_http=info`).
    #[arg(long = "log", env = "RUST_LOG", default_value = "info", global = true,
          value_parser = parse_log_filter)]
    pub log_filter: String,

    /// Log format.
    #[arg(
        long = "log-format",
        env = "ORDO_LOG_FORMAT",
        default_value = "pretty",
        global = true
    )]
    pub log_format: LogFormat,
}

impl GlobalArgs {
    /// How to connect to NATS, from NATS_URL and the NATS_* settings; an
    /// error names the setting to fix.
    pub fn nats(&self) -> Result<NatsConnect, BusError> {
        let auth = match (
            &self.nats_user,
            &self.nats_password,
            &self.nats_creds,
            &self.nats_nkey,
        ) {
            (None, None, None, None) => NatsAuth::Anonymous,
            (Some(user), Some(password), None, None) => NatsAuth::UserPassword {
                user: user.clone(),
                password: password.clone(),
            },
            (Some(_), None, None, None) => {
                return Err(setting("NATS_PASSWORD", "NATS_USER is set without it"))
            }
            (None, Some(_), None, None) => {
                return Err(setting("NATS_USER", "NATS_PASSWORD is set without it"))
            }
            (None, None, Some(creds), None) => NatsAuth::Creds(creds.clone()),
            (None, None, None, Some(nkey)) => NatsAuth::NKey(nkey.clone()),
            _ => {
                return Err(setting(
                    "NATS_CREDS",
                    "set one way to log in to NATS: NATS_USER and NATS_PASSWORD, NATS_CREDS, \
                     or NATS_NKEY",
                ))
            }
        };
        let client = match (&self.nats_tls_cert, &self.nats_tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(setting("NATS_TLS_KEY", "NATS_TLS_CERT is set without it"))
            }
            (None, Some(_)) => {
                return Err(setting("NATS_TLS_CERT", "NATS_TLS_KEY is set without it"))
            }
        };
        Ok(NatsConnect {
            url: self.nats_url.clone(),
            auth,
            tls: NatsTls {
                ca: self.nats_tls_ca.clone(),
                client,
            },
            inbox_prefix: self.nats_inbox_prefix.clone(),
        })
    }

    /// Whether an existing stream without deny_delete and deny_purge is used.
    pub fn unprotected_stream(&self) -> Unprotected {
        if self.allow_unprotected_stream {
            Unprotected::Allow
        } else {
            Unprotected::Refuse
        }
    }
}

fn setting(variable: &'static str, reason: &str) -> BusError {
    BusError::Setting {
        variable,
        reason: reason.to_owned(),
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The HTTP listen address.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Address the HTTP API listens on.
    #[arg(
        long = "http-addr",
        env = "ORDO_HTTP_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub http_addr: SocketAddr,
    /// PostgreSQL connections the HTTP API's commands use (its own, apart
    /// from the relay's, projectors' and saga's). Commands beyond wait
    /// their turn: on a machine whose CPUs are saturated, that keeps the
    /// API from admitting orders faster than the saga and projectors can
    /// follow. Reads have as many connections again, of their own, so they
    /// never wait behind commands.
    #[arg(long = "api-connections", env = "ORDO_API_CONNECTIONS", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub api_connections: u16,
    /// New orders wait (half a second at most) while the saga or a
    /// projection is more than this many events behind the log, so that on
    /// saturated CPUs the time from placed to confirmed stays short; 0 never
    /// waits. See `api::admission`. Lower values trade throughput for
    /// latency; docs/BENCHMARKS.md has the measurements behind the default.
    #[arg(
        long = "admission-lag",
        env = "ORDO_ADMISSION_LAG",
        default_value_t = 300
    )]
    pub admission_lag: u64,
    /// Open HTTP connections at most; beyond, new ones wait until one
    /// closes. A connection without a complete request head within 10 s,
    /// or idle for 60 s after its last answer, is closed.
    #[arg(long = "max-connections", env = "ORDO_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// Orders one user may hold placed and not yet paid, cancelled or
    /// rejected; one more is 409 `too_many_unpaid_orders`. `off`: no limit.
    #[arg(long = "max-unpaid-orders", env = "ORDO_MAX_UNPAID_ORDERS", default_value = "20",
          value_parser = parse_cap)]
    pub max_unpaid_orders: Cap,
    /// Who may call the API, and how often.
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Authentication and rate limits of the API (`docs/reference/security.md`).
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// `on`: every request but the public ones needs a bearer token. `off`
    /// lets anyone do anything, and is refused unless the API listens on a
    /// loopback address.
    #[arg(long = "auth", env = "ORDO_AUTH", default_value = "on")]
    pub auth: Switch,
    /// A file holding an admin token's secret (`ordo token generate` makes
    /// one): created at start when no admin token exists yet.
    #[arg(long = "bootstrap-token-file", env = "ORDO_BOOTSTRAP_TOKEN_FILE")]
    pub bootstrap_token_file: Option<std::path::PathBuf>,
    /// `GET /products` and `GET /products/{id}` without a token.
    #[arg(long = "public-catalogue", env = "ORDO_PUBLIC_CATALOGUE", default_value = "true",
          action = clap::ArgAction::Set)]
    pub public_catalogue: bool,
    /// Requests a second per token (per client address without one), bursts
    /// of as many: `N/s`, or `off`.
    #[arg(long = "rate-limit", env = "ORDO_RATE_LIMIT", default_value = "100/s")]
    pub rate_limit: api::auth::rate::RateSetting,
    /// Proxies (IP addresses, comma-separated) whose `X-Forwarded-For`
    /// names the client; from anyone else the header is ignored.
    #[arg(long = "trusted-proxies", env = "ORDO_TRUSTED_PROXIES", default_value = "",
          value_parser = parse_proxies)]
    pub trusted_proxies: Proxies,
    /// The OpenID provider whose JWTs are accepted (their `iss`); JWTs are
    /// refused when unset.
    #[arg(long = "jwt-issuer", env = "ORDO_JWT_ISSUER", requires_all = ["jwt_audience", "jwt_jwks"])]
    pub jwt_issuer: Option<String>,
    /// The `aud` ordo's JWTs must carry.
    #[arg(
        long = "jwt-audience",
        env = "ORDO_JWT_AUDIENCE",
        requires = "jwt_issuer"
    )]
    pub jwt_audience: Option<String>,
    /// The provider's keys: a JWKS file, or an https URL (re-read hourly and
    /// when a token names an unknown key, at most once a minute).
    #[arg(long = "jwt-jwks", env = "ORDO_JWT_JWKS", requires = "jwt_issuer",
          value_parser = parse_jwks)]
    pub jwt_jwks: Option<api::auth::jwt::JwksSource>,
    /// The JWT claim holding a customer's user id.
    #[arg(
        long = "jwt-user-claim",
        env = "ORDO_JWT_USER_CLAIM",
        default_value = "ordo_user_id"
    )]
    pub jwt_user_claim: String,
}

/// A limit, or none (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap(pub Option<u32>);

fn parse_cap(s: &str) -> Result<Cap, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(Cap(None));
    }
    match s.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(Cap(Some(n))),
        _ => Err(format!("{s:?}: a whole number from 1, or off")),
    }
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// Trusted proxy addresses.
#[derive(Debug, Clone, Default)]
pub struct Proxies(pub Vec<std::net::IpAddr>);

fn parse_proxies(s: &str) -> Result<Proxies, String> {
    api::auth::rate::parse_proxies(s).map(Proxies)
}

fn parse_jwks(s: &str) -> Result<api::auth::jwt::JwksSource, String> {
    api::auth::jwt::JwksSource::parse(s)
}

/// Saga settings.
#[derive(Debug, Clone, Args)]
pub struct SagaArgs {
    /// Confirmed orders unpaid this long are cancelled (`2s`, `15m`, `1h 30m`).
    #[arg(long = "payment-timeout", env = "ORDO_PAYMENT_TIMEOUT", default_value = "15m",
          value_parser = parse_positive_duration)]
    pub payment_timeout: Duration,
}

/// The subcommands (`docs/reference/cli.md#subcommands`).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process: HTTP API, relay, all projectors, sagas. Applies migrations first.
    Up {
        #[command(flatten)]
        http: HttpArgs,
        #[command(flatten)]
        saga: SagaArgs,
    },
    /// The HTTP API alone (any number may run).
    Api {
        #[command(flatten)]
        http: HttpArgs,
    },
    /// The relay from the PostgreSQL log to JetStream (one active, others stand by).
    Relay,
    /// Projectors keeping read models up to date (all when no NAME is given).
    Projector {
        /// Projections to run: users, products, orders.
        names: Vec<projectors::Projection>,
    },
    /// The order-fulfilment saga coordinator.
    Saga {
        #[command(flatten)]
        saga: SagaArgs,
    },
    /// Apply schema migrations; idempotent and safe when several processes start at once.
    Migrate,
    /// Rebuild read models from the event log while the system keeps serving.
    Rebuild {
        /// Rebuild every projection.
        #[arg(long, conflicts_with = "names", required_unless_present = "names")]
        all: bool,
        /// Projections to rebuild: users, products, orders.
        names: Vec<projectors::Projection>,
        /// Build and print the differences without swapping.
        #[arg(long)]
        dry_run: bool,
    },
    /// Audit query over the event log, in global order.
    Events(EventsArgs),
    /// Recompute every read model from the log, compare, and verify the invariants.
    Check,
    /// Relay, projection and saga positions, with lag in events and seconds.
    Status,
    /// ordo tokens: create, list, revoke (`docs/reference/security.md`).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Load generator and micro-benchmarks.
    Bench {
        #[command(subcommand)]
        scenario: BenchScenario,
    },
    /// Writes a nats-server configuration with one user per role, each
    /// allowed only the subjects it needs, and each user's credentials
    /// (`docs/reference/nats-security.md`).
    NatsConfig(NatsConfigArgs),
    /// Sets deny_delete and deny_purge on the existing stream, as a NATS
    /// user allowed to update it (they can be added, never removed).
    ProtectStream,
}

/// What `ordo nats-config` writes.
#[derive(Debug, Clone, Args)]
pub struct NatsConfigArgs {
    /// Directory to write nats-server.conf and one `<user>.env` per user
    /// into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing configuration (every password changes).
    #[arg(long)]
    pub force: bool,
    /// A durable consumer the `subscriber` user may create and read (repeat
    /// for more); it may use no other.
    #[arg(long = "subscriber-consumer", default_value = "subscriber")]
    pub subscriber_consumers: Vec<ConsumerName>,
}

/// What `ordo token` does.
#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Makes a token and prints its secret once, alone on the last line.
    Create {
        /// A scope it holds (repeat for more): customer, users:read,
        /// users:write, users:erase, products:write, orders:read,
        /// orders:write, orders:fulfil, events:read, sagas:read,
        /// sagas:write, ops, admin.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// The user a customer token acts for.
        #[arg(long)]
        user: Option<uuid::Uuid>,
        /// A label for people.
        #[arg(long, default_value = "")]
        name: String,
        /// How long it works (`30d`, `12h`); until revoked when absent.
        #[arg(long, value_parser = parse_positive_duration)]
        expires: Option<Duration>,
    },
    /// Every token, newest first, without secrets.
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revokes a token: every process refuses it within 2 s.
    Revoke {
        /// The token's id.
        id: uuid::Uuid,
    },
    /// Prints a fresh token secret without storing anything (for
    /// `ORDO_BOOTSTRAP_TOKEN_FILE`).
    Generate,
}

/// Filters of `ordo events`.
#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Only this stream (`order-<uuid>`).
    #[arg(long)]
    pub stream: Option<String>,
    /// Only this event type (`OrderPlaced`).
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Only this stream type.
    #[arg(long = "stream-type", value_parser = ["user", "product", "order"])]
    pub stream_type: Option<String>,
    /// Only events with this correlation id.
    #[arg(long)]
    pub correlation: Option<uuid::Uuid>,
    /// Only events caused by this actor: `token:<id>`, `jwt:<issuer>#<sub>`,
    /// `saga`, `system` or `anonymous`.
    #[arg(long)]
    pub actor: Option<String>,
    /// Only events after this position token (the `position` of an answer or envelope).
    #[arg(long)]
    pub after: Option<eventstore::Position>,
    /// Only events recorded at or after this time (RFC 3339).
    #[arg(long, value_parser = parse_rfc3339)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only events recorded before this time (RFC 3339).
    #[arg(long, value_parser = parse_rfc3339)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// At most this many events.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub limit: u32,
    /// One JSON envelope per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Scenarios of `ordo bench` (`docs/reference/cli.md#benchmarks`).
#[derive(Debug, Subcommand)]
pub enum BenchScenario {
    /// Event store append rate, next to a raw INSERT load with the same writers.
    Append {
        /// Concurrent writers.
        #[arg(long, default_value_t = 32)]
        writers: usize,
        /// Events to append in all.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Events per append.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Write the figures as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Log → JetStream publish rate.
    Relay {
        /// Events to publish.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Write the figures as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Rebuild rate of all projections.
    Rebuild {
        /// Events in the log to rebuild from.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Write the figures as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// End-to-end load through the HTTP API of a running ordo.
    PlaceOrders {
        /// How long to place orders (`60s`).
        #[arg(long, default_value = "60s", value_parser = parse_positive_duration)]
        duration: Duration,
        /// Concurrent clients.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Users to register first.
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Products to create first.
        #[arg(long, default_value_t = 200)]
        products: usize,
        /// Base URL of the API (default: http:// + ORDO_HTTP_ADDR).
        #[arg(long)]
        url: Option<String>,
        /// The address of the API, when `--url` is not given.
        #[arg(
            long = "http-addr",
            env = "ORDO_HTTP_ADDR",
            default_value = "127.0.0.1:8080"
        )]
        http_addr: SocketAddr,
        /// Write the figures as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// How long to wait, after placing stops, for the last orders to be
        /// confirmed or rejected (`0s`: not at all).
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        drain: Duration,
        /// Append one JSON line per acknowledged (2xx) command to this file:
        /// kind, stream id, version and position token of the answer
        /// (used by scripts/chaos to prove no acknowledged write was lost).
        #[arg(long)]
        acked: Option<std::path::PathBuf>,
        /// An admin token: the run makes a staff token and one customer
        /// token per user with it. Without one, no token is sent
        /// (`ORDO_AUTH=off`).
        #[arg(long, env = "ORDO_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

fn parse_database_url(s: &str) -> Result<DatabaseUrl, String> {
    s.parse().map_err(|e: eventstore::StoreError| match e {
        eventstore::StoreError::InvalidUrl { reason, .. } => reason,
        other => other.to_string(),
    })
}

fn parse_log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// A humantime duration, zero allowed.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 0s, 2s, 15m)"))
}

/// A humantime duration greater than zero.
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 2s, 15m, 1h)"))?;
    if duration.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(duration)
}

fn parse_rfc3339(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{e} (expected RFC 3339, e.g. 2026-11-23T10:00:00Z)"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_must_be_positive_humantime() {
        assert_eq!(
            parse_positive_duration("2s").unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(
            parse_positive_duration("15m").unwrap(),
            Duration::from_secs(900)
        );
        assert!(parse_positive_duration("0s").is_err());
        assert!(parse_positive_duration("soon").is_err());
    }

    #[test]
    fn a_drain_may_be_zero() {
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert!(parse_duration("a while").is_err());
    }

    #[test]
    fn admission_waits_at_300_events_of_lag_unless_told_otherwise() {
        let limit = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Up { http, .. }) | Ok(Command::Api { http }) => Ok(http.admission_lag),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(limit(&["ordo", "up"]), Ok(300));
        assert_eq!(limit(&["ordo", "api", "--admission-lag", "200"]), Ok(200));
        assert_eq!(limit(&["ordo", "up", "--admission-lag", "0"]), Ok(0), "off");
        let error = limit(&["ordo", "up", "--admission-lag", "lots"]).unwrap_err();
        assert!(error.contains("admission-lag"), "{error}");
    }

    #[test]
    fn the_api_takes_a_positive_number_of_connections() {
        let connections = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Up { http, .. }) | Ok(Command::Api { http }) => Ok(http.api_connections),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(connections(&["ordo", "up"]), Ok(4));
        assert_eq!(
            connections(&["ordo", "api", "--api-connections", "32"]),
            Ok(32)
        );
        let error = connections(&["ordo", "up", "--api-connections", "0"]).unwrap_err();
        assert!(error.contains("api-connections"), "{error}");
        assert!(connections(&["ordo", "up", "--api-connections", "many"]).is_err());
    }

    #[test]
    fn rebuild_needs_all_or_names() {
        assert!(Cli::try_parse_from(["ordo", "rebuild"]).is_err());
        assert!(Cli::try_parse_from(["ordo", "rebuild", "--all"]).is_ok());
        assert!(Cli::try_parse_from(["ordo", "rebuild", "orders", "--dry-run"]).is_ok());
        assert!(Cli::try_parse_from(["ordo", "rebuild", "--all", "orders"]).is_err());
    }
}
