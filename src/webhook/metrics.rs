//! Prometheus metrics, served at `/metrics` in the text exposition format.

use std::borrow::Cow;

use crate::core::mutate::Pattern;
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

// Labels from a fixed set are `&'static str` (and the kinds entourage handles, borrowed): counting a review
// allocates nothing for them.

/// Labels of a review.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    /// Pod, Job, CronJob or another kind.
    pub kind: Cow<'static, str>,
    /// CREATE, UPDATE, DELETE, CONNECT.
    pub operation: &'static str,
    /// allowed, patched, denied or bad-request.
    pub decision: &'static str,
}

/// A reason label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The reason (`opted-out`, `invalid-annotations`…).
    pub reason: &'static str,
}

/// A pattern label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PatternLabels {
    /// sidecar, adapter or ambassador.
    pub pattern: &'static str,
}

/// A result label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// What was reloaded (`config`, `certificate`).
    pub what: String,
    /// `success` or `failure`.
    pub result: String,
}

/// A label naming what is reloaded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhatLabels {
    /// `config` or `certificate`.
    pub what: String,
}

/// Every metric entourage exports.
pub struct Metrics {
    registry: Registry,
    /// Reviews by kind, operation and decision.
    pub reviews: Family<ReviewLabels, Counter>,
    /// Injected containers by pattern.
    pub injections: Family<PatternLabels, Counter>,
    /// The `injections` series of each [`Pattern`], resolved once (each exists from the start, at 0): counting an
    /// injection then hashes and locks nothing.
    injected: [Counter; 3],
    /// Reviews that changed nothing, by reason.
    pub skips: Family<ReasonLabels, Counter>,
    /// Denials by reason.
    pub denials: Family<ReasonLabels, Counter>,
    /// Time to answer a review.
    pub latency: Histogram,
    /// Expiry of the serving certificate.
    pub cert_expiry: Gauge,
    /// Config and certificate reloads by result.
    pub reloads: Family<ResultLabels, Counter>,
    /// 1 while the last reload of each file succeeded, 0 while a refused version is on disk (the previous one
    /// still serves): an alert on it fires until the file is fixed, not just for a while after the failure.
    pub reload_ok: Family<WhatLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("entourage");
        let reviews = Family::<ReviewLabels, Counter>::default();
        let injections = Family::<PatternLabels, Counter>::default();
        let skips = Family::<ReasonLabels, Counter>::default();
        let denials = Family::<ReasonLabels, Counter>::default();
        // 50 µs … ~26 s: a review normally takes well under a millisecond, and the top buckets reach past the
        // apiserver's longest `timeoutSeconds` (30 s, default 10 s), so an alert can compare p99 with it.
        let latency = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.000_05, 2.0, 20,
        ));
        let cert_expiry = Gauge::default();
        let reloads = Family::<ResultLabels, Counter>::default();
        let reload_ok = Family::<WhatLabels, Gauge>::default();
        registry.register("admission_reviews", "Admission reviews answered", reviews.clone());
        registry.register("injections", "Containers injected, by pattern", injections.clone());
        registry.register("skips", "Reviews that changed nothing, by reason", skips.clone());
        registry.register("denials", "Objects denied, by reason", denials.clone());
        registry.register(
            "review_duration_seconds",
            "Time to answer an admission review",
            latency.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "Expiry of the serving certificate (Unix time)",
            cert_expiry.clone(),
        );
        registry.register("reloads", "Config and certificate reloads, by result", reloads.clone());
        registry.register(
            "reload_ok",
            "1 if the last reload of the file succeeded (or none was needed), 0 while a refused version is on disk",
            reload_ok.clone(),
        );
        for what in ["config", "certificate"] {
            reload_ok.get_or_create(&WhatLabels { what: what.into() }).set(1);
        }
        let injected = [Pattern::Sidecar, Pattern::Adapter, Pattern::Ambassador].map(|pattern| {
            let series = injections.get_or_create(&PatternLabels {
                pattern: pattern.as_str(),
            });
            series.clone()
        });
        Metrics {
            registry,
            reviews,
            injections,
            injected,
            skips,
            denials,
            latency,
            cert_expiry,
            reloads,
            reload_ok,
        }
    }
}

impl Metrics {
    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Counts a container injected for `pattern`.
    pub fn injection(&self, pattern: Pattern) {
        self.injected[pattern as usize].inc();
    }

    /// Counts a reload.
    pub fn reload(&self, what: &str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads
            .get_or_create(&ResultLabels {
                what: what.into(),
                result: result.into(),
            })
            .inc();
        self.reload_ok
            .get_or_create(&WhatLabels { what: what.into() })
            .set(i64::from(ok));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ').map(str::to_string))
    }

    #[test]
    fn injections_count_per_pattern_and_every_pattern_is_exposed_from_the_start() {
        let metrics = Metrics::default();
        let text = metrics.encode();
        for pattern in ["sidecar", "adapter", "ambassador"] {
            let series = format!(r#"entourage_injections_total{{pattern="{pattern}"}}"#);
            assert_eq!(sample(&text, &series).as_deref(), Some("0"), "{text}");
        }
        metrics.injection(Pattern::Ambassador);
        metrics.injection(Pattern::Ambassador);
        metrics.injection(Pattern::Sidecar);
        let text = metrics.encode();
        let count = |p: &str| sample(&text, &format!(r#"entourage_injections_total{{pattern="{p}"}}"#));
        assert_eq!(count("ambassador").as_deref(), Some("2"));
        assert_eq!(count("sidecar").as_deref(), Some("1"));
        assert_eq!(count("adapter").as_deref(), Some("0"));
    }

    #[test]
    fn review_kinds_are_labelled_as_the_apiserver_names_them() {
        let metrics = Metrics::default();
        for kind in [Cow::Borrowed("Pod"), Cow::Owned("Deployment".to_string())] {
            let labels = ReviewLabels {
                kind,
                operation: "CREATE",
                decision: "allowed",
            };
            metrics.reviews.get_or_create(&labels).inc();
        }
        let text = metrics.encode();
        for kind in ["Pod", "Deployment"] {
            let series =
                format!(r#"entourage_admission_reviews_total{{kind="{kind}",operation="CREATE",decision="allowed"}}"#);
            assert_eq!(sample(&text, &series).as_deref(), Some("1"), "{text}");
        }
    }
}
