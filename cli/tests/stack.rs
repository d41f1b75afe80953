//! The local-stack helper of scripts/up and scripts/test (`scripts/lib/stack.sh`), for
//! real: private PostgreSQL and NATS JetStream on free loopback ports, reused by a second
//! run, stopped without leaving a process behind; and the shared servers chosen, with
//! nothing started, when `DATABASE_URL` / `NATS_URL` answer.
//!
//! Every test has its own `ORDO_STATE_DIR` in a temporary directory, and a guard that
//! stops (and deletes) whatever the helper started there, even when the test fails.
//! The shared servers (DATABASE_URL / NATS_URL, default 127.0.0.1:5432 and :4222) are
//! only ever connected to, never stopped or reconfigured.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tempfile::TempDir;

const DEFAULT_DATABASE_URL: &str = "postgres://127.0.0.1:5432/ordo";
const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `script` in bash after sourcing the helper, with `ORDO_STATE_DIR=state` and
/// exactly the stack variables given in `env` (none inherited from the caller, who may
/// be scripts/test with its own stack).
fn helper(state: &Path, script: &str, env: &[(&str, &str)]) -> Output {
    let lib = repo().join("scripts/lib/stack.sh");
    let mut command = Command::new("timeout");
    command
        .arg("300")
        .arg("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\nsource \"$1\"\n{script}"))
        .arg("bash")
        .arg(&lib)
        .current_dir(repo())
        .env("ORDO_STATE_DIR", state);
    for var in [
        "DATABASE_URL",
        "NATS_URL",
        "ORDO_STACK",
        "ORDO_STACK_PG",
        "ORDO_STACK_NATS",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    command.output().expect("run bash (and coreutils' timeout)")
}

/// What the helper exported, printed by the snippets below as KEY=value lines.
const PRINT_URLS: &str = r#"printf 'DATABASE_URL=%s\nNATS_URL=%s\n' "$DATABASE_URL" "$NATS_URL""#;

fn key_values(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn check(output: &Output, what: &str) -> (HashMap<String, String>, String) {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    (key_values(&stdout), stderr)
}

/// A state directory for the helper; on drop, stops and deletes whatever it started.
struct Stack {
    dir: TempDir,
}

impl Stack {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `ordo_stack_up`, returning the exported URLs and the helper's messages.
    fn up(&self, env: &[(&str, &str)]) -> (String, String, String) {
        let output = helper(&self.state(), &format!("ordo_stack_up\n{PRINT_URLS}"), env);
        let (vars, stderr) = check(&output, "ordo_stack_up");
        let url = |k: &str| {
            vars.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("no {k} printed"))
        };
        (url("DATABASE_URL"), url("NATS_URL"), stderr)
    }

    fn down(&self) -> String {
        check(
            &helper(&self.state(), "ordo_stack_down", &[]),
            "ordo_stack_down",
        )
        .1
    }

    /// The record of what was started (stack.env), empty when there is none.
    fn record(&self) -> HashMap<String, String> {
        fs::read_to_string(self.state().join("stack.env"))
            .map(|text| key_values(&text))
            .unwrap_or_default()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let output = helper(&self.state(), "ordo_stack_purge", &[]);
        if !output.status.success() {
            eprintln!(
                "cleaning up {} failed: {}",
                self.state().display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// Host and port of the first server in a postgres:// or nats:// URL.
fn host_port(url: &str, default_port: u16) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', ',']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => (
            host.trim_matches(['[', ']']).to_owned(),
            port.parse().unwrap_or(default_port),
        ),
        _ => (authority.trim_matches(['[', ']']).to_owned(), default_port),
    }
}

fn port_of(url: &str) -> u16 {
    host_port(url, 0).1
}

fn connect(host: &str, port: u16) -> Option<TcpStream> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().ok()?.collect();
    addrs
        .iter()
        .find_map(|a| TcpStream::connect_timeout(a, Duration::from_secs(2)).ok())
}

fn port_open(port: u16) -> bool {
    connect("127.0.0.1", port).is_some()
}

/// The INFO line a NATS server sends on connect.
fn nats_info(host: &str, port: u16) -> Option<String> {
    let stream = connect(host, port)?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    Some(line)
}

fn has_jetstream(host: &str, port: u16) -> bool {
    nats_info(host, port)
        .is_some_and(|info| info.starts_with("INFO ") && info.contains(r#""jetstream":true"#))
}

/// Runs a client tool; None when it is not installed.
fn tool(program: &str, args: &[&str]) -> Option<Output> {
    match Command::new(program).args(args).output() {
        Ok(output) => Some(output),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

fn postgres_answers(url: &str) -> bool {
    let (host, port) = host_port(url, 5432);
    match tool("pg_isready", &["-q", "-t", "3", "-d", url]) {
        Some(output) => output.status.success(),
        None => connect(&host, port).is_some(),
    }
}

/// Alive and not a zombie (a stopped server's pid may linger as one until it is reaped).
fn pid_alive(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
            !matches!(state, Some(Some('Z' | 'X')) | None)
        }
        Err(_) => false,
    }
}

/// Processes whose command line mentions `needle` (the state or data directory).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) || !pid_alive(&name) {
            continue;
        }
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!("{name}: {cmdline}"));
            }
        }
    }
    found
}

/// A port nobody listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    listener.local_addr().expect("its address").port()
}

/// PostgreSQL and NATS JetStream that answer, to play the shared servers: the ones of
/// DATABASE_URL / NATS_URL (defaults 127.0.0.1:5432 and :4222) when they answer, else a
/// private stack started for the purpose (returned so that it is stopped at the end).
fn reachable_servers() -> (String, String, Option<Stack>) {
    let database_url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| DEFAULT_NATS_URL.to_owned());
    let (nats_host, nats_port) = host_port(&nats_url, 4222);
    if postgres_answers(&database_url) && has_jetstream(&nats_host, nats_port) {
        return (database_url, nats_url, None);
    }
    eprintln!("{database_url} / {nats_url} do not answer; a private stack stands in for them");
    let stack = Stack::new();
    let (database_url, nats_url, _) = stack.up(&[("ORDO_STACK", "private")]);
    (database_url, nats_url, Some(stack))
}

fn assert_private_stack_answers(database_url: &str, nats_url: &str) {
    let pg_port = port_of(database_url);
    let nats_port = port_of(nats_url);
    assert!(
        database_url.starts_with("postgres://postgres@127.0.0.1:"),
        "{database_url}"
    );
    assert!(nats_url.starts_with("nats://127.0.0.1:"), "{nats_url}");
    assert_ne!(
        pg_port, 5432,
        "a private PostgreSQL must not take the shared port"
    );
    assert_ne!(
        nats_port, 4222,
        "a private NATS must not take the shared port"
    );
    assert_ne!(pg_port, nats_port);
    assert!(
        port_open(pg_port),
        "nothing listens on the private PostgreSQL port {pg_port}"
    );

    let info = nats_info("127.0.0.1", nats_port).expect("the private NATS sends INFO");
    assert!(
        info.contains(r#""jetstream":true"#),
        "no JetStream in: {info}"
    );

    if let Some(output) = tool(
        "pg_isready",
        &["-h", "127.0.0.1", "-p", &pg_port.to_string()],
    ) {
        assert!(
            output.status.success(),
            "pg_isready: {}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
    // The database itself is created by ordo; the role in the URL must be a superuser.
    let postgres_db = format!("postgres://postgres@127.0.0.1:{pg_port}/postgres");
    let sql = "select rolsuper, current_setting('fsync'), current_setting('listen_addresses') \
               from pg_roles where rolname = current_user";
    if let Some(output) = tool("psql", &[&postgres_db, "-AtX", "-F", " ", "-c", sql]) {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            stdout.trim(),
            "t on 127.0.0.1",
            "superuser, fsync on, loopback only"
        );
    }
}

#[test]
fn private_stack_starts_is_reused_and_stops_without_leftovers() {
    let stack = Stack::new();

    let (database_url, nats_url, messages) = stack.up(&[("ORDO_STACK", "private")]);
    assert!(
        messages.contains("private"),
        "says which stack is used: {messages}"
    );
    assert_private_stack_answers(&database_url, &nats_url);
    let record = stack.record();
    let pids: Vec<String> = ["PG_PID", "NATS_PID"]
        .iter()
        .map(|k| {
            record
                .get(*k)
                .cloned()
                .unwrap_or_else(|| panic!("stack.env lacks {k}"))
        })
        .collect();
    for pid in &pids {
        assert!(pid_alive(pid), "recorded pid {pid} is not running");
    }

    // A second run reuses the running servers.
    let (again_db, again_nats, messages) = stack.up(&[("ORDO_STACK", "private")]);
    assert_eq!((&again_db, &again_nats), (&database_url, &nats_url));
    assert!(messages.contains("reused"), "{messages}");
    let again = stack.record();
    assert_eq!(again.get("PG_PID"), record.get("PG_PID"));
    assert_eq!(again.get("NATS_PID"), record.get("NATS_PID"));

    // Stopping through the helper leaves nothing behind.
    stack.down();
    for pid in &pids {
        assert!(
            !pid_alive(pid),
            "pid {pid} still runs after ordo_stack_down"
        );
    }
    assert!(
        !port_open(port_of(&database_url)),
        "PostgreSQL port still open"
    );
    assert!(!port_open(port_of(&nats_url)), "NATS port still open");
    assert!(
        !stack.record().contains_key("PG_PID"),
        "stack.env still records servers"
    );
    let state = stack.state().to_string_lossy().into_owned();
    let left = processes_mentioning(&state);
    assert!(left.is_empty(), "processes left running: {left:?}");

    // As scripts/test uses it: start (on the existing data) and stop on exit.
    let output = helper(
        &stack.state(),
        &format!(
            "trap ordo_stack_release EXIT\nordo_stack_up\n{PRINT_URLS}\n\
             grep -E '^(PG_PID|NATS_PID|PG_DATA)=' \"$ORDO_STATE_DIR/stack.env\""
        ),
        &[("ORDO_STACK", "private")],
    );
    let (vars, messages) = check(&output, "ordo_stack_up with ordo_stack_release on EXIT");
    assert!(messages.contains("started"), "{messages}");
    assert!(
        messages.contains("stopped private PostgreSQL"),
        "{messages}"
    );
    assert!(messages.contains("stopped private NATS"), "{messages}");
    for key in ["PG_PID", "NATS_PID"] {
        let pid = vars.get(key).unwrap_or_else(|| panic!("no {key} printed"));
        assert!(
            !pid_alive(pid),
            "{key} {pid} still runs after the run ended"
        );
    }
    let data = vars.get("PG_DATA").expect("PG_DATA printed");
    let left = processes_mentioning(data);
    assert!(left.is_empty(), "processes left running: {left:?}");
    assert!(
        stack.record().is_empty(),
        "stack.env must be gone: {:?}",
        stack.record()
    );
}

#[test]
fn shared_servers_are_used_when_they_answer_and_nothing_is_started() {
    let (database_url, nats_url, _shared) = reachable_servers();
    let stack = Stack::new();
    let (db, nats, messages) =
        stack.up(&[("DATABASE_URL", &database_url), ("NATS_URL", &nats_url)]);
    assert_eq!(db, database_url);
    assert_eq!(nats, nats_url);
    assert!(
        messages.contains(&format!("PostgreSQL shared at {database_url}"))
            && messages.contains(&format!("NATS JetStream shared at {nats_url}")),
        "{messages}"
    );
    assert!(
        stack.record().is_empty(),
        "nothing may be recorded: {:?}",
        stack.record()
    );
    for dir in ["pg", "nats"] {
        assert!(!stack.state().join(dir).exists(), "{dir}/ was created");
    }
    let left = processes_mentioning(&stack.state().to_string_lossy());
    assert!(left.is_empty(), "processes started: {left:?}");
}

#[test]
fn only_the_server_that_does_not_answer_is_replaced() {
    let (database_url, _, _shared) = reachable_servers();
    let nowhere = format!("nats://127.0.0.1:{}", closed_port());
    let stack = Stack::new();
    let (db, nats, messages) = stack.up(&[("DATABASE_URL", &database_url), ("NATS_URL", &nowhere)]);
    assert_eq!(db, database_url, "the answering PostgreSQL is kept");
    assert_ne!(nats, nowhere);
    assert!(messages.contains("NATS not reachable"), "{messages}");
    let nats_port = port_of(&nats);
    assert_ne!(nats_port, 4222);
    assert!(
        has_jetstream("127.0.0.1", nats_port),
        "private NATS without JetStream"
    );
    let record = stack.record();
    assert!(
        !record.contains_key("PG_PID"),
        "no PostgreSQL may be started: {record:?}"
    );
    let pid = record.get("NATS_PID").cloned().expect("NATS_PID recorded");

    stack.down();
    assert!(!pid_alive(&pid), "nats-server {pid} still runs");
    assert!(!port_open(nats_port));
}

#[test]
fn shared_mode_starts_nothing_and_says_what_does_not_answer() {
    let stack = Stack::new();
    let nowhere = format!("nats://127.0.0.1:{}", closed_port());
    let output = helper(
        &stack.state(),
        "ordo_stack_up",
        &[("ORDO_STACK", "shared"), ("NATS_URL", &nowhere)],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "must fail: {stderr}");
    assert!(
        stderr.contains(&format!("NATS not reachable at {nowhere}")),
        "{stderr}"
    );
    assert!(stack.record().is_empty());
    let left = processes_mentioning(&stack.state().to_string_lossy());
    assert!(left.is_empty(), "processes started: {left:?}");
}

#[test]
fn restart_brings_a_private_server_back_on_the_same_port_and_data() {
    let stack = Stack::new();
    let script = r#"
ordo_stack_up
psql -X -q "${DATABASE_URL%/ordo}/postgres" -c 'create table if not exists survives_restart (x int)'
printf 'PG_PID_BEFORE=%s\n' "$(awk -F= '$1 == "PG_PID" {print $2}' "$ORDO_STATE_DIR/stack.env")"
printf 'NATS_PID_BEFORE=%s\n' "$(awk -F= '$1 == "NATS_PID" {print $2}' "$ORDO_STATE_DIR/stack.env")"
ordo_stack_restart pg immediate
ordo_stack_restart nats term
if ordo_stack_restart pg sideways 2>/dev/null; then echo BAD_MODE_ACCEPTED=yes; fi
printf 'PG_PID_AFTER=%s\n' "$(awk -F= '$1 == "PG_PID" {print $2}' "$ORDO_STATE_DIR/stack.env")"
printf 'NATS_PID_AFTER=%s\n' "$(awk -F= '$1 == "NATS_PID" {print $2}' "$ORDO_STATE_DIR/stack.env")"
printf 'TABLE=%s\n' "$(psql -X -At "${DATABASE_URL%/ordo}/postgres" -c "select count(*) from pg_tables where tablename = 'survives_restart'")"
printf 'DATABASE_URL=%s\nNATS_URL=%s\n' "$DATABASE_URL" "$NATS_URL"
"#;
    let output = helper(&stack.state(), script, &[("ORDO_STACK", "private")]);
    let (vars, stderr) = check(&output, "ordo_stack_up + ordo_stack_restart");
    let var = |k: &str| vars.get(k).cloned().unwrap_or_default();
    assert!(
        stderr.contains("restarted private PostgreSQL")
            && stderr.contains("restarted private NATS"),
        "{stderr}"
    );
    assert!(!vars.contains_key("BAD_MODE_ACCEPTED"), "{stderr}");
    assert_ne!(
        var("PG_PID_BEFORE"),
        var("PG_PID_AFTER"),
        "a new postmaster"
    );
    assert_ne!(
        var("NATS_PID_BEFORE"),
        var("NATS_PID_AFTER"),
        "a new nats-server"
    );
    assert_eq!(var("TABLE"), "1", "the data survived the restart");
    // Same URLs, and the servers answer there.
    let record = stack.record();
    assert_eq!(
        port_of(&var("DATABASE_URL")),
        record["PG_PORT"].parse::<u16>().expect("PG_PORT")
    );
    assert_eq!(
        port_of(&var("NATS_URL")),
        record["NATS_PORT"].parse::<u16>().expect("NATS_PORT")
    );
    assert!(postgres_answers(&var("DATABASE_URL")));
    assert!(has_jetstream("127.0.0.1", port_of(&var("NATS_URL"))));
    assert!(!pid_alive(&var("PG_PID_BEFORE")) && !pid_alive(&var("NATS_PID_BEFORE")));
    stack.down();
}
