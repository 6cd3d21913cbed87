//! The security context and resources every injected container gets, from config.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Capabilities, ResourceRequirements, SeccompProfile, SecurityContext},
    apimachinery::pkg::api::resource::Quantity,
};

use crate::config::{self, Config};

/// The hardened security context: non-root with a numeric user (busybox and nginx images are root by default,
/// and `runAsNonRoot` alone makes the kubelet refuse them), no privilege escalation, no capabilities,
/// read-only root filesystem, seccomp.
pub fn security_context(config: &Config) -> SecurityContext {
    let h = &config.hardening;
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        read_only_root_filesystem: Some(h.read_only_root_filesystem),
        run_as_non_root: Some(true),
        run_as_user: Some(h.run_as_user),
        run_as_group: Some(h.run_as_group),
        seccomp_profile: Some(SeccompProfile {
            type_: match h.seccomp_profile {
                config::SeccompProfile::RuntimeDefault => "RuntimeDefault".into(),
                config::SeccompProfile::Unconfined => "Unconfined".into(),
            },
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

/// Requests and limits.
pub fn resources(config: &Config) -> ResourceRequirements {
    let convert = |m: &BTreeMap<String, config::Quantity>| -> Option<BTreeMap<String, Quantity>> {
        (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), Quantity(v.0.clone()))).collect())
    };
    ResourceRequirements {
        requests: convert(&config.resources.requests),
        limits: convert(&config.resources.limits),
        claims: None,
    }
}
