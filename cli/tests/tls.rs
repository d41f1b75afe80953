//! `ordo` against a PostgreSQL that accepts only TLS: `sslmode=verify-full`
//! in `DATABASE_URL`, the CA named by `PGSSLROOTCERT` as libpq reads it.

use std::path::Path;
use std::process::{Command, Output};

use eventstore::{DatabaseUrl, EventStore};
use test_support::certs::TestCa;
use test_support::shop::Shop;
use test_support::{PostgresOptions, PrivatePostgres};

fn ordo(database_url: &str, root_cert: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ordo"))
        .env("DATABASE_URL", database_url)
        .env("PGSSLROOTCERT", root_cert)
        .args(args)
        .output()
        .expect("run ordo")
}

fn tls_only_server() -> (TestCa, PrivatePostgres) {
    let ca = TestCa::new("ordo test CA");
    let files = ca.issue(&["localhost", "127.0.0.1"]);
    let postgres = PrivatePostgres::start_with(PostgresOptions::new().tls(&files).tls_only());
    (ca, postgres)
}

#[tokio::test]
async fn migrate_and_events_run_over_verify_full() {
    let (ca, postgres) = tls_only_server();
    let url = postgres.url_text("postgres", None, "ordo", "sslmode=verify-full");

    let out = ordo(&url, &ca.cert_file(), &["migrate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("applied"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Something to list, written over TLS too.
    let store_url: DatabaseUrl = format!("{url}&sslrootcert={}", ca.cert_file().display())
        .parse()
        .expect("url");
    let shop = Shop::on(EventStore::new(store_url.pool(2).expect("pool")));
    let (user, _) = shop.register_user("Grace").await;

    let out = ordo(&url, &ca.cert_file(), &["events", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one envelope per line"))
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["type"], "UserRegistered");
    assert_eq!(lines[0]["subject"], user.stream_id(), "{stdout}");
}

#[test]
fn a_certificate_that_fails_verification_stops_ordo_in_one_line() {
    let (_ca, postgres) = tls_only_server();
    let stranger = TestCa::new("some other CA");
    let url = postgres.url_text("postgres", None, "postgres", "sslmode=verify-full");
    for args in [&["migrate"][..], &["events"][..]] {
        let out = ordo(&url, &stranger.cert_file(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: TLS to PostgreSQL"),
            "{args:?}: {stderr}"
        );
        assert!(last.contains("(sslmode=verify-full)"), "{stderr}");
        assert!(last.contains("certificate failed verification"), "{stderr}");
    }

    // Without sslmode, the server's refusal says what to add.
    let plain = postgres.url_text("postgres", None, "postgres", "");
    let out = ordo(&plain, &stranger.cert_file(), &["events"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("add sslmode=require"), "{stderr}");
}
