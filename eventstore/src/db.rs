//! Connecting to PostgreSQL: URL parsing, creating the database when missing,
//! and the connection pool every role shares.

use std::error::Error as _;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::{Host, SslMode as DriverSslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::Config;

use crate::error::{io_reason, StoreError};
use crate::tls::{Connector, TlsSettings};

/// How long a connection attempt may take before we call the server unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A validated `DATABASE_URL`: the text (for messages, without password), the
/// parsed configuration and its TLS settings (`sslmode`, `sslrootcert`; see
/// [`crate::tls`]).
#[derive(Clone)]
pub struct DatabaseUrl {
    url: String,
    config: Config,
    tls: TlsSettings,
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DatabaseUrl")
            .field(&self.redacted())
            .finish()
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let root_cert_env = std::env::var("PGSSLROOTCERT").ok();
        DatabaseUrl::parse_with(s, root_cert_env.as_deref())
    }
}

impl DatabaseUrl {
    /// Parses `s`; `root_cert_env` is `PGSSLROOTCERT`, used when the URL has
    /// no `sslrootcert`.
    fn parse_with(s: &str, root_cert_env: Option<&str>) -> Result<DatabaseUrl, StoreError> {
        let invalid = |reason: String| StoreError::InvalidUrl {
            url: redact(s),
            reason,
        };
        if !(s.starts_with("postgres://") || s.starts_with("postgresql://")) {
            return Err(invalid("expected postgres://host:port/database".into()));
        }
        // tokio-postgres knows only some sslmodes and no sslrootcert: both
        // are taken out and handled here.
        let (rest, params) = take_params(s, &["sslmode", "sslrootcert"]).map_err(invalid)?;
        let [sslmode, sslrootcert] = params;
        let sslrootcert = sslrootcert.or_else(|| root_cert_env.map(str::to_owned));
        let tls = TlsSettings::from_params(sslmode.as_deref(), sslrootcert.as_deref())
            .map_err(invalid)?;
        let mut config: Config = rest
            .parse()
            .map_err(|e: tokio_postgres::Error| invalid(e.to_string()))?;
        if config.get_dbname().is_none() {
            return Err(invalid(
                "no database name (postgres://host:port/ordo)".into(),
            ));
        }
        if config.get_hosts().is_empty() {
            config.host("127.0.0.1");
        }
        if config.get_user().is_none() {
            // libpq's default: the operating system user, which is what trust
            // auth on a developer machine expects.
            let user = std::env::var("USER").unwrap_or_else(|_| "postgres".into());
            config.user(&user);
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("ordo");
        // libpq ignores sslmode on Unix sockets, where PostgreSQL offers no
        // TLS; so does ordo.
        let over_tcp = config
            .get_hosts()
            .iter()
            .any(|host| matches!(host, Host::Tcp(_)));
        config.ssl_mode(if tls.encrypts() && over_tcp {
            DriverSslMode::Require
        } else {
            DriverSslMode::Disable
        });
        Ok(DatabaseUrl {
            url: s.to_owned(),
            config,
            tls,
        })
    }

    /// The URL as given, password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.url)
    }

    /// The URL as given, password included: for handing to a child process,
    /// never for printing.
    pub fn expose(&self) -> &str {
        &self.url
    }

    /// The parsed connection settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Its TLS settings.
    pub fn tls(&self) -> &TlsSettings {
        &self.tls
    }

    /// What every connection to this server is made with: connect with
    /// [`DatabaseUrl::config`] and this. It reads the `sslrootcert` file now;
    /// an unreadable one is a [`StoreError::Tls`] naming it.
    pub fn connector(&self) -> Result<Connector, StoreError> {
        self.tls
            .connector()
            .map_err(|reason| self.tls_error(reason))
    }

    fn tls_error(&self, reason: String) -> StoreError {
        StoreError::Tls {
            url: self.redacted(),
            sslmode: self.tls.mode().to_string(),
            reason,
        }
    }

    /// The same settings under another name for the server: its connections
    /// show as `application_name` `name` in `pg_stat_activity` and the
    /// server's logs, so an operator (or a profile) tells ordo's roles apart.
    pub fn named(&self, name: &str) -> DatabaseUrl {
        let mut config = self.config.clone();
        config.application_name(name);
        DatabaseUrl {
            url: self.url.clone(),
            config,
            tls: self.tls.clone(),
        }
    }

    /// The database this URL names.
    pub fn database(&self) -> &str {
        self.config.get_dbname().unwrap_or("postgres")
    }

    /// The same server, another database. The URL's text follows: its path
    /// names the database, and a `dbname` query parameter (which would win
    /// over the path) is dropped. The query's other parameters, a Unix
    /// socket's `host=/run/postgresql` among them, are kept.
    pub fn with_database(&self, database: &str) -> DatabaseUrl {
        let mut config = self.config.clone();
        config.dbname(database);
        let (base, query) = match self.url.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (self.url.as_str(), None),
        };
        let query: Vec<&str> = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|pair| !pair.is_empty() && !pair.starts_with("dbname="))
            .collect();
        let url = match base.split_once("://") {
            Some((scheme, rest)) => {
                let server = rest.split_once('/').map_or(rest, |(server, _)| server);
                let query = if query.is_empty() {
                    String::new()
                } else {
                    format!("?{}", query.join("&"))
                };
                format!("{scheme}://{server}/{database}{query}")
            }
            None => self.url.clone(),
        };
        DatabaseUrl {
            url,
            config,
            tls: self.tls.clone(),
        }
    }

    /// Opens one connection (its driver runs on a spawned task).
    pub async fn connect(&self) -> Result<tokio_postgres::Client, StoreError> {
        let (client, connection) = self
            .config
            .connect(self.connector()?)
            .await
            .map_err(|e| self.classify(e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres connection closed");
            }
        });
        Ok(client)
    }

    /// Turns a connection error into [`StoreError::Unreachable`] when the server
    /// never answered, [`StoreError::Tls`] when TLS failed and
    /// [`StoreError::TlsRequired`] when the server wants TLS we did not
    /// offer, so the user reads the fix, not a driver message.
    pub fn classify(&self, e: tokio_postgres::Error) -> StoreError {
        if let Some(db) = e.as_db_error() {
            // PostgreSQL 14 and later say "no encryption", older ones "SSL off".
            let without_tls =
                db.message().contains("no encryption") || db.message().contains("SSL off");
            if !self.tls.encrypts()
                && db.code() == &SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && db.message().contains("pg_hba.conf")
                && without_tls
            {
                return StoreError::TlsRequired {
                    url: self.redacted(),
                    message: db.message().to_owned(),
                };
            }
            return StoreError::Database(e);
        }
        if let Some(reason) = crate::tls::describe_failure(&e, &self.tls) {
            return self.tls_error(reason);
        }
        let reason = match e.source().and_then(|s| s.downcast_ref::<std::io::Error>()) {
            Some(io) => io_reason(io),
            None if e.to_string().contains("timeout") => "timed out".to_owned(),
            // "invalid configuration: password missing", not half of it
            None => match e.source() {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            },
        };
        StoreError::Unreachable {
            url: self.redacted(),
            reason,
        }
    }

    /// Creates the database if it does not exist yet. Safe when several
    /// processes do it at once.
    pub async fn ensure_database(&self) -> Result<(), StoreError> {
        match self.connect().await {
            Ok(_) => return Ok(()),
            Err(StoreError::Database(e)) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {}
            Err(e) => return Err(e),
        }
        let admin = self.with_database("postgres").connect().await?;
        let statement = format!("create database {}", quote_ident(self.database()));
        match admin.batch_execute(&statement).await {
            Ok(()) => {
                tracing::info!(database = self.database(), "created database");
                Ok(())
            }
            // another process won the race
            Err(e)
                if e.code() == Some(&SqlState::DUPLICATE_DATABASE)
                    || e.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
            {
                Ok(())
            }
            Err(e) => Err(StoreError::Database(e)),
        }
    }

    /// A pool of up to `max_size` connections.
    pub fn pool(&self, max_size: usize) -> Result<Pool, StoreError> {
        let manager = Manager::from_config(
            self.config.clone(),
            self.connector()?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(max_size)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))
    }
}

/// Takes the query parameters named `keys` out of a URL: the URL without
/// them, and the (percent-decoded) value of each, the last one when given
/// twice.
fn take_params<const N: usize>(
    url: &str,
    keys: &[&str; N],
) -> Result<(String, [Option<String>; N]), String> {
    let mut values: [Option<String>; N] = std::array::from_fn(|_| None);
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), values));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match keys.iter().position(|k| *k == key) {
            Some(i) => {
                let value = percent_encoding::percent_decode_str(value)
                    .decode_utf8()
                    .map_err(|_| format!("{key} is not valid UTF-8 once percent-decoded"))?;
                values[i] = Some(value.into_owned());
            }
            None => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, values))
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Replaces the password of a URL with `***`, in its user info or in a
/// `password=` query parameter.
pub fn redact(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let query = query.map(|q| {
        let pairs: Vec<&str> = q
            .split('&')
            .map(|pair| {
                if pair.starts_with("password=") {
                    "password=***"
                } else {
                    pair
                }
            })
            .collect();
        format!("?{}", pairs.join("&"))
    });
    let query = query.unwrap_or_default();
    let Some((scheme, rest)) = url.split_once("://") else {
        return format!("{url}{query}");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}{query}"),
            None => format!("{url}{query}"),
        },
        None => format!("{url}{query}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn roles_name_their_connections_and_keep_the_rest() {
        let url: DatabaseUrl = "postgres://ordo:secret@db:5433/shop?host=/run/postgresql"
            .parse()
            .unwrap();
        assert_eq!(url.config().get_application_name(), Some("ordo"));
        let saga = url.named("ordo-saga");
        assert_eq!(saga.config().get_application_name(), Some("ordo-saga"));
        assert_eq!(saga.database(), "shop");
        assert_eq!(saga.config().get_ports(), url.config().get_ports());
        assert_eq!(saga.redacted(), url.redacted());
        assert_eq!(
            url.config().get_application_name(),
            Some("ordo"),
            "the original is unchanged"
        );
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            redact("postgres://u:secret@h/db?sslmode=disable"),
            "postgres://u:***@h/db?sslmode=disable"
        );
        assert_eq!(
            redact("postgres:///db?host=/run/postgresql&password=secret&user=u"),
            "postgres:///db?host=/run/postgresql&password=***&user=u"
        );
    }

    #[test]
    fn rejects_urls_that_are_not_postgres() {
        let err = "mysql://h/db".parse::<DatabaseUrl>().unwrap_err();
        assert!(err.to_string().contains("expected postgres://"), "{err}");
        let err = "postgres://127.0.0.1:5432"
            .parse::<DatabaseUrl>()
            .unwrap_err();
        assert!(err.to_string().contains("no database name"), "{err}");
    }

    #[test]
    fn switches_database_keeping_server_and_query() {
        let url: DatabaseUrl = "postgres://u:p@h:1/a?sslmode=disable".parse().unwrap();
        let other = url.with_database("b");
        assert_eq!(other.database(), "b");
        assert_eq!(other.redacted(), "postgres://u:***@h:1/b?sslmode=disable");
    }

    #[test]
    fn reads_sslmode_and_sslrootcert_as_libpq_does() {
        use crate::tls::{RootCert, SslMode, Verification};
        use tokio_postgres::config::SslMode as Driver;

        let url = DatabaseUrl::parse_with(
            "postgres://u:p@db:5433/shop?sslmode=verify-full&sslrootcert=%2Fetc%2Fordo%2Fca.pem&application_name=x",
            None,
        )
        .unwrap();
        assert_eq!(url.tls().mode(), SslMode::VerifyFull);
        assert_eq!(
            url.tls().root_cert(),
            Some(&RootCert::File("/etc/ordo/ca.pem".into())),
            "percent-decoded"
        );
        assert_eq!(url.config().get_ssl_mode(), Driver::Require);
        assert_eq!(url.config().get_dbname(), Some("shop"));
        // The text keeps them, so a child process given it reads the same.
        let other = url.with_database("other");
        assert_eq!(other.tls(), url.tls());
        assert!(other.expose().contains("sslmode=verify-full&sslrootcert="));
        assert_eq!(url.named("ordo-relay").tls(), url.tls());

        // PGSSLROOTCERT stands in for a missing sslrootcert, never over one.
        let url =
            DatabaseUrl::parse_with("postgres://db/shop?sslmode=verify-ca", Some("/env/ca.pem"))
                .unwrap();
        assert_eq!(
            url.tls().root_cert(),
            Some(&RootCert::File("/env/ca.pem".into()))
        );
        let url = DatabaseUrl::parse_with(
            "postgres://db/shop?sslmode=require&sslrootcert=/url/ca.pem",
            Some("/env/ca.pem"),
        )
        .unwrap();
        assert_eq!(
            url.tls().root_cert(),
            Some(&RootCert::File("/url/ca.pem".into()))
        );
        assert_eq!(url.tls().verification(), Some(Verification::Chain));

        // Without sslmode, or with a mode that does not insist: no TLS.
        for text in [
            "postgres://db/shop",
            "postgres://db/shop?sslmode=disable",
            "postgres://db/shop?sslmode=prefer",
            "postgres://db/shop?sslmode=allow",
        ] {
            let url = DatabaseUrl::parse_with(text, Some("/env/ca.pem")).unwrap();
            assert_eq!(url.tls().verification(), None, "{text}");
            assert_eq!(url.config().get_ssl_mode(), Driver::Disable, "{text}");
        }
    }

    #[test]
    fn unix_sockets_ignore_sslmode() {
        use tokio_postgres::config::SslMode as Driver;
        let url = DatabaseUrl::parse_with(
            "postgres:///shop?host=/var/run/postgresql&sslmode=verify-full",
            None,
        )
        .unwrap();
        assert_eq!(url.config().get_ssl_mode(), Driver::Disable);
    }

    #[test]
    fn bad_tls_parameters_are_named() {
        let err = DatabaseUrl::parse_with("postgres://db/shop?sslmode=verify", None).unwrap_err();
        assert!(matches!(err, StoreError::InvalidUrl { .. }), "{err:?}");
        assert!(err.to_string().contains("sslmode \"verify\""), "{err}");
        let err = DatabaseUrl::parse_with(
            "postgres://db/shop?sslmode=require&sslrootcert=system",
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("sslrootcert=system"), "{err}");
        let err = DatabaseUrl::parse_with("postgres://db/shop?sslrootcert=%FF", None).unwrap_err();
        assert!(err.to_string().contains("sslrootcert"), "{err}");
    }

    #[test]
    fn switches_database_of_unix_socket_urls() {
        // The socket directory in the query has slashes of its own.
        let url: DatabaseUrl = "postgres:///a?host=/var/run/postgresql".parse().unwrap();
        let other = url.with_database("b");
        assert_eq!(other.database(), "b");
        assert_eq!(other.expose(), "postgres:///b?host=/var/run/postgresql");
        assert_eq!(
            other.expose().parse::<DatabaseUrl>().unwrap().database(),
            "b",
            "the text names the same database as the config"
        );
        let url: DatabaseUrl = "postgres://u@%2Fvar%2Frun%2Fpostgresql/a".parse().unwrap();
        assert_eq!(
            url.with_database("b").expose(),
            "postgres://u@%2Fvar%2Frun%2Fpostgresql/b"
        );
        // A `dbname` parameter would override the path: it goes.
        let url: DatabaseUrl = "postgres:///?dbname=a&host=/tmp".parse().unwrap();
        assert_eq!(url.database(), "a");
        let other = url.with_database("b");
        assert_eq!(other.expose(), "postgres:///b?host=/tmp");
        assert_eq!(
            other.expose().parse::<DatabaseUrl>().unwrap().database(),
            "b"
        );
    }
}
