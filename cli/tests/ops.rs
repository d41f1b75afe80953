//! `ordo projector`, `status`, `check` and `rebuild` as processes, the way an
//! operator runs them.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use test_support::shop::Shop;
use test_support::TestEnv;

fn ordo(env: &TestEnv) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ordo"));
    command
        .env("DATABASE_URL", env.database_url.expose())
        .env("NATS_URL", env.nats_url.as_str())
        .env("ORDO_STREAM", env.stream.as_str())
        .env("ORDO_SUBJECT_PREFIX", env.prefix.as_str())
        .env("RUST_LOG", "warn");
    command
}

fn run(env: &TestEnv, args: &[&str]) -> Output {
    ordo(env).args(args).output().expect("run ordo")
}

/// A background role, killed (SIGKILL to its own pid) when dropped.
struct Role(Child);

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(env: &TestEnv, args: &[&str]) -> Role {
    Role(
        ordo(env)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ordo"),
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn status_check_and_rebuild_from_the_command_line() {
    let env = TestEnv::new().await;
    let shop = Shop::new(&env);
    let (user, _) = shop.register_user("Cli").await;
    let (product, _) = shop.create_product(10, "5.00").await;
    let (order, _) = shop.place_order(user, &[(product, 2)]).await;
    let last = shop.reserve_and_confirm(order).await;

    let _relay = spawn(&env, &["relay"]);
    let _projectors = spawn(&env, &["projector"]);
    for projection in projectors::Projection::ALL {
        let reached =
            projectors::query::wait_for(&env.pool, projection, last, Duration::from_secs(60))
                .await
                .expect("wait");
        assert!(reached, "{projection} caught up");
    }

    let status = run(&env, &["status"]);
    assert!(status.status.success(), "{}", text(&status));
    let status = text(&status);
    for needle in [
        "log head",
        "relay",
        "projection users",
        "projection products",
        "projection orders",
    ] {
        assert!(status.contains(needle), "status shows {needle}: {status}");
    }

    let check = run(&env, &["check"]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(text(&check).contains("all invariants hold"));

    // Damage a read model: check and a dry run see it; a rebuild repairs it.
    let client = env.client().await;
    client
        .execute(
            "update read.products set reserved = 7 where id = $1",
            &[&product.as_uuid()],
        )
        .await
        .expect("damage");
    let check = run(&env, &["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    let report = text(&check);
    assert!(
        report.contains("DIFFERS")
            && report.contains("2. reserved = quantities")
            && report.contains("FAILS"),
        "{report}"
    );

    let dry = run(&env, &["rebuild", "products", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(1), "{}", text(&dry));
    assert!(text(&dry).contains("read.products: 1 row(s) only in the live table"));

    let rebuild = run(&env, &["rebuild", "--all"]);
    assert!(rebuild.status.success(), "{}", text(&rebuild));
    assert!(text(&rebuild).contains("swapped in"));
    let check = test_support::poll(
        Duration::from_secs(10),
        || async { run(&env, &["check"]) },
        |check| check.status.success(),
    )
    .await;
    assert!(
        check.status.success(),
        "check still fails after the rebuild: {}",
        text(&check)
    );

    let bad = run(&env, &["rebuild", "nonsense"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad).contains("no projection named \"nonsense\""),
        "{}",
        text(&bad)
    );
}
