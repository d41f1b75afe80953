//! NATS: the URL, stream name and subject prefix a deployment uses, connecting
//! with a readable error, and the JetStream stream every event is published to.
//!
//! Written for nats-server 2.9.10: one subject filter per stream (`<prefix>.>`),
//! no subject transforms, no 2.10-only fields.

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
    /// Any other JetStream error.
    #[error("JetStream: {0}")]
    JetStream(String),
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

/// A JetStream stream name: letters, digits, `-` and `_` (NATS forbids `.`,
/// `*`, `>`, whitespace and path separators).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamName(String);

impl std::str::FromStr for StreamName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        name_token(
            s,
            "a stream name",
            "may only contain letters, digits, '-' and '_'",
        )
        .map(StreamName)
    }
}

impl std::fmt::Display for StreamName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StreamName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The first token of every event subject: one NATS subject token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubjectPrefix(String);

impl std::str::FromStr for SubjectPrefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        name_token(
            s,
            "a subject prefix",
            "must be one subject token: letters, digits, '-' and '_' (no '.', '*', '>')",
        )
        .map(SubjectPrefix)
    }
}

impl std::fmt::Display for SubjectPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl SubjectPrefix {
    /// The prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<prefix>.>`: every subject of this deployment.
    pub fn wildcard(&self) -> String {
        format!("{}.>", self.0)
    }

    /// `<prefix>.<streamtype>.<aggregate uuid>.<Type>`.
    pub fn subject(&self, stream_type: &str, aggregate_id: &str, event_type: &str) -> String {
        format!("{}.{stream_type}.{aggregate_id}.{event_type}", self.0)
    }
}

/// Connects to NATS. The client reconnects by itself afterwards; only the
/// first attempt fails fast, with a message naming the fix.
pub async fn connect(url: &NatsUrl, name: &str) -> Result<async_nats::Client, BusError> {
    let options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(CONNECT_TIMEOUT)
        .request_timeout(Some(Duration::from_secs(10)));
    options
        .connect(url.as_str())
        .await
        .map_err(|e| BusError::Unreachable {
            url: url.to_string(),
            reason: match e.kind() {
                async_nats::ConnectErrorKind::Io => std::error::Error::source(&e)
                    .map(|s| s.to_string().to_lowercase())
                    .unwrap_or_else(|| "connection refused".to_owned())
                    .split(" (os error")
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                kind => kind.to_string(),
            },
        })
}

/// The stream configuration ordo expects: every `<prefix>.>` subject, file
/// storage, limits retention, a two minute duplicate window.
pub fn stream_config(name: &StreamName, prefix: &SubjectPrefix) -> stream::Config {
    stream::Config {
        name: name.as_str().to_owned(),
        subjects: vec![prefix.wildcard()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: DUPLICATE_WINDOW,
        description: Some("ordo events, published in log order by the relay".to_owned()),
        ..Default::default()
    }
}

/// Creates the stream if missing; refuses one whose subjects are not ours.
pub async fn ensure_stream(
    js: &jetstream::Context,
    name: &StreamName,
    prefix: &SubjectPrefix,
) -> Result<stream::Stream, BusError> {
    let expected = prefix.wildcard();
    match js.get_stream(name.as_str()).await {
        Ok(stream) => {
            let found = stream.cached_info().config.subjects.clone();
            if found != [expected.clone()] {
                return Err(BusError::StreamMismatch {
                    stream: name.to_string(),
                    found,
                    expected,
                });
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
    fn builds_subjects() {
        let prefix: SubjectPrefix = "events".parse().unwrap();
        assert_eq!(prefix.wildcard(), "events.>");
        assert_eq!(
            prefix.subject("order", "abc", "OrderPlaced"),
            "events.order.abc.OrderPlaced"
        );
    }
}
