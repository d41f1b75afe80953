//! `ordo token`: create prints the secret once, alone on stdout's last line;
//! list never shows a secret; revoke holds; bad input is a readable error
//! and changes nothing.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use test_support::TestEnv;

fn ordo(env: &TestEnv, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ordo"))
        .arg("--database-url")
        .arg(env.database_url.expose())
        .args(args)
        .output()
        .expect("run ordo")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn tokens_are_made_listed_and_revoked_from_the_command_line() {
    let env = TestEnv::new().await;
    let made = ordo(
        &env,
        &[
            "token",
            "create",
            "--scope",
            "orders:read",
            "--scope",
            "ops",
            "--name",
            "warehouse",
        ],
    );
    assert!(made.status.success(), "{}", text(&made.stderr));
    let secret = text(&made.stdout).lines().last().unwrap().to_owned();
    let token = api::auth::TokenSecret::parse(&secret).expect("the last line is the secret");
    assert_eq!(
        text(&made.stdout).trim(),
        secret,
        "nothing but the secret on stdout"
    );

    // The store knows it by its hash.
    let store = api::auth::TokenStore::new(env.pool.clone());
    let verified = store.verify(&token).await.unwrap().expect("it works");
    assert_eq!(verified.name, "warehouse");

    let listed = ordo(&env, &["token", "list", "--json"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let list: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(list[0]["id"], token.id.to_string());
    assert_eq!(list[0]["scopes"], serde_json::json!(["orders:read", "ops"]));
    let secret_part = secret.rsplit('_').next().unwrap();
    assert!(
        !text(&listed.stdout).contains(secret_part),
        "a secret in the list"
    );
    let table = ordo(&env, &["token", "list"]);
    assert!(text(&table.stdout).contains(&token.id.to_string()));
    assert!(!text(&table.stdout).contains(secret_part));

    let revoked = ordo(&env, &["token", "revoke", &token.id.to_string()]);
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    assert!(
        store.verify(&token).await.unwrap().is_err(),
        "revoked, still works"
    );

    // Bad input: readable, non-zero, nothing made.
    for (args, says) in [
        (
            &["token", "revoke", "0192a8c4-7e1f-7000-8000-00000000abcd"][..],
            "no token",
        ),
        (&["token", "create", "--scope", "root"][..], "unknown scope"),
        (
            &["token", "create", "--scope", "customer"][..],
            "needs the user",
        ),
        (
            &[
                "token",
                "create",
                "--scope",
                "customer",
                "--user",
                "0192a8c4-7e1f-7000-8000-00000000abcd",
            ][..],
            "no user",
        ),
    ] {
        let out = ordo(&env, args);
        assert!(!out.status.success(), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains(says) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        store.list().await.unwrap().len(),
        1,
        "a refused create made a token"
    );
}
