//! The alerts (charts/entourage/files/alerts.yaml, a plain Prometheus rules file the chart's PrometheusRule also
//! carries): promtool accepts them, and its unit tests (tests/alerts/entourage_test.yaml) pass, with a case where
//! each alert fires and one where it stays quiet.

mod support;

use std::collections::BTreeMap;

use serde_json::Value;
use support::install::{root, run, tool};

fn rules_file() -> std::path::PathBuf {
    support::install::chart().join("files/alerts.yaml")
}

fn alert_names() -> Vec<String> {
    let rules = &support::install::parse_yaml(&std::fs::read_to_string(rules_file()).unwrap())[0];
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["alert"].as_str().expect("every rule is an alert").to_string())
        .collect()
}

#[test]
fn promtool_accepts_the_rules_file() {
    let Some(promtool) = tool("promtool") else { return };
    let out = run(&promtool, &["check", "rules", rules_file().to_str().unwrap()]);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", alert_names().len())),
        "{out}"
    );
}

#[test]
fn every_alert_fires_and_stays_quiet_in_promtool_unit_tests() {
    let tests = root().join("tests/alerts/entourage_test.yaml");
    // Each alert has a case that expects it and one that expects silence.
    let doc = &support::install::parse_yaml(&std::fs::read_to_string(&tests).unwrap())[0];
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for test in doc["tests"].as_array().unwrap() {
        for case in test["alert_rule_test"].as_array().unwrap() {
            let entry = cases
                .entry(case["alertname"].as_str().unwrap().to_string())
                .or_default();
            match case["exp_alerts"].as_array().map(Vec::len) {
                Some(0) | None => entry.1 += 1,
                Some(_) => entry.0 += 1,
            }
        }
    }
    for alert in alert_names() {
        let (fires, quiet) = cases.get(&alert).copied().unwrap_or_default();
        assert!(
            fires > 0 && quiet > 0,
            "{alert}: {fires} firing and {quiet} quiet cases"
        );
    }
    let Some(promtool) = tool("promtool") else { return };
    let out = run(&promtool, &["test", "rules", tests.to_str().unwrap()]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn latency_alert_threshold_is_within_the_histogram_buckets() {
    // histogram_quantile cannot report past the last finite bucket: a threshold above it could never fire.
    let metrics = entourage::webhook::metrics::Metrics::default();
    metrics.latency.observe(1e9);
    let text = metrics.encode();
    let last_bucket: f64 = text
        .lines()
        .filter_map(|l| l.strip_prefix("entourage_review_duration_seconds_bucket{le=\""))
        .filter_map(|l| l.split('"').next()?.parse().ok())
        .fold(0.0, f64::max);
    let rules: Value = support::install::parse_yaml(&std::fs::read_to_string(rules_file()).unwrap()).remove(0);
    let slow = rules["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["alert"] == "EntourageSlowReviews")
        .unwrap();
    let expr = slow["expr"].as_str().unwrap();
    let threshold: f64 = expr
        .rsplit('>')
        .next()
        .unwrap()
        .split('*')
        .map(|f| f.trim().parse::<f64>().unwrap())
        .product();
    assert!(
        threshold > 0.0 && threshold < last_bucket,
        "{threshold} s against a last bucket of {last_bucket} s"
    );
}
