//! ordo on a Unix socket: `DATABASE_URL=postgres:///ordo?host=/run/postgresql`.
//!
//! On one machine the socket costs PostgreSQL and ordo less CPU than loopback
//! TCP (docs/BENCHMARKS.md). This runs `ordo up` on such a URL, with a
//! database it must create itself (which connects to `postgres` on the same
//! socket), and drives orders through it with the load generator.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use test_support::{server_database_url, TestDatabase, TestEnv};

/// `ordo up`, killed (its own pid) when dropped.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Percent-encodes a query value (a socket directory may hold any byte).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test]
async fn ordo_up_runs_over_a_unix_socket() {
    // Where the test server's socket is, asked over the URL the tests use.
    let admin = server_database_url()
        .with_database("postgres")
        .connect()
        .await
        .expect("test server");
    let row = admin
        .query_one(
            "select current_setting('unix_socket_directories'), current_setting('port'), current_user::text",
            &[],
        )
        .await
        .expect("settings");
    let (directories, port, user): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    let Some(directory) = directories
        .split(',')
        .map(str::trim)
        .find(|d| d.starts_with('/'))
    else {
        // A private server whose state directory is too deep for a socket
        // address listens on TCP only (scripts/lib/stack.sh): nothing to test.
        eprintln!("the test server has no Unix socket ({directories:?}); not tested here");
        return;
    };

    let env = TestEnv::new().await; // stream, prefix and their cleanup
    let database = TestDatabase::fresh(); // named, not created: ordo creates it
    let name = database.url.database().to_owned();
    let url = format!(
        "postgres:///{name}?host={}&port={port}&user={}",
        encode(directory),
        encode(&user)
    );
    let http = format!("127.0.0.1:{}", free_port());
    // ordo makes this admin token at start; the load generator makes its
    // staff and customer tokens with it.
    let dir = tempfile::tempdir().expect("tempdir");
    let admin_token = api::auth::TokenSecret::generate().expose();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, &admin_token).expect("token file");
    let ordo = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ordo"));
        command
            .args(args)
            .env("DATABASE_URL", &url)
            .env("NATS_URL", env.nats_url.as_str())
            .env("ORDO_STREAM", env.stream.as_str())
            .env("ORDO_SUBJECT_PREFIX", env.prefix.as_str())
            .env("ORDO_HTTP_ADDR", &http)
            .env("ORDO_BOOTSTRAP_TOKEN_FILE", &token_file)
            .env("ORDO_TOKEN", &admin_token)
            // The load leaves many orders unpaid per user.
            .env("ORDO_MAX_UNPAID_ORDERS", "off")
            .env("RUST_LOG", "warn");
        command
    };
    let _up = Up(ordo(&["up"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ordo up"));

    let json = dir.path().join("figures.json");
    // The first run may find the API not listening yet.
    let bench = test_support::poll_blocking(
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            ordo(&[
                "bench",
                "place-orders",
                "--duration",
                "3s",
                "--concurrency",
                "2",
                "--users",
                "4",
                "--products",
                "4",
                "--json",
            ])
            .arg(&json)
            .output()
            .expect("run the load generator")
        },
        |out| out.status.success(),
    );
    assert!(
        bench.status.success(),
        "{}{}",
        String::from_utf8_lossy(&bench.stdout),
        String::from_utf8_lossy(&bench.stderr)
    );
    let figures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("figures")).expect("json");
    assert!(
        figures["orders_confirmed"].as_u64().unwrap_or(0) > 0,
        "orders were confirmed: {figures}"
    );
    assert_eq!(figures["orders_unsettled"], 0, "{figures}");

    // Every connection ordo holds to its database came through the socket.
    let row = admin
        .query_one(
            "select count(*) filter (where client_addr is null),
                    count(*) filter (where client_addr is not null)
               from pg_stat_activity where datname = $1",
            &[&name],
        )
        .await
        .expect("pg_stat_activity");
    let (socket, tcp): (i64, i64) = (row.get(0), row.get(1));
    assert!(socket > 0, "ordo is connected through the socket");
    assert_eq!(tcp, 0, "no connection of ordo's went over TCP");

    // Each role's connections carry its name, so pg_stat_activity (and a
    // per-role profile of the server) tells them apart.
    let names: Vec<String> = admin
        .query(
            "select distinct application_name from pg_stat_activity where datname = $1",
            &[&name],
        )
        .await
        .expect("pg_stat_activity")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for role in [
        "ordo-api",
        "ordo-api-reads",
        "ordo-relay",
        "ordo-saga",
        "ordo-saga-commands",
        "ordo-projector",
        "ordo-listener",
    ] {
        assert!(names.iter().any(|n| n == role), "{role} among {names:?}");
    }
}
