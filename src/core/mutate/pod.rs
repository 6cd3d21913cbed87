//! Pods: reads the annotations, plans the injected containers, volumes, mounts and env, and emits the patch.
//!
//! The plan is built with typed k8s-openapi structs (readable, and every field spelled right) but only *added*
//! to the Pod: the Pod itself is read as raw JSON and never round-tripped, so fields this build does not know
//! survive untouched.

use serde_json::Value;

use super::{
    ambassador, logs,
    plan::{Plan, PodView},
    profile, target, windows, Outcome, Reason, Verdict,
};
use crate::support::names::Taken;
use crate::{
    core::annotations::{self, AnnotationError},
    core::config::{Config, SidecarMode},
    core::patch::{key, push_json_str, push_json_strs, PatchBuilder, Step},
    core::reads::Reads,
};

/// Every part of a Pod that [`mutate_pod`] reads, with its type (the webhook parses only these, see
/// `crate::admission::pruned`, and answers 400 to a Pod where one has another type). Whoever makes the core read
/// another field adds it here, or the webhook will not see it.
pub const READS: Reads = Reads::Members(&[
    ("kind", Reads::Text),
    (
        "metadata",
        Reads::Members(&[
            ("name", Reads::Text),
            ("generateName", Reads::Text),
            ("namespace", Reads::Text),
            // Only entourage's own annotations and kubectl's default container are read, and of the labels only
            // the Job controller's.
            (
                "annotations",
                Reads::Prefixes(&[annotations::PREFIX, target::DEFAULT_CONTAINER], &Reads::Text),
            ),
            (
                "labels",
                Reads::Members(&[(JOB_NAME_LABEL, Reads::Text), (LEGACY_JOB_NAME_LABEL, Reads::Text)]),
            ),
            (
                "ownerReferences",
                Reads::Each(&Reads::Members(&[("kind", Reads::Text), ("controller", Reads::Flag)])),
            ),
        ]),
    ),
    (
        "spec",
        Reads::Members(&[
            ("containers", Reads::Each(&CONTAINER_READS)),
            ("initContainers", Reads::Each(&CONTAINER_READS)),
            (
                "ephemeralContainers",
                Reads::Each(&Reads::Members(&[("name", Reads::Text)])),
            ),
            ("volumes", Reads::Each(&Reads::Members(&[("name", Reads::Text)]))),
            // Whether the Pod runs on Windows (`windows`).
            ("os", Reads::Members(&[("name", Reads::Text)])),
            ("nodeSelector", Reads::Members(&[("kubernetes.io/os", Reads::Text)])),
        ]),
    ),
]);

/// What is read of each container: its name and what `add_container` compares, its ports, mounts and the env
/// entries the ambassador's env var could collide with (`ambassador::reads_env`).
const CONTAINER_READS: Reads = Reads::Members(&[
    ("name", Reads::Text),
    ("image", Reads::Text),
    ("command", Reads::Each(&Reads::Text)),
    ("args", Reads::Each(&Reads::Text)),
    (
        "ports",
        Reads::Each(&Reads::Members(&[("containerPort", Reads::Integer)])),
    ),
    (
        "volumeMounts",
        Reads::Each(&Reads::Members(&[
            ("name", Reads::Text),
            ("mountPath", Reads::Text),
            ("subPath", Reads::Text),
            ("subPathExpr", Reads::Text),
        ])),
    ),
    ("env", Reads::EachNamed("name")),
]);

/// The label the Job controller puts on its Pods, and the one it used to.
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
const LEGACY_JOB_NAME_LABEL: &str = "job-name";

/// `object.<path…>`, walked member by member (`Value::pointer` unescapes and allocates every token).
fn member<'v>(object: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(object, |node, key| node.get(key))
}

/// Injects what a Pod's annotations ask for; the namespace (for its default profile) is the Pod's own
/// `metadata.namespace`.
pub fn mutate_pod(pod: &Value, config: &Config) -> Outcome {
    let namespace = member(pod, &["metadata", "namespace"]).and_then(Value::as_str);
    mutate_pod_in(pod, namespace, config)
}

/// Injects what a Pod's annotations ask for, in `namespace` (the admission request's: a Pod being created may
/// carry none in its metadata).
pub fn mutate_pod_in(pod: &Value, namespace: Option<&str>, config: &Config) -> Outcome {
    inject(pod, namespace, config, is_job_owned(pod))
}

/// Injects into the Pod template of a workload (`entourage inject`). A template has no ownerReferences, so the
/// caller says whether its Pods will belong to a Job (Job and CronJob templates): in classic mode such Pods never
/// complete, and the user is warned. `namespace` is the workload's, for its default profile. The patch applies to
/// the template.
pub fn mutate_pod_template(template: &Value, namespace: &str, config: &Config, job_owned: bool) -> Outcome {
    inject(template, Some(namespace), config, job_owned)
}

fn inject(pod: &Value, namespace: Option<&str>, config: &Config, job_owned: bool) -> Outcome {
    let own = member(pod, &["metadata", "annotations"]).and_then(Value::as_object);
    if own.and_then(|a| a.get(annotations::INJECT)).and_then(Value::as_str) == Some("false") {
        return Outcome::unchanged(Reason::OptedOut);
    }
    // Injected already (the apiserver's reinvocation, a `kubectl debug --copy-to`): the answer was given, and is
    // not given again. Before anything is parsed: the first review read the Pod with its namespace's profile, which
    // an injected Pod no longer gets, so its annotations alone may not pass again (a profile's lower
    // `ambassador-port`, say).
    if own.is_some_and(|a| a.contains_key(annotations::STATUS)) {
        return Outcome::unchanged(Reason::AlreadyInjected);
    }
    // The Pod's annotations with its profile's settings added where it sets none.
    let with_profile = match profile::apply(own, namespace, config) {
        Ok(merged) => merged,
        Err(denial) => return Outcome::deny(join(&[denial]), Vec::new()),
    };
    let annotations = with_profile.as_deref();
    // Before the values are checked: a Windows author writes Windows paths (`C:\logs\app.log`), and the answer
    // they need is that entourage cannot run there, not that the path is not absolute. The Pod's own annotations
    // only: what its author can remove (a profile's settings are not on the Pod).
    if let Some(denial) = own.and_then(|a| windows::denial(pod, a)) {
        return Outcome {
            reason: Reason::UnsupportedOs,
            ..Outcome::deny(denial.to_string(), Vec::new())
        };
    }
    let parsed = match annotations::parse_pod(annotations, config) {
        Ok(parsed) => parsed,
        Err(errors) => return Outcome::deny(join(&errors), Vec::new()),
    };
    let mut warnings = parsed.warnings;
    let mut request = parsed.request;
    if request.status.is_some() {
        return Outcome::unchanged(Reason::AlreadyInjected);
    }
    if !request.wants_injection() {
        return Outcome::unchanged_with(Reason::NotRequested, warnings);
    }
    let array = |field: &str| {
        member(pod, &["spec", field])
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    };
    let containers = array("containers");
    if containers.is_empty() || containers.iter().any(|c| !c.is_object()) {
        warnings.push("entourage: the Pod has no valid spec.containers; nothing injected".into());
        return Outcome::unchanged_with(Reason::MalformedObject, warnings);
    }
    let target_index = match &request.target_container {
        None => {
            let default_container = annotations
                .and_then(|a| a.get(target::DEFAULT_CONTAINER))
                .and_then(Value::as_str);
            let (index, warning) = target::choose(containers, default_container, config);
            warnings.extend(warning);
            index
        }
        Some(name) => match containers
            .iter()
            .position(|c| c.get("name").and_then(Value::as_str) == Some(name))
        {
            Some(i) => i,
            None => {
                let known: Vec<&str> = containers.iter().filter_map(|c| c.get("name")?.as_str()).collect();
                let rule = format!("names no container of this Pod (containers: {})", known.join(", "));
                return Outcome::deny(
                    join(&[AnnotationError {
                        key: annotations::TARGET_CONTAINER,
                        value: name.clone(),
                        rule,
                    }]),
                    warnings,
                );
            }
        },
    };
    let view = PodView {
        containers,
        init_containers: array("initContainers"),
        target_index,
    };
    let native = match config.sidecars.mode {
        SidecarMode::Native => true,
        SidecarMode::Classic => false,
        SidecarMode::Auto => config.cluster_has_native_sidecars(),
    };
    let container_names = Taken::new(
        view.all_containers()
            .chain(array("ephemeralContainers"))
            .filter_map(|c| c.get("name").and_then(Value::as_str)),
    );
    let volume_names = Taken::new(
        array("volumes")
            .iter()
            .filter_map(|v| v.get("name").and_then(Value::as_str)),
    );
    let mut plan = Plan {
        native,
        containers: Vec::new(),
        present: Vec::new(),
        volumes: Vec::new(),
        app_mounts: Vec::new(),
        app_env: Vec::new(),
        container_names,
        volume_names,
        warnings,
        resources: std::mem::take(&mut request.resources),
        revision: config.revision.as_deref(),
    };

    let mut mounts = logs::LogMounts::default();
    logs::plan_sidecars(&request.sidecar_logs, &view, config, &mut mounts, &mut plan);
    if let Some(adapter) = &request.adapter {
        logs::plan_adapters(adapter, &view, config, &mut mounts, &mut plan);
    }
    if let Err(errors) = ambassador::plan(&request.ambassadors, &view, config, &mut plan) {
        return Outcome::deny(join(&errors), plan.warnings);
    }
    if !native && job_owned && !plan.containers.is_empty() {
        plan.warnings.push(
            "entourage: sidecars.mode is classic, so this Job's Pod keeps running after the app exits and the Job will not complete"
                .into(),
        );
    }
    emit(pod, &view, plan)
}

/// A Pod created by a Job: a controller ownerReference of kind Job, or the Job controller's label.
fn is_job_owned(pod: &Value) -> bool {
    let owned = pod
        .get("metadata")
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                r.get("kind").and_then(Value::as_str) == Some("Job")
                    && r.get("controller").and_then(Value::as_bool) == Some(true)
            })
        });
    let labels = member(pod, &["metadata", "labels"]).and_then(Value::as_object);
    owned || labels.is_some_and(|l| l.contains_key(JOB_NAME_LABEL) || l.contains_key(LEGACY_JOB_NAME_LABEL))
}

fn emit(pod: &Value, view: &PodView<'_>, plan: Plan) -> Outcome {
    let mut b = PatchBuilder::new(pod);
    for volume in &plan.volumes {
        b.add_serialized(&[key("spec"), key("volumes"), Step::End], volume);
    }
    let app = [key("spec"), key("containers"), Step::Index(view.target_index)];
    for mount in &plan.app_mounts {
        b.add_serialized(&[app[0], app[1], app[2], key("volumeMounts"), Step::End], mount);
    }
    for env in &plan.app_env {
        b.add_serialized(&[app[0], app[1], app[2], key("env"), Step::End], env);
    }
    for (i, (_, container)) in plan.containers.iter().enumerate() {
        let text = container.to_json_text();
        if plan.native {
            // Native sidecars go first: appended after the user's init containers they would wait for each of them.
            b.add_text(&[key("spec"), key("initContainers"), Step::Index(i)], text);
        } else {
            b.add_text(&[key("spec"), key("containers"), Step::End], text);
        }
    }
    if plan.containers.is_empty() {
        return Outcome::unchanged_with(Reason::AlreadyInjected, plan.warnings);
    }
    let status = InjectionStatus {
        containers: plan.containers.iter().map(|(_, c)| c.name.as_str()).collect(),
        mode: if plan.native { "native" } else { "classic" },
        revision: plan.revision,
        version: env!("CARGO_PKG_VERSION"),
        volumes: plan.volumes.iter().map(|v| v.name.as_str()).collect(),
    };
    b.set_annotation(&[key("metadata")], annotations::STATUS, &status.to_json());
    Outcome {
        verdict: Verdict::Allow,
        reason: Reason::Injected,
        patch: b.finish(),
        warnings: plan.warnings,
        injected: plan.containers.iter().map(|(p, _)| *p).collect(),
        generate_name: None,
    }
}

/// The `entourage.dev/status` annotation: what was injected, by which version.
#[derive(serde::Serialize)]
struct InjectionStatus<'a> {
    // In this order, the one it has always had (members sorted by name).
    containers: Vec<&'a str>,
    mode: &'static str,
    /// The config's `revision`; left out for the default revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<&'a str>,
    version: &'static str,
    volumes: Vec<&'a str>,
}

impl InjectionStatus<'_> {
    /// The annotation's value, byte for byte what `serde_json::to_string` writes (a test holds it to that),
    /// without serde's escape table for each member name.
    fn to_json(&self) -> String {
        let mut out = String::with_capacity(160);
        out.push_str(r#"{"containers":"#);
        push_json_strs(&mut out, &self.containers);
        out.push_str(r#","mode":"#);
        push_json_str(&mut out, self.mode);
        if let Some(revision) = self.revision {
            out.push_str(r#","revision":"#);
            push_json_str(&mut out, revision);
        }
        out.push_str(r#","version":"#);
        push_json_str(&mut out, self.version);
        out.push_str(r#","volumes":"#);
        push_json_strs(&mut out, &self.volumes);
        out.push('}');
        out
    }
}

fn join(errors: &[AnnotationError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::InjectionStatus;

    #[test]
    fn the_status_annotation_is_written_as_serde_json_writes_it() {
        for revision in [None, Some("canary"), Some("odd \"one\"\n")] {
            let status = InjectionStatus {
                containers: vec!["sidecar-access", "adapter-app", "ambassador"],
                mode: "native",
                revision,
                version: "0.1.0",
                volumes: vec!["entourage-var-log-nginx", "entourage-state"],
            };
            assert_eq!(status.to_json(), serde_json::to_string(&status).unwrap());
        }
        let empty = InjectionStatus {
            containers: vec![],
            mode: "classic",
            revision: None,
            version: "0.1.0",
            volumes: vec![],
        };
        assert_eq!(empty.to_json(), serde_json::to_string(&empty).unwrap());
    }
}
