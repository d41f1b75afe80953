//! One order, one trace: `ordo up` exports its spans over OTLP to a receiver
//! this test runs (http/protobuf and gRPC), and the spans of placing an
//! order, reserving its stock, confirming it and updating the read model
//! form one connected trace under the caller's `traceparent`. With the SDK
//! disabled nothing is exported and the caller's context is still passed
//! on, in the events' metadata and the NATS messages' headers.

#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use serde_json::{json, Value};
use test_support::{TestDatabase, TestEnv};

/// A span as received, with its service.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i32,
    attributes: Vec<(String, String)>,
    links: Vec<(String, String)>,
}

impl Received {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

type Spans = Arc<Mutex<Vec<Received>>>;

fn value(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn collect(spans: &Spans, request: ExportTraceServiceRequest) {
    let mut out = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(value)
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                out.push(Received {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), value(kv)))
                        .collect(),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                });
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body.
async fn http_receiver() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let spans = kept.clone();
            async move {
                match ExportTraceServiceRequest::decode(body) {
                    Ok(request) => {
                        collect(&spans, request);
                        (
                            axum::http::StatusCode::OK,
                            [("content-type", "application/x-protobuf")],
                            ExportTraceServiceResponse::default().encode_to_vec(),
                        )
                    }
                    Err(_) => (
                        axum::http::StatusCode::BAD_REQUEST,
                        [("content-type", "text/plain")],
                        b"not an ExportTraceServiceRequest".to_vec(),
                    ),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), spans)
}

/// An OTLP/gRPC receiver.
struct Grpc(Spans);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        collect(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn grpc_receiver() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(Grpc(spans.clone()));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    (format!("http://{address}"), spans)
}

/// `ordo up`, killed when dropped.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running `ordo up` with `otel` in its environment, and an HTTP client
/// with its admin token.
struct Shop {
    _up: Up,
    _db: TestDatabase,
    _dir: tempfile::TempDir,
    env: TestEnv,
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Shop {
    async fn start(otel: &[(&str, &str)]) -> Shop {
        let env = TestEnv::new().await;
        let db = TestDatabase::fresh();
        let dir = tempfile::tempdir().unwrap();
        let token = api::auth::TokenSecret::generate().expose();
        let token_file = dir.path().join("admin.token");
        std::fs::write(&token_file, &token).unwrap();
        let http_addr = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(env!("CARGO_BIN_EXE_ordo"));
        command
            .arg("up")
            .env("DATABASE_URL", db.url.to_string())
            .env("NATS_URL", env.nats_url.as_str())
            .env("ORDO_STREAM", env.stream.as_str())
            .env("ORDO_SUBJECT_PREFIX", env.prefix.as_str())
            .env("ORDO_HTTP_ADDR", &http_addr)
            .env("ORDO_BOOTSTRAP_TOKEN_FILE", &token_file)
            .env("RUST_LOG", "warn")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("ORDO_OTLP_ENDPOINT")
            .env_remove("OTEL_SERVICE_NAME")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (name, value) in otel {
            command.env(name, value);
        }
        let up = Up(command.spawn().expect("spawn ordo up"));
        let shop = Shop {
            _up: up,
            _db: db,
            _dir: dir,
            env,
            base: format!("http://{http_addr}"),
            token,
            http: reqwest::Client::new(),
        };
        test_support::poll(
            Duration::from_secs(60),
            || async {
                shop.http
                    .get(format!("{}/ready", shop.base))
                    .send()
                    .await
                    .ok()
            },
            |r| r.as_ref().is_some_and(|r| r.status().is_success()),
        )
        .await;
        shop
    }

    async fn post(&self, path: &str, body: Value, traceparent: Option<&str>) -> Value {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body);
        if let Some(traceparent) = traceparent {
            request = request
                .header("traceparent", traceparent)
                .header("tracestate", "test=1");
        }
        let answer = request.send().await.unwrap();
        let status = answer.status();
        let body: Value = answer.json().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn get(&self, path: &str) -> Value {
        let answer = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        if !answer.status().is_success() {
            return Value::Null;
        }
        answer.json().await.unwrap()
    }

    /// Places a two-line order under `traceparent` and waits until it is
    /// confirmed in the read model; the order's and products' ids.
    async fn confirmed_order(&self, traceparent: &str) -> (String, Vec<String>) {
        let user = self
            .post(
                "/users",
                json!({ "email": format!("{}@example.com", uuid::Uuid::new_v4().simple()), "name": "Ann" }),
                None,
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut products = Vec::new();
        for _ in 0..2 {
            let sku = format!("SKU-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
            let product = self
                .post(
                    "/products",
                    json!({ "sku": sku, "name": "Widget", "price": "2.50", "stock": 10 }),
                    None,
                )
                .await;
            products.push(product["id"].as_str().unwrap().to_owned());
        }
        let placed = self
            .post(
                "/orders",
                json!({ "user_id": user, "lines": [
                    { "product_id": products[0], "quantity": 2 },
                    { "product_id": products[1], "quantity": 1 } ] }),
                Some(traceparent),
            )
            .await;
        let id = placed["id"].as_str().unwrap().to_owned();
        let path = format!("/orders/{id}");
        let order = test_support::poll(
            Duration::from_secs(30),
            || self.get(&path),
            |order| order["status"] == "confirmed",
        )
        .await;
        assert_eq!(order["status"], "confirmed", "{order}");
        (id, products)
    }

    /// The stored metadata of the order's first event.
    async fn order_metadata(&self, id: &str) -> Value {
        let client = self._db.url.connect().await.unwrap();
        let row = client
            .query_one(
                "select metadata from events where stream_id = $1 and version = 1",
                &[&format!("order-{id}")],
            )
            .await
            .unwrap();
        row.get(0)
    }
}

fn traceparent() -> (String, String, String) {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    (format!("00-{trace}-{span}-01"), trace, span)
}

/// Waits until the receiver holds `want`'s spans.
async fn spans_until(spans: &Spans, want: impl Fn(&[Received]) -> bool) -> Vec<Received> {
    test_support::poll(
        Duration::from_secs(20),
        || async { spans.lock().unwrap().clone() },
        |all| want(all),
    )
    .await
}

fn one<'a>(spans: &'a [Received], what: &str, pick: impl Fn(&Received) -> bool) -> &'a Received {
    let found: Vec<&Received> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {what}, found {}: {found:#?}\nall spans: {:#?}",
        found.len(),
        spans
            .iter()
            .map(|s| (&s.name, &s.span_id, &s.parent))
            .collect::<Vec<_>>()
    );
    found[0]
}

async fn one_order_is_one_connected_trace(otel: &[(&str, &str)], spans: Spans) {
    let shop = Shop::start(otel).await;
    let (caller, trace, caller_span) = traceparent();
    // Core NATS sees the relay's messages too: their headers.
    let nats = async_nats::connect(shop.env.nats_url.as_str())
        .await
        .unwrap();
    let mut published = nats
        .subscribe(format!("{}.order.>", shop.env.prefix.as_str()))
        .await
        .unwrap();
    let (order, products) = shop.confirmed_order(&caller).await;
    let prefix = shop.env.prefix.as_str();
    let confirmed_subject = format!("{prefix}.order.{order}.OrderConfirmed");
    let all = spans_until(&spans, |all| {
        all.iter().any(|s| {
            s.attr("messaging.consumer.group.name") == Some("orders")
                && s.attr("messaging.destination.name") == Some(confirmed_subject.as_str())
        })
    })
    .await;
    let in_trace: Vec<Received> = all
        .iter()
        .filter(|s| s.trace_id == trace)
        .cloned()
        .collect();

    // Connected: the root is the caller's child, every other span's parent
    // is in the trace.
    let root = one(&in_trace, "HTTP server span", |s| s.parent == caller_span);
    assert_eq!(root.name, "POST /orders");
    assert_eq!(root.kind, SpanKind::Server as i32);
    assert_eq!(root.service, "ordo-up");
    assert_eq!(root.attr("http.response.status_code"), Some("202"));
    for span in &in_trace {
        assert!(
            span.parent == caller_span || in_trace.iter().any(|p| p.span_id == span.parent),
            "{} has a parent outside the trace: {span:#?}",
            span.name
        );
    }
    let child_of = |parent: &Received, span: &Received| span.parent == parent.span_id;

    // HTTP → append of the order → publish of OrderPlaced → the saga.
    let stream = format!("order-{order}");
    let placing = one(&in_trace, "append of the order", |s| {
        s.name == "append" && child_of(root, s)
    });
    assert_eq!(placing.attr("ordo.stream.id"), Some(stream.as_str()));
    assert_eq!(placing.attr("ordo.stream.version"), Some("1"));
    assert_eq!(placing.attr("ordo.attempt"), Some("1"));
    assert!(placing.attr("ordo.position").is_some(), "{placing:#?}");
    let placed_subject = format!("{prefix}.order.{order}.OrderPlaced");
    let publish_placed = one(&in_trace, "publish of OrderPlaced", |s| {
        s.name == format!("publish {placed_subject}") && child_of(placing, s)
    });
    assert_eq!(publish_placed.kind, SpanKind::Producer as i32);
    let saga = one(&in_trace, "the saga's handling of OrderPlaced", |s| {
        s.name == format!("process {placed_subject}")
            && s.attr("messaging.consumer.group.name") == Some("saga")
    });
    assert!(child_of(publish_placed, saga), "{saga:#?}");
    assert_eq!(saga.kind, SpanKind::Consumer as i32);

    // The saga's commands: a reservation per product, then the
    // confirmation, each appended under the saga's span and published.
    for product in &products {
        let reserving = one(&in_trace, "append of a reservation", |s| {
            s.name == "append" && s.attr("ordo.stream.id") == Some(&format!("product-{product}"))
        });
        assert!(child_of(saga, reserving), "{reserving:#?}");
        one(&in_trace, "publish of the reservation", |s| {
            s.name
                .starts_with(&format!("publish {prefix}.product.{product}."))
                && child_of(reserving, s)
        });
    }
    let confirming = one(&in_trace, "append of the confirmation", |s| {
        s.name == "append"
            && s.attr("ordo.stream.id") == Some(stream.as_str())
            && s.span_id != placing.span_id
    });
    assert!(child_of(saga, confirming), "{confirming:#?}");
    let publish_confirmed = one(&in_trace, "publish of OrderConfirmed", |s| {
        s.name == format!("publish {confirmed_subject}")
    });
    assert!(child_of(confirming, publish_confirmed));

    // The orders projection applies both order events in this trace.
    for (subject, publish) in [
        (&placed_subject, publish_placed),
        (&confirmed_subject, publish_confirmed),
    ] {
        let applied = one(&in_trace, "the orders projection's apply", |s| {
            s.name == format!("process {subject}")
                && s.attr("messaging.consumer.group.name") == Some("orders")
        });
        assert!(child_of(publish, applied), "{applied:#?}");
        // Its batch's transaction is a span of its own, linked to it.
        assert!(
            all.iter().any(|s| s.name == "apply orders"
                && s.links
                    .iter()
                    .any(|(t, span)| t == &trace && span == &applied.span_id)),
            "no `apply orders` span links to {applied:#?}"
        );
    }

    // The context travels in the event's metadata (the append's) and in
    // the message's headers (the publish's).
    let metadata = shop.order_metadata(&order).await;
    assert_eq!(
        metadata["traceparent"],
        format!("00-{trace}-{}-01", placing.span_id),
        "{metadata}"
    );
    assert_eq!(metadata["tracestate"], "test=1", "{metadata}");
    let message = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let message = published.next().await.unwrap();
            if message.subject.as_str() == placed_subject {
                break message;
            }
        }
    })
    .await
    .expect("the OrderPlaced message");
    let headers = message.headers.expect("headers");
    assert_eq!(
        headers.get("traceparent").map(|v| v.as_str().to_owned()),
        Some(format!("00-{trace}-{}-01", publish_placed.span_id))
    );
    assert_eq!(
        headers.get("tracestate").map(|v| v.as_str()),
        Some("test=1")
    );
}

#[tokio::test]
async fn one_order_is_one_connected_trace_over_http_protobuf() {
    let (endpoint, spans) = http_receiver().await;
    one_order_is_one_connected_trace(
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
        spans,
    )
    .await;
}

#[tokio::test]
async fn one_order_is_one_connected_trace_over_grpc() {
    let (endpoint, spans) = grpc_receiver().await;
    one_order_is_one_connected_trace(
        &[
            ("ORDO_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
        spans,
    )
    .await;
}

#[tokio::test]
async fn with_tracing_off_nothing_is_exported_and_the_callers_context_is_passed_on() {
    let (endpoint, spans) = http_receiver().await;
    let shop = Shop::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_SDK_DISABLED", "true"),
    ])
    .await;
    let nats = async_nats::connect(shop.env.nats_url.as_str())
        .await
        .unwrap();
    let mut published = nats
        .subscribe(format!("{}.order.>", shop.env.prefix.as_str()))
        .await
        .unwrap();
    let (caller, _, _) = traceparent();
    let (order, _) = shop.confirmed_order(&caller).await;
    let metadata = shop.order_metadata(&order).await;
    assert_eq!(metadata["traceparent"], caller.as_str(), "{metadata}");
    let placed_subject = format!("{}.order.{order}.OrderPlaced", shop.env.prefix.as_str());
    let message = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let message = published.next().await.unwrap();
            if message.subject.as_str() == placed_subject {
                break message;
            }
        }
    })
    .await
    .expect("the OrderPlaced message");
    let headers = message.headers.expect("headers");
    assert_eq!(
        headers.get("traceparent").map(|v| v.as_str()),
        Some(caller.as_str())
    );
    // Give a batch processor, were there one, time to send.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        spans.lock().unwrap().is_empty(),
        "exported with the SDK disabled"
    );
}
