//! A PostgreSQL server a test owns: a fresh cluster on a free loopback port,
//! with TLS when the test asks for it, stopped and deleted on drop. Tests of
//! TLS, of `pg_hba.conf` rules and of roles use it, so the shared server's
//! configuration is never touched.
//!
//! The binaries are found as `scripts/up` finds them: `ORDO_PG_BINDIR` (a
//! directory holding `initdb` and `pg_ctl`), else the newest
//! `/usr/lib/postgresql/<version>/bin` (Debian's layout), else `PATH`.
//! PostgreSQL refuses to run as root: a test running as root runs the
//! server as the operating system user `ORDO_PG_USER` (default `postgres`),
//! in a directory under the temporary directory that user owns.
//!
//! `initdb` runs once per test process and PostgreSQL installation (into a
//! template directory under the temporary directory, shared by later runs);
//! each server starts from a copy of it, which takes a fraction of a second.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use eventstore::DatabaseUrl;

use crate::servers::free_port;

/// The superuser of a private cluster; it may connect from loopback without
/// a password.
pub const SUPERUSER: &str = "postgres";

/// A server certificate and its private key, both PEM files; the server
/// reads copies taken when it starts.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate (chain), leaf first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// How a [`PrivatePostgres`] is set up.
#[derive(Debug, Clone, Default)]
pub struct PostgresOptions {
    tls: Option<TlsFiles>,
    tls_only: bool,
}

impl PostgresOptions {
    /// No TLS; trust for the superuser and passwords (SCRAM) for every other
    /// role, on loopback.
    pub fn new() -> PostgresOptions {
        PostgresOptions::default()
    }

    /// TLS on (`ssl = on`) with this certificate; connections without TLS
    /// are still accepted unless [`PostgresOptions::tls_only`].
    pub fn tls(mut self, files: &TlsFiles) -> PostgresOptions {
        self.tls = Some(files.clone());
        self
    }

    /// TCP connections only over TLS: `pg_hba.conf` has `hostssl` rules and
    /// no `host` ones, so a plain connection finds no rule and is refused.
    /// Needs [`PostgresOptions::tls`].
    pub fn tls_only(mut self) -> PostgresOptions {
        self.tls_only = true;
        self
    }
}

/// A PostgreSQL cluster of the test's own on `127.0.0.1:<port>`; see the
/// module documentation. Dropping it stops the server (`pg_ctl stop -m
/// immediate`) and deletes its directory.
#[derive(Debug)]
pub struct PrivatePostgres {
    port: u16,
    bin: PathBuf,
    // The cluster is in `data/`, the server's log is `server.log`, the
    // Unix socket is here too.
    dir: tempfile::TempDir,
    running: bool,
}

impl PrivatePostgres {
    /// A server without TLS; see [`PostgresOptions::new`].
    pub fn start() -> PrivatePostgres {
        PrivatePostgres::start_with(PostgresOptions::new())
    }

    /// A server with TLS on, still accepting plain connections.
    pub fn start_with_tls(files: &TlsFiles) -> PrivatePostgres {
        PrivatePostgres::start_with(PostgresOptions::new().tls(files))
    }

    /// A server set up as `options` say; returns once it accepts
    /// connections.
    pub fn start_with(options: PostgresOptions) -> PrivatePostgres {
        assert!(
            options.tls.is_some() || !options.tls_only,
            "PostgresOptions::tls_only needs a certificate (PostgresOptions::tls)"
        );
        let bin = binaries();
        let template = template(&bin);
        let dir = tempfile::Builder::new()
            .prefix("ordo-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temporary directory for PostgreSQL: {e}"));
        give_to_server_user(dir.path());
        let data = dir.path().join("data");
        run(Command::new("cp").arg("-a").arg(&template).arg(&data));
        configure(dir.path(), &options);
        let mut postgres = PrivatePostgres {
            port: 0,
            bin,
            dir,
            running: false,
        };
        postgres.boot();
        postgres
    }

    /// Starts the server, on a new port when the chosen one was taken
    /// meanwhile.
    fn boot(&mut self) {
        let mut last = String::new();
        for _ in 0..5 {
            self.port = free_port();
            let out = self.pg_ctl(&[
                "start",
                "-w",
                "-t",
                "30",
                "-l",
                &self.log_path().to_string_lossy(),
                "-o",
                &format!("-p {}", self.port),
            ]);
            if out.status.success() {
                self.running = true;
                return;
            }
            last = self.log();
            if !last.contains("could not bind") && !last.contains("already in use") {
                break;
            }
        }
        panic!(
            "PostgreSQL did not start in {}:\n{last}",
            self.dir.path().display()
        );
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        as_server_user(&self.bin.join("pg_ctl"), self.dir.path())
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run pg_ctl: {e}"))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The port it listens on (on `127.0.0.1` only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the server logged so far (connection attempts refused by
    /// `pg_hba.conf`, start-up errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `database` as the superuser `postgres`, who needs no password.
    pub fn url(&self, database: &str) -> DatabaseUrl {
        self.url_with(database, "")
    }

    /// `database` as the superuser, with libpq query parameters added
    /// (`"sslmode=verify-full&sslrootcert=/path/ca.pem"`; empty for none).
    pub fn url_with(&self, database: &str, params: &str) -> DatabaseUrl {
        parse(&self.url_text(SUPERUSER, None, database, params))
    }

    /// `database` as another role, with its password.
    pub fn url_as(&self, user: &str, password: &str, database: &str) -> DatabaseUrl {
        parse(&self.url_text(user, Some(password), database, ""))
    }

    /// The text of a URL to this server: user and password percent-encoded,
    /// `params` appended as the query (empty for none).
    pub fn url_text(
        &self,
        user: &str,
        password: Option<&str>,
        database: &str,
        params: &str,
    ) -> String {
        let credentials = match password {
            Some(password) => format!("{}:{}", encode(user), encode(password)),
            None => encode(user),
        };
        let query = if params.is_empty() {
            String::new()
        } else {
            format!("?{params}")
        };
        format!(
            "postgres://{credentials}@127.0.0.1:{}/{}{query}",
            self.port,
            encode(database)
        )
    }

    /// Stops it at once (`pg_ctl stop -m immediate`); clients see the
    /// connection go. Dropping it stops it too.
    pub fn stop(&mut self) {
        if self.running {
            let _ = self.pg_ctl(&["stop", "-w", "-m", "immediate"]);
            self.running = false;
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn parse(url: &str) -> DatabaseUrl {
    url.parse()
        .unwrap_or_else(|e| panic!("private PostgreSQL URL: {e}"))
}

/// Percent-encodes all but the characters URLs leave alone.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Writes the cluster's settings and `pg_hba.conf`, and the server's copy
/// of the certificate and key.
fn configure(dir: &Path, options: &PostgresOptions) {
    let data = dir.join("data");
    let mut settings = format!(
        "\n# ordo's private test server\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = '{}'\n\
         max_connections = 200\n\
         shared_buffers = 16MB\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n\
         password_encryption = 'scram-sha-256'\n",
        dir.display()
    );
    if let Some(tls) = &options.tls {
        for (from, to) in [(&tls.cert, "server.crt"), (&tls.key, "server.key")] {
            let to = data.join(to);
            std::fs::copy(from, &to)
                .unwrap_or_else(|e| panic!("copy {} for PostgreSQL: {e}", from.display()));
            // PostgreSQL refuses a key others may read.
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", to.display()));
            give_to_server_user(&to);
        }
        settings.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
    }
    append(&data.join("postgresql.conf"), &settings);

    let tcp = if options.tls_only { "hostssl" } else { "host" };
    let hba = format!(
        "# TYPE DATABASE USER ADDRESS METHOD\n\
         local all {SUPERUSER} trust\n\
         local all all scram-sha-256\n\
         {tcp} all {SUPERUSER} 127.0.0.1/32 trust\n\
         {tcp} all all 127.0.0.1/32 scram-sha-256\n"
    );
    // Overwritten in place: the file stays the server user's.
    std::fs::write(data.join("pg_hba.conf"), hba)
        .unwrap_or_else(|e| panic!("write pg_hba.conf: {e}"));
}

fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

/// The directory of `initdb` and `pg_ctl`.
fn binaries() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(dir) = std::env::var_os("ORDO_PG_BINDIR") {
            return dir.into();
        }
        let newest = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version: u32 = entry.file_name().to_str()?.parse().ok()?;
                let bin = entry.path().join("bin");
                bin.join("initdb").is_file().then_some((version, bin))
            })
            .max();
        if let Some((_, bin)) = newest {
            return bin;
        }
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            if Path::new(dir).join("initdb").is_file() && Path::new(dir).join("pg_ctl").is_file() {
                return dir.into();
            }
        }
        panic!(
            "PostgreSQL's initdb and pg_ctl not found; install postgresql or set ORDO_PG_BINDIR to their directory"
        )
    })
    .clone()
}

/// A freshly initialised cluster to copy, made once per process and
/// installation and kept under the temporary directory for later runs.
fn template(bin: &Path) -> PathBuf {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let tag: String = bin
                .to_string_lossy()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            // Owned by whoever runs the servers: their name is in its name.
            let path = std::env::temp_dir().join(format!(
                "ordo-pg-template-v1-{}-{}{tag}",
                current_uid(),
                server_user()
            ));
            if path.join("global").join("pg_control").is_file() {
                return path;
            }
            // Made aside and renamed into place, so nobody copies half of it.
            let staging = tempfile::Builder::new()
                .prefix("ordo-pg-initdb-")
                .tempdir()
                .unwrap_or_else(|e| panic!("temporary directory for initdb: {e}"));
            give_to_server_user(staging.path());
            let data = staging.path().join("data");
            run(as_server_user(&bin.join("initdb"), staging.path())
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--no-sync",
                    "--no-instructions",
                    "--encoding=UTF8",
                    "--locale=C",
                ]));
            // Losing a race to another process is fine: its copy is as good.
            let _ = std::fs::rename(&data, &path);
            path
        })
        .clone()
}

fn run(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The effective user id of this process (the owner of `/proc/self`).
fn current_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or_else(|e| panic!("who am I (/proc/self): {e}"))
}

fn is_root() -> bool {
    current_uid() == 0
}

/// Who runs PostgreSQL when we are root: `ORDO_PG_USER`, else `postgres`.
fn server_user() -> String {
    std::env::var("ORDO_PG_USER")
        .ok()
        .filter(|user| !user.is_empty())
        .unwrap_or_else(|| "postgres".to_owned())
}

/// `program`, run as [`server_user`] when we are root, in `dir` (which that
/// user may enter).
fn as_server_user(program: &Path, dir: &Path) -> Command {
    let mut command = if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", &server_user(), "--"]).arg(program);
        command
    } else {
        Command::new(program)
    };
    command.current_dir(dir);
    command
}

/// Hands `path` to [`server_user`] when we are root (otherwise it is ours
/// already, and we run the server).
fn give_to_server_user(path: &Path) {
    if !is_root() {
        return;
    }
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    let (uid, gid) = *IDS.get_or_init(|| {
        let user = server_user();
        let passwd = std::fs::read_to_string("/etc/passwd")
            .unwrap_or_else(|e| panic!("read /etc/passwd: {e}"));
        passwd
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                if fields.first() != Some(&user.as_str()) {
                    return None;
                }
                Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
            })
            .unwrap_or_else(|| {
                panic!(
                    "PostgreSQL refuses to run as root, and there is no user {user} to run it as; set ORDO_PG_USER to an unprivileged user"
                )
            })
    });
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", path.display()));
}
