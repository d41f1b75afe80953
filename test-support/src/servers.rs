//! Servers a test owns: a private nats-server it may stop and restart, and a
//! TCP proxy it may cut, so outage tests never touch the shared servers.
//! A private PostgreSQL is in [`crate::postgres`] (re-exported here).

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;

pub use crate::postgres::{PostgresOptions, PrivatePostgres, TlsFiles};

/// A free loopback port (bound and released; fine for tests).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ORDO_NATS_SERVER") {
        return path.into();
    }
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/local/bin"])
    {
        let candidate = PathBuf::from(dir).join("nats-server");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "nats-server not found; install it (apt-get install nats-server) or set ORDO_NATS_SERVER"
    )
}

/// A nats-server with JetStream on a free port and a temporary store,
/// stopped and deleted on drop.
///
/// Its log is kept beside its store ([`PrivateNats::violations`] reads what
/// it refused). With `ORDO_TEST_NATS_TRACE=<file>` set, every private server
/// also logs each protocol line (`-DV`: which subjects each client publishes
/// and subscribes to) and appends its log to that file when dropped.
#[derive(Debug)]
pub struct PrivateNats {
    port: u16,
    store: tempfile::TempDir,
    config: Option<PathBuf>,
    child: Option<Child>,
}

impl PrivateNats {
    /// Starts one and waits until it accepts clients.
    pub fn start() -> PrivateNats {
        PrivateNats::launch(None)
    }

    /// Starts one with a configuration file (`nats-server -c`): its
    /// authorization, TLS and anything else; the port, JetStream and store
    /// still come from the command line.
    pub fn start_with_config(config: &std::path::Path) -> PrivateNats {
        PrivateNats::launch(Some(config.to_owned()))
    }

    fn launch(config: Option<PathBuf>) -> PrivateNats {
        let store = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut nats = PrivateNats {
            port: free_port(),
            store,
            config,
            child: None,
        };
        nats.spawn();
        nats
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> eventstore::nats::NatsUrl {
        format!("nats://127.0.0.1:{}", self.port)
            .parse()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn spawn(&mut self) {
        let mut command = Command::new(nats_server_binary());
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path());
        if std::env::var_os("ORDO_TEST_NATS_TRACE").is_some() {
            command.arg("-DV");
        }
        // Its log goes to a file beside its store, read when it fails to
        // start (a pipe nobody reads would stall it, or end it when dropped).
        let output = self.log_file();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&output)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let mut child = command
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start nats-server: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let said = std::fs::read_to_string(&output).unwrap_or_default();
                panic!("nats-server exited ({status}): {said}");
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    fn log_file(&self) -> PathBuf {
        self.store.path().join("nats-server.log")
    }

    /// Every publish and subscription it refused for want of a permission,
    /// as it logged them (`Publish Violation - User "u", Subject "s"`).
    pub fn violations(&self) -> Vec<String> {
        std::fs::read_to_string(self.log_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let at = line
                    .find("Publish Violation")
                    .or_else(|| line.find("Subscription Violation"))?;
                Some(line[at..].to_owned())
            })
            .collect()
    }

    /// Kills it (SIGKILL: no goodbye to clients) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
        if let Some(trace) = std::env::var_os("ORDO_TEST_NATS_TRACE") {
            let log = std::fs::read(self.log_file()).unwrap_or_default();
            if let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(trace)
            {
                let _ = std::io::Write::write_all(&mut file, &log);
            }
        }
    }
}

/// A TCP proxy in front of a server. [`TcpProxy::cut`] drops every
/// connection and refuses new ones until [`TcpProxy::restore`]: to the
/// client it looks like the server went away.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts forwarding a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("proxy bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("proxy addr: {e}"));
        let cut = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (cut, live) = (cut.clone(), live.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if cut.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    if let Ok(mut live) = live.lock() {
                        live.retain(|t| !t.is_finished());
                        live.push(task);
                    }
                }
            })
        };
        TcpProxy {
            addr,
            cut,
            live,
            accept,
        }
    }

    /// The address clients should use.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        if let Ok(mut live) = self.live.lock() {
            for task in live.drain(..) {
                task.abort();
            }
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// One message read back from a stream.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Its stream sequence.
    pub sequence: u64,
    /// Its subject.
    pub subject: String,
    /// Its `Nats-Msg-Id` header.
    pub msg_id: Option<String>,
    /// Its body.
    pub payload: bytes::Bytes,
}

/// Every message of a stream, in stream order (an ordered consumer).
pub async fn read_stream_messages(
    jetstream: &async_nats::jetstream::Context,
    stream: &str,
) -> Vec<StoredMessage> {
    let mut stream = jetstream
        .get_stream(stream)
        .await
        .unwrap_or_else(|e| panic!("get stream: {e}"));
    let last = stream
        .info()
        .await
        .unwrap_or_else(|e| panic!("stream info: {e}"))
        .state
        .last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return out;
    }
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap_or_else(|e| panic!("ordered consumer: {e}"));
    let mut messages = consumer
        .messages()
        .await
        .unwrap_or_else(|e| panic!("messages: {e}"));
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_secs(10), messages.next()).await
    {
        let message = message.unwrap_or_else(|e| panic!("message: {e}"));
        let sequence = message
            .info()
            .map(|i| i.stream_sequence)
            .unwrap_or_else(|e| panic!("info: {e}"));
        out.push(StoredMessage {
            sequence,
            subject: message.subject.to_string(),
            msg_id: message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned()),
            payload: message.payload.clone(),
        });
        if sequence >= last {
            break;
        }
    }
    out
}
