//! The benchmarks run end to end (tiny sizes; the figures themselves are
//! measured by hand and reported in the README, never asserted here).

use std::process::Command;

fn run_bench(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("figures.json");
    let database = test_support::server_database_url().with_database("ordo_bench_smoke");
    let out = Command::new(env!("CARGO_BIN_EXE_ordo"))
        .arg("--database-url")
        .arg(database.expose())
        .arg("--nats-url")
        .arg(test_support::nats_url().as_str())
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run ordo bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("json");
    for (key, value) in figures.as_object().expect("object") {
        if key.ends_with("_per_sec") || key.ends_with("_ms") {
            assert!(value.as_f64().is_some_and(|v| v >= 0.0), "{key} = {value}");
        }
    }
    figures
}

#[test]
fn append_benchmark_reports_ordo_next_to_raw_inserts() {
    let figures = run_bench(&[
        "append",
        "--writers",
        "4",
        "--events",
        "200",
        "--batch",
        "5",
    ]);
    assert!(figures["append_events_per_sec"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(figures["raw_insert_rows_per_sec"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(figures["append_vs_raw_percent"].is_number());
    assert!(figures["append_latency_p99_ms"].is_number());
}

#[test]
fn relay_benchmark_reports_ordo_next_to_raw_publishing() {
    let figures = run_bench(&["relay", "--events", "500"]);
    assert!(figures["relay_events_per_sec"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(figures["raw_publish_msgs_per_sec"].as_f64().unwrap_or(0.0) > 0.0);
}

#[test]
fn rebuild_benchmark_reports_ordo_next_to_raw_reads() {
    let figures = run_bench(&["rebuild", "--events", "3000"]);
    assert!(figures["rebuild_events_per_sec"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(
        figures["raw_log_read_events_per_sec"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0
    );
    assert!(figures["events"].as_u64().unwrap_or(0) >= 3000);
}
