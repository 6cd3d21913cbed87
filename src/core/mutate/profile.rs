//! Profiles: the platform team's annotation-level settings, by name (config `profiles`), that a Pod picks with
//! `entourage.dev/profile` or gets from its namespace (config `namespaceProfiles`).
//!
//! A profile is applied as annotations: each setting the Pod does not set itself becomes the Pod's annotation
//! before the one annotation parser reads them, so a profile's value and a Pod's value follow the same grammar
//! and the same maxima (`resources.maxima` bounds both). A setting applies only when the Pod asks for its
//! pattern (`adapter-format` with `adapter-logs`, `sidecar-resources` with `sidecar-logs`…): a profile written
//! for all three patterns serves a Pod that asks for one. A profile never asks for containers, never names a
//! file, an upstream, the app container or an image.
//!
//! Why the namespace default is config and not a namespace label: a mutating webhook is sent the Pod, never its
//! Namespace, so a label would cost either an API call per review or a watch of every Namespace (RBAC to list
//! them cluster-wide, a cache that can be stale) or one webhook entry per profile selecting namespaces by label
//! (a Pod matched by two entries is sent twice). A map in config costs one lookup per review, is reloaded with
//! the config, and is written by the team that writes the profiles.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::core::annotations::{self as a, AnnotationError};
use crate::core::config::{self, Config, ConfigError};

/// The annotations a profile may set, each with the annotations one of which must ask for its pattern.
pub const SETTINGS: &[(&str, &[&str])] = &[
    (a::ADAPTER_FORMAT, ADAPTER),
    (a::ADAPTER_FIELDS, ADAPTER),
    (a::ADAPTER_MULTILINE, ADAPTER),
    (a::ADAPTER_TIME_KEY, ADAPTER),
    (a::ADAPTER_RENAME, ADAPTER),
    (a::ADAPTER_LEVEL, ADAPTER),
    (a::ADAPTER_RESOURCES, ADAPTER),
    (a::SIDECAR_RESOURCES, &[a::SIDECAR_LOGS]),
    (a::AMBASSADOR_PORT, AMBASSADOR),
    (a::AMBASSADOR_AUTH_SECRET, AMBASSADOR),
    (a::AMBASSADOR_CLIENT_CERT_SECRET, AMBASSADOR),
    (a::AMBASSADOR_CA, AMBASSADOR),
    (a::AMBASSADOR_TOKEN_AUDIENCE, AMBASSADOR),
    (a::AMBASSADOR_OAUTH2, AMBASSADOR),
    (a::AMBASSADOR_RESOURCES, AMBASSADOR),
];
const ADAPTER: &[&str] = &[a::ADAPTER_LOGS];
const AMBASSADOR: &[&str] = &[a::AMBASSADOR_UPSTREAM, a::AMBASSADOR_UPSTREAMS];

/// The annotation a profile's `key` stands for, and what must ask for its pattern.
fn setting(key: &str) -> Option<(&'static str, &'static [&'static str])> {
    SETTINGS
        .iter()
        .find(|(full, _)| full.strip_prefix(a::PREFIX) == Some(key))
        .copied()
}

/// The Pod's annotations with its profile applied: its own `entourage.dev/profile`, else its namespace's default,
/// else none (the annotations as they are). A profile name that config does not know denies the Pod. A Pod that
/// carries `entourage.dev/status` was injected before (a reinvocation): its profile was applied then, and is not
/// looked up again.
pub(crate) fn apply<'m>(
    annotations: Option<&'m Map<String, Value>>,
    namespace: Option<&str>,
    config: &Config,
) -> Result<Option<Cow<'m, Map<String, Value>>>, AnnotationError> {
    if annotations.is_some_and(|m| m.contains_key(a::STATUS)) {
        return Ok(annotations.map(Cow::Borrowed));
    }
    let own = annotations.and_then(|m| m.get(a::PROFILE)).and_then(Value::as_str);
    let name = match own {
        Some(name) => name,
        None => match namespace.and_then(|ns| config.namespace_profiles.get(ns)) {
            Some(name) => name.as_str(),
            None => return Ok(annotations.map(Cow::Borrowed)),
        },
    };
    let Some(profile) = config.profiles.get(name) else {
        return Err(AnnotationError {
            key: a::PROFILE,
            value: name.to_string(),
            rule: format!(
                "names no profile of this cluster ({})",
                config::known_profiles(&config.profiles)
            ),
        });
    };
    let mut merged = annotations.cloned().unwrap_or_default();
    for (key, value) in profile {
        let Some((full, needs)) = setting(key) else { continue };
        if !merged.contains_key(full) && needs.iter().any(|n| merged.contains_key(*n)) {
            merged.insert(full.to_string(), Value::String(value.clone()));
        }
    }
    Ok(Some(Cow::Owned(merged)))
}

/// Every setting of every profile that the annotation parser refuses, or that a profile may not hold; one line
/// each, naming `profiles.<name>.<key>`. Each profile is parsed as the annotations of a Pod that asks for every
/// pattern its settings need, with one upstream: a profile holds one value for all upstreams.
pub fn problems(config: &Config) -> Vec<String> {
    let mut p = Vec::new();
    for (name, profile) in &config.profiles {
        let mut pod = Map::new();
        for (key, value) in profile {
            let Some((full, needs)) = setting(key) else {
                let keys: Vec<&str> = SETTINGS.iter().filter_map(|(k, _)| k.strip_prefix(a::PREFIX)).collect();
                p.push(format!(
                    "profiles.{name}.{key}: is not a setting a profile may hold ({})",
                    keys.join(", ")
                ));
                continue;
            };
            pod.insert(full.to_string(), Value::String(value.clone()));
            let example = match needs[0] {
                a::SIDECAR_LOGS => "/var/log/profile/sidecar.log",
                a::ADAPTER_LOGS => "/var/log/profile/adapter.log",
                _ => "http://profile.example",
            };
            pod.insert(needs[0].to_string(), Value::String(example.into()));
        }
        if let Err(errors) = a::parse_pod(Some(&pod), config) {
            for e in errors {
                let key = e.key.strip_prefix(a::PREFIX).unwrap_or(e.key);
                // Only what the profile holds: the example files and upstream are not its (at
                // `sidecars.maxLogFiles: 1` the two example files alone are one too many).
                if !profile.contains_key(key) {
                    continue;
                }
                p.push(format!("profiles.{name}.{key}: {:?} {}", e.value, e.rule));
            }
        }
    }
    p
}

/// Reads and checks config text: [`Config::from_yaml`], then the values of its profiles, which the annotation
/// parser checks. What the webhook, its reload and the offline tools load.
pub fn load_config(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let config = Config::from_yaml(text, origin)?;
    let problems = problems(&config);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid {
            origin: origin.to_string(),
            problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(yaml: &str) -> Config {
        load_config(yaml, "test").unwrap()
    }

    const WEB: &str = "profiles:\n  web:\n    adapter-format: nginx\n    sidecar-resources: memory=128Mi\n    ambassador-port: \"9100\"\nnamespaceProfiles:\n  shop: web\n";

    fn annotations(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_profile_fills_in_only_what_the_pod_leaves_out_and_only_for_patterns_it_asks_for() {
        let config = config(WEB);
        let pod = annotations(json!({
            "entourage.dev/profile": "web",
            "entourage.dev/adapter-logs": "/var/log/a.log",
            "entourage.dev/sidecar-resources": "memory=64Mi",
            "entourage.dev/sidecar-logs": "/var/log/b.log",
        }));
        let merged = apply(Some(&pod), None, &config).unwrap().unwrap();
        assert_eq!(merged["entourage.dev/adapter-format"], "nginx");
        assert_eq!(
            merged["entourage.dev/sidecar-resources"], "memory=64Mi",
            "the Pod's own value wins"
        );
        assert!(
            !merged.contains_key("entourage.dev/ambassador-port"),
            "no upstream: no ambassador setting"
        );
    }

    #[test]
    fn the_namespace_default_applies_without_the_annotation_and_the_annotation_overrides_it() {
        let mut config = config(WEB);
        config.profiles.insert(
            "batch".into(),
            [("adapter-format".to_string(), "json".to_string())].into(),
        );
        let pod = annotations(json!({"entourage.dev/adapter-logs": "/var/log/a.log"}));
        let merged = apply(Some(&pod), Some("shop"), &config).unwrap().unwrap();
        assert_eq!(merged["entourage.dev/adapter-format"], "nginx");
        let untouched = apply(Some(&pod), Some("elsewhere"), &config).unwrap().unwrap();
        assert!(matches!(untouched, Cow::Borrowed(_)));
        let mut picked = pod.clone();
        picked.insert("entourage.dev/profile".into(), json!("batch"));
        let merged = apply(Some(&picked), Some("shop"), &config).unwrap().unwrap();
        assert_eq!(merged["entourage.dev/adapter-format"], "json");
    }

    #[test]
    fn operations_md_lists_every_setting_and_its_example_loads() {
        let page = include_str!("../../../docs/operations.md");
        let section = &page[page.find("### Profiles and namespace defaults").unwrap()..];
        let start = section.find("```yaml\n").unwrap() + "```yaml\n".len();
        let example = &section[start..start + section[start..].find("```").unwrap()];
        let loaded = load_config(example, "docs/operations.md").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.namespace_profiles["shop"], "web");
        let list = &section[section.find("**What a profile may hold:**").unwrap()..];
        let list = &list[..list.find("(`mutate::profile::SETTINGS`)").unwrap()];
        let documented: Vec<&str> = list.split('`').skip(1).step_by(2).collect();
        let settings: Vec<&str> = SETTINGS.iter().filter_map(|(k, _)| k.strip_prefix(a::PREFIX)).collect();
        assert_eq!(documented, settings);
    }

    #[test]
    fn a_pod_injected_before_is_not_given_its_profile_again_nor_denied_for_it() {
        let pod = annotations(json!({"entourage.dev/profile": "gone", "entourage.dev/status": "{}"}));
        let same = apply(Some(&pod), Some("shop"), &config(WEB)).unwrap().unwrap();
        assert!(matches!(same, Cow::Borrowed(_)));
    }

    #[test]
    fn an_unknown_profile_names_the_known_ones() {
        let pod = annotations(json!({"entourage.dev/profile": "wbe"}));
        let e = apply(Some(&pod), None, &config(WEB)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "entourage.dev/profile: \"wbe\" names no profile of this cluster (known profiles: web)"
        );
        let e = apply(Some(&pod), None, &Config::default()).unwrap_err();
        assert!(e.to_string().ends_with("(no profiles are configured)"), "{e}");
    }

    #[test]
    fn profile_values_are_checked_at_load_by_the_annotation_parser_and_within_the_maxima() {
        let yaml = "profiles:\n  big:\n    sidecar-resources: memory=4Gi\n    adapter-format: yaml\n    sidecar-logs: /var/log/x.log\n    ambassador-auth-secret: a=tok\n";
        let err = load_config(yaml, "test").unwrap_err().to_string();
        for part in [
            "profiles.big.sidecar-resources: ",
            "profiles.big.adapter-format: \"yaml\" is not a known format",
            "profiles.big.sidecar-logs: is not a setting a profile may hold",
            "profiles.big.ambassador-auth-secret",
        ] {
            assert!(err.contains(part), "{part} missing from {err}");
        }
        let one_file = "sidecars:\n  maxLogFiles: 1\nprofiles:\n  both:\n    sidecar-resources: cpu=50m\n    adapter-format: json\n";
        assert!(
            load_config(one_file, "test").is_ok(),
            "the example files are not the profile's"
        );
        let err = load_config("namespaceProfiles:\n  shop: web\n", "test")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("namespaceProfiles.shop: \"web\" is not a profile"),
            "{err}"
        );
    }
}
