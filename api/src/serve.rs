//! Serving the API on a socket, with the connection limits that keep slow
//! and idle clients from exhausting the server (OWASP API4):
//!
//! - a connection that has not sent a complete request head within
//!   [`ConnectionLimits::head_timeout`] (10 s) of opening, or of the first
//!   byte of its next request, is closed;
//! - a keep-alive connection idle for [`ConnectionLimits::idle_timeout`]
//!   (60 s) after its last answer is closed;
//! - at most [`ConnectionLimits::max_connections`] are open at once
//!   (`ORDO_MAX_CONNECTIONS`, default 10,000); beyond, new connections wait
//!   in the listen backlog until one closes.
//!
//! hyper's own header-read timeout also runs while a keep-alive connection
//! waits for its next request, so it would close idle connections after the
//! head timeout; these two timers are kept here instead, per connection,
//! from what its socket reads and its requests do.
//!
//! On shutdown it stops accepting, closes idle connections, and lets
//! requests in flight finish.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// A request head must be complete this long after the connection
    /// opened, or after the first byte of it arrived.
    pub head_timeout: Duration,
    /// A connection with nothing in flight is closed after this long.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 10_000,
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// No time yet (a stored instant of 0 means "not set").
const UNSET: u64 = 0;

/// What one connection is doing, as its socket and its requests tell.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    /// When the first byte of the request head now being read arrived
    /// (milliseconds since `opened`, plus one), or [`UNSET`].
    head_started: AtomicU64,
    /// When the last answer was finished (same clock), or [`UNSET`] before
    /// the first.
    idle_since: AtomicU64,
    /// Requests whose head was read and whose answer is not finished.
    in_flight: AtomicUsize,
    /// A request head is being read (bytes arrived, no request yet).
    reading_head: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            head_started: AtomicU64::new(UNSET),
            idle_since: AtomicU64::new(UNSET),
            in_flight: AtomicUsize::new(0),
            reading_head: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64 + 1
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::SeqCst) == 0
            && !self.reading_head.swap(true, Ordering::SeqCst)
        {
            self.head_started.store(self.now(), Ordering::SeqCst);
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.reading_head.store(false, Ordering::SeqCst);
        self.head_started.store(UNSET, Ordering::SeqCst);
    }

    fn request_finished(&self) {
        self.idle_since.store(self.now(), Ordering::SeqCst);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, limits: &ConnectionLimits) -> Option<&'static str> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let now = self.now();
        let since = |t: u64| Duration::from_millis(now.saturating_sub(t));
        let head = self.head_started.load(Ordering::SeqCst);
        let idle = self.idle_since.load(Ordering::SeqCst);
        if head != UNSET {
            return (since(head) > limits.head_timeout)
                .then_some("request head not complete in time");
        }
        if idle == UNSET {
            // Opened, and nothing asked yet.
            return (since(1) > limits.head_timeout).then_some("no request head in time");
        }
        (since(idle) > limits.idle_timeout).then_some("idle")
    }
}

/// The socket, telling [`Activity`] when bytes arrive.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Marks a request finished when its answer's body is dropped (sent, or
/// the connection gone).
struct Finished(Arc<Activity>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` is
/// cancelled, then lets requests in flight finish.
pub async fn serve_app(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: keep serving the others.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        metrics::gauge!("ordo_http_connections").increment(1.0);
        let (app, stop) = (app.clone(), shutdown.clone());
        connections.spawn(async move {
            serve_connection(stream, peer, app, limits, stop).await;
            metrics::gauge!("ordo_http_connections").decrement(1.0);
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let watched = activity.clone();
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            watched.request_started();
            let finished = Finished(watched.clone());
            request.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                let response =
                    tower::ServiceExt::oneshot(app, request.map(axum::body::Body::new)).await;
                response.map(|response| {
                    response.map(|body| {
                        axum::body::Body::new(http_body_util::BodyExt::map_frame(
                            body,
                            move |frame| {
                                let _keep = &finished;
                                frame
                            },
                        ))
                    })
                })
            }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None::<Duration>)
        .keep_alive(true);
    let connection = builder.serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled() => {
                // Idle: closed now; busy: after its answer.
                connection.as_mut().graceful_shutdown();
                let _ = connection.as_mut().await;
                return;
            }
            _ = tick.tick() => {
                if let Some(why) = activity.expired(&limits) {
                    tracing::debug!(%peer, why, "closing the connection");
                    metrics::counter!("ordo_http_connections_closed_total", "reason" => why).increment(1);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 10,
            head_timeout: Duration::from_millis(40),
            idle_timeout: Duration::from_millis(120),
        }
    }

    #[test]
    fn a_connection_that_sends_no_head_expires_after_the_head_timeout() {
        let activity = Activity::new();
        assert_eq!(activity.expired(&limits()), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(activity.expired(&limits()), Some("no request head in time"));
    }

    #[test]
    fn a_partial_head_expires_after_the_head_timeout_from_its_first_byte() {
        let activity = Activity::new();
        std::thread::sleep(Duration::from_millis(30));
        activity.bytes_read();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(activity.expired(&limits()), None);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            activity.expired(&limits()),
            Some("request head not complete in time")
        );
    }

    #[test]
    fn a_keep_alive_connection_lives_until_the_idle_timeout_and_a_busy_one_forever() {
        let activity = Activity::new();
        activity.bytes_read();
        activity.request_started();
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(
            activity.expired(&limits()),
            None,
            "a request in flight is never cut"
        );
        activity.request_finished();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(activity.expired(&limits()), None, "idle, but not for long");
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(activity.expired(&limits()), Some("idle"));
    }
}
