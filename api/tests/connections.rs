//! Slow and idle clients cannot exhaust the server (OWASP API4): half-open
//! requests are closed within the head timeout while other clients are
//! served; idle keep-alive connections live until the idle timeout; open
//! connections are bounded.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::Api;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; how long that took.
async fn closed_after(
    mut stream: TcpStream,
    since: Instant,
    patience: Duration,
) -> Option<Duration> {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(since.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

fn addr(api: &Api) -> String {
    api.base.trim_start_matches("http://").to_owned()
}

/// 200 connections that start a request and never finish its head are all
/// closed by the server within 12 s, and meanwhile everyone else is served.
#[tokio::test]
async fn half_open_requests_are_closed_and_others_are_served() {
    let api = Api::start().await;
    let addr = addr(&api);
    let opened = Instant::now();
    let mut stalled = Vec::new();
    for i in 0..200 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        // Half a request head, and then nothing.
        stream
            .write_all(
                format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nX-Slow: {i}\r\n").as_bytes(),
            )
            .await
            .unwrap();
        stalled.push(tokio::spawn(closed_after(
            stream,
            opened,
            Duration::from_secs(20),
        )));
    }
    // Others are served all along.
    let mut served = 0;
    while opened.elapsed() < Duration::from_secs(5) {
        let answer = api.get("/health").await;
        assert_eq!(answer.status, 200, "{answer:?}");
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served > 10);
    let mut slowest = Duration::ZERO;
    for task in stalled {
        let closed = task
            .await
            .unwrap()
            .expect("a half-open request was never closed");
        slowest = slowest.max(closed);
    }
    assert!(
        slowest <= Duration::from_secs(12),
        "the last was closed after {slowest:?}"
    );
    assert!(
        slowest >= Duration::from_secs(9),
        "closed too early: {slowest:?}"
    );
    assert_eq!(api.get("/health").await.status, 200);
}

async fn request(stream: &mut TcpStream, addr: &str) -> String {
    stream
        .write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// With short limits: a keep-alive connection outlives the head timeout
/// while idle and is closed at the idle timeout; connections beyond the
/// maximum wait until one closes.
#[tokio::test]
async fn idle_connections_live_until_the_idle_timeout_and_connections_are_bounded() {
    let env = test_support::TestEnv::new().await;
    let state = env.system().api().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let limits = api::serve::ConnectionLimits {
        max_connections: 3,
        head_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(3),
    };
    let server =
        test_support::Running::spawn(|stop| api::serve_with(listener, state, limits, stop));

    let mut kept = TcpStream::connect(&addr).await.unwrap();
    assert!(request(&mut kept, &addr).await.starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    tokio::time::sleep(Duration::from_millis(1800)).await;
    // Past the head timeout, idle: still open, and serves the next request.
    assert!(request(&mut kept, &addr).await.starts_with("HTTP/1.1 200"));
    let idle_from = Instant::now();
    let closed = closed_after(kept, idle_from, Duration::from_secs(10))
        .await
        .expect("closed when idle");
    assert!(
        closed >= Duration::from_millis(2500) && closed <= Duration::from_secs(5),
        "closed {closed:?} after its last answer ({:?} after the first)",
        answered.elapsed()
    );

    // Three connections hold every slot; a fourth is served only once the
    // server has closed one of them (they send nothing: head timeout).
    let mut holders = Vec::new();
    for _ in 0..3 {
        holders.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let mut fourth = TcpStream::connect(&addr).await.unwrap();
    let answer = request(&mut fourth, &addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "the fourth connection was served at once ({:?}): connections are not bounded",
        start.elapsed()
    );
    drop(holders);
    server.stop().await.unwrap();
}
