//! NATS: where the server is and how ordo proves who it is ([`NatsConnect`]),
//! the stream name and subject prefix a deployment uses, connecting with a
//! readable error, and the JetStream stream every event is published to.
//!
//! Written for nats-server 2.9.10: one subject filter per stream (`<prefix>.>`),
//! no subject transforms, no 2.10-only fields.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{self, stream};

/// How long an initial connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// JetStream's duplicate window: a republish of the same `Nats-Msg-Id` within
/// it is absorbed. The relay republishes at most what it published since its
/// last checkpoint, seconds before; two minutes leaves room for restarts.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// NATS problems, worded for the person who has to fix them.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The server did not answer.
    #[error("cannot reach NATS at {url}: {reason}; set NATS_URL or run scripts/up")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// Why, in a few words.
        reason: String,
    },
    /// The server answers but has no JetStream.
    #[error("NATS at {url} has no JetStream; start nats-server with -js")]
    NoJetStream {
        /// The URL tried.
        url: String,
    },
    /// A stream of that name exists with other subjects: publishing into it
    /// would mix deployments.
    #[error(
        "JetStream stream {stream} has subjects {found:?}, expected [\"{expected}\"]; \
         choose another ORDO_STREAM or ORDO_SUBJECT_PREFIX"
    )]
    StreamMismatch {
        /// The stream name.
        stream: String,
        /// Its subjects.
        found: Vec<String>,
        /// What ordo needs.
        expected: String,
    },
    /// The stream lets messages be deleted or purged (`deny_delete` or
    /// `deny_purge` is off): anyone allowed its API could erase events.
    #[error(
        "JetStream stream {stream} allows {what}: anyone allowed its API could erase events; \
         run `ordo protect-stream` once, as a NATS user allowed to update the stream (the \
         admin user of `ordo nats-config`), to set deny_delete and deny_purge (they can be \
         added, never removed), or set ORDO_ALLOW_UNPROTECTED_STREAM=true to run without them"
    )]
    UnprotectedStream {
        /// The stream name.
        stream: String,
        /// What it allows: `message deletes`, `purges`, or both.
        what: String,
    },
    /// The server refused ordo's credentials (or their absence).
    #[error("NATS at {url} refused {who}; {fix}")]
    Refused {
        /// The URL tried.
        url: String,
        /// Who ordo said it was.
        who: String,
        /// Which setting to fix.
        fix: String,
    },
    /// A connection setting cannot be used as given.
    #[error("{variable}: {reason}")]
    Setting {
        /// The environment variable (and flag) to fix.
        variable: &'static str,
        /// Why, in a few words.
        reason: String,
    },
    /// The TLS handshake failed.
    #[error("TLS with NATS at {url} failed: {reason}; {fix}")]
    Tls {
        /// The URL tried.
        url: String,
        /// What went wrong.
        reason: String,
        /// Which setting to fix.
        fix: String,
    },
    /// Any other JetStream error.
    #[error("JetStream: {0}")]
    JetStream(String),
}

impl BusError {
    /// True when retrying cannot help: the stream is not one ordo may use
    /// as it stands.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            BusError::StreamMismatch { .. } | BusError::UnprotectedStream { .. }
        )
    }
}

/// A validated NATS server URL (`nats://host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsUrl(String);

impl std::str::FromStr for NatsUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = ["nats://", "tls://", "ws://", "wss://"]
            .iter()
            .find_map(|scheme| s.strip_prefix(scheme))
            .ok_or_else(|| "expected nats://host:port".to_owned())?;
        let host = rest.rsplit('@').next().unwrap_or_default();
        if host.is_empty() || host.contains('/') && !s.starts_with("ws") {
            return Err("expected nats://host:port".to_owned());
        }
        if let Some((_, port)) = host.rsplit_once(':') {
            port.parse::<u16>()
                .map_err(|_| format!("invalid port {port:?}"))?;
        }
        Ok(NatsUrl(s.to_owned()))
    }
}

impl std::fmt::Display for NatsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::db::redact(&self.0))
    }
}

impl NatsUrl {
    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `s` when it is 1 to 64 letters, digits, `-` and `_`, which is safe both
/// as a JetStream stream name and as one subject token; otherwise why not,
/// naming it `what` and saying which characters it may hold in `allowed`.
fn name_token(s: &str, what: &str, allowed: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 64 {
        return Err(format!("{what} has 1 to 64 characters"));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!("{s:?} {allowed}"));
    }
    Ok(s.to_owned())
}

/// A name that is one NATS token (see [`name_token`]): the type, its
/// parsing (`what` names it in errors, `allowed` says what it may hold),
/// `Display` and `as_str`.
macro_rules! token_name {
    ($(#[$doc:meta])* $name:ident, $what:literal, $allowed:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                name_token(s, $what, $allowed).map($name)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl $name {
            /// The name, as given.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

token_name!(
    /// A JetStream stream name: letters, digits, `-` and `_` (NATS forbids `.`,
    /// `*`, `>`, whitespace and path separators).
    StreamName,
    "a stream name",
    "may only contain letters, digits, '-' and '_'"
);

token_name!(
    /// A JetStream consumer name: letters, digits, `-` and `_`.
    ConsumerName,
    "a consumer name",
    "may only contain letters, digits, '-' and '_'"
);

token_name!(
    /// The first token of every event subject: one NATS subject token.
    SubjectPrefix,
    "a subject prefix",
    "must be one subject token: letters, digits, '-' and '_' (no '.', '*', '>')"
);

impl SubjectPrefix {
    /// `<prefix>.>`: every subject of this deployment.
    pub fn wildcard(&self) -> String {
        format!("{}.>", self.0)
    }

    /// `<prefix>.<streamtype>.<aggregate uuid>.<Type>`.
    pub fn subject(&self, stream_type: &str, aggregate_id: &str, event_type: &str) -> String {
        format!("{}.{stream_type}.{aggregate_id}.{event_type}", self.0)
    }
}

/// A NATS password, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsPassword(String);

impl NatsPassword {
    /// The password.
    pub fn new(password: impl Into<String>) -> NatsPassword {
        NatsPassword(password.into())
    }

    /// The password itself: for the server, never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for NatsPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NatsPassword(***)")
    }
}

impl std::str::FromStr for NatsPassword {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(NatsPassword(s.to_owned()))
    }
}

/// How ordo proves who it is to the NATS server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    /// Nobody: for a server without authorization.
    #[default]
    Anonymous,
    /// A user and password (`NATS_USER`, `NATS_PASSWORD`).
    UserPassword {
        /// The user.
        user: String,
        /// Its password.
        password: NatsPassword,
    },
    /// A credentials file: a user JWT and its nkey seed (`NATS_CREDS`).
    Creds(PathBuf),
    /// A file holding a user nkey seed (`NATS_NKEY`).
    NKey(PathBuf),
}

/// TLS towards the server: the CA that signed its certificate, and a
/// certificate of ordo's own for servers that verify their clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// PEM certificates of the CAs to trust (`NATS_TLS_CA`); the system's
    /// when unset.
    pub ca: Option<PathBuf>,
    /// PEM client certificate and its key (`NATS_TLS_CERT`, `NATS_TLS_KEY`).
    pub client: Option<(PathBuf, PathBuf)>,
}

impl NatsTls {
    /// True when any TLS setting is given: the connection then must be TLS.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.client.is_some()
    }
}

/// Everything needed to connect to NATS: where, as whom, over what, and
/// the prefix of the subjects replies come back on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConnect {
    /// The server (`NATS_URL`).
    pub url: NatsUrl,
    /// Who ordo is.
    pub auth: NatsAuth,
    /// TLS settings.
    pub tls: NatsTls,
    /// The reply subjects' prefix (`NATS_INBOX_PREFIX`); see
    /// [`NatsConnect::inbox_prefix`] for the default.
    pub inbox_prefix: Option<InboxPrefix>,
}

impl From<NatsUrl> for NatsConnect {
    fn from(url: NatsUrl) -> NatsConnect {
        NatsConnect::new(url)
    }
}

impl From<&NatsUrl> for NatsConnect {
    fn from(url: &NatsUrl) -> NatsConnect {
        NatsConnect::new(url.clone())
    }
}

/// The prefix of a client's reply subjects (its "inbox"): one or more
/// subject tokens, without wildcards.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InboxPrefix(String);

impl std::str::FromStr for InboxPrefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = !s.is_empty()
            && s.len() <= 128
            && s.split('.').all(|token| {
                !token.is_empty()
                    && token
                        .chars()
                        .all(|c| c.is_ascii_graphic() && c != '*' && c != '>')
            });
        if valid {
            Ok(InboxPrefix(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a subject prefix: tokens of printable characters separated by \
                 '.', without '*' or '>'"
            ))
        }
    }
}

impl std::fmt::Display for InboxPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl InboxPrefix {
    /// `_INBOX_<user>`: the inbox `ordo nats-config` gives `user`.
    pub fn of_user(user: &str) -> Option<InboxPrefix> {
        name_token(user, "a user", "").ok()?;
        Some(InboxPrefix(format!("_INBOX_{user}")))
    }

    /// The prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl NatsConnect {
    /// Anonymous, without TLS: a development server's settings.
    pub fn new(url: NatsUrl) -> NatsConnect {
        NatsConnect {
            url,
            auth: NatsAuth::Anonymous,
            tls: NatsTls::default(),
            inbox_prefix: None,
        }
    }

    /// The same as `user` with `password`.
    pub fn with_user(mut self, user: &str, password: &str) -> NatsConnect {
        self.auth = NatsAuth::UserPassword {
            user: user.to_owned(),
            password: NatsPassword::new(password),
        };
        self
    }

    /// The same over TLS, trusting the CA certificate in `ca`.
    pub fn with_ca(mut self, ca: impl Into<PathBuf>) -> NatsConnect {
        self.tls.ca = Some(ca.into());
        self
    }

    /// The same presenting a client certificate.
    pub fn with_client_certificate(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> NatsConnect {
        self.tls.client = Some((cert.into(), key.into()));
        self
    }

    /// The prefix replies come back on: `NATS_INBOX_PREFIX` when set, else
    /// `_INBOX_<NATS_USER>` (each user of `ordo nats-config` may read only
    /// its own), else NATS's usual `_INBOX`.
    pub fn inbox_prefix(&self) -> String {
        if let Some(prefix) = &self.inbox_prefix {
            return prefix.as_str().to_owned();
        }
        match &self.auth {
            NatsAuth::UserPassword { user, .. } => InboxPrefix::of_user(user)
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "_INBOX".to_owned()),
            _ => "_INBOX".to_owned(),
        }
    }

    /// The client's options for connecting as `name`: credentials read and
    /// checked, TLS files checked, server errors logged. Fails naming the
    /// setting to fix.
    pub fn options(&self, name: &str) -> Result<async_nats::ConnectOptions, BusError> {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(CONNECT_TIMEOUT)
            .request_timeout(Some(Duration::from_secs(10)))
            .custom_inbox_prefix(self.inbox_prefix())
            .event_callback({
                let name = name.to_owned();
                move |event| {
                    let name = name.clone();
                    async move { log_event(&name, event) }
                }
            });
        options = match &self.auth {
            NatsAuth::Anonymous => options,
            NatsAuth::UserPassword { user, password } => {
                if user.is_empty() {
                    return Err(BusError::Setting {
                        variable: "NATS_USER",
                        reason: "empty".to_owned(),
                    });
                }
                options.user_and_password(user.clone(), password.expose().to_owned())
            }
            NatsAuth::Creds(path) => {
                let text = read_setting("NATS_CREDS", path)?;
                options.credentials(&text).map_err(|e| BusError::Setting {
                    variable: "NATS_CREDS",
                    reason: format!(
                        "{} is not a NATS credentials file (a user JWT and nkey seed): {e}",
                        path.display()
                    ),
                })?
            }
            NatsAuth::NKey(path) => {
                let seed = read_setting("NATS_NKEY", path)?;
                let seed = seed.trim();
                if !seed.starts_with("SU") {
                    return Err(BusError::Setting {
                        variable: "NATS_NKEY",
                        reason: format!(
                            "{} does not hold a user nkey seed (one line starting with SU)",
                            path.display()
                        ),
                    });
                }
                options.nkey(seed.to_owned())
            }
        };
        if let Some(ca) = &self.tls.ca {
            check_pem("NATS_TLS_CA", ca, "CERTIFICATE")?;
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls.client {
            check_pem("NATS_TLS_CERT", cert, "CERTIFICATE")?;
            check_pem("NATS_TLS_KEY", key, "PRIVATE KEY")?;
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.tls.is_set() {
            options = options.require_tls(true);
        }
        Ok(options)
    }

    /// What a refusal of these credentials should say: who, and what to fix.
    fn refused(&self) -> BusError {
        let (who, fix) = match &self.auth {
            NatsAuth::Anonymous => (
                "an anonymous connection".to_owned(),
                "set NATS_USER and NATS_PASSWORD (or NATS_CREDS, or NATS_NKEY)".to_owned(),
            ),
            NatsAuth::UserPassword { user, .. } => (
                format!("user {user:?}"),
                "check NATS_PASSWORD (and NATS_USER)".to_owned(),
            ),
            NatsAuth::Creds(path) => (
                format!("the credentials in {}", path.display()),
                "check NATS_CREDS".to_owned(),
            ),
            NatsAuth::NKey(path) => (
                format!("the nkey seeded in {}", path.display()),
                "check NATS_NKEY".to_owned(),
            ),
        };
        BusError::Refused {
            url: self.url.to_string(),
            who,
            fix,
        }
    }

    /// What a failed TLS handshake should say.
    fn tls_failed(&self, reason: String) -> BusError {
        let lower = reason.to_lowercase();
        let fix = if lower.contains("corrupt message") || lower.contains("invalidcontenttype") {
            "the server answered in clear, without TLS: give it a tls block, or unset \
             NATS_TLS_CA, NATS_TLS_CERT and NATS_TLS_KEY"
        } else if lower.contains("certificaterequired")
            || lower.contains("certificate required")
            || lower.contains("bad certificate")
            || lower.contains("badcertificate")
        {
            match &self.tls.client {
                None => "the server wants a client certificate: set NATS_TLS_CERT and NATS_TLS_KEY",
                Some(_) => {
                    "the server refused the client certificate: check NATS_TLS_CERT and NATS_TLS_KEY"
                }
            }
        } else if self.tls.ca.is_none() {
            "set NATS_TLS_CA to the certificate of the CA that signed the server's"
        } else {
            "check NATS_TLS_CA (the CA that signed the server's certificate) and the host in NATS_URL"
        };
        BusError::Tls {
            url: self.url.to_string(),
            reason,
            fix: fix.to_owned(),
        }
    }
}

/// The contents of the file a setting names, or an error naming it.
fn read_setting(variable: &'static str, path: &Path) -> Result<String, BusError> {
    std::fs::read_to_string(path).map_err(|e| BusError::Setting {
        variable,
        reason: format!("cannot read {}: {}", path.display(), io_reason(&e)),
    })
}

/// Checks a setting names a readable PEM file holding a `kind` block.
fn check_pem(variable: &'static str, path: &Path, kind: &str) -> Result<(), BusError> {
    let text = read_setting(variable, path)?;
    if !text.contains("-----BEGIN ") || !text.contains(kind) {
        return Err(BusError::Setting {
            variable,
            reason: format!("{} holds no PEM {}", path.display(), kind.to_lowercase()),
        });
    }
    Ok(())
}

/// An I/O error in a few lower-case words, without `(os error N)`.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    text.split(" (os error")
        .next()
        .unwrap_or_default()
        .to_lowercase()
}

/// Logs what the server says of a client's doings: a permission refused is
/// an error an operator should see (the request it belonged to only times
/// out).
fn log_event(client: &str, event: async_nats::Event) {
    match event {
        async_nats::Event::ServerError(e) => {
            let text = e.to_string();
            if text.to_lowercase().contains("permissions violation") {
                tracing::error!(
                    client,
                    "NATS refused: {text}; the NATS user lacks that permission (docs/reference/nats-security.md)"
                );
            } else {
                tracing::warn!(client, "NATS server error: {text}");
            }
        }
        async_nats::Event::Disconnected => tracing::warn!(client, "NATS connection lost"),
        async_nats::Event::ClientError(e) => tracing::warn!(client, "NATS: {e}"),
        async_nats::Event::Connected => tracing::debug!(client, "NATS connected"),
        other => tracing::debug!(client, "NATS: {other}"),
    }
}

/// Connects to NATS. The client reconnects by itself afterwards; only the
/// first attempt fails fast, with a message naming the setting to fix.
pub async fn connect(target: &NatsConnect, name: &str) -> Result<async_nats::Client, BusError> {
    let options = target.options(name)?;
    options
        .connect(target.url.as_str())
        .await
        .map_err(|e| classify_connect_error(target, &e))
}

/// The readable error of a failed first connection.
fn classify_connect_error(target: &NatsConnect, e: &async_nats::ConnectError) -> BusError {
    let source = std::error::Error::source(e).map(|s| s.to_string());
    match e.kind() {
        async_nats::ConnectErrorKind::AuthorizationViolation => target.refused(),
        async_nats::ConnectErrorKind::Authentication => match &target.auth {
            NatsAuth::NKey(path) => BusError::Setting {
                variable: "NATS_NKEY",
                reason: format!("{} holds no valid user nkey seed", path.display()),
            },
            NatsAuth::Creds(path) => BusError::Setting {
                variable: "NATS_CREDS",
                reason: format!("{} holds no valid user nkey seed", path.display()),
            },
            _ => target.refused(),
        },
        async_nats::ConnectErrorKind::Tls => {
            target.tls_failed(source.unwrap_or_else(|| "TLS error".to_owned()))
        }
        async_nats::ConnectErrorKind::Io => {
            let reason = source.unwrap_or_else(|| "connection refused".to_owned());
            let lower = reason.to_lowercase();
            let tls_words = [
                "certificate",
                "tls",
                "handshake",
                "alert",
                "corrupt message",
            ];
            if tls_words.iter().any(|word| lower.contains(word)) {
                return target.tls_failed(reason);
            }
            if lower.contains("authorization violation") {
                return target.refused();
            }
            BusError::Unreachable {
                url: target.url.to_string(),
                reason: lower
                    .split(" (os error")
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            }
        }
        kind => BusError::Unreachable {
            url: target.url.to_string(),
            reason: kind.to_string(),
        },
    }
}

/// The stream configuration ordo expects: every `<prefix>.>` subject, file
/// storage, limits retention, a two minute duplicate window, and neither
/// message deletes nor purges allowed (`deny_delete`, `deny_purge`: once
/// set, the server never lets them be unset).
pub fn stream_config(name: &StreamName, prefix: &SubjectPrefix) -> stream::Config {
    stream::Config {
        name: name.as_str().to_owned(),
        subjects: vec![prefix.wildcard()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: DUPLICATE_WINDOW,
        description: Some("ordo events, published in log order by the relay".to_owned()),
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    }
}

/// What to do with an existing stream that allows message deletes or purges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Unprotected {
    /// Refuse to use it, saying how to protect it.
    #[default]
    Refuse,
    /// Use it anyway (`ORDO_ALLOW_UNPROTECTED_STREAM`), with a warning.
    Allow,
}

/// What an existing stream allows that ordo's does not, if anything.
fn unprotected(config: &stream::Config) -> Option<&'static str> {
    match (config.deny_delete, config.deny_purge) {
        (true, true) => None,
        (false, true) => Some("message deletes"),
        (true, false) => Some("purges"),
        (false, false) => Some("message deletes and purges"),
    }
}

/// Creates the stream if missing (protected: see [`stream_config`]);
/// refuses one whose subjects are not ours, and, unless `unprotected` says
/// otherwise, one that allows message deletes or purges.
pub async fn ensure_stream(
    js: &jetstream::Context,
    name: &StreamName,
    prefix: &SubjectPrefix,
    unprotected_stream: Unprotected,
) -> Result<stream::Stream, BusError> {
    let expected = prefix.wildcard();
    match js.get_stream(name.as_str()).await {
        Ok(stream) => {
            let config = &stream.cached_info().config;
            let found = config.subjects.clone();
            if found != [expected.clone()] {
                return Err(BusError::StreamMismatch {
                    stream: name.to_string(),
                    found,
                    expected,
                });
            }
            if let Some(what) = unprotected(config) {
                match unprotected_stream {
                    Unprotected::Refuse => {
                        return Err(BusError::UnprotectedStream {
                            stream: name.to_string(),
                            what: what.to_owned(),
                        })
                    }
                    Unprotected::Allow => tracing::warn!(
                        stream = %name,
                        "the stream allows {what} (ORDO_ALLOW_UNPROTECTED_STREAM); \
                         `ordo protect-stream` stops that"
                    ),
                }
            }
            Ok(stream)
        }
        Err(e) if is_stream_not_found(&e) => js
            .create_stream(stream_config(name, prefix))
            .await
            .map_err(|e| match e.kind() {
                jetstream::context::CreateStreamErrorKind::JetStreamUnavailable => {
                    let info = js.client().server_info();
                    BusError::NoJetStream {
                        url: format!("nats://{}:{}", info.host, info.port),
                    }
                }
                _ => BusError::JetStream(e.to_string()),
            }),
        Err(e) => Err(BusError::JetStream(e.to_string())),
    }
}

/// What [`protect_stream`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// The stream denied message deletes and purges already.
    Already,
    /// It does now.
    Added,
}

/// Sets `deny_delete` and `deny_purge` on an existing stream of ours (a
/// stream update: the server lets them be added, never removed).
pub async fn protect_stream(
    js: &jetstream::Context,
    name: &StreamName,
    prefix: &SubjectPrefix,
) -> Result<Protection, BusError> {
    let stream = js.get_stream(name.as_str()).await.map_err(|e| {
        if is_stream_not_found(&e) {
            BusError::JetStream(format!(
                "stream {name} does not exist (the relay creates it, protected)"
            ))
        } else {
            BusError::JetStream(e.to_string())
        }
    })?;
    let mut config = stream.cached_info().config.clone();
    let expected = prefix.wildcard();
    if config.subjects != [expected.clone()] {
        return Err(BusError::StreamMismatch {
            stream: name.to_string(),
            found: config.subjects,
            expected,
        });
    }
    if unprotected(&config).is_none() {
        return Ok(Protection::Already);
    }
    config.deny_delete = true;
    config.deny_purge = true;
    let info = js
        .update_stream(config)
        .await
        .map_err(|e| BusError::JetStream(format!("updating stream {name}: {e}")))?;
    match unprotected(&info.config) {
        None => Ok(Protection::Added),
        Some(what) => Err(BusError::JetStream(format!(
            "stream {name} was updated but still allows {what}"
        ))),
    }
}

fn is_stream_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(ref js)
            if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn validates_names_and_prefixes() {
        assert!("ORDO_EVENTS".parse::<StreamName>().is_ok());
        assert!("a.b".parse::<StreamName>().is_err());
        assert!("".parse::<StreamName>().is_err());
        assert!("events".parse::<SubjectPrefix>().is_ok());
        assert!("ev.ents".parse::<SubjectPrefix>().is_err());
        assert!("ev*".parse::<SubjectPrefix>().is_err());
        assert!("nats://127.0.0.1:4222".parse::<NatsUrl>().is_ok());
        assert!("http://127.0.0.1:4222".parse::<NatsUrl>().is_err());
        assert!("nats://127.0.0.1:99999".parse::<NatsUrl>().is_err());
    }

    #[test]
    fn each_user_replies_on_its_own_inbox_unless_told_otherwise() {
        let url: NatsUrl = "nats://127.0.0.1:4222".parse().unwrap();
        let anonymous = NatsConnect::new(url.clone());
        assert_eq!(anonymous.inbox_prefix(), "_INBOX");
        let relay = anonymous.clone().with_user("relay", "secret");
        assert_eq!(relay.inbox_prefix(), "_INBOX_relay");
        let odd = anonymous.clone().with_user("a.b", "secret");
        assert_eq!(odd.inbox_prefix(), "_INBOX", "not one token: the default");
        let mut told = relay.clone();
        told.inbox_prefix = Some("_INBOX.ordo".parse().unwrap());
        assert_eq!(told.inbox_prefix(), "_INBOX.ordo");
        for bad in ["", "a.*", "a.>", "a..b", "a b", "a."] {
            assert!(bad.parse::<InboxPrefix>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_never_show() {
        let relay = NatsConnect::new("nats://127.0.0.1:4222".parse().unwrap())
            .with_user("relay", "hunter2");
        assert!(!format!("{relay:?}").contains("hunter2"));
    }

    #[test]
    fn a_stream_is_protected_by_both_flags() {
        let mut config = stream_config(&"S".parse().unwrap(), &"p".parse().unwrap());
        assert_eq!(unprotected(&config), None);
        config.deny_purge = false;
        assert_eq!(unprotected(&config), Some("purges"));
        config.deny_delete = false;
        assert_eq!(unprotected(&config), Some("message deletes and purges"));
    }

    #[test]
    fn builds_subjects() {
        let prefix: SubjectPrefix = "events".parse().unwrap();
        assert_eq!(prefix.wildcard(), "events.>");
        assert_eq!(
            prefix.subject("order", "abc", "OrderPlaced"),
            "events.order.abc.OrderPlaced"
        );
    }
}
