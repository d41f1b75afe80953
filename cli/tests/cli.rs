//! The `ordo` binary as a user meets it: help, bad input, unreachable
//! servers, and migrations started twice at once.

use std::process::{Command, Output};

fn ordo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .expect("run ordo")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const SUBCOMMANDS: &[&[&str]] = &[
    &["up"],
    &["api"],
    &["relay"],
    &["projector"],
    &["saga"],
    &["migrate"],
    &["rebuild"],
    &["events"],
    &["check"],
    &["status"],
    &["bench"],
    &["bench", "append"],
    &["bench", "relay"],
    &["bench", "rebuild"],
    &["bench", "place-orders"],
    &["nats-config"],
    &["protect-stream"],
];

#[test]
fn every_subcommand_has_help() {
    let top = ordo(&["--help"]);
    assert!(top.status.success());
    let top = text(&top.stdout);
    for command in SUBCOMMANDS {
        if command.len() == 1 {
            assert!(
                top.contains(command[0]),
                "`ordo --help` lists {}",
                command[0]
            );
        }
        let mut args = command.to_vec();
        args.push("--help");
        let out = ordo(&args);
        assert!(
            out.status.success(),
            "ordo {} --help fails",
            command.join(" ")
        );
        let help = text(&out.stdout);
        assert!(
            help.contains("Usage: ordo"),
            "ordo {} --help: {help}",
            command.join(" ")
        );
    }
}

#[test]
fn a_bad_flag_is_a_usage_error_with_status_2() {
    let out = ordo(&["migrate", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: unexpected argument '--no-such-flag'"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

#[test]
fn bad_configuration_is_refused_before_anything_runs() {
    for (args, needle) in [
        (
            &["--database-url", "mysql://h/db", "migrate"][..],
            "expected postgres://",
        ),
        (
            &["--nats-url", "http://h", "migrate"][..],
            "expected nats://",
        ),
        (&["--nats-stream", "a.b", "migrate"][..], "may only contain"),
        (
            &["--subject-prefix", "a.b", "migrate"][..],
            "one subject token",
        ),
        (
            &["--log-format", "xml", "migrate"][..],
            "invalid value 'xml'",
        ),
        (
            &["up", "--payment-timeout", "soon"][..],
            "examples: 2s, 15m",
        ),
        (
            &["up", "--http-addr", "nowhere"][..],
            "invalid value 'nowhere'",
        ),
        (
            &["--nats-inbox-prefix", "_INBOX.*", "migrate"][..],
            "is not a subject prefix",
        ),
        (
            &["--nats-user", "relay", "migrate"][..],
            "NATS_PASSWORD: NATS_USER is set without it",
        ),
        (
            &["--nats-tls-cert", "c.pem", "migrate"][..],
            "NATS_TLS_KEY: NATS_TLS_CERT is set without it",
        ),
        (
            &["--nats-creds", "a.creds", "--nats-nkey", "a.nk", "migrate"][..],
            "set one way to log in to NATS",
        ),
        (
            &["nats-config", "--out", "x", "--subscriber-consumer", "a.b"][..],
            "may only contain",
        ),
    ] {
        let out = ordo(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn an_unreachable_database_is_one_line_and_status_1() {
    // Port 1 on loopback: nothing listens there.
    let out = ordo(&["--database-url", "postgres://127.0.0.1:1/ordo", "migrate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(
        err.trim(),
        "error: cannot reach PostgreSQL at postgres://127.0.0.1:1/ordo: connection refused; \
         set DATABASE_URL or run scripts/up"
    );
}

#[test]
fn a_load_run_against_no_server_says_how_to_start_one() {
    let out = ordo(&[
        "bench",
        "place-orders",
        "--url",
        "http://127.0.0.1:1",
        "--duration",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot reach ordo at http://127.0.0.1:1") && err.contains("scripts/up"),
        "{err}"
    );
}

#[tokio::test]
async fn two_migrations_at_the_same_moment_apply_each_file_once() {
    let database = test_support::TestDatabase::fresh();
    let url_text = database.url.expose().to_owned();
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
            .args(["--database-url", &url_text, "migrate"])
            .output()
    };
    // Both start together: the database does not exist yet, so they also race
    // to create it.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().expect("thread"), b.join().expect("thread"))
    });
    let (a, b) = (a.expect("run ordo"), b.expect("run ordo"));
    assert!(a.status.success(), "first: {}", text(&a.stderr));
    assert!(b.status.success(), "second: {}", text(&b.stderr));
    let outputs = format!("{}{}", text(&a.stdout), text(&b.stdout));
    assert_eq!(
        outputs.matches("applied ").count(),
        1,
        "exactly one of them applied: {outputs}"
    );
    assert_eq!(
        outputs.matches("schema is up to date").count(),
        1,
        "{outputs}"
    );

    let client = database.url.connect().await.expect("connect");
    let rows = client
        .query(
            "select version, count(*) from ordo_migrations group by version",
            &[],
        )
        .await
        .expect("query");
    assert_eq!(rows.len(), eventstore::migrations::MIGRATIONS.len());
    for row in rows {
        assert_eq!(
            row.get::<_, i64>(1),
            1,
            "migration {} recorded once",
            row.get::<_, i32>(0)
        );
    }
    drop(client);
}
