//! The Grafana dashboard (charts/entourage/files/dashboard.json) and the alerts query only series a running
//! webhook exports: every `entourage_*` name in their expressions is on `/metrics` of `entourage serve`.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::apiserver::Webhook;

/// The sample names `/metrics` can carry, from its `# TYPE` lines (a family is typed even before its first
/// sample, as the reload counters are until a reload): counters end in `_total`, histograms have `_bucket`,
/// `_sum` and `_count`.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => names.insert(format!("{name}_total")),
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
                true
            }
            _ => names.insert(name.to_string()),
        };
    }
    names
}

/// The `entourage_*` metric names an expression reads.
fn queried(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("entourage_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(support::install::chart().join("files/dashboard.json")).unwrap())
        .expect("the dashboard is JSON")
}

fn dashboard_exprs() -> Vec<String> {
    let board = dashboard();
    let panels = board["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    panels
        .iter()
        .flat_map(|p| {
            let targets = p["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("{} has no targets", p["title"]));
            assert!(!targets.is_empty(), "{}", p["title"]);
            targets.iter().map(|t| t["expr"].as_str().unwrap().to_string())
        })
        .collect()
}

fn alert_exprs() -> Vec<String> {
    let rules = support::install::parse_yaml(
        &std::fs::read_to_string(support::install::chart().join("files/alerts.yaml")).unwrap(),
    );
    rules[0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .collect()
}

/// A running webhook that has answered every kind of review and refused a config change, so that every family
/// has a series (prometheus_client writes a family's `# TYPE` line with its first series).
async fn metrics_after_traffic() -> String {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "sidecars: {mode: auto}\n").unwrap();
    let path = config.path().to_str().unwrap();
    let webhook = Webhook::start(&["--config", path, "--reload-interval", "100ms"]);
    let mut client = webhook.connect().await;
    for fixture in [
        "pod-sidecar-nginx.json",
        "pod-denied-relative-path.json",
        "job-defaults.json",
    ] {
        let body = std::fs::read(support::install::root().join("tests/fixtures").join(fixture)).unwrap();
        assert_eq!(
            client.send("POST", "/mutate?timeout=10s", body).await.status,
            200,
            "{fixture}"
        );
    }
    // A Pod that opted out: a skip.
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "a", "annotations": {"entourage.dev/inject": "false"}},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
    });
    let review = support::review(("", "v1", "Pod"), "default", "CREATE", &pod);
    assert_eq!(client.review(&review).await.status, 200);
    // Not a review: a bad request.
    let bad = client.send("POST", "/mutate?timeout=10s", b"{}".to_vec()).await;
    assert_eq!(bad.status, 400);
    std::fs::write(config.path(), "sidecars: {mode: sometimes}\n").unwrap();
    for _ in 0..100 {
        let text = String::from_utf8(client.send("GET", "/metrics", Vec::new()).await.body.to_vec()).unwrap();
        if text.contains(r#"entourage_reloads_total{what="config",result="failure"} 1"#) {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the refused config was not counted within 5 s");
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_query_is_on_metrics() {
    let text = metrics_after_traffic().await;
    let exported = exported(&text);
    assert!(exported.contains("entourage_admission_reviews_total"), "{exported:?}");
    let mut used = BTreeSet::new();
    for expr in dashboard_exprs().iter().chain(&alert_exprs()) {
        for name in queried(expr) {
            assert!(
                exported.contains(&name),
                "{name} (in {expr}) is not on /metrics: {exported:?}"
            );
            used.insert(name);
        }
    }
    // The dashboard shows every family entourage exports.
    let shown: BTreeSet<String> = dashboard_exprs().iter().flat_map(|e| queried(e)).collect();
    for family in [
        "reviews_total",
        "injections_total",
        "skips_total",
        "denials_total",
        "review_duration_seconds",
        "certificate_expiry",
        "reloads_total",
    ] {
        assert!(
            shown.iter().any(|n| n.contains(family)),
            "{family} not on the dashboard"
        );
    }
    assert!(used.len() >= 7, "{used:?}");
}

#[test]
fn dashboard_panels_use_the_datasource_and_namespace_variables() {
    let board = dashboard();
    let variables: Vec<&str> = board["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "namespace"]);
    for panel in board["panels"].as_array().unwrap() {
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            assert!(expr.contains(r#"namespace="$namespace""#), "{}: {expr}", panel["title"]);
        }
    }
}
