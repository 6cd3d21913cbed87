//! The sidecar and adapter patterns: a container per log file, reading it from a volume shared with the app.
//!
//! One emptyDir per distinct log directory, mounted at that directory in the app container and read-only in
//! each reader. When the app already mounts a volume at that directory (or above it), that volume is reused
//! instead of being shadowed by a new one.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{EmptyDirVolumeSource, Volume, VolumeMount},
    apimachinery::pkg::api::resource::Quantity,
};
use serde_json::Value;

use super::{
    harden::Injected,
    pod::{Plan, PodView},
    Pattern,
};
use crate::support::names::{file_stem, label};
use crate::{
    core::annotations::{parent_dir, AdapterRequest, Override},
    core::config::Config,
};

/// Where a log directory is found, keyed by directory: the mount readers copy.
#[derive(Default)]
pub(crate) struct LogMounts(BTreeMap<String, VolumeMount>);

impl LogMounts {
    /// The read-only mount through which a reader sees `dir`, planning a new emptyDir if needed.
    fn for_dir(&mut self, dir: &str, view: &PodView<'_>, config: &Config, plan: &mut Plan) -> VolumeMount {
        if let Some(mount) = self.0.get(dir) {
            return mount.clone();
        }
        let mount = match app_mount_covering(view.target(), dir) {
            Some(existing) => existing,
            None => {
                let name = plan
                    .volume_names
                    .claim(&format!("entourage-{}", label(dir, 48, "logs")));
                plan.volumes.push(Volume {
                    name: name.clone(),
                    empty_dir: Some(EmptyDirVolumeSource {
                        size_limit: Some(Quantity(config.sidecars.log_volume_size_limit.0.clone())),
                        medium: None,
                    }),
                    ..Volume::default()
                });
                let mount = VolumeMount {
                    name,
                    mount_path: dir.to_string(),
                    ..VolumeMount::default()
                };
                plan.app_mounts.push(mount.clone());
                mount
            }
        };
        let reader = VolumeMount {
            read_only: Some(true),
            ..mount
        };
        self.0.insert(dir.to_string(), reader.clone());
        reader
    }
}

/// The app container's mount at `dir` or at its closest ancestor, if any.
fn app_mount_covering(app: &Value, dir: &str) -> Option<VolumeMount> {
    let mounts = app.get("volumeMounts")?.as_array()?;
    mounts
        .iter()
        .filter_map(|m| {
            let path = m.get("mountPath")?.as_str()?;
            let path = if path.len() > 1 {
                path.trim_end_matches('/')
            } else {
                path
            };
            let covers = dir == path
                || (dir.starts_with(path) && (path == "/" || dir.as_bytes().get(path.len()) == Some(&b'/')));
            covers.then(|| {
                let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
                VolumeMount {
                    name: text("name").unwrap_or_default(),
                    mount_path: path.to_string(),
                    sub_path: text("subPath"),
                    sub_path_expr: text("subPathExpr"),
                    ..VolumeMount::default()
                }
            })
        })
        .max_by_key(|m| m.mount_path.len())
}

/// A hardened reader container, its log directory mounted read-only.
fn reader<'c>(
    name: &str,
    image: &'c str,
    mount: &VolumeMount,
    native: bool,
    config: &'c Config,
    own: Option<&Override>,
) -> Injected<'c> {
    Injected {
        volume_mounts: vec![mount.clone()],
        ..Injected::new(name, image, native, config, own)
    }
}

/// One `sidecar-<stem>` per file, running `tail -n+1 -F FILE` in exec form: the path comes from the Pod's
/// author and never reaches a shell.
pub(crate) fn plan_sidecars<'c>(
    files: &[String],
    view: &PodView<'_>,
    config: &'c Config,
    mounts: &mut LogMounts,
    plan: &mut Plan<'c>,
) {
    for file in files {
        let mount = mounts.for_dir(parent_dir(file), view, config, plan);
        let base = format!("sidecar-{}", label(file_stem(file), 50, "log"));
        let native = plan.native;
        plan.add_container(view, Pattern::Sidecar, &base, |name, own| Injected {
            command: Some(vec!["tail".into(), "-n+1".into(), "-F".into(), file.clone()]),
            ..reader(name, &config.images.sidecar, &mount, native, config, own)
        });
    }
}

/// One `adapter-<stem>` per file, running `entourage adapt` from the entourage image.
pub(crate) fn plan_adapters<'c>(
    adapter: &AdapterRequest,
    view: &PodView<'_>,
    config: &'c Config,
    mounts: &mut LogMounts,
    plan: &mut Plan<'c>,
) {
    for file in &adapter.logs {
        let mount = mounts.for_dir(parent_dir(file), view, config, plan);
        let base = format!("adapter-{}", label(file_stem(file), 50, "log"));
        let mut args: Vec<String> = vec![
            "adapt".into(),
            "--file".into(),
            file.clone(),
            "--format".into(),
            adapter.format.clone(),
        ];
        for (k, v) in &adapter.fields {
            args.push("--field".into());
            args.push(format!("{k}={v}"));
        }
        let native = plan.native;
        plan.add_container(view, Pattern::Adapter, &base, |name, own| Injected {
            args: Some(args.clone()),
            ..reader(name, &config.images.entourage, &mount, native, config, own)
        });
    }
}
