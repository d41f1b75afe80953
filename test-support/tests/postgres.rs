//! The private PostgreSQL of tests: who may connect how, TLS when asked,
//! and nothing left behind once it is dropped.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use test_support::certs::TestCa;
use test_support::{PostgresOptions, PrivatePostgres};

async fn data_directory(postgres: &PrivatePostgres) -> PathBuf {
    let client = postgres.url("postgres").connect().await.unwrap();
    let row = client.query_one("show data_directory", &[]).await.unwrap();
    PathBuf::from(row.get::<_, String>(0))
}

#[tokio::test]
async fn superuser_without_password_other_roles_with_theirs() {
    let postgres = PrivatePostgres::start();
    let admin = postgres.url("postgres").connect().await.unwrap();
    let row = admin
        .query_one("select current_user::text, current_setting('ssl')", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "postgres");
    assert_eq!(row.get::<_, String>(1), "off");
    admin
        .batch_execute("create role reader login password 'se:cr/et p@ss'")
        .await
        .unwrap();
    admin
        .batch_execute("create database shop owner reader")
        .await
        .unwrap();

    let reader = postgres
        .url_as("reader", "se:cr/et p@ss", "shop")
        .connect()
        .await
        .unwrap();
    let row = reader
        .query_one("select current_user::text, current_database()::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "reader");
    assert_eq!(row.get::<_, String>(1), "shop");

    let err = postgres
        .url_as("reader", "wrong", "shop")
        .connect()
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.to_string().contains("password authentication failed"),
        "{err}"
    );
    // Another role is not let in without a password as the superuser is.
    let err = postgres
        .url_with("shop", "user=reader")
        .connect()
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("password missing"), "{err}");
}

#[tokio::test]
async fn servers_are_apart_and_gone_when_dropped() {
    let one = PrivatePostgres::start();
    let two = PrivatePostgres::start();
    assert_ne!(one.port(), two.port());
    let data = data_directory(&one).await;
    assert!(data.is_dir());
    let port = one.port();
    drop(one);
    assert!(!data.exists(), "{} is deleted", data.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens on {port} any more"
    );
    // The other one is untouched.
    two.url("postgres").connect().await.unwrap();
}

#[tokio::test]
async fn tls_on_request_and_only_tls_when_asked() {
    let ca = TestCa::new("ordo test CA");
    let files = ca.issue(&["localhost", "127.0.0.1"]);
    let verified = format!(
        "sslmode=verify-full&sslrootcert={}",
        ca.cert_file().display()
    );

    let postgres = PrivatePostgres::start_with_tls(&files);
    let client = postgres
        .url_with("postgres", &verified)
        .connect()
        .await
        .unwrap();
    let row = client
        .query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    // Plain connections are still welcome.
    postgres.url("postgres").connect().await.unwrap();

    let strict = PrivatePostgres::start_with(PostgresOptions::new().tls(&files).tls_only());
    strict
        .url_with("postgres", &verified)
        .connect()
        .await
        .unwrap();
    let err = strict
        .url("postgres")
        .connect()
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("without TLS"), "{err}");
    assert!(
        strict.log().contains("no pg_hba.conf entry"),
        "{}",
        strict.log()
    );
}
