//! The containers entourage injects, and the security context and resources every one of them gets from config.
//!
//! An injected container is written out once, into the patch, and never read back, so it is its own small struct
//! rather than k8s-openapi's `Container`: the parts that come from config (image, security context, resources)
//! are borrowed from it and serialised straight from there, instead of being copied into a dozen new strings and
//! maps for every container of every review. Field names follow the API's spelling (camelCase); the strict schema
//! validation in the tests (`kubernetes-validate`) refuses any field the API does not know.

use std::{borrow::Cow, collections::BTreeMap};

use k8s_openapi::api::core::v1::{Probe, VolumeMount};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::core::{
    annotations::Override,
    config::{self, Config},
    patch::{push_json_str, push_json_strs, JsonText},
};

/// A container entourage adds to a Pod.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Injected<'c> {
    /// Unique in the Pod.
    pub name: String,
    /// From config; never from an annotation.
    pub image: &'c str,
    /// From config.
    pub image_pull_policy: &'static str,
    /// Exec form: nothing here reaches a shell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Exec form.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Mounts, each read-only where the container only reads.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// The ambassador's readiness probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// The ambassador's liveness probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// The native ambassador's startup probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
    /// [`SecurityContext`] from config.
    pub security_context: Fragment<'c, SecurityContext<'c>>,
    /// [`Resources`] from config, or from the Pod's `entourage.dev/<pattern>-resources`.
    pub resources: Fragment<'c, Resources<'c>>,
    /// `Always` for native sidecars (init containers that keep running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<&'static str>,
}

impl<'c> Injected<'c> {
    /// A hardened container named `name` running `image`, the rest left for the caller to fill in; native
    /// sidecars get `restartPolicy: Always`. `resources` is the Pod's override for this container's pattern
    /// (already checked against the maxima): config's requests and limits, with each resource it names set as
    /// both. The rendered cache holds config's own resources only, so an override is serialised for its Pod.
    pub fn new(name: &str, image: &'c str, native: bool, config: &'c Config, resources: Option<&Override>) -> Self {
        let rendered = config.rendered.get(config, |config| {
            (
                serde_json::value::to_raw_value(&SecurityContext::from(config)).expect("a security context serialises"),
                serde_json::value::to_raw_value(&Resources::from(config)).expect("resources serialise"),
            )
        });
        Injected {
            name: name.to_string(),
            image,
            image_pull_policy: config.images.pull_policy.as_str(),
            command: None,
            args: None,
            volume_mounts: Vec::new(),
            readiness_probe: None,
            liveness_probe: None,
            startup_probe: None,
            security_context: match rendered {
                Some(r) => Fragment::Rendered(&r.security_context),
                None => Fragment::Live(SecurityContext::from(config)),
            },
            resources: match (resources, rendered) {
                (Some(own), _) => Fragment::Live(Resources::overridden(config, own)),
                (None, Some(r)) => Fragment::Rendered(&r.resources),
                (None, None) => Fragment::Live(Resources::from(config)),
            },
            restart_policy: native.then_some("Always"),
        }
    }
}

impl Injected<'_> {
    /// The container as JSON text, byte for byte what `serde_json::to_string` writes for it (a test holds it to
    /// that), written by hand: member names as they are, strings copied between quotes unless they need escaping,
    /// the config's rendered fragments as they are. serde_json writes every member name and string through its
    /// escape table; for the seed's sidecar Pod that was an eighth of the webhook's instructions.
    pub(crate) fn to_json_text(&self) -> JsonText {
        let mut out = String::with_capacity(1024);
        out.push_str(r#"{"name":"#);
        push_json_str(&mut out, &self.name);
        out.push_str(r#","image":"#);
        push_json_str(&mut out, self.image);
        out.push_str(r#","imagePullPolicy":"#);
        push_json_str(&mut out, self.image_pull_policy);
        if let Some(command) = &self.command {
            out.push_str(r#","command":"#);
            push_json_strs(&mut out, command);
        }
        if let Some(args) = &self.args {
            out.push_str(r#","args":"#);
            push_json_strs(&mut out, args);
        }
        if !self.volume_mounts.is_empty() {
            out.push_str(r#","volumeMounts":["#);
            for (i, mount) in self.volume_mounts.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_mount(&mut out, mount);
            }
            out.push(']');
        }
        for (name, probe) in [
            (r#","readinessProbe":"#, &self.readiness_probe),
            (r#","livenessProbe":"#, &self.liveness_probe),
            (r#","startupProbe":"#, &self.startup_probe),
        ] {
            if let Some(probe) = probe {
                out.push_str(name);
                push_probe(&mut out, probe);
            }
        }
        out.push_str(r#","securityContext":"#);
        push_fragment(&mut out, &self.security_context);
        out.push_str(r#","resources":"#);
        push_fragment(&mut out, &self.resources);
        if let Some(policy) = self.restart_policy {
            out.push_str(r#","restartPolicy":"#);
            push_json_str(&mut out, policy);
        }
        out.push('}');
        JsonText::written(out)
    }
}

/// Anything through serde_json, appended.
fn push_serde<T: Serialize + ?Sized>(out: &mut String, value: &T) {
    out.push_str(&serde_json::to_string(value).expect("k8s-openapi structs always serialise"));
}

/// A volume mount as k8s-openapi serialises it (members in its order); one with a member entourage never sets
/// goes through serde.
fn push_mount(out: &mut String, mount: &VolumeMount) {
    if mount.mount_propagation.is_some() || mount.recursive_read_only.is_some() {
        return push_serde(out, mount);
    }
    out.push_str(r#"{"mountPath":"#);
    push_json_str(out, &mount.mount_path);
    out.push_str(r#","name":"#);
    push_json_str(out, &mount.name);
    if let Some(read_only) = mount.read_only {
        out.push_str(if read_only {
            r#","readOnly":true"#
        } else {
            r#","readOnly":false"#
        });
    }
    if let Some(sub_path) = &mount.sub_path {
        out.push_str(r#","subPath":"#);
        push_json_str(out, sub_path);
    }
    if let Some(expr) = &mount.sub_path_expr {
        out.push_str(r#","subPathExpr":"#);
        push_json_str(out, expr);
    }
    out.push('}');
}

/// A probe as k8s-openapi serialises it (members in its order): an exec probe by hand, any other through serde.
fn push_probe(out: &mut String, probe: &Probe) {
    let Some(exec) = probe
        .exec
        .as_ref()
        .filter(|_| probe.grpc.is_none() && probe.http_get.is_none() && probe.tcp_socket.is_none())
    else {
        return push_serde(out, probe);
    };
    out.push_str(r#"{"exec":{"#);
    if let Some(command) = &exec.command {
        out.push_str(r#""command":"#);
        push_json_strs(out, command);
    }
    out.push('}');
    let mut number = |name: &str, value: Option<i64>| {
        if let Some(value) = value {
            out.push_str(name);
            out.push_str(itoa::Buffer::new().format(value));
        }
    };
    number(r#","failureThreshold":"#, probe.failure_threshold.map(i64::from));
    number(r#","initialDelaySeconds":"#, probe.initial_delay_seconds.map(i64::from));
    number(r#","periodSeconds":"#, probe.period_seconds.map(i64::from));
    number(r#","successThreshold":"#, probe.success_threshold.map(i64::from));
    number(
        r#","terminationGracePeriodSeconds":"#,
        probe.termination_grace_period_seconds,
    );
    number(r#","timeoutSeconds":"#, probe.timeout_seconds.map(i64::from));
    out.push('}');
}

/// A config fragment: rendered text as it is, a live value through serde.
fn push_fragment<T: Serialize>(out: &mut String, fragment: &Fragment<'_, T>) {
    match fragment {
        Fragment::Rendered(raw) => out.push_str(raw.get()),
        Fragment::Live(value) => push_serde(out, value),
    }
}

/// A part of every injected container that comes from config as it is: its JSON, rendered once per config
/// (`config::Rendered`), or the value itself.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
pub(crate) enum Fragment<'c, T> {
    /// Rendered before.
    Rendered(&'c RawValue),
    /// Serialised now.
    Live(T),
}

/// The hardened security context: non-root with a numeric user (busybox and nginx images are root by default,
/// and `runAsNonRoot` alone makes the kubelet refuse them), no privilege escalation, no capabilities,
/// read-only root filesystem, seccomp. With `hardening.runAsUser: null` no user is set: the image's numeric
/// non-root user applies, or the one the platform assigns (OpenShift's SCC admission sets one from the
/// namespace's range on every container that has none).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SecurityContext<'c> {
    allow_privilege_escalation: bool,
    capabilities: DropAll,
    read_only_root_filesystem: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_as_group: Option<i64>,
    run_as_non_root: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_as_user: Option<i64>,
    seccomp_profile: Seccomp<'c>,
}

/// `capabilities: {drop: [ALL]}`.
#[derive(Debug, Clone, Copy, Serialize)]
struct DropAll {
    drop: [&'static str; 1],
}

/// `seccompProfile: {type: …}`.
#[derive(Debug, Clone, Copy, Serialize)]
struct Seccomp<'c> {
    #[serde(rename = "type")]
    type_: &'c str,
}

impl<'c> From<&'c Config> for SecurityContext<'c> {
    fn from(config: &'c Config) -> Self {
        let h = &config.hardening;
        SecurityContext {
            allow_privilege_escalation: false,
            capabilities: DropAll { drop: ["ALL"] },
            read_only_root_filesystem: h.read_only_root_filesystem,
            run_as_group: h.run_as_group,
            run_as_non_root: true,
            run_as_user: h.run_as_user,
            seccomp_profile: Seccomp {
                type_: match h.seccomp_profile {
                    config::SeccompProfile::RuntimeDefault => "RuntimeDefault",
                    config::SeccompProfile::Unconfined => "Unconfined",
                },
            },
        }
    }
}

/// Requests and limits, as config has them (an empty list is left out), or with a Pod's override.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Resources<'c> {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    limits: Cow<'c, BTreeMap<String, config::Quantity>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    requests: Cow<'c, BTreeMap<String, config::Quantity>>,
}

impl<'c> From<&'c Config> for Resources<'c> {
    fn from(config: &'c Config) -> Self {
        Resources {
            limits: Cow::Borrowed(&config.resources.limits),
            requests: Cow::Borrowed(&config.resources.requests),
        }
    }
}

impl Resources<'_> {
    /// Config's requests and limits, each resource `own` names set to its value as request and as limit.
    fn overridden(config: &Config, own: &Override) -> Self {
        let with = |base: &BTreeMap<String, config::Quantity>| {
            let mut merged = base.clone();
            merged.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
            Cow::Owned(merged)
        };
        Resources {
            limits: with(&config.resources.limits),
            requests: with(&config.resources.requests),
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Capabilities, Container, ResourceRequirements, SeccompProfile};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::{json, Value};

    use super::*;

    /// The same container built with k8s-openapi's own types: what the API calls each field.
    fn typed(injected: &Injected<'_>, config: &Config) -> Container {
        let quantities = |m: &BTreeMap<String, config::Quantity>| {
            (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), Quantity(v.0.clone()))).collect())
        };
        let h = &config.hardening;
        Container {
            name: injected.name.clone(),
            image: Some(injected.image.to_string()),
            image_pull_policy: Some(config.images.pull_policy.as_str().to_string()),
            command: injected.command.clone(),
            args: injected.args.clone(),
            volume_mounts: (!injected.volume_mounts.is_empty()).then(|| injected.volume_mounts.clone()),
            readiness_probe: injected.readiness_probe.clone(),
            liveness_probe: injected.liveness_probe.clone(),
            startup_probe: injected.startup_probe.clone(),
            security_context: Some(k8s_openapi::api::core::v1::SecurityContext {
                allow_privilege_escalation: Some(false),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: None,
                }),
                read_only_root_filesystem: Some(h.read_only_root_filesystem),
                run_as_non_root: Some(true),
                run_as_user: h.run_as_user,
                run_as_group: h.run_as_group,
                seccomp_profile: Some(SeccompProfile {
                    type_: format!("{:?}", h.seccomp_profile),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
            resources: Some(ResourceRequirements {
                requests: quantities(&config.resources.requests),
                limits: quantities(&config.resources.limits),
                claims: None,
            }),
            restart_policy: injected.restart_policy.map(str::to_string),
            ..Container::default()
        }
    }

    #[test]
    fn injected_containers_serialise_as_the_apis_own_container_type_does() {
        let mut configs = vec![Config::default()];
        let mut other = Config::default();
        other.hardening.seccomp_profile = config::SeccompProfile::Unconfined;
        other.hardening.read_only_root_filesystem = false;
        other.resources.limits.clear();
        other.images.pull_policy = config::PullPolicy::Always;
        configs.push(other);
        let mut bare = Config::default();
        bare.resources.limits.clear();
        bare.resources.requests.clear();
        configs.push(bare);
        let mut platform_uid = Config::default();
        platform_uid.hardening.run_as_user = None;
        platform_uid.hardening.run_as_group = None;
        configs.push(platform_uid);
        for config in &configs {
            for native in [false, true] {
                let mut c = Injected::new("sidecar-app", "busybox:1.36", native, config, None);
                c.command = Some(vec!["tail".into(), "-F".into(), "/var/log/app.log".into()]);
                c.volume_mounts.push(VolumeMount {
                    name: "logs".into(),
                    mount_path: "/var/log".into(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                });
                let ours: Value = serde_json::to_value(&c).unwrap();
                assert_eq!(ours, serde_json::to_value(typed(&c, config)).unwrap());
            }
        }
        let c = Injected::new("x", "i", false, &configs[2], None);
        assert_eq!(serde_json::to_value(c).unwrap()["resources"], json!({}));
        let sc =
            serde_json::to_value(Injected::new("x", "i", false, &configs[3], None)).unwrap()["securityContext"].clone();
        assert_eq!(
            (&sc["runAsNonRoot"], sc.get("runAsUser"), sc.get("runAsGroup")),
            (&json!(true), None, None)
        );
    }

    #[test]
    fn the_hand_written_json_is_serde_jsons_byte_for_byte() {
        use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, TCPSocketAction};
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let mut configs = vec![Config::default()];
        let mut other = Config::default();
        other.hardening.run_as_user = None;
        other.resources.limits.clear();
        configs.push(other);
        let own = Override::from([("memory".to_string(), config::Quantity("128Mi".into()))]);
        for config in &configs {
            for native in [false, true] {
                for override_ in [None, Some(&own)] {
                    let mut c = Injected::new("sidecar-\"odd\"\n", "busybox:1.36", native, config, override_);
                    let check = |c: &Injected<'_>| {
                        assert_eq!(c.to_json_text().get(), serde_json::to_string(c).unwrap());
                    };
                    check(&c);
                    c.command = Some(vec!["tail".into(), "-F".into(), "C:\\logs\t\u{1}é".into()]);
                    c.args = Some(vec![]);
                    check(&c);
                    c.args = Some(vec!["--file".into(), "/var/log/app.log".into()]);
                    c.volume_mounts = vec![
                        VolumeMount {
                            name: "logs".into(),
                            mount_path: "/var/log".into(),
                            read_only: Some(true),
                            ..VolumeMount::default()
                        },
                        VolumeMount {
                            name: "state".into(),
                            mount_path: "/var/lib/entourage".into(),
                            read_only: Some(false),
                            sub_path: Some("a\"b".into()),
                            sub_path_expr: Some("$(POD)".into()),
                            ..VolumeMount::default()
                        },
                        VolumeMount {
                            name: "odd".into(),
                            mount_path: "/odd".into(),
                            mount_propagation: Some("HostToContainer".into()),
                            recursive_read_only: Some("Enabled".into()),
                            ..VolumeMount::default()
                        },
                    ];
                    check(&c);
                    c.startup_probe = Some(Probe {
                        exec: Some(ExecAction {
                            command: Some(vec!["/entourage".into(), "started".into()]),
                        }),
                        period_seconds: Some(1),
                        failure_threshold: Some(30),
                        initial_delay_seconds: Some(2),
                        success_threshold: Some(1),
                        termination_grace_period_seconds: Some(-5),
                        timeout_seconds: Some(3),
                        ..Probe::default()
                    });
                    c.readiness_probe = Some(Probe {
                        http_get: Some(HTTPGetAction {
                            path: Some("/ready".into()),
                            port: IntOrString::Int(15000),
                            ..HTTPGetAction::default()
                        }),
                        period_seconds: Some(5),
                        ..Probe::default()
                    });
                    c.liveness_probe = Some(Probe {
                        exec: Some(ExecAction { command: None }),
                        tcp_socket: Some(TCPSocketAction {
                            port: IntOrString::String("http".into()),
                            ..TCPSocketAction::default()
                        }),
                        ..Probe::default()
                    });
                    check(&c);
                    c.liveness_probe = Some(Probe {
                        exec: Some(ExecAction { command: None }),
                        ..Probe::default()
                    });
                    check(&c);
                }
            }
        }
    }

    #[test]
    fn a_shared_config_is_sealed_each_reload_renders_its_own_and_a_clone_is_checked_again() {
        let first = Config::default().into_shared();
        assert!(first.rendered.is_sealed());
        let before = serde_json::to_value(Injected::new("x", "i", false, &first, None)).unwrap();
        assert!(matches!(
            Injected::new("x", "i", false, &first, None).security_context,
            Fragment::Rendered(_)
        ));
        // A reload: a new config, shared in turn, renders its own fragments.
        let mut changed = Config::default();
        changed.hardening.run_as_user = Some(1000);
        let reloaded = changed.clone().into_shared();
        let after = serde_json::to_value(Injected::new("x", "i", false, &reloaded, None)).unwrap();
        assert_eq!(after["securityContext"]["runAsUser"], json!(1000));
        assert_eq!(before["securityContext"]["runAsUser"], json!(65534));
        assert_eq!(
            after,
            serde_json::to_value(Injected::new("x", "i", false, &changed, None)).unwrap()
        );
        // A clone of a sealed config may be changed: it is checked again.
        let mut copy = (*first).clone();
        assert!(!copy.rendered.is_sealed());
        copy.hardening.run_as_user = Some(7);
        let c = Injected::new("x", "i", false, &copy, None);
        assert!(matches!(c.security_context, Fragment::Live(_)));
        assert_eq!(
            serde_json::to_value(c).unwrap()["securityContext"]["runAsUser"],
            json!(7)
        );
    }

    #[test]
    fn a_config_changed_after_its_first_use_is_followed_not_served_from_what_was_rendered() {
        let mut config = Config::default();
        let rendered = serde_json::to_value(Injected::new("x", "i", false, &config, None)).unwrap();
        assert!(matches!(
            Injected::new("x", "i", false, &config, None).security_context,
            Fragment::Rendered(_)
        ));
        config.hardening.run_as_user = Some(1000);
        config
            .resources
            .limits
            .insert("cpu".into(), config::Quantity("1".into()));
        let c = Injected::new("x", "i", false, &config, None);
        assert!(matches!(c.security_context, Fragment::Live(_)));
        let changed = serde_json::to_value(&c).unwrap();
        assert_eq!(changed, serde_json::to_value(typed(&c, &config)).unwrap());
        assert_eq!(changed["securityContext"]["runAsUser"], json!(1000));
        assert_eq!(changed["resources"]["limits"]["cpu"], json!("1"));
        assert_ne!(changed, rendered);
        // The same config rendered fresh says the same as the live one.
        let fresh = config.clone();
        let fresh_config = Config {
            rendered: config::Rendered::default(),
            ..fresh
        };
        assert_eq!(
            serde_json::to_value(Injected::new("x", "i", false, &fresh_config, None)).unwrap(),
            changed
        );
    }

    #[test]
    fn a_pods_override_sets_request_and_limit_of_what_it_names_and_leaves_the_cache_alone() {
        let config = Config::default();
        let cached = serde_json::to_value(Injected::new("x", "i", false, &config, None)).unwrap();
        let own = Override::from([
            ("memory".to_string(), config::Quantity("128Mi".into())),
            ("ephemeral-storage".to_string(), config::Quantity("1Gi".into())),
        ]);
        let c = Injected::new("x", "i", false, &config, Some(&own));
        assert!(matches!(c.resources, Fragment::Live(_)));
        assert!(matches!(c.security_context, Fragment::Rendered(_)));
        let overridden = serde_json::to_value(&c).unwrap();
        assert_eq!(
            overridden["resources"],
            json!({
                "limits": {"cpu": "200m", "memory": "128Mi", "ephemeral-storage": "1Gi"},
                "requests": {"cpu": "10m", "memory": "128Mi", "ephemeral-storage": "1Gi"},
            })
        );
        // The next container without an override is served from the cache, unchanged.
        let after = Injected::new("x", "i", false, &config, None);
        assert!(matches!(after.resources, Fragment::Rendered(_)));
        assert_eq!(serde_json::to_value(after).unwrap(), cached);
    }
}
