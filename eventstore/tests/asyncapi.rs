//! `schemas/asyncapi.yaml` tells the truth about what the relay publishes.
//!
//! - Every event type the code knows (at its current schema version), and
//!   every current schema file under `schemas/events/`, has exactly one
//!   channel and one message; nothing else is documented. Adding an event
//!   type without documenting it fails here.
//! - Every `$ref` resolves, to the document or to an existing file.
//! - Channel addresses are the subjects the relay builds.
//! - Envelopes built by the store's own code (both the `Envelope` the API
//!   answers with and the bytes the relay publishes) have exactly the
//!   documented attributes, the documented required ones, and validate
//!   against each message's payload schema.
//! - Headers, the stream settings and the defaults are the relay's and the
//!   CLI's.
//!
//! Needs no server.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use domain::event::{all_event_types, current_schema_version, schema_path, upcast};
use domain::ids::StreamType;
use eventstore::envelope::{Envelope, PublishableEvent};
use eventstore::nats::{stream_config, StreamName, SubjectPrefix, DUPLICATE_WINDOW};
use eventstore::{Metadata, Position, RecordedEvent};
use serde_json::{json, Map, Value};
use uuid::Uuid;
use yaml_rust2::{Yaml, YamlLoader};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the document lives; its relative `$ref`s start here.
fn schemas_dir() -> PathBuf {
    repo_root().join("schemas")
}

fn yaml_to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => json!(i),
        Yaml::Real(text) => json!(text.parse::<f64>().unwrap()),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Hash(hash) => Value::Object(
            hash.iter()
                .map(|(k, v)| {
                    let Yaml::String(key) = k else {
                        panic!("non-string key {k:?} in asyncapi.yaml");
                    };
                    (key.clone(), yaml_to_json(v))
                })
                .collect(),
        ),
        other => panic!("unexpected YAML node {other:?} (aliases are not used)"),
    }
}

/// The document as JSON.
fn document() -> Value {
    let path = schemas_dir().join("asyncapi.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("asyncapi.yaml: {e}"));
    assert_eq!(docs.len(), 1, "asyncapi.yaml holds one document");
    yaml_to_json(&docs[0])
}

fn object<'a>(value: &'a Value, what: &str) -> &'a Map<String, Value> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not a mapping: {value}"))
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
}

fn string_set(value: &Value, pointer: &str) -> BTreeSet<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no list at {pointer}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// `#/components/x/y` to its JSON pointer.
fn local_pointer(reference: &str) -> Option<&str> {
    reference.strip_prefix('#')
}

/// A copy of `value` with every `$ref` replaced by what it points to: the
/// document's own components, or a schema file relative to `schemas/`.
/// `files` decides what a file reference becomes (its content, or a stand-in).
fn resolve(value: &Value, doc: &Value, files: &dyn Fn(&str) -> Value) -> Value {
    match value {
        Value::Object(map) => {
            if let Some(reference) = map.get("$ref") {
                assert_eq!(map.len(), 1, "a $ref with siblings: {value}");
                let reference = reference.as_str().unwrap();
                let target = match local_pointer(reference) {
                    Some(pointer) => doc
                        .pointer(pointer)
                        .unwrap_or_else(|| panic!("{reference} does not resolve"))
                        .clone(),
                    None => files(reference),
                };
                return resolve(&target, doc, files);
            }
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), resolve(v, doc, files)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| resolve(v, doc, files)).collect()),
        other => other.clone(),
    }
}

/// The schema file a relative reference names, read and parsed.
fn load_file(reference: &str) -> Value {
    let path = schemas_dir().join(reference);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("$ref {reference}: {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

fn all_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => all_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| all_refs(v, out)),
        _ => {}
    }
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("not a valid schema: {e}\n{schema}"))
}

#[track_caller]
fn assert_valid(validator: &jsonschema::Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match asyncapi.yaml: {errors:?}\n{instance}"
    );
}

/// The schema files of what is published: every file under
/// `schemas/events/*/` except versions that only exist stored (upcast when
/// read).
fn published_schema_files() -> BTreeSet<String> {
    let legacy: BTreeSet<String> = upcast::UPCASTERS
        .iter()
        .map(|u| schema_path(u.stream_type, u.event_type, u.from_version))
        .collect();
    let mut found = BTreeSet::new();
    for dir in std::fs::read_dir(repo_root().join("schemas/events")).unwrap() {
        let dir = dir.unwrap();
        let stream_type = dir.file_name().into_string().unwrap();
        for file in std::fs::read_dir(dir.path()).unwrap() {
            let name = file.unwrap().file_name().into_string().unwrap();
            let path = format!("schemas/events/{stream_type}/{name}");
            if name.ends_with(".json") && !legacy.contains(&path) {
                found.insert(path);
            }
        }
    }
    found
}

/// One documented event type: its channel and message.
#[derive(Debug)]
struct Documented {
    stream_type: String,
    event_type: String,
    channel: String,
}

/// Reads the channels: `{prefix}.<streamtype>.{aggregateId}.<Type>`, each
/// with one `subscribe` operation naming its message.
fn documented(doc: &Value) -> Vec<Documented> {
    let mut out = Vec::new();
    for (channel, item) in object(&doc["channels"], "channels") {
        let parts: Vec<&str> = channel.split('.').collect();
        let [prefix, stream_type, aggregate, event_type] = parts[..] else {
            panic!("channel {channel:?} is not <prefix>.<streamtype>.<aggregate>.<Type>");
        };
        assert_eq!(
            (prefix, aggregate),
            ("{prefix}", "{aggregateId}"),
            "channel {channel}"
        );
        let item = object(item, channel);
        assert!(
            !item.contains_key("publish"),
            "{channel}: ordo takes no input on NATS; the relay only publishes (a `subscribe` operation)"
        );
        let message = text(&item["subscribe"], "/message/$ref");
        assert_eq!(
            message,
            format!("#/components/messages/{event_type}"),
            "{channel}: its message is the one of its type"
        );
        for (name, parameter) in object(&item["parameters"], "parameters") {
            assert_eq!(
                text(parameter, "/$ref"),
                format!("#/components/parameters/{name}")
            );
        }
        assert_eq!(
            item["parameters"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<BTreeSet<_>>(),
            BTreeSet::from([&"aggregateId".to_owned(), &"prefix".to_owned()]),
            "{channel}: parameters"
        );
        out.push(Documented {
            stream_type: stream_type.to_owned(),
            event_type: event_type.to_owned(),
            channel: channel.clone(),
        });
    }
    out
}

#[test]
fn every_event_type_has_exactly_one_channel_and_message() {
    let doc = document();
    assert_eq!(text(&doc, "/asyncapi"), "2.6.0");

    // What the code publishes, and the schema files of it on disk.
    let mut expected = BTreeMap::new();
    for (st, t) in all_event_types() {
        let version = current_schema_version(st, t).unwrap();
        expected.insert(
            (st.as_str().to_owned(), t.to_owned()),
            (version, schema_path(st, t, version)),
        );
    }
    let expected_files: BTreeSet<String> = expected.values().map(|(_, p)| p.clone()).collect();
    assert_eq!(
        published_schema_files(),
        expected_files,
        "schema files of published versions vs the code's event types"
    );

    let documented = documented(&doc);
    let mut seen = BTreeSet::new();
    for d in &documented {
        assert!(
            seen.insert(d.event_type.clone()),
            "{} has more than one channel",
            d.event_type
        );
    }
    let documented_types: BTreeSet<(String, String)> = documented
        .iter()
        .map(|d| (d.stream_type.clone(), d.event_type.clone()))
        .collect();
    let expected_types: BTreeSet<(String, String)> = expected.keys().cloned().collect();
    assert_eq!(
        documented_types, expected_types,
        "channels in asyncapi.yaml vs event types the code publishes"
    );
    let messages: BTreeSet<String> = object(&doc["components"]["messages"], "messages")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        messages,
        expected_types.iter().map(|(_, t)| t.clone()).collect(),
        "components.messages vs event types"
    );

    for ((st, t), (version, path)) in &expected {
        let message = &doc["components"]["messages"][t.as_str()];
        assert_eq!(text(message, "/name"), t);
        assert_eq!(text(message, "/messageId"), t);
        assert_eq!(
            text(message, "/traits/0/$ref"),
            "#/components/messageTraits/OrdoEvent"
        );
        let envelope = format!(
            "#/components/schemas/{}{}Envelope",
            st[..1].to_uppercase(),
            &st[1..]
        );
        assert_eq!(text(message, "/payload/allOf/0/$ref"), envelope, "{t}");
        let own = &message["payload"]["allOf"][1]["properties"];
        assert_eq!(own["type"]["const"], json!(t), "{t}");
        assert_eq!(own["dataschema"]["const"], json!(path), "{t}");
        assert_eq!(own["schemaversion"]["const"], json!(version), "{t}");
        let data = text(own, "/data/$ref");
        assert_eq!(
            format!("schemas/{}", data.trim_start_matches("./")),
            *path,
            "{t}: data refers to its schema file"
        );
        assert!(schemas_dir().join(data).is_file(), "{t}: {data} is missing");
    }
}

#[test]
fn every_ref_resolves() {
    let doc = document();
    let mut refs = Vec::new();
    all_refs(&doc, &mut refs);
    assert!(refs.len() > 50, "{refs:?}");
    for reference in &refs {
        match local_pointer(reference) {
            Some(pointer) => assert!(
                doc.pointer(pointer).is_some(),
                "{reference} does not resolve"
            ),
            None => {
                assert!(
                    reference.starts_with("./events/"),
                    "{reference}: file references are event schemas"
                );
                load_file(reference);
            }
        }
    }
    // Everything resolves all the way down, without cycles.
    resolve(&doc["channels"], &doc, &load_file);
}

/// An event as stored, of the given type, with `data` and optional ids.
fn recorded(
    stream_type: StreamType,
    event_type: &str,
    data: Value,
    correlated: bool,
) -> RecordedEvent {
    RecordedEvent {
        position: Position::new(4_294_967_301, 12_345),
        event_id: Uuid::now_v7(),
        stream_id: stream_type.stream_id(Uuid::now_v7()),
        stream_type: stream_type.as_str().to_owned(),
        version: 3,
        event_type: event_type.to_owned(),
        schema_version: current_schema_version(stream_type, event_type).unwrap() as i32,
        data,
        metadata: Metadata {
            correlation_id: correlated.then(Uuid::now_v7),
            causation_id: correlated.then(Uuid::now_v7),
            command_id: Some("cmd-1".to_owned()),
            trace_id: Some("0af7651916cd43dd8448eb211c80319c".to_owned()),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
            tracestate: None,
            actor: correlated.then(|| "saga".to_owned()),
        },
        recorded_at: Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
            + chrono::Duration::microseconds(123_456),
    }
}

fn publishable(event: &RecordedEvent) -> PublishableEvent {
    PublishableEvent {
        position: event.position,
        event_id: event.event_id,
        stream_id: event.stream_id.clone(),
        stream_type: event.stream_type.clone(),
        version: event.version,
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        data: serde_json::value::to_raw_value(&event.data).unwrap(),
        correlation_id: event.metadata.correlation_id,
        causation_id: event.metadata.causation_id,
        recorded_at: event.recorded_at,
        actor: event.metadata.actor.clone(),
        trace: eventstore::telemetry::TraceParent::new(
            event.metadata.traceparent.as_deref(),
            event.metadata.tracestate.as_deref(),
        ),
    }
}

/// The envelope as the relay publishes it, checked equal to the API's.
fn published(event: &RecordedEvent) -> Value {
    let body: Value = serde_json::from_slice(&publishable(event).envelope_json().unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::to_value(Envelope::from_recorded(event)).unwrap(),
        "the relay publishes the API's envelope"
    );
    body
}

#[test]
fn envelope_attributes_are_what_the_relay_serialises() {
    let doc = document();
    let schema = &doc["components"]["schemas"]["Envelope"];
    let required = string_set(schema, "/required");
    let all: BTreeSet<String> = object(&schema["properties"], "Envelope.properties")
        .keys()
        .cloned()
        .collect();
    let keys = |v: &Value| -> BTreeSet<String> { v.as_object().unwrap().keys().cloned().collect() };

    let bare = published(&recorded(
        StreamType::Order,
        "OrderConfirmed",
        json!({}),
        false,
    ));
    assert_eq!(
        keys(&bare),
        required,
        "required attributes vs an envelope without ids"
    );
    let full = published(&recorded(
        StreamType::Order,
        "OrderConfirmed",
        json!({}),
        true,
    ));
    assert_eq!(
        keys(&full),
        all,
        "documented attributes vs an envelope with every one"
    );

    // Every message's payload schema accepts real envelopes of its type
    // (with `data` left to the next test) and refuses other types'.
    let lenient = |_: &str| json!({ "type": "object" });
    for d in documented(&doc) {
        let st: StreamType = d.stream_type.parse().unwrap();
        let payload = resolve(
            &doc["components"]["messages"][d.event_type.as_str()]["payload"],
            &doc,
            &lenient,
        );
        let validator = validator(&payload);
        for correlated in [false, true] {
            let envelope = published(&recorded(st, &d.event_type, json!({}), correlated));
            assert_valid(&validator, &envelope, &d.event_type);
        }
        let mut other = published(&recorded(st, &d.event_type, json!({}), true));
        other["type"] = json!("SomethingElse");
        assert!(
            !validator.is_valid(&other),
            "{}: accepts any type",
            d.event_type
        );
        let mut other = published(&recorded(st, &d.event_type, json!({}), true));
        other["subject"] = json!(format!("cart-{}", Uuid::now_v7()));
        assert!(
            !validator.is_valid(&other),
            "{}: accepts any subject",
            d.event_type
        );
    }
}

#[test]
fn message_data_is_checked_against_the_event_schema_files() {
    let doc = document();
    let payload = |t: &str| {
        let schema = resolve(
            &doc["components"]["messages"][t]["payload"],
            &doc,
            &load_file,
        );
        validator(&schema)
    };
    let order_id = Uuid::now_v7();
    let placed = json!({
        "order_id": order_id,
        "user_id": Uuid::now_v7(),
        "lines": [{"product_id": Uuid::now_v7(), "quantity": 2, "unit_price": "10.00"}],
        "total": "20.00",
    });
    let validator = payload("OrderPlaced");
    let good = published(&recorded(StreamType::Order, "OrderPlaced", placed, true));
    assert_valid(&validator, &good, "OrderPlaced");
    let bad = published(&recorded(
        StreamType::Order,
        "OrderPlaced",
        json!({"order_id": order_id}),
        true,
    ));
    assert!(!validator.is_valid(&bad), "OrderPlaced data is not checked");

    let validator = payload("StockReserved");
    let good = published(&recorded(
        StreamType::Product,
        "StockReserved",
        json!({"order_id": order_id, "quantity": 1}),
        false,
    ));
    assert_valid(&validator, &good, "StockReserved");
}

#[test]
fn channel_addresses_are_the_relays_subjects() {
    let doc = document();
    let prefix: SubjectPrefix = "events".parse().unwrap();
    let parameters = &doc["components"]["parameters"];
    let prefix_schema = validator(&parameters["prefix"]["schema"]);
    let aggregate_schema = validator(&parameters["aggregateId"]["schema"]);
    for good in ["events", "ordo_test-1"] {
        assert!(good.parse::<SubjectPrefix>().is_ok());
        assert!(prefix_schema.is_valid(&json!(good)), "{good}");
    }
    for bad in ["ev.ents", "ev*", ">", ""] {
        assert!(bad.parse::<SubjectPrefix>().is_err());
        assert!(!prefix_schema.is_valid(&json!(bad)), "{bad}");
    }
    for d in documented(&doc) {
        let st: StreamType = d.stream_type.parse().unwrap();
        let event = recorded(st, &d.event_type, json!({}), false);
        let relayed = publishable(&event);
        let aggregate = relayed.aggregate_id();
        assert!(aggregate_schema.is_valid(&json!(aggregate)), "{aggregate}");
        let address = d
            .channel
            .replace("{prefix}", prefix.as_str())
            .replace("{aggregateId}", aggregate);
        assert_eq!(
            address,
            prefix.subject(&relayed.stream_type, aggregate, &relayed.event_type),
            "{}",
            d.channel
        );
        // The aggregate id is the envelope's subject after `<streamtype>-`.
        assert_eq!(
            published(&event)["subject"],
            json!(format!("{}-{aggregate}", d.stream_type))
        );
    }
}

/// The builder calls between `PublishMessage::build()` and the end of that
/// statement in the relay: each sets one header (besides the payload).
fn relay_publish_calls() -> BTreeSet<String> {
    let source = std::fs::read_to_string(repo_root().join("eventstore/src/relay.rs")).unwrap();
    let start = source
        .find("PublishMessage::build()")
        .expect("the relay builds its messages with PublishMessage::build()");
    assert_eq!(
        source.matches("PublishMessage::build()").count(),
        1,
        "the relay builds messages in one place"
    );
    let statement = &source[start..start + source[start..].find(';').unwrap()];
    // rustfmt puts each chained call on a line of its own.
    statement
        .lines()
        .skip(1)
        .filter_map(|line| line.trim().strip_prefix('.'))
        .map(|call| call.split('(').next().unwrap().to_owned())
        .collect()
}

#[test]
fn headers_are_the_ones_the_relay_sets() {
    let doc = document();
    let trait_headers = text(
        &doc["components"]["messageTraits"]["OrdoEvent"],
        "/headers/$ref",
    );
    assert_eq!(trait_headers, "#/components/schemas/NatsHeaders");
    let schema = &doc["components"]["schemas"]["NatsHeaders"];
    let documented: BTreeSet<String> = object(&schema["properties"], "NatsHeaders")
        .keys()
        .cloned()
        .collect();
    // async-nats: `message_id` sets Nats-Msg-Id, `expected_last_sequence`
    // sets Nats-Expected-Last-Sequence. A new builder call fails here until
    // it is mapped and documented.
    // `headers` carries the W3C trace context, when the event has one.
    let header_of = |call: &str| -> (Vec<String>, bool) {
        match call {
            "payload" => (vec![], true),
            "message_id" => (vec![async_nats::header::NATS_MESSAGE_ID.to_string()], true),
            "expected_last_sequence" => (
                vec![async_nats::header::NATS_EXPECTED_LAST_SEQUENCE.to_string()],
                true,
            ),
            "headers" => (
                vec![
                    eventstore::telemetry::TRACEPARENT.to_owned(),
                    eventstore::telemetry::TRACESTATE.to_owned(),
                ],
                false,
            ),
            other => panic!("the relay calls PublishMessage::{other}: document its header"),
        }
    };
    let calls = relay_publish_calls();
    let sent: BTreeSet<String> = calls.iter().flat_map(|c| header_of(c).0).collect();
    let always: BTreeSet<String> = calls
        .iter()
        .map(|c| header_of(c))
        .filter(|(_, always)| *always)
        .flat_map(|(names, _)| names)
        .collect();
    assert_eq!(documented, sent, "documented headers vs the relay's");
    assert_eq!(
        string_set(schema, "/required"),
        always,
        "the relay always sends them"
    );

    let validator = validator(schema);
    let id = Uuid::now_v7();
    assert_valid(
        &validator,
        &json!({"Nats-Msg-Id": id.to_string(), "Nats-Expected-Last-Sequence": "41"}),
        "headers",
    );
    assert_valid(
        &validator,
        &json!({
            "Nats-Msg-Id": id.to_string(),
            "Nats-Expected-Last-Sequence": "41",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "vendor=x",
        }),
        "headers with a trace context",
    );
    assert!(!validator.is_valid(&json!({
        "Nats-Msg-Id": id.to_string(),
        "Nats-Expected-Last-Sequence": "41",
        "traceparent": "not one",
    })));
    assert!(!validator.is_valid(&json!({"Nats-Msg-Id": "x", "Nats-Expected-Last-Sequence": "41"})));
}

/// The `default_value` of the CLI argument read from `env`.
fn cli_default(env: &str) -> String {
    let source = std::fs::read_to_string(repo_root().join("cli/src/config.rs")).unwrap();
    let at = source
        .find(&format!("env = \"{env}\""))
        .unwrap_or_else(|| panic!("no {env} argument in cli/src/config.rs"));
    let rest = &source[at..];
    let rest = &rest[..rest.find("pub ").unwrap()];
    let value = rest
        .split("default_value = \"")
        .nth(1)
        .unwrap_or_else(|| panic!("{env} has no default_value"));
    value[..value.find('"').unwrap()].to_owned()
}

#[test]
fn server_stream_and_defaults_are_the_relays() {
    let doc = document();
    let server = &doc["servers"]["nats"];
    assert_eq!(text(server, "/protocol"), "nats");
    let url = text(server, "/url")
        .replace("{host}", text(server, "/variables/host/default"))
        .replace("{port}", text(server, "/variables/port/default"));
    assert_eq!(url, cli_default("NATS_URL"));
    let prefix_default = text(&doc, "/components/parameters/prefix/schema/default");
    assert_eq!(prefix_default, cli_default("ORDO_SUBJECT_PREFIX"));

    let stream = &server["x-jetstream-stream"];
    assert_eq!(text(stream, "/name"), cli_default("ORDO_STREAM"));
    assert_eq!(text(stream, "/nameFrom"), "ORDO_STREAM");
    let name: StreamName = text(stream, "/name").parse().unwrap();
    let prefix: SubjectPrefix = prefix_default.parse().unwrap();
    let config = stream_config(&name, &prefix);
    let subjects: Vec<String> = string_set(stream, "/subjects")
        .iter()
        .map(|s| s.replace("{prefix}", prefix.as_str()))
        .collect();
    assert_eq!(subjects, config.subjects);
    use async_nats::jetstream::stream::{RetentionPolicy, StorageType};
    let storage = match config.storage {
        StorageType::File => "file",
        StorageType::Memory => "memory",
    };
    assert_eq!(text(stream, "/storage"), storage);
    let retention = match config.retention {
        RetentionPolicy::Limits => "limits",
        RetentionPolicy::Interest => "interest",
        RetentionPolicy::WorkQueue => "workqueue",
    };
    assert_eq!(text(stream, "/retention"), retention);
    assert_eq!(
        stream["duplicateWindowSeconds"],
        json!(DUPLICATE_WINDOW.as_secs())
    );
    assert_eq!(config.duplicate_window, DUPLICATE_WINDOW);
}
