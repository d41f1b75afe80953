//! eventstore
