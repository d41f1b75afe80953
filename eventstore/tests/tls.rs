//! TLS to PostgreSQL, against private servers with certificates of a CA the
//! test makes: each `sslmode` encrypts and checks what libpq's does, a
//! failure says what failed in one line, and ordo's own work (migrations,
//! the store through its pool, the listener) runs over TLS.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use eventstore::notify::{Listener, CHANNEL};
use eventstore::{DatabaseUrl, EventStore, StoreError};
use test_support::certs::TestCa;
use test_support::shop::Shop;
use test_support::{wait_for, PostgresOptions, PrivatePostgres, TestEnv};

/// A server whose certificate is for `localhost` and `127.0.0.1`, issued by
/// the returned CA.
fn tls_server(options: PostgresOptions) -> (TestCa, PrivatePostgres) {
    let ca = TestCa::new("ordo test CA");
    let files = ca.issue(&["localhost", "127.0.0.1"]);
    let postgres = PrivatePostgres::start_with(options.tls(&files));
    (ca, postgres)
}

fn params(mode: &str, root_cert: &Path) -> String {
    format!("sslmode={mode}&sslrootcert={}", root_cert.display())
}

/// Whether the session of `url` is encrypted, as the server sees it.
async fn encrypted(url: &DatabaseUrl) -> Result<bool, StoreError> {
    let client = url.connect().await?;
    let row = client
        .query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

fn one_line(err: &StoreError) -> String {
    let text = err.to_string();
    eprintln!("{text}");
    assert!(!text.contains('\n'), "one line: {text}");
    text
}

#[tokio::test]
async fn require_encrypts_without_checking_the_certificate() {
    let (_ca, postgres) = tls_server(PostgresOptions::new());
    // No CA given: any certificate will do, but the session is encrypted.
    let url = postgres.url_with("postgres", "sslmode=require");
    assert!(encrypted(&url).await.unwrap());
    // Without sslmode, as before: no TLS, though the server offers it.
    assert!(!encrypted(&postgres.url("postgres")).await.unwrap());
    let url = postgres.url_with("postgres", "sslmode=prefer");
    assert!(!encrypted(&url).await.unwrap());
}

#[tokio::test]
async fn verify_full_with_the_right_ca_connects_encrypted() {
    let (ca, postgres) = tls_server(PostgresOptions::new());
    let url = postgres.url_with("postgres", &params("verify-full", &ca.cert_file()));
    assert!(encrypted(&url).await.unwrap());
    // By host name too: the certificate names localhost.
    let by_name: DatabaseUrl = format!(
        "postgres://postgres@localhost:{}/postgres?{}",
        postgres.port(),
        params("verify-full", &ca.cert_file())
    )
    .parse()
    .unwrap();
    assert!(encrypted(&by_name).await.unwrap());
}

#[tokio::test]
async fn a_certificate_from_another_ca_fails_verification_readably() {
    let (_ca, postgres) = tls_server(PostgresOptions::new());
    let stranger = TestCa::new("some other CA");
    for mode in ["verify-full", "verify-ca", "require"] {
        // require with a root certificate checks the chain, as in libpq.
        let url = postgres.url_with("postgres", &params(mode, &stranger.cert_file()));
        let err = url.connect().await.map(|_| ()).unwrap_err();
        let text = one_line(&err);
        assert!(matches!(err, StoreError::Tls { .. }), "{err:?}");
        assert!(text.contains(&format!("sslmode={mode}")), "{text}");
        assert!(text.contains("certificate failed verification"), "{text}");
        assert!(
            text.contains(&format!("sslrootcert {}", stranger.cert_file().display())),
            "{text}"
        );
    }
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let (ca, postgres) = tls_server(PostgresOptions::new());
    // The server is reached at 127.0.0.1, but the name it is checked
    // against is one the certificate does not have.
    let as_other = |mode: &str| -> DatabaseUrl {
        format!(
            "postgres://postgres@db.example.invalid:{}/postgres?hostaddr=127.0.0.1&{}",
            postgres.port(),
            params(mode, &ca.cert_file())
        )
        .parse()
        .unwrap()
    };
    let err = as_other("verify-full")
        .connect()
        .await
        .map(|_| ())
        .unwrap_err();
    let text = one_line(&err);
    assert!(text.contains("sslmode=verify-full"), "{text}");
    assert!(
        text.contains("not for host db.example.invalid (it is for localhost, 127.0.0.1)"),
        "{text}"
    );
    assert!(encrypted(&as_other("verify-ca")).await.unwrap());
}

#[tokio::test]
async fn a_server_that_requires_tls_refuses_plain_connections_readably() {
    let (ca, postgres) = tls_server(PostgresOptions::new().tls_only());
    for plain in ["", "sslmode=disable", "sslmode=prefer"] {
        let err = postgres
            .url_with("postgres", plain)
            .connect()
            .await
            .map(|_| ())
            .unwrap_err();
        let text = one_line(&err);
        assert!(matches!(err, StoreError::TlsRequired { .. }), "{err:?}");
        assert!(text.contains("add sslmode=require"), "{text}");
        assert!(text.contains("no pg_hba.conf entry"), "{text}");
    }
    let url = postgres.url_with("postgres", &params("verify-full", &ca.cert_file()));
    assert!(encrypted(&url).await.unwrap());
}

#[tokio::test]
async fn a_server_without_tls_is_named_as_such() {
    let postgres = PrivatePostgres::start();
    let err = postgres
        .url_with("postgres", "sslmode=require")
        .connect()
        .await
        .map(|_| ())
        .unwrap_err();
    let text = one_line(&err);
    assert!(text.contains("sslmode=require"), "{text}");
    assert!(text.contains("does not offer TLS"), "{text}");
}

#[tokio::test]
async fn a_missing_root_certificate_is_named() {
    let (_ca, postgres) = tls_server(PostgresOptions::new());
    let url = postgres.url_with(
        "postgres",
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    );
    let err = url.connect().await.map(|_| ()).unwrap_err();
    let text = one_line(&err);
    assert!(
        text.contains("cannot read sslrootcert /nonexistent/ca.pem: no such file"),
        "{text}"
    );
    let err = url.pool(1).map(|_| ()).unwrap_err();
    assert!(
        one_line(&err).contains("sslrootcert /nonexistent/ca.pem"),
        "{err}"
    );
}

#[tokio::test]
async fn password_roles_authenticate_over_tls() {
    let (ca, postgres) = tls_server(PostgresOptions::new().tls_only());
    let admin = postgres.url_with("postgres", &params("verify-full", &ca.cert_file()));
    admin
        .connect()
        .await
        .unwrap()
        .batch_execute("create role clerk login password 'pa ss:w@rd'")
        .await
        .unwrap();
    // SCRAM over TLS, bound to the server's certificate (channel binding).
    let url: DatabaseUrl = format!(
        "{}?channel_binding=require&{}",
        postgres.url_as("clerk", "pa ss:w@rd", "postgres").expose(),
        params("verify-full", &ca.cert_file())
    )
    .parse()
    .unwrap();
    assert!(encrypted(&url).await.unwrap());
    let wrong: DatabaseUrl = format!(
        "{}?{}",
        postgres.url_as("clerk", "wrong", "postgres").expose(),
        params("verify-full", &ca.cert_file())
    )
    .parse()
    .unwrap();
    let err = wrong.connect().await.map(|_| ()).unwrap_err();
    assert!(
        err.to_string().contains("password authentication failed"),
        "{err}"
    );
}

#[tokio::test]
async fn ordo_runs_over_tls() {
    let (ca, postgres) = tls_server(PostgresOptions::new().tls_only());
    let server = postgres.url_with("postgres", &params("verify-full", &ca.cert_file()));
    // Creates the database and migrates it over TLS; dropping it drops the
    // database over TLS.
    let env = TestEnv::on_server(&server, test_support::nats_url()).await;
    let again = eventstore::migrations::migrate(&env.database_url)
        .await
        .unwrap();
    assert!(again.applied.is_empty(), "{again:?}");

    // The pool's connections are encrypted.
    let client = env.client().await;
    let ssl: bool = client
        .query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl);
    drop(client);

    // A short journey through the store.
    let shop = Shop::on(EventStore::new(env.pool.clone()));
    let (user, _) = shop.register_user("Ada").await;
    let (product, _) = shop.create_product(5, "9.50").await;
    let (order, _) = shop.place_order(user, &[(product, 2)]).await;
    shop.reserve_and_confirm(order).await;
    shop.pay(order).await;
    let events = shop
        .store
        .read_stream(&order.stream_id(), 0, 100)
        .await
        .unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types.first(), Some(&"OrderPlaced"), "{types:?}");
    assert_eq!(types.last(), Some(&"OrderPaid"), "{types:?}");

    // The listener connects over TLS and hears notifications.
    let listener = Listener::spawn(env.database_url.clone());
    wait_for(Duration::from_secs(10), || async {
        listener.is_listening().then_some(())
    })
    .await;
    let mut wakeups = listener.subscribe();
    wakeups.borrow_and_update();
    env.client()
        .await
        .batch_execute(&format!("notify {CHANNEL}"))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), wakeups.changed())
        .await
        .unwrap()
        .unwrap();
}
