//! The deployment files, checked by reading them (Docker does not run where the tests
//! run): `docker-compose.yml` names every role of ordo and wires it to PostgreSQL 16 and
//! NATS 2.10 with the variables of `docs/reference/configuration.md#settings`; the
//! `Dockerfile` builds the
//! `ordo` binary in a builder stage and runs it, as a non-root user, from a slim runtime
//! stage; `.dockerignore` keeps build output and local state out of the build context.

use std::fs;
use std::path::PathBuf;

use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlLoader};

/// ordo's roles: each is a service running the ordo image with this command.
const ORDO_ROLES: [&str; 5] = ["api", "relay", "projector", "saga", "migrate"];
/// The long-running roles, which wait for healthy servers and for `migrate`.
const LONG_RUNNING_ROLES: [&str; 4] = ["api", "relay", "projector", "saga"];

fn repo_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The compose file with YAML merge keys (`<<: *anchor`) applied, as Compose applies
/// them; yaml-rust2 resolves anchors and aliases but leaves `<<` as an ordinary key.
fn compose() -> Yaml {
    let text = repo_file("docker-compose.yml");
    let docs = YamlLoader::load_from_str(&text).expect("docker-compose.yml is valid YAML");
    assert_eq!(docs.len(), 1, "docker-compose.yml holds one YAML document");
    resolve_merge_keys(&docs[0])
}

fn resolve_merge_keys(node: &Yaml) -> Yaml {
    match node {
        Yaml::Hash(hash) => {
            let merge_key = Yaml::String("<<".to_owned());
            let mut out = Hash::new();
            for (key, value) in hash {
                if *key != merge_key {
                    out.insert(key.clone(), resolve_merge_keys(value));
                }
            }
            if let Some(sources) = hash.get(&merge_key) {
                let sources: Vec<&Yaml> = match sources {
                    Yaml::Array(list) => list.iter().collect(),
                    one => vec![one],
                };
                // Explicit keys win over merged ones; earlier sources over later ones.
                for source in sources {
                    let Yaml::Hash(merged) = resolve_merge_keys(source) else {
                        panic!("a merge key (<<) must refer to a mapping, found {source:?}");
                    };
                    for (key, value) in merged {
                        if !out.contains_key(&key) {
                            out.insert(key, value);
                        }
                    }
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(list) => Yaml::Array(list.iter().map(resolve_merge_keys).collect()),
        other => other.clone(),
    }
}

fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    let service = &compose["services"][name];
    assert!(
        service.as_hash().is_some(),
        "docker-compose.yml has no service `{name}`"
    );
    service
}

/// A scalar as text (YAML may read `8080` or `true` as numbers and booleans).
fn text(node: &Yaml) -> Option<String> {
    match node {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A command or healthcheck test as a list of words: list form as is, string form split
/// on whitespace (good enough for the simple commands checked here).
fn words(node: &Yaml) -> Vec<String> {
    match node {
        Yaml::Array(list) => list.iter().filter_map(text).collect(),
        other => text(other)
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
    }
}

/// A service's environment, from the mapping or the `KEY=value` list form.
fn environment(service: &Yaml) -> Vec<(String, String)> {
    match &service["environment"] {
        Yaml::Hash(hash) => hash
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v).unwrap_or_default())))
            .collect(),
        Yaml::Array(list) => list
            .iter()
            .filter_map(text)
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (item, String::new()),
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn env_value(service: &Yaml, key: &str) -> Option<String> {
    environment(service)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

#[test]
fn compose_names_every_role_and_server() {
    let compose = compose();
    let services = compose["services"].as_hash().expect("a `services` mapping");
    for name in ORDO_ROLES.iter().chain(["postgres", "nats"].iter()) {
        assert!(
            services.contains_key(&Yaml::String((*name).to_owned())),
            "docker-compose.yml has no service `{name}`"
        );
    }
    assert!(
        compose["version"].is_badvalue(),
        "the compose spec needs no (obsolete) top-level `version:`"
    );
}

#[test]
fn every_role_runs_the_dockerfile_build_with_its_command() {
    let compose = compose();
    for role in ORDO_ROLES {
        let service = service(&compose, role);
        let build = &service["build"];
        let (context, dockerfile) = match build {
            Yaml::Hash(_) => (
                text(&build["context"]).unwrap_or_else(|| ".".to_owned()),
                text(&build["dockerfile"]).unwrap_or_else(|| "Dockerfile".to_owned()),
            ),
            other => (
                text(other).unwrap_or_else(|| panic!("service `{role}` has no `build`")),
                "Dockerfile".to_owned(),
            ),
        };
        assert!(
            context == "." || context == "./",
            "service `{role}` builds from `{context}`, not the repository root"
        );
        assert_eq!(
            dockerfile, "Dockerfile",
            "service `{role}` builds another Dockerfile"
        );
        assert_eq!(
            words(&service["command"]),
            vec![role.to_owned()],
            "service `{role}` must run `ordo {role}` (the image's entrypoint is ordo)"
        );
        assert!(
            service["entrypoint"].is_badvalue(),
            "service `{role}` must keep the image's entrypoint (ordo)"
        );
    }
}

#[test]
fn every_role_gets_its_configuration() {
    let compose = compose();
    for role in ORDO_ROLES {
        let service = service(&compose, role);
        let expect = |key: &str| {
            env_value(service, key)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| panic!("service `{role}` does not set {key}"))
        };
        let database = if role == "migrate" {
            // the owner migrates; everything else runs as the runtime login
            "postgres://ordo:ordo@postgres:5432/ordo"
        } else {
            "postgres://ordo_app:ordo_app@postgres:5432/ordo"
        };
        assert_eq!(expect("DATABASE_URL"), database, "{role}");
        assert_eq!(expect("NATS_URL"), "nats://nats:4222", "{role}");
        assert_eq!(expect("ORDO_STREAM"), "ORDO_EVENTS", "{role}");
        assert_eq!(expect("ORDO_SUBJECT_PREFIX"), "events", "{role}");
        assert!(
            expect("ORDO_PAYMENT_TIMEOUT").contains("15m"),
            "{role}: default 15m"
        );
        assert!(
            expect("RUST_LOG").contains("info"),
            "{role}: RUST_LOG defaults to info"
        );
        assert_eq!(expect("ORDO_LOG_FORMAT"), "json", "{role}");
    }
    let api = service(&compose, "api");
    assert_eq!(
        env_value(api, "ORDO_HTTP_ADDR").as_deref(),
        Some("0.0.0.0:8080"),
        "the api must listen beyond the container's loopback"
    );
}

#[test]
fn roles_wait_for_healthy_servers_and_for_the_migrations() {
    let compose = compose();
    let condition = |service: &Yaml, on: &str| text(&service["depends_on"][on]["condition"]);
    for role in LONG_RUNNING_ROLES {
        let service = service(&compose, role);
        for (on, wanted) in [
            ("postgres", "service_healthy"),
            ("nats", "service_healthy"),
            ("migrate", "service_completed_successfully"),
        ] {
            assert_eq!(
                condition(service, on).as_deref(),
                Some(wanted),
                "service `{role}` must depend on `{on}` with condition {wanted}"
            );
        }
    }
    let migrate = service(&compose, "migrate");
    assert_eq!(
        condition(migrate, "postgres").as_deref(),
        Some("service_healthy")
    );
    let restart = text(&migrate["restart"]);
    assert!(
        matches!(restart.as_deref(), None | Some("no") | Some("on-failure")),
        "`migrate` is one-shot; restart: {restart:?}"
    );
}

#[test]
fn postgres_16_and_nats_2_10_with_jetstream_and_health_checks() {
    let compose = compose();

    let postgres = service(&compose, "postgres");
    let image = text(&postgres["image"]).expect("postgres has an image");
    assert!(
        image.starts_with("postgres:16"),
        "PostgreSQL 16, found {image}"
    );
    assert_eq!(
        env_value(postgres, "POSTGRES_USER").as_deref(),
        Some("ordo")
    );
    assert_eq!(
        env_value(postgres, "POSTGRES_PASSWORD").as_deref(),
        Some("ordo")
    );
    let test = words(&postgres["healthcheck"]["test"]).join(" ");
    assert!(test.contains("pg_isready"), "postgres healthcheck: {test}");

    let nats = service(&compose, "nats");
    let image = text(&nats["image"]).expect("nats has an image");
    assert!(image.starts_with("nats:2.10"), "NATS 2.10, found {image}");
    let command = words(&nats["command"]);
    assert!(
        command.iter().any(|w| w == "-js" || w == "--jetstream"),
        "nats must run with JetStream (-js): {command:?}"
    );
    let store = command
        .iter()
        .position(|w| w == "-sd" || w == "--store_dir")
        .and_then(|i| command.get(i + 1))
        .expect("nats has a JetStream store directory (-sd)");
    let volumes: Vec<String> = nats["volumes"]
        .as_vec()
        .map(|v| v.iter().filter_map(text).collect())
        .unwrap_or_default();
    assert!(
        volumes.iter().any(|v| v.ends_with(&format!(":{store}"))),
        "the JetStream store {store} must be a volume: {volumes:?}"
    );
    let test = words(&nats["healthcheck"]["test"]).join(" ");
    assert!(test.contains("healthz"), "nats healthcheck: {test}");
    assert!(
        command.iter().any(|w| w == "-m" || w == "--http_port"),
        "the nats healthcheck needs the monitoring port (-m)"
    );
}

#[test]
fn api_is_published_on_8080_with_a_health_check() {
    let compose = compose();
    let api = service(&compose, "api");
    let ports: Vec<String> = api["ports"]
        .as_vec()
        .expect("api publishes ports")
        .iter()
        .map(|p| match p {
            Yaml::Hash(_) => format!(
                "{}:{}",
                text(&p["published"]).unwrap_or_default(),
                text(&p["target"]).unwrap_or_default()
            ),
            other => text(other).unwrap_or_default(),
        })
        .collect();
    assert!(
        ports.iter().any(|p| p.ends_with("8080:8080")),
        "api must publish 8080: {ports:?}"
    );
    let test = words(&api["healthcheck"]["test"]);
    assert!(
        test.iter().any(|w| w.ends_with(":8080/health")),
        "api healthcheck must hit /health: {test:?}"
    );
    // The probe must exist in the runtime image.
    let probe = test
        .iter()
        .find(|w| !w.starts_with("CMD"))
        .cloned()
        .unwrap_or_default();
    let runtime = dockerfile_stages()
        .pop()
        .expect("a runtime stage")
        .1
        .join("\n");
    assert!(
        probe == "ordo" || runtime.contains(&probe),
        "the api healthcheck runs `{probe}`, which the runtime image does not install"
    );
}

/// Dockerfile instructions by stage: (the FROM line, the instructions after it), with
/// comments dropped and continuation lines joined.
fn dockerfile_stages() -> Vec<(String, Vec<String>)> {
    let text = repo_file("Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(start) = trimmed.strip_suffix('\\') {
            current.push_str(start);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        if !current.trim().is_empty() {
            instructions.push(current.trim().to_owned());
        }
        current.clear();
    }
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    for instruction in instructions {
        if instruction.to_ascii_uppercase().starts_with("FROM ") {
            stages.push((instruction, Vec::new()));
        } else if let Some(stage) = stages.last_mut() {
            stage.1.push(instruction);
        }
    }
    stages
}

#[test]
fn dockerfile_builds_in_a_builder_stage_and_runs_ordo_from_a_slim_runtime() {
    let stages = dockerfile_stages();
    assert!(
        stages.len() >= 2,
        "a builder and a runtime stage: {stages:?}"
    );
    let (builder_from, builder) = stages
        .iter()
        .find(|(from, _)| from.to_ascii_lowercase().ends_with(" as builder"))
        .expect("a stage named builder");
    assert!(
        builder_from.contains("rust:1-bookworm"),
        "builder: {builder_from}"
    );
    assert!(
        builder.iter().any(|i| i.starts_with("RUN")
            && i.contains("cargo build --release")
            && i.contains("-p cli")),
        "the builder runs `cargo build --release -p cli`"
    );

    let (runtime_from, runtime) = stages.last().expect("a last stage");
    assert!(
        runtime_from.contains("debian:bookworm-slim"),
        "runtime: {runtime_from}"
    );
    assert!(
        runtime
            .iter()
            .any(|i| i.starts_with("COPY") && i.contains("--from=builder")),
        "the runtime copies the binary from the builder"
    );
    assert!(
        runtime
            .iter()
            .any(|i| i.starts_with("RUN") && i.contains("ca-certificates")),
        "the runtime installs ca-certificates"
    );
    let user = runtime
        .iter()
        .rev()
        .find_map(|i| i.strip_prefix("USER "))
        .expect("the runtime sets a USER")
        .trim();
    let name = user.split(':').next().unwrap_or_default();
    assert!(
        name != "root" && name != "0",
        "the runtime must not run as root: USER {user}"
    );
    assert!(
        runtime
            .iter()
            .any(|i| i.replace(' ', "") == r#"ENTRYPOINT["ordo"]"#),
        "the runtime's entrypoint is ENTRYPOINT [\"ordo\"]"
    );
}

#[test]
fn dockerignore_leaves_out_build_output_and_local_state() {
    let text = repo_file(".dockerignore");
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').trim_end_matches('/'))
        .collect();
    for wanted in ["target", ".ordo"] {
        assert!(
            patterns.contains(&wanted),
            ".dockerignore must exclude {wanted}/: {patterns:?}"
        );
    }
}

/// The first admin token reaches the API as a Compose secret (a file outside
/// docker-compose.yml), never as a literal in it.
#[test]
fn the_bootstrap_token_is_a_secret_not_a_literal() {
    let compose = compose();
    let api = service(&compose, "api");
    let file = env_value(api, "ORDO_BOOTSTRAP_TOKEN_FILE")
        .expect("the API names its bootstrap token file");
    let secret = file
        .strip_prefix("/run/secrets/")
        .expect("a Compose secret");
    assert!(
        words(&api["secrets"]).iter().any(|s| s == secret),
        "the API is given the secret {secret}"
    );
    let source = text(&compose["secrets"][secret]["file"]).expect("the secret is read from a file");
    assert!(!source.contains("ordo_"), "{source}");
    let text = repo_file("docker-compose.yml");
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        assert!(
            api::auth::TokenSecret::parse(line.split_whitespace().last().unwrap_or_default())
                .is_none(),
            "a token literal in docker-compose.yml: {line}"
        );
    }
}

#[test]
fn the_roles_log_in_as_a_member_of_the_runtime_role_and_only_migrate_as_the_owner() {
    let compose = compose();
    let postgres = service(&compose, "postgres");
    let configs = postgres["configs"].as_vec().expect("postgres has configs");
    let init = configs
        .iter()
        .find(|c| text(&c["target"]).is_some_and(|t| t.starts_with("/docker-entrypoint-initdb.d/")))
        .expect("postgres runs an init script from /docker-entrypoint-initdb.d");
    let source = text(&init["source"]).expect("the init config names its source");
    let sql = text(&compose["configs"][source.as_str()]["content"])
        .expect("the init script is a config with inline content");
    let sql = sql.to_lowercase();
    assert!(sql.contains("create role ordo_runtime nologin"), "{sql}");
    assert!(
        sql.contains("create role ordo_app login password 'ordo_app' in role ordo_runtime"),
        "the login of the roles' DATABASE_URL is a member of ordo_runtime: {sql}"
    );
    assert!(
        !sql.contains("superuser") && !sql.contains("createrole") && !sql.contains("grant all"),
        "the login gets nothing else: {sql}"
    );
    // The owner that migrates is the image's own user.
    assert_eq!(
        env_value(postgres, "POSTGRES_USER").as_deref(),
        Some("ordo")
    );
    let migrate = service(&compose, "migrate");
    assert_eq!(
        env_value(migrate, "DATABASE_URL").as_deref(),
        Some("postgres://ordo:ordo@postgres:5432/ordo")
    );
    // No role sets another runtime role name than the one the script grants.
    for role in ORDO_ROLES {
        let name = env_value(service(&compose, role), "ORDO_RUNTIME_ROLE");
        assert!(
            matches!(name.as_deref(), None | Some("ordo_runtime")),
            "{role}: {name:?}"
        );
    }
}

#[test]
fn nats_runs_with_the_generated_users_and_each_role_logs_in_as_its_own() {
    let compose = compose();
    let nats = service(&compose, "nats");
    let command = words(&nats["command"]);
    let conf = command
        .iter()
        .position(|w| w == "-c")
        .and_then(|i| command.get(i + 1))
        .expect("nats-server runs with a configuration (-c)");
    let volumes: Vec<String> = nats["volumes"]
        .as_vec()
        .map(|v| v.iter().filter_map(text).collect())
        .unwrap_or_default();
    let mounted = volumes
        .iter()
        .find(|v| v.contains(&format!(":{conf}")))
        .unwrap_or_else(|| panic!("{conf} is mounted into nats: {volumes:?}"));
    assert!(
        mounted.starts_with("${ORDO_NATS_AUTH_DIR:-./.ordo/nats-auth}/nats-server.conf:")
            && mounted.ends_with(":ro"),
        "the configuration `ordo nats-config` wrote, read-only: {mounted}"
    );
    for role in LONG_RUNNING_ROLES {
        let service = service(&compose, role);
        let files: Vec<String> = service["env_file"]
            .as_vec()
            .map(|v| v.iter().filter_map(text).collect())
            .unwrap_or_default();
        assert_eq!(
            files,
            vec![format!(
                "${{ORDO_NATS_AUTH_DIR:-./.ordo/nats-auth}}/{role}.env"
            )],
            "service `{role}` logs in to NATS as the user `{role}`"
        );
        for key in ["NATS_USER", "NATS_PASSWORD"] {
            assert!(
                env_value(service, key).is_none(),
                "{role}: {key} comes from the credentials file, never from this file"
            );
        }
    }
}
