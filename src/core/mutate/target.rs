//! Which container is the app: the one whose log directories get the shared volume and whose env gets the
//! ambassador's URL.
//!
//! Other injectors run before or after entourage and some put their container *first* (Istio's `istio-proxy` in
//! classic mode, GKE's `gke-gcsfuse-sidecar`, Vault's `vault-agent`), so "the first container" would move the log
//! volume into a proxy. The rule, in order:
//! 1. `entourage.dev/target-container`, which must name a container (else the Pod is denied);
//! 2. `kubectl.kubernetes.io/default-container`, the annotation `kubectl logs` and `kubectl exec` already honour,
//!    when it names a container (else one warning, and on to 3);
//! 3. the first container that is not a known injected one ([`KNOWN_INJECTED`], or entourage's own image);
//! 4. the first container, with a warning, when every container is a known injected one.
//!
//! The list is matched by exact name only: a generic name such as `envoy` (AWS App Mesh, OSM) is left out on
//! purpose, because apps use it for their own containers; such Pods name their app with rule 1 or 2.

use serde_json::Value;

use crate::core::config::Config;

/// The annotation `kubectl logs`, `kubectl exec` and `kubectl attach` use to pick a Pod's default container.
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// A container another injector adds to Pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownInjected {
    /// The container's name, as that injector writes it.
    pub name: &'static str,
    /// Who injects it.
    pub injector: &'static str,
}

/// Containers that well-known injectors add to `spec.containers`; never taken as the app by default.
/// `docs/apps.md` lists the same (a test compares them row by row).
pub const KNOWN_INJECTED: &[KnownInjected] = &[
    KnownInjected {
        name: "istio-proxy",
        injector: "Istio",
    },
    KnownInjected {
        name: "linkerd-proxy",
        injector: "Linkerd",
    },
    KnownInjected {
        name: "vault-agent",
        injector: "HashiCorp Vault Agent injector",
    },
    KnownInjected {
        name: "daprd",
        injector: "Dapr",
    },
    KnownInjected {
        name: "consul-dataplane",
        injector: "Consul (1.14 and later)",
    },
    KnownInjected {
        name: "envoy-sidecar",
        injector: "Consul (before 1.14)",
    },
    KnownInjected {
        name: "consul-sidecar",
        injector: "Consul (before 1.14)",
    },
    KnownInjected {
        name: "kuma-sidecar",
        injector: "Kuma, Kong Mesh",
    },
    KnownInjected {
        name: "nginx-mesh-sidecar",
        injector: "NGINX Service Mesh",
    },
    KnownInjected {
        name: "gke-gcsfuse-sidecar",
        injector: "GKE Cloud Storage FUSE CSI driver",
    },
    KnownInjected {
        name: "otc-container",
        injector: "OpenTelemetry Operator (sidecar collector)",
    },
];

/// Without `entourage.dev/target-container` (the caller's rule 1): the app container's index in `containers` (not
/// empty), and a warning when the rule had to fall back. `default_container` is the Pod's
/// `kubectl.kubernetes.io/default-container`.
pub(crate) fn choose(
    containers: &[Value],
    default_container: Option<&str>,
    config: &Config,
) -> (usize, Option<String>) {
    fn name(c: &Value) -> &str {
        c.get("name").and_then(Value::as_str).unwrap_or_default()
    }
    let mut warning = None;
    if let Some(wanted) = default_container {
        match containers.iter().position(|c| name(c) == wanted) {
            Some(i) => return (i, None),
            None => {
                warning = Some(format!(
                    "entourage: {DEFAULT_CONTAINER} {wanted:?} names no container of this Pod; the app container is chosen by entourage's own rule"
                ));
            }
        }
    }
    let ours = repository(&config.images.entourage);
    let injected = |c: &Value| {
        KNOWN_INJECTED.iter().any(|k| k.name == name(c))
            || c.get("image").and_then(Value::as_str).map(repository) == Some(ours)
    };
    match containers.iter().position(|c| !injected(c)) {
        Some(i) => (i, warning),
        None => {
            let first = name(&containers[0]);
            let all = format!(
                "entourage: every container of this Pod is a known injected one; the app container is the first, {first:?}: name it with entourage.dev/target-container"
            );
            let warning = match warning {
                Some(missing) => format!("{missing}; {all}"),
                None => all,
            };
            (0, Some(warning))
        }
    }
}

/// An image reference without its tag or digest: `ghcr.io/x/y:1.2@sha256:…` → `ghcr.io/x/y`, so that a Pod injected
/// by an older entourage still has its containers recognised.
fn repository(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    match image.rfind(':') {
        // A colon after the last slash starts the tag; one before it is a registry's port.
        Some(colon) if image[colon..].find('/').is_none() => &image[..colon],
        _ => image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn containers(names: &[&str]) -> Vec<Value> {
        names.iter().map(|n| json!({"name": n, "image": "app:1"})).collect()
    }

    #[test]
    fn the_first_container_that_no_injector_added_is_the_app() {
        let config = Config::default();
        let pod = containers(&["istio-proxy", "vault-agent", "web", "daprd"]);
        assert_eq!(choose(&pod, None, &config), (2, None));
        assert_eq!(choose(&containers(&["web", "istio-proxy"]), None, &config), (0, None));
    }

    #[test]
    fn kubectls_default_container_wins_over_the_order_when_it_names_a_container() {
        let config = Config::default();
        let pod = containers(&["istio-proxy", "web", "worker"]);
        assert_eq!(choose(&pod, Some("worker"), &config), (2, None));
        let (index, warning) = choose(&pod, Some("wrker"), &config);
        assert_eq!(index, 1);
        let warning = warning.expect("a warning names the missing container");
        assert!(
            warning.contains(DEFAULT_CONTAINER) && warning.contains("\"wrker\""),
            "{warning}"
        );
    }

    #[test]
    fn entourages_own_image_of_any_version_is_not_the_app() {
        let config = Config::default();
        let ours = json!({"name": "sidecar-access", "image": "ghcr.io/entourage-dev/entourage:0.0.1"});
        let pod = vec![ours, json!({"name": "web", "image": "registry.example.com:5000/web:2"})];
        assert_eq!(choose(&pod, None, &config), (1, None));
    }

    #[test]
    fn a_pod_of_injected_containers_only_gets_its_first_and_a_warning() {
        let (index, warning) = choose(&containers(&["istio-proxy", "daprd"]), None, &Config::default());
        assert_eq!(index, 0);
        assert!(warning.unwrap().contains("entourage.dev/target-container"));
    }

    #[test]
    fn repository_drops_tag_and_digest_but_not_a_registry_port() {
        assert_eq!(repository("ghcr.io/a/b:1.2"), "ghcr.io/a/b");
        assert_eq!(repository("ghcr.io/a/b@sha256:00"), "ghcr.io/a/b");
        assert_eq!(repository("ghcr.io/a/b:1@sha256:00"), "ghcr.io/a/b");
        assert_eq!(repository("localhost:5000/b"), "localhost:5000/b");
        assert_eq!(repository("localhost:5000/b:3"), "localhost:5000/b");
        assert_eq!(repository("busybox"), "busybox");
    }

    #[test]
    fn the_list_of_injected_containers_is_the_one_docs_apps_md_shows() {
        let page = include_str!("../../../docs/apps.md");
        let rows: Vec<String> = page
            .lines()
            .skip_while(|l| !l.starts_with("| container | injected by |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(str::to_string)
            .collect();
        let expected: Vec<String> = KNOWN_INJECTED
            .iter()
            .map(|k| format!("| `{}` | {} |", k.name, k.injector))
            .collect();
        assert_eq!(rows, expected, "docs/apps.md's table of injected containers");
    }
}
