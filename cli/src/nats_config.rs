//! `ordo nats-config`: a nats-server configuration with one user per role of
//! ordo, each allowed to publish and subscribe only on the subjects it needs
//! (`docs/reference/nats-security.md` explains every line), and each user's
//! credentials.
//!
//! The configuration holds an `authorization { users = [...] }` block and
//! nothing else: no `accounts` block (with one holding only `$SYS`,
//! nats-server before 2.9.23 admits anonymous clients, GHSA-fr2g-9hjm-wr23),
//! no listen address, no JetStream settings; those come from nats-server's
//! command line (`-p`, `-js`, `-sd`) or a configuration of the operator's
//! that `include`s this one. Passwords are random, generated per run, stored
//! in the configuration as bcrypt hashes and written in clear to
//! `<user>.env` (mode 0600) only.
//!
//! JetStream API subjects are named one by one, stream and consumer names
//! included: never `$JS.API.>`, which includes deleting and purging the
//! stream. ordo's own readers use ordered consumers whose names the server
//! or client makes up, so their consumer rights take any name (`*`) on the
//! deployment's stream; the `subscriber` user is held the other way round,
//! to the consumer names listed when the configuration is generated.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use eventstore::nats::{ConsumerName, InboxPrefix, StreamName, SubjectPrefix};
use rand::distr::{Alphanumeric, SampleString as _};

use crate::config::{GlobalArgs, NatsConfigArgs};

/// The configuration file's name in the output directory.
pub const CONF_FILE: &str = "nats-server.conf";

/// bcrypt's cost for the stored hashes: nats-server's own tool's default.
/// The server checks a password once per connection.
const BCRYPT_COST: u32 = 11;

/// Characters of a generated password (letters and digits: about 190 bits).
const PASSWORD_LENGTH: usize = 32;

/// One NATS user: its name and what it may publish and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user name (`NATS_USER`).
    pub name: &'static str,
    /// What it is for, one line, for the configuration's comments.
    pub purpose: &'static str,
    /// Subjects it may publish to; none at all when empty.
    pub publish: Vec<String>,
    /// Subjects it may not publish to even where `publish` allows.
    pub publish_deny: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
}

/// The JetStream API subject `$JS.API.<rest>`.
fn api(rest: &str) -> String {
    format!("$JS.API.{rest}")
}

/// The subjects of the user's replies: `_INBOX_<user>.>`.
fn inbox(user: &str) -> String {
    let prefix = InboxPrefix::of_user(user)
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| format!("_INBOX_{user}"));
    format!("{prefix}.>")
}

/// Appends what is not there yet, keeping the order.
fn union(into: &mut Vec<String>, more: &[String]) {
    for subject in more {
        if !into.contains(subject) {
            into.push(subject.clone());
        }
    }
}

/// Every user of a deployment on `stream` and `prefix`, whose `subscriber`
/// may use the consumers `consumers` only.
pub fn users(stream: &StreamName, prefix: &SubjectPrefix, consumers: &[ConsumerName]) -> Vec<User> {
    let s = stream.as_str();
    let p = prefix.as_str();
    // Reading the stream through an ordered consumer: the stream's info,
    // a consumer created without a name (the server names it), and, when
    // async-nats recreates it after a gap or missed heartbeats, the old one
    // deleted and a new one created under the name `<name>_<n>` with the
    // filter subject in the request subject; then pulling messages. After
    // the server restarts, the client asks for its consumer's info before it
    // decides to recreate it.
    let reader = vec![
        api(&format!("STREAM.INFO.{s}")),
        api(&format!("CONSUMER.CREATE.{s}")),
        api(&format!("CONSUMER.CREATE.{s}.*.{p}.>")),
        api(&format!("CONSUMER.INFO.{s}.*")),
        api(&format!("CONSUMER.DELETE.{s}.*")),
        api(&format!("CONSUMER.MSG.NEXT.{s}.*")),
    ];
    // Creating the stream when missing (the relay always, the saga
    // coordinator when it starts first).
    let create = vec![api(&format!("STREAM.CREATE.{s}"))];
    // ordo's readers take any consumer name, but not the subscriber's.
    let not_subscribers: Vec<String> = consumers
        .iter()
        .flat_map(|c| {
            let c = c.as_str();
            [
                api(&format!("CONSUMER.CREATE.{s}.{c}.>")),
                api(&format!("CONSUMER.INFO.{s}.{c}")),
                api(&format!("CONSUMER.DELETE.{s}.{c}")),
                api(&format!("CONSUMER.MSG.NEXT.{s}.{c}")),
            ]
        })
        .collect();

    let relay = User {
        name: "relay",
        purpose:
            "ordo relay: creates the stream, publishes every event, reads the stream's last message",
        publish: vec![
            format!("{p}.*.*.*"),
            api(&format!("STREAM.INFO.{s}")),
            api(&format!("STREAM.CREATE.{s}")),
            api(&format!("STREAM.MSG.GET.{s}")),
        ],
        publish_deny: Vec::new(),
        subscribe: vec![inbox("relay")],
    };
    let projector = User {
        name: "projector",
        purpose: "ordo projectors: read the stream through ordered consumers",
        publish: reader.clone(),
        publish_deny: not_subscribers.clone(),
        subscribe: vec![inbox("projector")],
    };
    let saga = User {
        name: "saga",
        purpose: "ordo saga coordinator: reads the stream through an ordered consumer, creates it when missing",
        publish: {
            let mut publish = reader.clone();
            union(&mut publish, &create);
            publish
        },
        publish_deny: not_subscribers.clone(),
        subscribe: vec![inbox("saga")],
    };
    let api_user = User {
        name: "api",
        purpose: "ordo HTTP API: holds a connection for its readiness check, publishes nothing",
        publish: Vec::new(),
        publish_deny: Vec::new(),
        subscribe: vec![inbox("api")],
    };
    let ordo = User {
        name: "ordo",
        purpose:
            "`ordo up`: the relay's, projectors', saga coordinator's and API's rights together",
        publish: {
            let mut publish = Vec::new();
            for user in [&relay, &projector, &saga, &api_user] {
                union(&mut publish, &user.publish);
            }
            publish
        },
        publish_deny: not_subscribers,
        subscribe: vec![inbox("ordo")],
    };
    let subscriber = User {
        name: "subscriber",
        purpose:
            "downstream readers: their own durable consumers, listed by name, and nothing else",
        publish: {
            let mut publish = vec![api(&format!("STREAM.INFO.{s}"))];
            for c in consumers {
                let c = c.as_str();
                publish.extend([
                    api(&format!("CONSUMER.DURABLE.CREATE.{s}.{c}")),
                    api(&format!("CONSUMER.CREATE.{s}.{c}")),
                    api(&format!("CONSUMER.CREATE.{s}.{c}.>")),
                    api(&format!("CONSUMER.INFO.{s}.{c}")),
                    api(&format!("CONSUMER.MSG.NEXT.{s}.{c}")),
                    api(&format!("CONSUMER.DELETE.{s}.{c}")),
                    format!("$JS.ACK.{s}.{c}.>"),
                ]);
            }
            publish
        },
        publish_deny: Vec::new(),
        subscribe: vec![inbox("subscriber")],
    };
    let admin = User {
        name: "admin",
        purpose:
            "operators: `ordo check` and `ordo protect-stream`, stream and consumer inspection; \
                  no stream delete or purge",
        publish: vec![
            api("INFO"),
            api("STREAM.NAMES"),
            api("STREAM.LIST"),
            api(&format!("STREAM.INFO.{s}")),
            api(&format!("STREAM.UPDATE.{s}")),
            api(&format!("STREAM.MSG.GET.{s}")),
            api(&format!("CONSUMER.NAMES.{s}")),
            api(&format!("CONSUMER.LIST.{s}")),
            api(&format!("CONSUMER.INFO.{s}.*")),
            api(&format!("CONSUMER.CREATE.{s}")),
            api(&format!("CONSUMER.CREATE.{s}.*")),
            api(&format!("CONSUMER.CREATE.{s}.*.>")),
            api(&format!("CONSUMER.DELETE.{s}.*")),
            api(&format!("CONSUMER.MSG.NEXT.{s}.*")),
        ],
        publish_deny: Vec::new(),
        subscribe: vec![inbox("admin")],
    };
    vec![relay, projector, saga, api_user, ordo, subscriber, admin]
}

/// A NATS configuration string, quoted.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn list(subjects: &[String]) -> String {
    let items: Vec<String> = subjects.iter().map(|s| quoted(s)).collect();
    format!("[{}]", items.join(", "))
}

/// The configuration: a header, and the authorization block with each user
/// and the bcrypt hash of its password.
pub fn render(
    stream: &StreamName,
    prefix: &SubjectPrefix,
    users: &[(User, String)],
    generated: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# nats-server authorization for ordo, written by `ordo nats-config` ({generated})\n\
         # for stream {stream} and subject prefix {prefix}.\n\
         #\n\
         # Start the server with it, for instance:\n\
         #   nats-server -c nats-server.conf -p 4222 -js -sd /var/lib/nats\n\
         # or `include \"nats-server.conf\"` from a configuration of your own (listen address,\n\
         # jetstream, tls). Each user's password is in <user>.env beside this file; here\n\
         # only its bcrypt hash. See docs/reference/nats-security.md in ordo's repository.\n\
         #\n\
         # No accounts block: every user is in the server's global account, where\n\
         # JetStream is enabled by -js. Clients without a user and password are refused."
    );
    out.push_str("authorization {\n  users = [\n");
    for (user, hash) in users {
        let _ = writeln!(out, "    # {}", user.purpose);
        let _ = writeln!(out, "    {{");
        let _ = writeln!(out, "      user: {}", quoted(user.name));
        let _ = writeln!(out, "      password: {}", quoted(hash));
        out.push_str("      permissions: {\n        publish: {\n");
        if user.publish.is_empty() {
            // An empty allow list would mean no limit at all.
            let _ = writeln!(out, "          deny: {}", list(&[">".to_owned()]));
        } else {
            let _ = writeln!(out, "          allow: {}", list(&user.publish));
            if !user.publish_deny.is_empty() {
                let _ = writeln!(out, "          deny: {}", list(&user.publish_deny));
            }
        }
        out.push_str("        }\n        subscribe: {\n");
        let _ = writeln!(out, "          allow: {}", list(&user.subscribe));
        out.push_str("        }\n      }\n    }\n");
    }
    out.push_str("  ]\n}\n");
    out
}

/// A user's credentials file: the environment its process needs.
pub fn credentials(user: &User, password: &str) -> String {
    let prefix = InboxPrefix::of_user(user.name)
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    format!(
        "# NATS credentials of ordo's {name:?} user, written by `ordo nats-config`.\n\
         # Secret: readable by its owner only. Give it to the process running as this\n\
         # user, as its environment (docker compose `env_file`, systemd\n\
         # `EnvironmentFile`, or `set -a; . ./{name}.env; set +a` in a shell).\n\
         NATS_USER={name}\n\
         NATS_PASSWORD={password}\n\
         NATS_INBOX_PREFIX={prefix}\n",
        name = user.name,
    )
}

/// A fresh random password.
fn password() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), PASSWORD_LENGTH)
}

/// Its bcrypt hash in the `$2a$` form nats-server reads.
fn hash(password: &str) -> anyhow::Result<String> {
    Ok(bcrypt::hash_with_result(password, BCRYPT_COST)
        .context("bcrypt")?
        .format_for_version(bcrypt::Version::TwoA))
}

/// Writes `contents` to `path`, readable by its owner only.
fn write_secret(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        // An existing file keeps its mode on open: set it.
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
    }
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The files `ordo nats-config` writes into `dir`.
fn outputs(dir: &Path, users: &[User]) -> Vec<PathBuf> {
    std::iter::once(dir.join(CONF_FILE))
        .chain(users.iter().map(|u| dir.join(format!("{}.env", u.name))))
        .collect()
}

/// Runs `ordo nats-config`.
pub fn run(global: &GlobalArgs, args: &NatsConfigArgs) -> anyhow::Result<()> {
    let users = users(
        &global.stream,
        &global.subject_prefix,
        &args.subscriber_consumers,
    );
    let files = outputs(&args.out, &users);
    if !args.force {
        let existing: Vec<String> = files
            .iter()
            .filter(|f| f.exists())
            .map(|f| f.display().to_string())
            .collect();
        if !existing.is_empty() {
            anyhow::bail!(
                "{} {} already; pass --force to replace (every password changes: restart \
                 nats-server and every ordo process with the new files)",
                existing.join(", "),
                if existing.len() == 1 {
                    "exists"
                } else {
                    "exist"
                }
            );
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut hashed = Vec::with_capacity(users.len());
    for user in &users {
        let password = password();
        write_secret(
            &args.out.join(format!("{}.env", user.name)),
            &credentials(user, &password),
        )?;
        hashed.push((user.clone(), hash(&password)?));
    }
    let generated = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let conf = render(&global.stream, &global.subject_prefix, &hashed, &generated);
    let conf_path = args.out.join(CONF_FILE);
    let temporary = args.out.join(format!(".{CONF_FILE}.tmp"));
    std::fs::write(&temporary, conf)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, &conf_path)
        .with_context(|| format!("cannot write {}", conf_path.display()))?;
    println!(
        "wrote {} (stream {}, subject prefix {})",
        conf_path.display(),
        global.stream,
        global.subject_prefix
    );
    for user in &users {
        println!(
            "wrote {} (mode 0600): {}",
            args.out.join(format!("{}.env", user.name)).display(),
            user.purpose
        );
    }
    println!(
        "start the server with: nats-server -c {} -p 4222 -js -sd <store directory>",
        conf_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn names() -> (StreamName, SubjectPrefix) {
        ("ORDO_EVENTS".parse().unwrap(), "events".parse().unwrap())
    }

    fn user<'a>(users: &'a [User], name: &str) -> &'a User {
        users.iter().find(|u| u.name == name).unwrap()
    }

    #[test]
    fn no_user_may_touch_the_whole_api_or_delete_and_purge() {
        let (stream, prefix) = names();
        let users = users(&stream, &prefix, &["subscriber".parse().unwrap()]);
        assert_eq!(
            users.iter().map(|u| u.name).collect::<Vec<_>>(),
            [
                "relay",
                "projector",
                "saga",
                "api",
                "ordo",
                "subscriber",
                "admin"
            ]
        );
        for user in &users {
            for subject in &user.publish {
                assert!(
                    !subject.starts_with("$JS.API.>")
                        && !subject.contains("STREAM.DELETE")
                        && !subject.contains("STREAM.PURGE")
                        && !subject.contains("MSG.DELETE")
                        && subject != ">",
                    "{}: {subject}",
                    user.name
                );
            }
            assert_eq!(
                user.subscribe,
                [format!("_INBOX_{}.>", user.name)],
                "each reads its own inbox only"
            );
        }
    }

    #[test]
    fn the_subscriber_is_held_to_its_named_consumers() {
        let (stream, prefix) = names();
        let users = users(
            &stream,
            &prefix,
            &["audit".parse().unwrap(), "mirror".parse().unwrap()],
        );
        let subscriber = user(&users, "subscriber");
        assert!(subscriber
            .publish
            .contains(&"$JS.API.CONSUMER.DURABLE.CREATE.ORDO_EVENTS.audit".to_owned()));
        assert!(subscriber
            .publish
            .contains(&"$JS.ACK.ORDO_EVENTS.mirror.>".to_owned()));
        assert!(subscriber.publish.iter().all(|s| !s.contains('*')));
        assert!(subscriber.publish.iter().all(|s| !s.starts_with("events")));
        // ordo's own readers may not disturb them.
        assert!(user(&users, "saga")
            .publish_deny
            .contains(&"$JS.API.CONSUMER.DELETE.ORDO_EVENTS.audit".to_owned()));
    }

    #[test]
    fn ordo_holds_the_roles_rights_together() {
        let (stream, prefix) = names();
        let users = users(&stream, &prefix, &["subscriber".parse().unwrap()]);
        let ordo = user(&users, "ordo");
        for role in ["relay", "projector", "saga", "api"] {
            for subject in &user(&users, role).publish {
                assert!(ordo.publish.contains(subject), "{role}: {subject}");
            }
        }
        assert!(user(&users, "api").publish.is_empty());
        assert!(user(&users, "relay")
            .publish
            .contains(&"events.*.*.*".to_owned()));
    }

    #[test]
    fn the_configuration_quotes_everything_and_denies_all_to_the_api() {
        let (stream, prefix) = names();
        let users: Vec<(User, String)> = users(&stream, &prefix, &["subscriber".parse().unwrap()])
            .into_iter()
            .map(|u| (u, "$2a$11$abc".to_owned()))
            .collect();
        let conf = render(&stream, &prefix, &users, "now");
        assert!(conf.contains("user: \"api\"\n      password: \"$2a$11$abc\""));
        assert!(conf.contains("deny: [\">\"]"), "{conf}");
        assert!(
            !conf
                .lines()
                .any(|l| !l.starts_with('#') && l.contains("accounts")),
            "no accounts block"
        );
        assert_eq!(conf.matches("user: ").count(), 7);
    }

    #[test]
    fn credentials_name_the_user_and_its_inbox() {
        let (stream, prefix) = names();
        let users = users(&stream, &prefix, &[]);
        let text = credentials(user(&users, "relay"), "secret");
        assert!(text
            .contains("\nNATS_USER=relay\nNATS_PASSWORD=secret\nNATS_INBOX_PREFIX=_INBOX_relay\n"));
        let hashed = hash("secret").unwrap();
        assert!(hashed.starts_with("$2a$11$"), "{hashed}");
        assert!(bcrypt::verify("secret", &hashed).unwrap());
        assert_eq!(password().len(), PASSWORD_LENGTH);
        assert_ne!(password(), password());
    }
}
