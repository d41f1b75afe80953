//! Prometheus metrics: the process-wide recorder every crate's `metrics::`
//! calls feed, and the HTTP middleware counting requests by route and status.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use eventstore::telemetry::{self, Attribute, Hop, Kind, TraceParent};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The process's recorder, installed on first use.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0,
                    ],
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test harness):
            // then this one still renders whatever it records, nothing else.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Counts every request and times it, by method, route template and status;
/// with tracing on, wraps it in an HTTP server span (`POST /orders`), a
/// child of the caller's `traceparent`, whose context replaces the caller's
/// for everything the request does.
pub async fn track(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let hop = telemetry::enabled().then(|| server_span(&mut request, &method, &route));
    let response = next.run(request).await;
    if let Some(hop) = hop {
        let code = response.status();
        hop.set(|| Attribute::new("http.response.status_code", i64::from(code.as_u16())));
        if code.is_server_error() {
            hop.fail(|| code.to_string());
        }
    }
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("ordo_http_requests_total", &labels).increment(1);
    metrics::histogram!("ordo_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Starts the server span of a request and hands its context on in the
/// request's own `traceparent` / `tracestate` headers.
fn server_span(request: &mut Request, method: &str, route: &str) -> Hop {
    let headers = request.headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let caller = TraceParent::new(
        header(telemetry::TRACEPARENT),
        header(telemetry::TRACESTATE),
    );
    let hop = Hop::start(
        format_args!("{method} {route}"),
        Kind::Server,
        &caller,
        || {
            vec![
                Attribute::new("http.request.method", method.to_owned()),
                Attribute::new("http.route", route.to_owned()),
                Attribute::new("url.path", request.uri().path().to_owned()),
            ]
        },
    );
    let ours = hop.carry(&caller);
    let headers = request.headers_mut();
    headers.remove(telemetry::TRACESTATE);
    for (name, value) in [
        (telemetry::TRACEPARENT, &ours.traceparent),
        (telemetry::TRACESTATE, &ours.tracestate),
    ] {
        if let Some(value) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, value);
        }
    }
    hop
}
