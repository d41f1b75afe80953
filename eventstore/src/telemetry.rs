//! Traces: one trace follows a command through every hop (the HTTP request,
//! the append, the relay's publish, each consumer, the saga's commands and
//! their appends, the read model's update), carried between processes as a
//! W3C trace context (`traceparent`, `tracestate`) in each event's metadata
//! and in each NATS message's headers.
//!
//! The libraries only start spans through [`Hop`], on the global tracer
//! provider; the binary installs an exporting one when an OTLP endpoint is
//! configured and then calls [`enable`]. Until then nothing is created: a
//! hop costs one atomic load, and a trace context that came in (a caller's
//! `traceparent`) is passed on unchanged, so a subscriber can still continue
//! its caller's trace.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{
    Link, SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;

pub use opentelemetry::trace::SpanKind as Kind;
pub use opentelemetry::KeyValue as Attribute;

/// The instrumentation scope every ordo span is created under.
pub const SCOPE: &str = "ordo";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Spans are created from now on (the binary installed an exporting
/// provider as the global one).
pub fn enable() {
    ENABLED.store(true, Ordering::Release);
}

/// Whether spans are created.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A W3C trace context as it travels: the `traceparent` and `tracestate`
/// header values. Empty when there is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceParent {
    /// `00-<trace id>-<parent span id>-<flags>`.
    pub traceparent: Option<String>,
    /// Vendor entries, passed on as they came.
    pub tracestate: Option<String>,
}

impl TraceParent {
    /// From header values; a `traceparent` that is not a valid W3C one is
    /// dropped (with its `tracestate`), as the specification asks.
    pub fn new(traceparent: Option<&str>, tracestate: Option<&str>) -> TraceParent {
        match traceparent.map(str::trim).filter(|t| valid_traceparent(t)) {
            Some(traceparent) => TraceParent {
                traceparent: Some(traceparent.to_ascii_lowercase()),
                tracestate: tracestate
                    .map(str::trim)
                    .filter(|s| !s.is_empty() && s.len() <= 512)
                    .map(str::to_owned),
            },
            None => TraceParent::default(),
        }
    }

    /// From a NATS message's headers.
    pub fn from_headers(headers: Option<&async_nats::HeaderMap>) -> TraceParent {
        let Some(headers) = headers else {
            return TraceParent::default();
        };
        TraceParent::new(
            headers.get(TRACEPARENT).map(|v| v.as_str()),
            headers.get(TRACESTATE).map(|v| v.as_str()),
        )
    }

    /// Adds itself to NATS message headers (nothing when empty).
    pub fn to_headers(&self, headers: &mut async_nats::HeaderMap) {
        if let Some(traceparent) = &self.traceparent {
            headers.insert(TRACEPARENT, traceparent.as_str());
            if let Some(tracestate) = &self.tracestate {
                headers.insert(TRACESTATE, tracestate.as_str());
            }
        }
    }

    /// Whether there is a trace context.
    pub fn is_empty(&self) -> bool {
        self.traceparent.is_none()
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> Option<&str> {
        self.traceparent.as_deref().and_then(|t| t.get(3..35))
    }

    /// As an OpenTelemetry context (a remote parent).
    fn context(&self) -> Context {
        if self.traceparent.is_none() {
            return Context::new();
        }
        let mut carrier = HashMap::with_capacity(2);
        if let Some(traceparent) = &self.traceparent {
            carrier.insert(TRACEPARENT.to_owned(), traceparent.clone());
        }
        if let Some(tracestate) = &self.tracestate {
            carrier.insert(TRACESTATE.to_owned(), tracestate.clone());
        }
        TraceContextPropagator::new().extract(&carrier)
    }

    /// The trace context of `cx`'s span.
    fn of(cx: &Context) -> TraceParent {
        let mut carrier: HashMap<String, String> = HashMap::with_capacity(2);
        TraceContextPropagator::new().inject_context(cx, &mut carrier);
        TraceParent {
            traceparent: carrier.remove(TRACEPARENT),
            tracestate: carrier.remove(TRACESTATE).filter(|s| !s.is_empty()),
        }
    }

    /// The span context, for a link.
    fn span_context(&self) -> Option<SpanContext> {
        let cx = self.context();
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| sc.clone())
    }
}

/// The header names (lowercase, as W3C Trace Context writes them).
pub const TRACEPARENT: &str = "traceparent";
/// See [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";

/// `version-traceid-parentid-flags`, version `00` exactly or a later one
/// (whose extra fields are ignored), ids not all zero.
fn valid_traceparent(value: &str) -> bool {
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
    };
    let mut parts = value.split('-');
    let (Some(version), Some(trace), Some(parent), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let version_ok = version.len() == 2
        && version.bytes().all(|b| b.is_ascii_hexdigit())
        && !version.eq_ignore_ascii_case("ff")
        && (version != "00" || parts.next().is_none());
    version_ok
        && hex(trace, 32)
        && hex(parent, 16)
        && flags.len() == 2
        && flags.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One hop's span, ended when dropped. Inert (and free) while tracing is
/// off.
#[derive(Debug)]
pub struct Hop {
    cx: Option<Context>,
}

impl Hop {
    /// A span named `name` of `kind`, child of `parent` (a new trace when
    /// `parent` is empty); `name` is only formatted and `attributes` only
    /// called when tracing is on.
    pub fn start(
        name: impl std::fmt::Display,
        kind: SpanKind,
        parent: &TraceParent,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Hop {
        if !enabled() {
            return Hop { cx: None };
        }
        let parent = parent.context();
        let tracer = opentelemetry::global::tracer(SCOPE);
        let span = SpanBuilder::from_name(name.to_string())
            .with_kind(kind)
            .with_attributes(attributes())
            .start_with_context(&tracer, &parent);
        Hop {
            cx: Some(parent.with_span(span)),
        }
    }

    /// A span starting a trace of its own, linked to each of `links`: work
    /// done once for many traces (a batch applied in one transaction).
    pub fn linked<'a>(
        name: impl std::fmt::Display,
        kind: SpanKind,
        links: impl IntoIterator<Item = &'a TraceParent>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Hop {
        if !enabled() {
            return Hop { cx: None };
        }
        let links: Vec<Link> = links
            .into_iter()
            .filter_map(TraceParent::span_context)
            .map(Link::with_context)
            .collect();
        let tracer = opentelemetry::global::tracer(SCOPE);
        let span = SpanBuilder::from_name(name.to_string())
            .with_kind(kind)
            .with_attributes(attributes())
            .with_links(links)
            .start_with_context(&tracer, &Context::new());
        Hop {
            cx: Some(Context::new().with_span(span)),
        }
    }

    /// The trace context to hand on: this span's, or (tracing off) the
    /// `parent` it would have had.
    pub fn carry(&self, parent: &TraceParent) -> TraceParent {
        match &self.cx {
            Some(cx) => TraceParent::of(cx),
            None => parent.clone(),
        }
    }

    /// Whether this span records (tracing is on).
    pub fn is_recording(&self) -> bool {
        self.cx.is_some()
    }

    /// Sets an attribute.
    pub fn set(&self, attribute: impl FnOnce() -> KeyValue) {
        if let Some(cx) = &self.cx {
            cx.span().set_attribute(attribute());
        }
    }

    /// Marks the span failed, with why.
    pub fn fail(&self, description: impl FnOnce() -> String) {
        if let Some(cx) = &self.cx {
            cx.span().set_status(Status::error(description()));
        }
    }
}

impl Drop for Hop {
    fn drop(&mut self) {
        if let Some(cx) = &self.cx {
            cx.span().end();
        }
    }
}

/// `ordo.*` and semantic-convention attribute names used on ordo's spans.
pub mod attr {
    /// `order-<uuid>`.
    pub const STREAM_ID: &str = "ordo.stream.id";
    /// Stream version after the hop.
    pub const STREAM_VERSION: &str = "ordo.stream.version";
    /// Log position token.
    pub const POSITION: &str = "ordo.position";
    /// Attempts a command took.
    pub const ATTEMPT: &str = "ordo.attempt";
    /// Events appended, or messages in the batch the hop was part of.
    pub const BATCH_SIZE: &str = "ordo.batch.size";
    /// Event type.
    pub const EVENT_TYPE: &str = "ordo.event.type";
    /// Event id.
    pub const EVENT_ID: &str = "ordo.event.id";
    /// Command id.
    pub const COMMAND_ID: &str = "ordo.command.id";
    /// `messaging.system` (always `nats`).
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    /// `messaging.destination.name`: the subject.
    pub const MESSAGING_DESTINATION: &str = "messaging.destination.name";
    /// `messaging.operation.type`: `publish` or `process`.
    pub const MESSAGING_OPERATION: &str = "messaging.operation.type";
    /// `messaging.consumer.group.name`: the projection or `saga`.
    pub const MESSAGING_CONSUMER: &str = "messaging.consumer.group.name";
    /// `messaging.message.id`: the event id (`Nats-Msg-Id`).
    pub const MESSAGING_MESSAGE_ID: &str = "messaging.message.id";
    /// `messaging.batch.message_count`.
    pub const MESSAGING_BATCH: &str = "messaging.batch.message_count";
    /// `db.system.name` (always `postgresql`).
    pub const DB_SYSTEM: &str = "db.system.name";
    /// `db.operation.name`.
    pub const DB_OPERATION: &str = "db.operation.name";
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_valid_traceparent_is_kept_and_a_malformed_one_dropped() {
        let t = TraceParent::new(Some(PARENT), Some("vendor=x"));
        assert_eq!(t.traceparent.as_deref(), Some(PARENT));
        assert_eq!(t.tracestate.as_deref(), Some("vendor=x"));
        assert_eq!(t.trace_id(), Some("0af7651916cd43dd8448eb211c80319c"));
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c80319z-b7ad6b7169203331-01",
            "not a traceparent",
        ] {
            assert!(TraceParent::new(Some(bad), Some("a=b")).is_empty(), "{bad}");
        }
        // A later version may carry more fields.
        assert!(!TraceParent::new(Some(&format!("01{}-more", &PARENT[2..])), None).is_empty());
    }

    #[test]
    fn with_tracing_off_a_hop_hands_on_its_parent_unchanged() {
        let parent = TraceParent::new(Some(PARENT), Some("vendor=x"));
        let hop = Hop::start("append", SpanKind::Internal, &parent, || {
            panic!("attributes are not built while tracing is off")
        });
        assert!(!hop.is_recording());
        assert_eq!(hop.carry(&parent), parent);
    }

    #[test]
    fn headers_round_trip() {
        let parent = TraceParent::new(Some(PARENT), Some("vendor=x"));
        let mut headers = async_nats::HeaderMap::new();
        parent.to_headers(&mut headers);
        assert_eq!(TraceParent::from_headers(Some(&headers)), parent);
        assert!(TraceParent::from_headers(None).is_empty());
    }

    #[test]
    fn the_propagator_reads_and_writes_the_same_context() {
        let parent = TraceParent::new(Some(PARENT), Some("vendor=x"));
        assert_eq!(TraceParent::of(&parent.context()), parent);
        assert!(parent.span_context().is_some());
        assert!(TraceParent::default().span_context().is_none());
    }
}
