//! Waking log readers after appends.
//!
//! Appends do not `NOTIFY` inside their own transaction: PostgreSQL takes a
//! database-wide lock on the notification queue from `NOTIFY` to the end of
//! commit, which would serialise every writer on that lock (the very thing the
//! (transaction, position) log order avoids). Instead, after a commit the store
//! pokes a [`Notifier`], whose task sends one `NOTIFY` in its own tiny
//! transaction; pokes that arrive meanwhile coalesce into the next one. Readers
//! [`LogListener`] `LISTEN` on a dedicated connection and also poll, so a lost
//! notification costs latency, never an event.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;

use crate::db::DatabaseUrl;

/// The channel appends are announced on (notifications are per database).
pub const CHANNEL: &str = "ordo_events";

/// At most one `NOTIFY` per this interval. Every `NOTIFY` is a transaction
/// on the server; under load, unthrottled, they take a measurable share of
/// the appends' rate (docs/BENCHMARKS.md has the figure). A poke during the
/// pause is sent right after it, so readers wait at most this long for the
/// news.
const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(2);

/// Sends coalesced `NOTIFY`s after appends.
#[derive(Debug, Clone)]
pub struct Notifier {
    poke: mpsc::Sender<()>,
}

impl Notifier {
    /// Starts the notifying task; it ends when the last handle is dropped.
    pub fn spawn(pool: deadpool_postgres::Pool) -> Notifier {
        // Capacity 1: a poke while one is pending is already covered by it.
        let (poke, mut pokes) = mpsc::channel::<()>(1);
        tokio::spawn(async move {
            while pokes.recv().await.is_some() {
                let sent = match pool.get().await {
                    Ok(client) => client
                        .batch_execute(&format!("notify {CHANNEL}"))
                        .await
                        .is_ok(),
                    Err(_) => false,
                };
                // Readers poll anyway; don't spin while the database is away.
                tokio::time::sleep(if sent {
                    MIN_INTERVAL
                } else {
                    Duration::from_millis(100)
                })
                .await;
            }
        });
        Notifier { poke }
    }

    /// Announces that something was appended.
    pub fn poke(&self) {
        let _ = self.poke.try_send(());
    }
}

/// A `LISTEN`ing connection on one channel, shared by everything of a
/// process that waits for its news: log readers on [`CHANNEL`], token caches
/// on theirs.
#[derive(Debug, Clone)]
pub struct Listener {
    wakeups: watch::Receiver<u64>,
    listening: Arc<AtomicBool>,
}

/// The listener of log readers.
pub type LogListener = Listener;

impl Listener {
    /// Starts listening on [`CHANNEL`] (appends to the log).
    pub fn spawn(url: DatabaseUrl) -> Listener {
        Listener::spawn_on(url, CHANNEL)
    }

    /// Starts listening on `channel`; reconnects by itself. The task ends
    /// when every receiver is gone.
    pub fn spawn_on(url: DatabaseUrl, channel: &'static str) -> Listener {
        let (tx, rx) = watch::channel(0u64);
        let listening = Arc::new(AtomicBool::new(false));
        let flag = listening.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                if tx.is_closed() {
                    return;
                }
                match listen(&url, channel, &tx, &flag).await {
                    Ok(()) => backoff = Duration::from_millis(100),
                    Err(e) => tracing::debug!(channel, error = %e, "listener disconnected"),
                }
                flag.store(false, Ordering::SeqCst);
                // Wake readers so they re-read while we reconnect.
                tx.send_modify(|n| *n += 1);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = tx.closed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
        Listener {
            wakeups: rx,
            listening,
        }
    }

    /// A receiver that changes whenever something may have happened on the
    /// channel (and whenever the connection was lost or made again).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.wakeups.clone()
    }

    /// Whether the connection is listening now: while it is not, news may
    /// be missed.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }
}

/// Listens until the connection ends or nobody is interested any more.
async fn listen(
    url: &DatabaseUrl,
    channel: &str,
    tx: &watch::Sender<u64>,
    listening: &AtomicBool,
) -> Result<(), crate::StoreError> {
    let (client, mut connection) = url
        .config()
        .connect(url.connector()?)
        .await
        .map_err(|e| url.classify(e))?;
    let (messages_tx, mut messages) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = stream.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if messages_tx.send(()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    client.batch_execute(&format!("listen {channel}")).await?;
    listening.store(true, Ordering::SeqCst);
    // Something may have happened before LISTEN took effect.
    tx.send_modify(|n| *n += 1);
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Some(()) => tx.send_modify(|n| *n += 1),
                None => break,
            },
            _ = tx.closed() => break,
        }
    }
    listening.store(false, Ordering::SeqCst);
    driver.abort();
    Ok(())
}
