//! Configuration: one typed struct, read from YAML and validated once at load.
//!
//! The built-in default ([`Config::default`]) serves out of the box; a file given with `--config` replaces
//! it key by key (every key is optional). Unknown keys and invalid values are refused at load with a message
//! naming the key and the rule, so a typo never silently falls back to a default.

mod adapter;
mod ambassador;
mod jobs;

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};

mod profiles;
mod quantity;
mod rendered;
pub use adapter::AdapterConfig;
mod resources;
pub use ambassador::{AmbassadorConfig, MAX_TOKEN_EXPIRATION_SECONDS, MIN_TOKEN_EXPIRATION_SECONDS};
pub use jobs::{CronJobDefaults, JobDefaults, JobPolicy};
pub use profiles::{known as known_profiles, Profile};
pub use quantity::{Nanos, QuantityError};
pub(crate) use rendered::Rendered;
pub use resources::{Maxima, Resources, RESOURCE_NAMES};

/// The whole configuration. Field names are the YAML keys in camelCase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// The cluster's Kubernetes version (`"1.33"`). Only needed for a cluster older than 1.29, where `auto` mode
    /// then falls back to classic sidecars; unset, every supported Kubernetes (≥ 1.29) runs native sidecars.
    pub kubernetes_version: Option<KubeVersion>,
    /// The revision this install answers for (the chart's `revision`): Pods and namespaces labelled
    /// `entourage.dev/rev: <revision>` are sent to it. Recorded in each injected Pod's `entourage.dev/status`, so
    /// that `doctor` names the Pods injected by another revision than the one that now selects them. Unset: the
    /// default revision, for Pods and namespaces without the label.
    pub revision: Option<String>,
    /// Images of the injected containers. Only config chooses images, never an annotation.
    pub images: Images,
    /// Where injected containers go and how many log files one Pod may ask for.
    pub sidecars: Sidecars,
    /// The security context every injected container gets.
    pub hardening: Hardening,
    /// Requests and limits of every injected container, and the most a Pod may ask for.
    pub resources: Resources,
    /// Defaults of the ambassador pattern.
    pub ambassador: AmbassadorConfig,
    /// How the adapter completes times and groups stack traces.
    pub adapter: AdapterConfig,
    /// Safe defaults for Jobs and CronJobs.
    pub jobs: JobPolicy,
    /// Named profiles of annotation-level settings (`web: {adapter-format: nginx}`), picked by a Pod's
    /// `entourage.dev/profile` or its namespace's entry in `namespaceProfiles`; the Pod's own annotations win.
    pub profiles: BTreeMap<String, Profile>,
    /// Per namespace, the profile its Pods get without `entourage.dev/profile`.
    pub namespace_profiles: BTreeMap<String, String>,
    /// What every injected container takes from `hardening` and `resources`, as JSON, rendered on first use
    /// (`mutate::injected`). Not part of the YAML.
    #[serde(skip)]
    pub(crate) rendered: Rendered,
}

impl Config {
    /// The config, shared and unchangeable from now on (the webhook's, loaded or reloaded): what every injected
    /// container takes from it unchanged is rendered once and then used without checking that the config still
    /// says the same (`Rendered`). `Arc::make_mut` clones it, and a clone is checked again.
    pub fn into_shared(mut self) -> std::sync::Arc<Config> {
        self.rendered.seal();
        std::sync::Arc::new(self)
    }
}

/// Images of the injected containers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Images {
    /// The busybox image of log sidecars when `sidecars.streamer` is `busybox` (runs `tail -n+1 -F FILE`);
    /// unused otherwise.
    pub sidecar: String,
    /// The entourage image itself, which runs the streamer, the adapter and the ambassador.
    pub entourage: String,
    /// The pull policy of injected containers.
    pub pull_policy: PullPolicy,
}

impl Default for Images {
    fn default() -> Self {
        Images {
            sidecar: "busybox:1.36".into(),
            entourage: concat!("ghcr.io/entourage-dev/entourage:", env!("CARGO_PKG_VERSION")).into(),
            pull_policy: PullPolicy::IfNotPresent,
        }
    }
}

/// `imagePullPolicy` of injected containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull when the node does not have the image.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Placement of the injected containers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Sidecars {
    /// `auto`, `native` or `classic`.
    pub mode: SidecarMode,
    /// The most log files one Pod may list across `sidecar-logs` and `adapter-logs`.
    pub max_log_files: usize,
    /// `sizeLimit` of the emptyDir volumes entourage creates for log directories. Past it the kubelet evicts the
    /// Pod; entourage's readers give back what they streamed, so the volume holds about the unstreamed backlog.
    pub log_volume_size_limit: Quantity,
    /// What log sidecars run: `entourage` (`entourage stream`: resumes after restarts, gives back disk space,
    /// drains on stop) or `busybox` (`tail -n+1 -F` from `images.sidecar`, with none of that).
    pub streamer: Streamer,
    /// Readers warn when their unstreamed backlog passes this share of `logVolumeSizeLimit`, in percent.
    pub backlog_warn_percent: u8,
    /// Classic mode only: how long an injected ambassador or log reader keeps serving after SIGTERM. In a classic
    /// Pod every container gets SIGTERM at once, and the app, shutting down, still calls through its ambassador
    /// and writes its last log lines; native sidecars are stopped after the app and need no such delay.
    pub drain_period: String,
}

impl Default for Sidecars {
    fn default() -> Self {
        Sidecars {
            mode: SidecarMode::Auto,
            max_log_files: 8,
            log_volume_size_limit: Quantity("256Mi".into()),
            streamer: Streamer::Entourage,
            backlog_warn_percent: 50,
            drain_period: "10s".into(),
        }
    }
}

/// What log sidecars run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Streamer {
    /// `entourage stream` from `images.entourage`.
    Entourage,
    /// `tail -n+1 -F` from `images.sidecar`: repeats the whole file after a restart, never gives back disk space.
    Busybox,
}

/// Where injected containers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SidecarMode {
    /// Native sidecars, unless `kubernetesVersion` says the cluster is older than 1.29 (then classic).
    Auto,
    /// Always native sidecars: first in `initContainers` with `restartPolicy: Always`.
    Native,
    /// Always appended to `containers` (a Job-owned Pod then never completes: entourage warns).
    Classic,
}

/// The security context of injected containers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Hardening {
    /// Numeric user: `runAsNonRoot` alone makes the kubelet refuse root-user images such as busybox. `null`
    /// sets none, for platforms that assign the uid themselves (OpenShift's `restricted-v2` SCC refuses any uid
    /// outside the namespace's range): `runAsNonRoot` stays, and the image's numeric non-root user (entourage's
    /// runs as 65532) or the platform's uid applies. A key left out keeps the default.
    pub run_as_user: Option<i64>,
    /// Numeric group; `null` sets none (the image's group, or the platform's).
    pub run_as_group: Option<i64>,
    /// `readOnlyRootFilesystem`.
    pub read_only_root_filesystem: bool,
    /// The seccomp profile type: `RuntimeDefault` or `Unconfined`.
    pub seccomp_profile: SeccompProfile,
}

impl Default for Hardening {
    fn default() -> Self {
        Hardening {
            run_as_user: Some(65534),
            run_as_group: Some(65534),
            read_only_root_filesystem: true,
            seccomp_profile: SeccompProfile::RuntimeDefault,
        }
    }
}

/// The seccomp profile type of injected containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompProfile {
    /// The container runtime's default profile.
    RuntimeDefault,
    /// No seccomp filtering.
    Unconfined,
}

/// A Kubernetes resource quantity (`64Mi`, `100m`), checked at load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quantity(pub String);

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Kubernetes `major.minor` version such as `1.33`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KubeVersion {
    /// Major version (1).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl KubeVersion {
    /// The first version with native sidecars on by default.
    pub const NATIVE_SIDECARS: KubeVersion = KubeVersion { major: 1, minor: 29 };
}

impl TryFrom<String> for KubeVersion {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let trimmed = s.trim_start_matches('v');
        let mut parts = trimmed.splitn(3, '.');
        let parse = |p: Option<&str>| p.and_then(|p| p.parse::<u32>().ok());
        match (parse(parts.next()), parse(parts.next())) {
            (Some(major), Some(minor)) => Ok(KubeVersion { major, minor }),
            _ => Err(format!("{s:?} is not a Kubernetes version such as \"1.33\"")),
        }
    }
}

impl From<KubeVersion> for String {
    fn from(v: KubeVersion) -> String {
        format!("{}.{}", v.major, v.minor)
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The YAML does not fit the schema (unknown key, wrong type, bad enum value).
    #[error("config {origin}: {message}")]
    Parse {
        /// Where the config came from.
        origin: String,
        /// The parser's message, which names the key and its location.
        message: String,
    },
    /// Values that parse but break a rule; every problem is listed, not only the first.
    #[error("config {origin} is invalid:\n  - {}", problems.join("\n  - "))]
    Invalid {
        /// Where the config came from.
        origin: String,
        /// One line per broken rule, each naming the key.
        problems: Vec<String>,
    },
}

impl Config {
    /// Parses and validates config text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        // An empty file means "all defaults", as an empty YAML document is null.
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
                origin: origin.to_string(),
                message: e.to_string(),
            })?
        };
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_string(),
                problems,
            })
        }
    }

    /// Every rule the config breaks, one line each naming the key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (key, image) in [
            ("images.sidecar", &self.images.sidecar),
            ("images.entourage", &self.images.entourage),
        ] {
            if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
                p.push(format!("{key}: {image:?} is not an image reference"));
            }
        }
        if !(1..=64).contains(&self.sidecars.max_log_files) {
            p.push(format!(
                "sidecars.maxLogFiles: {} is outside 1..=64",
                self.sidecars.max_log_files
            ));
        }
        if !self.sidecars.log_volume_size_limit.is_valid() {
            p.push(format!(
                "sidecars.logVolumeSizeLimit: {:?} is not a Kubernetes quantity",
                self.sidecars.log_volume_size_limit.0
            ));
        }
        match self.hardening.run_as_user {
            Some(uid) if uid <= 0 => p.push(format!(
                "hardening.runAsUser: {uid} must be a non-root user id (> 0), or null to leave the uid to the image or the platform"
            )),
            // busybox's user is root: with runAsNonRoot and no runAsUser the kubelet refuses to start it.
            None if self.sidecars.streamer == Streamer::Busybox => p.push(
                "hardening.runAsUser: null needs an image with a numeric non-root user, and sidecars.streamer busybox runs busybox, whose user is root (the kubelet would refuse it); use sidecars.streamer entourage or set a uid"
                    .into(),
            ),
            _ => {}
        }
        if let Some(gid) = self.hardening.run_as_group.filter(|gid| *gid < 0) {
            p.push(format!("hardening.runAsGroup: {gid} must be >= 0, or null"));
        }
        if !(1..=100).contains(&self.sidecars.backlog_warn_percent) {
            p.push(format!(
                "sidecars.backlogWarnPercent: {} is outside 1..=100",
                self.sidecars.backlog_warn_percent
            ));
        }
        if let Some(rev) = self
            .revision
            .as_deref()
            .filter(|r| !crate::support::names::is_dns_label(r))
        {
            p.push(format!(
                "revision: {rev:?} is not a label value of up to 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
            ));
        }
        p.extend(self.resources.problems(&self.sidecars.log_volume_size_limit));
        self.ambassador.problems(&mut p);
        // The same parser as the runtimes' `--drain-period`, which this value is handed to in classic mode.
        if let Err(e) = crate::support::duration::parse_drain_period(&self.sidecars.drain_period) {
            p.push(format!("sidecars.drainPeriod: {e}"));
        }
        p.extend(self.adapter.problems());
        p.extend(self.jobs.problems());
        p.extend(profiles::problems(&self.profiles, &self.namespace_profiles));
        p
    }

    /// Whether the cluster runs native sidecars: every supported Kubernetes does (on by default since 1.29, GA
    /// in 1.33), so only a `kubernetesVersion` older than 1.29 says no.
    pub fn cluster_has_native_sidecars(&self) -> bool {
        self.kubernetes_version
            .is_none_or(|v| v >= KubeVersion::NATIVE_SIDECARS)
    }
}

/// Whether `s` is a C identifier, as environment variable names should be.
pub fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_default_is_valid() {
        assert_eq!(Config::default().problems(), Vec::<String>::new());
    }

    #[test]
    fn empty_file_means_all_defaults() {
        assert_eq!(Config::from_yaml("", "test").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let err = Config::from_yaml("sidecars:\n  mdoe: native\n", "test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mdoe"), "{err}");
    }

    #[test]
    fn bad_enum_value_is_refused_with_the_choices() {
        let err = Config::from_yaml("sidecars:\n  mode: sometimes\n", "test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sometimes") && err.contains("native"), "{err}");
    }

    #[test]
    fn every_invalid_value_is_reported_not_only_the_first() {
        let yaml = "hardening:\n  runAsUser: 0\nsidecars:\n  logVolumeSizeLimit: lots\nambassador:\n  timeout: soon\n";
        let err = Config::from_yaml(yaml, "test").unwrap_err().to_string();
        for key in [
            "hardening.runAsUser",
            "sidecars.logVolumeSizeLimit",
            "ambassador.timeout",
        ] {
            assert!(err.contains(key), "{key} missing from {err}");
        }
    }

    #[test]
    fn run_as_user_null_leaves_the_uid_out_and_a_missing_key_keeps_the_default() {
        let c = Config::from_yaml("hardening:\n  runAsUser: null\n  runAsGroup: null\n", "t").unwrap();
        assert_eq!((c.hardening.run_as_user, c.hardening.run_as_group), (None, None));
        let c = Config::from_yaml("hardening:\n  readOnlyRootFilesystem: true\n", "t").unwrap();
        assert_eq!(c.hardening.run_as_user, Some(65534));
        let err = Config::from_yaml("hardening:\n  runAsUser: null\nsidecars:\n  streamer: busybox\n", "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hardening.runAsUser: null") && err.contains("busybox"),
            "{err}"
        );
        let err = Config::from_yaml("hardening:\n  runAsGroup: -1\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("hardening.runAsGroup: -1"), "{err}");
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c = Config::from_yaml("kubernetesVersion: \"1.30\"\nsidecars:\n  mode: classic\n", "t").unwrap();
        assert_eq!(c.sidecars.mode, SidecarMode::Classic);
        assert_eq!(c.sidecars.max_log_files, 8);
        assert!(c.cluster_has_native_sidecars());
    }

    #[test]
    fn backlog_warning_share_and_streamer_are_checked_at_load() {
        let err = Config::from_yaml("sidecars:\n  backlogWarnPercent: 0\n", "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sidecars.backlogWarnPercent: 0 is outside 1..=100"),
            "{err}"
        );
        let err = Config::from_yaml("sidecars:\n  streamer: fluentbit\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("fluentbit") && err.contains("busybox"), "{err}");
        let c = Config::from_yaml("sidecars:\n  streamer: busybox\n", "t").unwrap();
        assert_eq!(c.sidecars.streamer, Streamer::Busybox);
    }

    #[test]
    fn quantities_follow_the_kubernetes_shape() {
        for ok in ["64Mi", "100m", "1", "0.5", "2Gi", "1k"] {
            assert!(Quantity(ok.into()).is_valid(), "{ok}");
        }
        for bad in ["", "Mi", "1.2.3", "10 Mi", "lots", "-1"] {
            assert!(!Quantity(bad.into()).is_valid(), "{bad}");
        }
    }
}
