//! `scripts/chaos`, reduced: a short run on a private stack with SIGKILLs of
//! every ordo process and one restart each of PostgreSQL and NATS must end
//! with every invariant holding and every acknowledged command in the log,
//! and must leave nothing running. Bad arguments are refused before anything
//! starts. (The full runs, 90 s and 24 kills, are in docs/CHAOS.md.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_owned()
}

/// Runs scripts/chaos with its own state directory, the test build of ordo,
/// and none of the caller's stack variables (scripts/test exports its own).
fn chaos(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new("timeout");
    command
        .arg("600")
        .arg(repo().join("scripts/chaos"))
        .args(args)
        .current_dir(repo())
        .env("ORDO_CHAOS_DIR", dir)
        .env("ORDO_BIN", env!("CARGO_BIN_EXE_ordo"));
    for var in [
        "DATABASE_URL",
        "NATS_URL",
        "ORDO_STACK",
        "ORDO_STATE_DIR",
        "ORDO_HTTP_ADDR",
        "ORDO_PAYMENT_TIMEOUT",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    command.output().expect("run scripts/chaos")
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// Every pid the timeline names: "(pid N)" and "(pids A B C)".
fn pids_in(text: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for (marker, many) in [("(pid ", false), ("(pids ", true)] {
        for part in text.split(marker).skip(1) {
            let inside = part.split(')').next().unwrap_or_default();
            let words: Vec<&str> = if many {
                inside.split_whitespace().collect()
            } else {
                inside.split([',', ' ', ';']).take(1).collect()
            };
            pids.extend(words.iter().filter_map(|w| w.parse::<u32>().ok()));
        }
    }
    pids
}

/// The number after `label` on the summary line that starts with it.
fn figure(text: &str, label: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.trim_start().starts_with(label))?;
    line.trim_start()[label.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())?
        .parse()
        .ok()
}

#[test]
fn a_short_chaos_run_keeps_every_invariant_and_every_acknowledged_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let began = Instant::now();
    let output = chaos(
        dir.path(),
        &[
            "--duration",
            "20s",
            "--kills",
            "8",
            "--seed",
            "42",
            "--concurrency",
            "4",
            "--users",
            "40",
            "--products",
            "12",
        ],
    );
    let took = began.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("scripts/chaos took {took:?}");
    assert!(
        output.status.success(),
        "scripts/chaos failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    assert!(stdout.contains("verdict: PASS"), "{stdout}");
    assert_eq!(figure(&stdout, "kills (SIGKILL)"), Some(8), "{stdout}");
    for name in [
        "api",
        "relay-1",
        "relay-2",
        "projector-1",
        "projector-2",
        "saga-1",
        "saga-2",
    ] {
        assert!(
            stdout.contains(&format!("kill -9 {name} (pid ")),
            "{name} was never killed:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("server restarts   PostgreSQL 1, NATS 1"),
        "{stdout}"
    );
    assert!(stdout.contains("postgres is back") && stdout.contains("nats is back"));
    assert!(
        figure(&stdout, "acknowledged").unwrap_or(0) > 52,
        "more than the seeded users and products were acknowledged:\n{stdout}"
    );
    assert!(stdout.contains("missing from the log: 0"), "{stdout}");
    assert!(stdout.contains("all invariants hold"), "{stdout}");

    // Nothing it started is left: no ordo process, no server.
    std::thread::sleep(Duration::from_millis(300));
    let pids = pids_in(&stdout);
    assert!(pids.len() >= 7 + 8, "pids in the timeline: {pids:?}");
    for pid in pids {
        assert!(!alive(pid), "process {pid} was left running");
    }
    let timeline = std::fs::read_to_string(dir.path().join("logs/timeline.txt"))
        .expect("the timeline is kept");
    assert!(timeline.contains("verdict: PASS"));
}

#[test]
fn bad_arguments_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (args, needle) in [
        (&["--duration", "soon"][..], "--duration"),
        (&["--kills", "many"][..], "--kills"),
        (&["--duration", "5s"][..], "at least 15s"),
        (&["--frobnicate"][..], "unknown argument"),
        (&["--nats-stop", "gently"][..], "--nats-stop"),
    ] {
        let output = chaos(dir.path(), args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    assert!(
        !dir.path().join("stack").exists(),
        "no stack was started for bad arguments"
    );
}
