//! Least privilege in PostgreSQL: the runtime role every ordo process can run
//! as, what it may do, and who may migrate.
//!
//! `ordo migrate` runs as the owner of the schema. After the migrations it
//! creates, if missing, the NOLOGIN role named by `ORDO_RUNTIME_ROLE`
//! (default `ordo_runtime`) and gives it exactly the privileges of
//! `schemas/privileges/runtime.sql`, taking back anything else it held. A
//! deployment grants that role to the login role its processes use; through
//! it the event log is append-only and no DDL is possible.

use tokio_postgres::error::SqlState;

use crate::db::{quote_ident, DatabaseUrl};
use crate::error::StoreError;

/// The privileges of the runtime role, `{{role}}` standing for its name.
const RUNTIME_PRIVILEGES: &str = include_str!("../../schemas/privileges/runtime.sql");

/// The name of the runtime role (`ORDO_RUNTIME_ROLE`): a plain identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuntimeRole(String);

impl RuntimeRole {
    /// `ordo_runtime`.
    pub const DEFAULT: &'static str = "ordo_runtime";

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `"name"`, for SQL.
    pub fn quoted(&self) -> String {
        quote_ident(&self.0)
    }

    /// The privilege statements for this role.
    pub fn privileges_sql(&self) -> String {
        RUNTIME_PRIVILEGES.replace("{{role}}", &self.quoted())
    }
}

impl Default for RuntimeRole {
    fn default() -> Self {
        RuntimeRole(Self::DEFAULT.to_owned())
    }
}

impl std::str::FromStr for RuntimeRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut chars = s.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        if !first_ok
            || s.len() > 63
            || !s
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            || s.starts_with("pg_")
        {
            return Err(format!(
                "{s:?} is not a role name ordo accepts: 1 to 63 lowercase letters, digits and '_', \
                 starting with a letter or '_', not 'pg_'"
            ));
        }
        Ok(RuntimeRole(s.to_owned()))
    }
}

impl std::fmt::Display for RuntimeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Creates the role if it does not exist, tolerating another process
/// creating it at the same moment.
pub async fn ensure_role(
    client: &tokio_postgres::Client,
    role: &RuntimeRole,
) -> Result<(), StoreError> {
    let exists = client
        .query_opt(
            "select 1 from pg_roles where rolname = $1",
            &[&role.as_str()],
        )
        .await?
        .is_some();
    if exists {
        return Ok(());
    }
    let statement = format!("create role {} nologin", role.quoted());
    match client.batch_execute(&statement).await {
        Ok(()) => {
            tracing::info!(role = %role, "created the runtime role");
            Ok(())
        }
        // Another process (another database's migration, say) won the race.
        Err(e)
            if e.code() == Some(&SqlState::DUPLICATE_OBJECT)
                || e.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
        {
            Ok(())
        }
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
            Err(StoreError::Migration(format!(
                "cannot create the runtime role {role}: the migrating role may not create roles; \
                 create it once as a superuser (create role {} nologin), give the owner CREATEROLE, \
                 or set ORDO_RUNTIME_ROLE to a role that exists",
                role.quoted()
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// Gives `role` exactly the runtime privileges, in one transaction.
pub async fn grant(
    client: &mut tokio_postgres::Client,
    role: &RuntimeRole,
) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.batch_execute(&role.privileges_sql())
        .await
        .map_err(|e| {
            StoreError::Migration(format!(
                "granting the runtime role {role} its privileges: {}",
                crate::error::describe_pg(&e)
            ))
        })?;
    tx.commit().await?;
    Ok(())
}

/// Whether the connected role may apply migrations: a superuser, a member
/// of the role owning the migrations table, or, before there is one, a role
/// that may create schemas in the database and tables in `public`.
pub async fn can_migrate(client: &tokio_postgres::Client) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            "select r.rolsuper
                    or case when c.oid is null
                            then has_database_privilege(current_database(), 'CREATE')
                                 and has_schema_privilege('public', 'CREATE')
                            else pg_has_role(current_user, c.relowner, 'USAGE')
                       end
               from pg_roles r
               left join pg_class c on c.oid = to_regclass('ordo_migrations')
              where r.rolname = current_user",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Whether `url` names a server on this machine: a Unix socket, a loopback
/// address or `localhost`.
pub fn is_local(url: &DatabaseUrl) -> bool {
    let hosts = url.config().get_hosts();
    !hosts.is_empty()
        && hosts.iter().all(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => {
                name.eq_ignore_ascii_case("localhost")
                    || name
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => true,
        })
}

/// Whether the connected role is a superuser.
pub async fn is_superuser(client: &tokio_postgres::Client) -> Result<bool, StoreError> {
    Ok(client
        .query_one(
            "select rolsuper from pg_roles where rolname = current_user",
            &[],
        )
        .await?
        .get(0))
}

/// The warning for a process connected to `url` as a superuser
/// (`superuser`), if it deserves one: when the database is not on this
/// machine, one leaked connection string could rewrite anything.
pub fn superuser_warning(url: &DatabaseUrl, superuser: bool) -> Option<String> {
    (superuser && !is_local(url)).then(|| {
        format!(
            "ordo is connected to {url}, a PostgreSQL on another machine, as a superuser; run it \
             as a login role that is a member of the runtime role (ORDO_RUNTIME_ROLE, default \
             ordo_runtime) and keep the owner for `ordo migrate` (ORDO_MIGRATE_DATABASE_URL)"
        )
    })
}

/// Logs [`superuser_warning`] when it applies; returns whether it did.
pub async fn warn_if_superuser(
    url: &DatabaseUrl,
    client: &tokio_postgres::Client,
) -> Result<bool, StoreError> {
    // Only a remote database needs the question asked.
    let superuser = !is_local(url) && is_superuser(client).await?;
    match superuser_warning(url, superuser) {
        Some(warning) => {
            tracing::warn!("{warning}");
            Ok(true)
        }
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn role_names_are_plain_identifiers() {
        assert_eq!(RuntimeRole::default().as_str(), RuntimeRole::DEFAULT);
        assert!("shop_a_runtime".parse::<RuntimeRole>().is_ok());
        assert!("_x1".parse::<RuntimeRole>().is_ok());
        for bad in [
            "",
            "1abc",
            "Ordo",
            "a-b",
            "a\"b",
            "pg_monitor",
            &"a".repeat(64),
        ] {
            let err = bad.parse::<RuntimeRole>().unwrap_err();
            assert!(err.contains("not a role name"), "{bad}: {err}");
        }
    }

    #[test]
    fn every_statement_names_the_role_given() {
        let sql: RuntimeRole = "shop_rt".parse().unwrap();
        let sql = sql.privileges_sql();
        assert!(!sql.contains("{{"), "{sql}");
        assert!(sql.contains("to \"shop_rt\""));
        assert!(!sql.contains("ordo_runtime"));
        // The log is never granted more than reading and appending.
        for line in sql.lines().filter(|l| l.contains(" on events ")) {
            assert!(
                !line.contains("update") && !line.contains("delete"),
                "{line}"
            );
        }
    }

    #[test]
    fn warns_of_superusers_on_remote_databases_only() {
        let url = |s: &str| s.parse::<DatabaseUrl>().unwrap();
        let remote = url("postgres://admin:pw@db.example.com/shop");
        let warning = superuser_warning(&remote, true).unwrap();
        assert!(
            warning.contains("superuser")
                && warning.contains("ORDO_RUNTIME_ROLE")
                && warning.contains("db.example.com")
                && !warning.contains("pw"),
            "{warning}"
        );
        assert_eq!(superuser_warning(&remote, false), None);
        assert_eq!(
            superuser_warning(&url("postgres://127.0.0.1/shop"), true),
            None
        );
        assert_eq!(
            superuser_warning(&url("postgres:///shop?host=/run/postgresql"), true),
            None
        );
    }

    #[test]
    fn tells_local_servers_from_remote_ones() {
        let local = |s: &str| is_local(&s.parse().unwrap());
        assert!(local("postgres://127.0.0.1:5432/ordo"));
        assert!(local("postgres://localhost/ordo"));
        assert!(local("postgres://[::1]:5432/ordo"));
        assert!(local("postgres:///ordo?host=/run/postgresql"));
        assert!(!local("postgres://db.example.com/ordo"));
        assert!(!local("postgres://10.0.0.5/ordo"));
    }
}
