//! `scripts/up` end to end on a private stack: `ordo up` answers `/health`,
//! and Ctrl-C stops everything it started, leaving no process behind.

use std::io::{Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    http_get_as(addr, path, None)
}

fn http_get_as(addr: &str, path: &str, token: Option<&str>) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{authorization}\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// Pids `stack.env` records (`..._PID=<n>` lines).
fn recorded_pids(state: &Path) -> Vec<u32> {
    std::fs::read_to_string(state.join("stack.env"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            key.ends_with("_PID")
                .then(|| value.trim_matches(['"', '\'']).parse().ok())?
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn scripts_up_serves_health_and_ctrl_c_leaves_nothing_behind() {
    let state = tempfile::tempdir().expect("tempdir");
    let port = test_support::servers::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut up = Command::new(repo().join("scripts/up"))
        .current_dir(repo())
        .env("ORDO_STACK", "private")
        .env("ORDO_STATE_DIR", state.path())
        .env("ORDO_BIN", env!("CARGO_BIN_EXE_ordo"))
        .env("ORDO_HTTP_ADDR", &addr)
        .env_remove("DATABASE_URL")
        .env_remove("NATS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // its own process group, as a terminal would give it
        .process_group(0)
        .spawn()
        .expect("start scripts/up");

    let healthy = test_support::poll_blocking(
        Duration::from_secs(90),
        Duration::from_millis(200),
        || {
            let answered = http_get(&addr, "/health").is_some_and(|response| {
                response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
            });
            // Stop looking once scripts/up has ended by itself.
            (answered, answered || up.try_wait().expect("wait").is_some())
        },
        |(_, done)| *done,
    )
    .0;
    let started = recorded_pids(state.path());
    // The local admin token: made on first start, readable by its owner only,
    // and working; without it, the API refuses.
    let token_file = state.path().join("admin.token");
    let token = std::fs::read_to_string(&token_file).unwrap_or_default();
    let mode = std::fs::metadata(&token_file).map(|m| {
        use std::os::unix::fs::PermissionsExt as _;
        m.permissions().mode() & 0o777
    });
    let with_token = http_get_as(&addr, "/projections", Some(token.trim())).unwrap_or_default();
    let without = http_get(&addr, "/projections").unwrap_or_default();

    // Ctrl-C: SIGINT to the whole foreground group (the group scripts/up leads).
    let group = Pid::from_raw(i32::try_from(up.id()).expect("pid"));
    killpg(group, Signal::SIGINT).expect("signal the group");
    let status = test_support::poll_blocking(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || up.try_wait().expect("wait"),
        Option::is_some,
    );
    if status.is_none() {
        let _ = killpg(group, Signal::SIGKILL);
    }
    assert!(healthy, "GET /health never answered 200 on {addr}");
    assert!(
        token.starts_with("ordo_"),
        "admin.token holds a token: {token:?}"
    );
    assert_eq!(mode.ok(), Some(0o600), "admin.token is private");
    assert!(
        with_token.contains(" 200 "),
        "the admin token works: {with_token}"
    );
    assert!(without.contains(" 401 "), "no token, no answer: {without}");
    assert!(status.is_some(), "scripts/up did not stop on Ctrl-C");
    assert_eq!(
        started.len(),
        2,
        "a private PostgreSQL and NATS were recorded: {started:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    for pid in started {
        assert!(!alive(pid), "process {pid} was left behind");
    }
    assert!(
        http_get(&addr, "/health").is_none(),
        "ordo still answers after Ctrl-C"
    );
}
