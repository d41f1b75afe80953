//! Schema migrations: the numbered files of `schemas/sql/`, embedded at build
//! time, applied in order, each once, recorded in `ordo_migrations`.
//!
//! Several processes may start at the same moment (`docker compose up` starts
//! every role together): a session-level advisory lock makes them take turns,
//! and whoever comes second finds everything applied and does nothing.
//!
//! After the migrations, every run gives the runtime role its privileges
//! ([`crate::privileges`]). A migration that must rewrite stored events says
//! `-- ordo: rewrites events` in its first lines; only for its transaction is
//! the log's append-only guard lifted, and the log says so.

use crate::db::DatabaseUrl;
use crate::error::StoreError;
use crate::leadership::{fnv1a, LockKey};
use crate::privileges::{self, RuntimeRole};

/// One migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The number the file starts with; applied in ascending order.
    pub version: u32,
    /// The rest of the file name.
    pub name: &'static str,
    /// The SQL, run in one transaction.
    pub sql: &'static str,
}

impl Migration {
    /// A fingerprint of the SQL, so an edited migration that was already
    /// applied is noticed instead of silently diverging.
    pub fn checksum(&self) -> String {
        format!("{:016x}", fnv1a(self.sql.as_bytes()))
    }

    /// Whether the file declares, in its first lines, that it rewrites
    /// stored events (`-- ordo: rewrites events`).
    pub fn rewrites_events(&self) -> bool {
        self.sql
            .lines()
            .take(20)
            .any(|line| line.trim() == "-- ordo: rewrites events")
    }
}

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// Advisory lock key for migrations: "ordomigr" in ASCII.
const MIGRATION_LOCK: LockKey = LockKey::raw(0x6f72_646f_6d69_6772);

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this call.
    pub applied: Vec<u32>,
    /// Versions that were already there.
    pub already_applied: Vec<u32>,
}

/// Creates the database if needed, applies every pending migration and
/// gives the default runtime role (`ordo_runtime`) its privileges.
pub async fn migrate(url: &DatabaseUrl) -> Result<MigrationReport, StoreError> {
    migrate_with(url, &RuntimeRole::default()).await
}

/// [`migrate`], for the runtime role `role`.
pub async fn migrate_with(
    url: &DatabaseUrl,
    role: &RuntimeRole,
) -> Result<MigrationReport, StoreError> {
    url.ensure_database().await?;
    let mut client = url.connect().await?;
    MIGRATION_LOCK.lock(&client).await?;
    let result = match apply_pending(&mut client).await {
        Ok(report) => match privileges::ensure_role(&client, role).await {
            Ok(()) => privileges::grant(&mut client, role).await.map(|()| report),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    // Unlock even when applying failed; closing the connection would too.
    let unlock = MIGRATION_LOCK.unlock(&client).await;
    let report = result?;
    unlock?;
    Ok(report)
}

async fn apply_pending(client: &mut tokio_postgres::Client) -> Result<MigrationReport, StoreError> {
    client
        .batch_execute(
            "create table if not exists ordo_migrations (
                 version    integer     primary key,
                 name       text        not null,
                 checksum   text        not null,
                 applied_at timestamptz not null default now()
             )",
        )
        .await?;
    let rows = client
        .query("select version, name, checksum from ordo_migrations", &[])
        .await?;
    let mut applied_before = std::collections::BTreeMap::new();
    for row in rows {
        let version: i32 = row.get(0);
        applied_before.insert(version, (row.get::<_, String>(1), row.get::<_, String>(2)));
    }
    if let Some(newest) = applied_before.keys().next_back() {
        let known = MIGRATIONS
            .iter()
            .map(|m| m.version as i32)
            .max()
            .unwrap_or(0);
        if *newest > known {
            return Err(StoreError::Migration(format!(
                "the database has migration {newest}, newer than this build knows ({known}); \
                 run a newer ordo"
            )));
        }
    }

    let mut report = MigrationReport {
        applied: Vec::new(),
        already_applied: Vec::new(),
    };
    for migration in MIGRATIONS {
        let version = migration.version as i32;
        if let Some((_, checksum)) = applied_before.get(&version) {
            if *checksum != migration.checksum() {
                return Err(StoreError::Migration(format!(
                    "migration {:04}_{} changed after it was applied; add a new migration instead",
                    migration.version, migration.name
                )));
            }
            report.already_applied.push(migration.version);
            continue;
        }
        let tx = client.transaction().await?;
        if migration.rewrites_events() {
            tracing::warn!(
                version = migration.version,
                name = migration.name,
                "this migration rewrites stored events: the log's append-only guard is lifted \
                 for its transaction only"
            );
            tx.batch_execute("set local ordo.rewrite_events = 'on'")
                .await?;
        }
        tx.batch_execute(migration.sql).await.map_err(|e| {
            StoreError::Migration(format!(
                "{:04}_{}: {}",
                migration.version,
                migration.name,
                crate::error::describe_pg(&e)
            ))
        })?;
        tx.execute(
            "insert into ordo_migrations (version, name, checksum) values ($1, $2, $3)",
            &[&version, &migration.name, &migration.checksum()],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
        report.applied.push(migration.version);
    }
    Ok(report)
}

/// How [`ensure_current`] found the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaCheck {
    /// Migrated, as the role of the URL it was given.
    Migrated(MigrationReport),
    /// The connected role may not migrate; it found every migration applied.
    Current,
}

/// What `ordo up` and the operators' commands do before they start: apply
/// the migrations as `migrate_url` when one is given
/// (`ORDO_MIGRATE_DATABASE_URL`), else as `url` when its role may migrate;
/// a role that may not (the runtime role's members) only checks that every
/// migration is applied, and fails saying how to apply them when not.
pub async fn ensure_current(
    url: &DatabaseUrl,
    migrate_url: Option<&DatabaseUrl>,
    role: &RuntimeRole,
) -> Result<SchemaCheck, StoreError> {
    if let Some(owner) = migrate_url {
        return migrate_with(owner, role).await.map(SchemaCheck::Migrated);
    }
    let client = match url.connect().await {
        Ok(client) => client,
        // A missing database: only one who may migrate could create it.
        Err(StoreError::Database(e))
            if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME) =>
        {
            return migrate_with(url, role).await.map(SchemaCheck::Migrated);
        }
        Err(e) => return Err(e),
    };
    if privileges::can_migrate(&client).await? {
        drop(client);
        return migrate_with(url, role).await.map(SchemaCheck::Migrated);
    }
    let missing = missing_versions(&client).await?;
    if missing.is_empty() {
        return Ok(SchemaCheck::Current);
    }
    Err(StoreError::Migration(format!(
        "the database at {url} lacks {} of this build's {} migrations (the first missing is \
         {:04}), and its role may not apply them; run `ordo migrate` as the schema's owner \
         (ORDO_MIGRATE_DATABASE_URL=postgres://owner@.../db ordo migrate), then start again",
        missing.len(),
        MIGRATIONS.len(),
        missing[0]
    )))
}

/// The versions this build knows that the database has not applied.
pub async fn missing_versions(client: &tokio_postgres::Client) -> Result<Vec<u32>, StoreError> {
    let applied: Vec<i32> = match client
        .query("select version from ordo_migrations", &[])
        .await
    {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    Ok(MIGRATIONS
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(&(*v as i32)))
        .collect())
}

/// True when every migration this build knows is applied (for `/ready`).
pub async fn is_current(client: &tokio_postgres::Client) -> Result<bool, StoreError> {
    let row = client
        .query_opt(
            "select count(*) from ordo_migrations where version = any($1)",
            &[&MIGRATIONS
                .iter()
                .map(|m| m.version as i32)
                .collect::<Vec<_>>()],
        )
        .await;
    match row {
        Ok(Some(row)) => Ok(row.get::<_, i64>(0) as usize == MIGRATIONS.len()),
        Ok(None) => Ok(false),
        // the table does not exist yet
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_migration_that_says_so_rewrites_events() {
        let declared = Migration {
            version: 99,
            name: "reformat",
            sql: "-- Reformat amounts.\n-- ordo: rewrites events\nupdate events set data = data;",
        };
        assert!(declared.rewrites_events());
        let silent = Migration {
            sql: "update events set data = data; -- ordo: rewrites events",
            ..declared
        };
        assert!(!silent.rewrites_events(), "a marker on its own line only");
        assert!(MIGRATIONS.iter().all(|m| !m.rewrites_events()));
    }

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{} is out of sequence", m.name);
            assert!(!m.sql.trim().is_empty());
        }
    }
}
