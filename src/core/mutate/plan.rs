//! What a Pod looks like to the planners, and what they plan to add to it: the types `pod` builds and hands to
//! `logs` and `ambassador`, which fill in the plan that `pod` then turns into the patch.

use k8s_openapi::api::core::v1::{EnvVar, Volume, VolumeMount};
use serde_json::Value;

use super::{injected::Injected, Pattern};
use crate::core::annotations::{Override, ResourceOverrides};
use crate::support::names::Taken;

/// What the Pod looks like, read once.
pub(crate) struct PodView<'a> {
    /// `spec.containers`.
    pub containers: &'a [Value],
    /// `spec.initContainers`.
    pub init_containers: &'a [Value],
    /// Index of the app container in `containers`.
    pub target_index: usize,
}

impl<'a> PodView<'a> {
    /// The app container.
    pub fn target(&self) -> &'a Value {
        &self.containers[self.target_index]
    }

    /// The app container's name.
    pub fn target_name(&self) -> &'a str {
        self.target().get("name").and_then(Value::as_str).unwrap_or_default()
    }

    /// Every container, init container included, with its name.
    pub fn all_containers(&self) -> impl Iterator<Item = &'a Value> {
        self.containers.iter().chain(self.init_containers.iter())
    }
}

/// What will be added to the Pod; `'c` is the config's lifetime, which injected containers borrow from.
pub(crate) struct Plan<'c> {
    /// Whether injected containers are native sidecars.
    pub native: bool,
    /// Containers to inject, in order.
    pub containers: Vec<(Pattern, Injected<'c>)>,
    /// Containers that are already there, identical (a Pod injected before whose status annotation was lost).
    pub present: Vec<String>,
    /// Volumes to add.
    pub volumes: Vec<Volume>,
    /// Mounts to add to the app container.
    pub app_mounts: Vec<VolumeMount>,
    /// Env to add to the app container.
    pub app_env: Vec<EnvVar>,
    /// Container names in use.
    pub container_names: Taken,
    /// Volume names in use.
    pub volume_names: Taken,
    /// Messages for the user.
    pub warnings: Vec<String>,
    /// The Pod's own requests and limits, per pattern (`entourage.dev/<pattern>-resources`).
    pub resources: ResourceOverrides,
    /// The config's `revision`, recorded in `entourage.dev/status`.
    pub revision: Option<&'c str>,
}

impl<'c> Plan<'c> {
    /// Adds a container under `base` (or `base-2`…), unless an identical container of that name is there.
    /// `build` gets the name and the Pod's resources override for `pattern`, if any.
    pub fn add_container(
        &mut self,
        view: &PodView<'_>,
        pattern: Pattern,
        base: &str,
        build: impl Fn(&str, Option<&Override>) -> Injected<'c>,
    ) {
        let own = match pattern {
            Pattern::Sidecar => self.resources.sidecar.as_ref(),
            Pattern::Adapter => self.resources.adapter.as_ref(),
            Pattern::Ambassador => self.resources.ambassador.as_ref(),
        };
        let candidate = build(base, own);
        let identical = view.all_containers().any(|c| {
            c.get("name").and_then(Value::as_str) == Some(base)
                && c.get("image").and_then(Value::as_str) == Some(candidate.image)
                && same_list(c.get("command"), candidate.command.as_deref())
                && same_list(c.get("args"), candidate.args.as_deref())
        });
        if identical {
            self.present.push(base.to_string());
            return;
        }
        let name = self.container_names.claim(base);
        let container = if name == base { candidate } else { build(&name, own) };
        self.containers.push((pattern, container));
    }
}

/// Whether a container's `command` or `args` as the Pod has it is exactly `ours` (both absent counts as the same).
fn same_list(theirs: Option<&Value>, ours: Option<&[String]>) -> bool {
    match (theirs, ours) {
        (None, None) => true,
        (Some(Value::Array(items)), Some(ours)) => {
            items.len() == ours.len() && items.iter().zip(ours).all(|(a, b)| a.as_str() == Some(b.as_str()))
        }
        _ => false,
    }
}
