//! Every event payload validates against its JSON Schema in `schemas/events/`.
//!
//! A type without a schema file fails here, as does a schema file for a type
//! (or version) the code does not know.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use domain::event::{all_event_types, current_schema_version, schema_path, upcast, AnyEvent};
use domain::ids::StreamType;
use jsonschema::Validator;
use proptest::prelude::*;
use serde_json::{json, Value};

/// The repository root, where `schemas/` lives.
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load_schema(stream_type: StreamType, event_type: &str, version: u32) -> Value {
    let path = repo_root().join(schema_path(stream_type, event_type, version));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{stream_type}/{event_type} v{version} has no schema at {}: {e}",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

fn compile(schema: &Value) -> Validator {
    jsonschema::meta::validate(schema)
        .unwrap_or_else(|e| panic!("schema is not valid 2020-12: {e}"));
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap()
}

/// A validator for the current version of every event type; panics if any
/// type lacks its schema file.
fn validators() -> HashMap<(StreamType, &'static str), Validator> {
    all_event_types()
        .into_iter()
        .map(|(st, t)| {
            let version = current_schema_version(st, t).unwrap();
            ((st, t), compile(&load_schema(st, t, version)))
        })
        .collect()
}

#[track_caller]
fn assert_valid(validators: &HashMap<(StreamType, &'static str), Validator>, event: &AnyEvent) {
    let validator = &validators[&(event.stream_type(), event.event_type())];
    let data = event.to_data();
    let errors: Vec<String> = validator
        .iter_errors(&data)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{} {data} does not match its schema: {errors:?}",
        event.event_type()
    );
}

#[test]
fn every_event_type_has_a_schema_and_examples_that_match_it() {
    let validators = validators();
    let examples = common::examples();
    for (stream_type, event_type) in all_event_types() {
        assert!(
            examples
                .iter()
                .any(|e| e.stream_type() == stream_type && e.event_type() == event_type),
            "no example of {event_type}"
        );
    }
    for event in &examples {
        assert_valid(&validators, event);
    }
}

#[test]
fn every_schema_file_belongs_to_a_known_type_and_version() {
    let mut expected = BTreeSet::new();
    for (st, t) in all_event_types() {
        expected.insert(schema_path(st, t, current_schema_version(st, t).unwrap()));
    }
    // Older versions that can still be read have a schema too.
    for u in upcast::UPCASTERS {
        expected.insert(schema_path(u.stream_type, u.event_type, u.from_version));
    }
    let mut found = BTreeSet::new();
    for st in StreamType::ALL {
        let dir = repo_root().join("schemas/events").join(st.as_str());
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            found.insert(format!("schemas/events/{}/{name}", st.as_str()));
        }
    }
    assert_eq!(found, expected);
}

#[test]
fn schemas_refuse_what_the_domain_refuses() {
    let validators = validators();
    let check = |st: StreamType, t: &'static str, data: Value| {
        assert!(
            !validators[&(st, t)].is_valid(&data),
            "{t} schema accepted {data}"
        );
    };
    let uuid = common::oid(1).to_string();
    // Unknown fields, missing fields, wrong formats.
    check(StreamType::Order, "OrderShipped", json!({"extra": 1}));
    check(StreamType::Order, "OrderPaid", json!({}));
    check(StreamType::Order, "OrderPaid", json!({"amount": 20.29}));
    check(StreamType::Order, "OrderPaid", json!({"amount": "-1.00"}));
    check(StreamType::Order, "OrderPaid", json!({"amount": "1.23456"}));
    check(
        StreamType::Product,
        "StockReserved",
        json!({"order_id": "nope", "quantity": 1}),
    );
    check(
        StreamType::Product,
        "StockReserved",
        json!({"order_id": uuid, "quantity": 0}),
    );
    check(
        StreamType::Product,
        "ProductCreated",
        json!({
            "product_id": uuid, "sku": "lower", "name": "x", "price": "1.00", "stock": 0
        }),
    );
    check(
        StreamType::User,
        "UserRegistered",
        json!({"user_id": uuid, "email": "no-at", "name": "x"}),
    );
    check(StreamType::User, "UserRenamed", json!({"name": ""}));
    check(StreamType::User, "UserRenamed", json!({"name": "a\nb"}));
    check(
        StreamType::Order,
        "OrderRejected",
        json!({"reason": "bored"}),
    );
    check(StreamType::Order, "OrderCancelled", json!({"reason": ""}));
    check(
        StreamType::Order,
        "OrderPlaced",
        json!({
            "order_id": uuid, "user_id": uuid, "lines": [], "total": "0.00"
        }),
    );
}

#[test]
fn the_legacy_order_placed_matches_its_v0_schema_and_upcasts() {
    let v0 = compile(&load_schema(StreamType::Order, "OrderPlaced", 0));
    let data = json!({
        "order_id": common::oid(1).to_string(),
        "user_id": common::uid(1).to_string(),
        "lines": [{"product_id": common::pid(1).to_string(), "quantity": 2, "unit_price": "5.25"}]
    });
    assert!(v0.is_valid(&data));
    let event = AnyEvent::from_stored(StreamType::Order, "OrderPlaced", 0, data).unwrap();
    assert_eq!(event.to_data()["total"], json!("10.50"));
    assert_valid(&validators(), &event);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_events_match_their_schemas(event in common::any_event()) {
        thread_local! {
            static VALIDATORS: HashMap<(StreamType, &'static str), Validator> = validators();
        }
        VALIDATORS.with(|v| assert_valid(v, &event));
    }
}
