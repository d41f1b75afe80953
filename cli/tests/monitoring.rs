//! The monitoring files ordo ships: `deploy/prometheus/alerts.yml` passes
//! `promtool check rules` (Debian's `prometheus` package has it; scripts/test
//! installs it when missing), and every metric the rules and
//! `deploy/grafana/ordo.json` name is one ordo records, so neither watches a
//! series that never exists.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::YamlLoader;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `ordo_*` metric name the workspace records with the `metrics`
/// macros (`counter!`, `gauge!`, `histogram!`), read from the sources.
fn recorded_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut dirs = vec![repo()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" {
                    dirs.push(path);
                }
            } else if name.ends_with(".rs") && path.to_string_lossy().contains("/src/") {
                let text = read(&path);
                for kind in ["counter!(", "gauge!(", "histogram!("] {
                    for (at, _) in text.match_indices(kind) {
                        let rest = text[at + kind.len()..].trim_start();
                        if let Some(rest) = rest.strip_prefix('"') {
                            if let Some(end) = rest.find('"') {
                                names.insert(rest[..end].to_owned());
                            }
                        }
                    }
                }
            }
        }
    }
    names
}

/// The metric names an expression refers to (`ordo_...` identifiers, a
/// histogram's `_bucket`, `_sum` and `_count` series named by their base).
fn metrics_in(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(at) = expr[i..].find("ordo_") {
        let start = i + at;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if before_ok {
            found.push(expr[start..end].to_owned());
        }
        i = end;
    }
    found
}

fn exported(name: &str, recorded: &BTreeSet<String>) -> bool {
    recorded.contains(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| recorded.contains(base) && base.ends_with("_seconds"))
        })
}

fn rule_expressions() -> Vec<(String, String)> {
    let text = read(&repo().join("deploy/prometheus/alerts.yml"));
    let docs = YamlLoader::load_from_str(&text).expect("alerts.yml is YAML");
    let mut out = Vec::new();
    for group in docs[0]["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .expect("every rule is an alert")
                .to_owned();
            let expr = rule["expr"]
                .as_str()
                .expect("every rule has an expr")
                .to_owned();
            out.push((name, expr));
        }
    }
    out
}

fn dashboard_expressions() -> Vec<(String, String)> {
    let text = read(&repo().join("deploy/grafana/ordo.json"));
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("ordo.json is JSON");
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("a target has an expr");
            out.push((title.clone(), expr.to_owned()));
        }
    }
    out
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let output = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(repo().join("deploy/prometheus/alerts.yml"))
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool not found ({e}): apt-get install prometheus (scripts/test does)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn the_rules_and_the_dashboard_name_only_metrics_ordo_records() {
    let recorded = recorded_metrics();
    assert!(
        recorded.contains("ordo_relay_lag_seconds") && recorded.len() > 15,
        "the scan found ordo's metrics: {recorded:?}"
    );
    let rules = rule_expressions();
    let panels = dashboard_expressions();
    assert!(rules.len() >= 10 && panels.len() >= 10);
    let mut named = BTreeSet::new();
    for (what, expr) in rules.iter().chain(&panels) {
        let metrics = metrics_in(expr);
        assert!(
            !metrics.is_empty() || expr.contains("up{"),
            "{what}: {expr} names no ordo metric"
        );
        for metric in metrics {
            assert!(
                exported(&metric, &recorded),
                "{what}: {metric} is not a metric ordo records ({recorded:?})"
            );
            named.insert(metric);
        }
    }
    // The alerts cover what the issue of this file asks for.
    let alerts: Vec<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "OrdoRelayLagging",
        "OrdoLogHorizonHeld",
        "OrdoProjectionLagging",
        "OrdoProjectionFailed",
        "OrdoSagasNeedAttention",
        "OrdoServerErrors",
        "OrdoCommandConflicts",
        "OrdoDatabaseUnavailable",
    ] {
        assert!(alerts.contains(&expected), "{expected} in {alerts:?}");
    }
    // And the reference documents every metric they use.
    let documented = read(&repo().join("docs/reference/http-api.md"));
    for metric in &named {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| metric.strip_suffix(s))
            .unwrap_or(metric);
        assert!(
            documented.contains(base),
            "{base} is missing from docs/reference/http-api.md#metrics"
        );
    }
}

#[test]
fn a_name_that_ordo_does_not_record_is_caught() {
    let recorded: BTreeSet<String> = ["ordo_relay_lag_seconds".to_owned()].into();
    assert_eq!(
        metrics_in("max(ordo_relay_lag_seconds) > 1 or xordo_y"),
        ["ordo_relay_lag_seconds"]
    );
    assert!(exported("ordo_relay_lag_seconds_bucket", &recorded));
    assert!(!exported("ordo_relay_lag_total", &recorded));
    assert!(!exported("ordo_relay_lag", &recorded));
}
