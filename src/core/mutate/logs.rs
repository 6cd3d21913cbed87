//! The sidecar and adapter patterns: a reader container per log file, reading it from a volume shared with the app.
//!
//! One emptyDir per distinct log directory, mounted at that directory in the app container and in each reader.
//! When the app already mounts a volume at that directory (or above it), that volume is reused instead of being
//! shadowed by a new one.
//!
//! Entourage's readers (`entourage stream`, `entourage adapt`) write to the log volume: they create the log file
//! before the app (native sidecars start first; their startup probe passes once the file is there, mode 0666 for
//! an app running as any user) and give back the disk space of what they streamed, because the kubelet evicts the
//! Pod when the volume's allocated blocks pass its `sizeLimit`. They keep their position in one more small
//! emptyDir, mounted only into readers, which survives their restarts: a restarted reader neither repeats the file
//! nor loses what was written while it was down. busybox `tail` (`sidecars.streamer: busybox`) gets the log volume
//! read-only and none of this.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{EmptyDirVolumeSource, ExecAction, Probe, Volume, VolumeMount},
    apimachinery::pkg::api::resource::Quantity,
};
use serde_json::Value;

use super::{
    injected::Injected,
    plan::{Plan, PodView},
    Pattern,
};
use crate::support::names::{file_stem, label};
use crate::{
    core::annotations::{parent_dir, AdapterRequest, Override, READER_STATE_DIR},
    core::config::{AdapterConfig, Config, Streamer},
    core::logformat::LevelMode,
};

/// `sizeLimit` of the readers' state volume: a position is about 300 bytes per reader.
const STATE_SIZE_LIMIT: &str = "1Mi";

/// Where the entourage binary is in its image (Dockerfile): the startup probe runs it directly.
const ENTOURAGE_BINARY: &str = "/entourage";

/// Where a log directory is found, keyed by directory: the mount readers copy, and whether entourage created the
/// volume (only then is its `sizeLimit` known); and the readers' state volume, once planned.
#[derive(Default)]
pub(crate) struct LogMounts {
    dirs: BTreeMap<String, (VolumeMount, bool)>,
    state: Option<VolumeMount>,
}

impl LogMounts {
    /// The mount through which a reader sees `dir` (and whether entourage created its volume), planning a new
    /// emptyDir if needed.
    fn for_dir(&mut self, dir: &str, view: &PodView<'_>, config: &Config, plan: &mut Plan) -> (VolumeMount, bool) {
        if let Some(found) = self.dirs.get(dir) {
            return found.clone();
        }
        let (mount, owned) = match app_mount_covering(view.target(), dir) {
            Some(existing) => (existing, false),
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
                (mount, true)
            }
        };
        self.dirs.insert(dir.to_string(), (mount.clone(), owned));
        (mount, owned)
    }

    /// The readers' state volume, mounted at [`READER_STATE_DIR`], planned on first use.
    fn state(&mut self, plan: &mut Plan) -> VolumeMount {
        if let Some(mount) = &self.state {
            return mount.clone();
        }
        let name = plan.volume_names.claim("entourage-state");
        plan.volumes.push(Volume {
            name: name.clone(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity(STATE_SIZE_LIMIT.into())),
                medium: None,
            }),
            ..Volume::default()
        });
        let mount = VolumeMount {
            name,
            mount_path: READER_STATE_DIR.into(),
            ..VolumeMount::default()
        };
        self.state = Some(mount.clone());
        mount
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

/// `command` (`stream` or `adapt`) and the flags of an entourage reader following `file` and saving its place at
/// `position` (the two commands share them: `crate::follow::FollowArgs` parses what is rendered here).
fn follow_args(
    command: &str,
    position: &str,
    file: &str,
    owned_volume: bool,
    native: bool,
    config: &Config,
) -> Vec<String> {
    let mut args: Vec<String> = Vec::with_capacity(16);
    args.extend([
        command.into(),
        "--file".into(),
        file.into(),
        "--position".into(),
        position.into(),
        "--create".into(),
        "--give-back".into(),
    ]);
    // The backlog is compared with the sizeLimit only of volumes entourage created: an app's own volume has its own.
    // Nano-units by the apiserver's own quantity grammar (`config::quantity`), as bytes.
    if let Some(limit) = owned_volume
        .then(|| config.sidecars.log_volume_size_limit.nanos().ok())
        .flatten()
        .and_then(|nanos| u64::try_from(nanos / 1_000_000_000).ok())
    {
        args.push("--backlog-warn-bytes".into());
        args.push((limit.saturating_mul(u64::from(config.sidecars.backlog_warn_percent)) / 100).to_string());
    }
    if !native {
        // Classic readers get SIGTERM with the app: they keep following while it writes its last lines.
        args.push("--drain-period".into());
        // Validated at load by the parser `--drain-period` uses (`support::duration::parse_drain_period`).
        args.push(config.sidecars.drain_period.clone());
    }
    args
}

/// Where the reader named `name` saves its position (container names are unique in a Pod).
fn position_path(name: &str) -> String {
    format!("{READER_STATE_DIR}/{name}.pos")
}

/// An entourage reader: hardened, the log volume read-write (it creates the file and gives back space), its
/// state volume, and as a native sidecar a startup probe that holds the app back until the file is prepared.
fn reader<'c>(
    name: &str,
    position: String,
    mounts: [&VolumeMount; 2],
    native: bool,
    config: &'c Config,
    own: Option<&Override>,
) -> Injected<'c> {
    Injected {
        volume_mounts: mounts.into_iter().cloned().collect(),
        startup_probe: native.then(|| Probe {
            exec: Some(ExecAction {
                command: Some(vec![
                    ENTOURAGE_BINARY.into(),
                    "started".into(),
                    "--position".into(),
                    position,
                ]),
            }),
            period_seconds: Some(1),
            failure_threshold: Some(30),
            ..Probe::default()
        }),
        ..Injected::new(name, &config.images.entourage, native, config, own)
    }
}

/// One `sidecar-<stem>` per file: `entourage stream --file FILE ...`, or with `sidecars.streamer: busybox`,
/// `tail -n+1 -F FILE`. Exec form: the path comes from the Pod's author and never reaches a shell.
pub(crate) fn plan_sidecars<'c>(
    files: &[String],
    view: &PodView<'_>,
    config: &'c Config,
    mounts: &mut LogMounts,
    plan: &mut Plan<'c>,
) {
    for file in files {
        let (mount, owned) = mounts.for_dir(parent_dir(file), view, config, plan);
        let base = format!("sidecar-{}", label(file_stem(file), 50, "log"));
        let native = plan.native;
        match config.sidecars.streamer {
            Streamer::Busybox => plan.add_container(view, Pattern::Sidecar, &base, |name, own| Injected {
                command: Some(vec!["tail".into(), "-n+1".into(), "-F".into(), file.clone()]),
                volume_mounts: vec![VolumeMount {
                    read_only: Some(true),
                    ..mount.clone()
                }],
                ..Injected::new(name, &config.images.sidecar, native, config, own)
            }),
            Streamer::Entourage => {
                let state = mounts.state(plan);
                plan.add_container(view, Pattern::Sidecar, &base, |name, own| {
                    let position = position_path(name);
                    Injected {
                        args: Some(follow_args("stream", &position, file, owned, native, config)),
                        ..reader(name, position, [&mount, &state], native, config, own)
                    }
                });
            }
        }
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
        let (mount, owned) = mounts.for_dir(parent_dir(file), view, config, plan);
        let state = mounts.state(plan);
        let base = format!("adapter-{}", label(file_stem(file), 50, "log"));
        let native = plan.native;
        plan.add_container(view, Pattern::Adapter, &base, |name, own| {
            let position = position_path(name);
            let mut args = follow_args("adapt", &position, file, owned, native, config);
            args.extend(["--format".into(), adapter.format.clone()]);
            for (k, v) in &adapter.fields {
                args.push("--field".into());
                args.push(format!("{k}={v}"));
            }
            args.extend(record_args(adapter, config));
            Injected {
                args: Some(args),
                ..reader(name, position, [&mount, &state], native, config, own)
            }
        });
    }
}

/// The flags of multiline grouping, time and keys; each is given only when it differs from the adapter's default,
/// so Pods that do not use them keep the exact command they had.
fn record_args(adapter: &AdapterRequest, config: &Config) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut flag = |name: &str, value: String| {
        args.push(name.into());
        args.push(value);
    };
    if let Some(multiline) = &adapter.multiline {
        flag("--multiline", multiline.clone());
        if config.adapter.multiline_flush_after != AdapterConfig::default().multiline_flush_after {
            flag("--multiline-flush-after", config.adapter.multiline_flush_after.clone());
        }
    }
    if let Some(key) = &adapter.time_key {
        flag("--time-key", key.clone());
    }
    if !adapter.renames.is_empty() {
        let pairs: Vec<String> = adapter.renames.iter().map(|(f, t)| format!("{f}={t}")).collect();
        flag("--rename", pairs.join(","));
    }
    if adapter.level != LevelMode::Keep {
        flag("--level", adapter.level.to_string());
    }
    if config.adapter.time_zone != AdapterConfig::default().time_zone {
        flag("--time-zone", config.adapter.time_zone.clone());
    }
    args
}
