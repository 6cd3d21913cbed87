//! Pods injected by another version than the running webhook's: they keep the containers of the version that
//! injected them until they are recreated (Pod specs are immutable), so an upgrade reaches them only then. And
//! Pods that asked for entourage and were admitted without it: created while the webhook was down under
//! `failurePolicy: Ignore`, or before it was installed; they run without what they asked for until recreated.

use serde_json::Value;

use super::{bad, ok, Check, Level};
use crate::doctor::{cluster::Snapshot, DoctorArgs};

/// The version in an image reference's tag (`…/entourage:0.1.0@sha256:…` is `0.1.0`).
fn image_version(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let tag = last.split_once(':')?.1;
    Some(tag.strip_prefix('v').unwrap_or(tag))
}

pub(super) fn stale(s: &Snapshot, args: &DoctorArgs, out: &mut Vec<Check>) {
    const ID: &str = "stale-injections";
    let deployment = format!("Deployment {}/{}", args.namespace, args.deployment);
    let image = match &s.deployment {
        Ok(Some(d)) => d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| {
                p.containers
                    .iter()
                    .find(|c| c.name == "entourage")
                    .or(p.containers.first())
            })
            .and_then(|c| c.image.clone()),
        Ok(None) => None,
        Err(e) => {
            return out.push(bad(
                ID,
                Level::Warn,
                format!("cannot tell the running webhook's version: cannot read {deployment}: {e}"),
                "name the webhook's Deployment with --deployment",
            ))
        }
    };
    let Some(version) = image.as_deref().and_then(image_version) else {
        return out.push(bad(
            ID,
            Level::Warn,
            format!(
                "cannot tell the running webhook's version from {deployment} (image {})",
                image.as_deref().unwrap_or("not found")
            ),
            "name the webhook's Deployment with --deployment; its image tag is the version",
        ));
    };
    let pods = match &s.injected_pods {
        Ok(pods) => pods,
        Err(e) => {
            return out.push(bad(
                ID,
                Level::Warn,
                format!("cannot list Pods to compare their entourage.dev/status: {e}"),
                "run as a user who may list pods in all namespaces (--context)",
            ))
        }
    };
    // Pods of another revision are that revision's install's to judge.
    let pods: Vec<_> = pods.iter().filter(|p| p.injected_revision() == args.revision).collect();
    let stale: Vec<String> = pods
        .iter()
        .filter_map(|p| {
            let (pod, status) = (&p.name, &p.status);
            let theirs = serde_json::from_str::<Value>(status)
                .ok()
                .and_then(|v| v.get("version").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| "unknown".into());
            (theirs != version).then(|| format!("{pod} ({theirs})"))
        })
        .collect();
    if stale.is_empty() {
        out.push(ok(
            ID,
            format!(
                "all {} injected Pods carry the running webhook's version {version}",
                pods.len()
            ),
        ));
    } else {
        let listed = listed(&stale);
        out.push(bad(
            ID,
            Level::Warn,
            format!(
                "Pods injected by another version than the running webhook's {version}: {} ({listed})",
                stale.len()
            ),
            "recreate them to get the current containers (kubectl rollout restart for their Deployments)",
        ));
    }
}

/// Pods injected by another revision than the one whose webhook selects them now: a namespace or Pod moved to
/// a new revision keeps the old revision's containers until it is recreated.
pub(super) fn old_revision(s: &Snapshot, out: &mut Vec<Check>) {
    const ID: &str = "old-revision";
    let name = |rev: &Option<String>| rev.clone().unwrap_or_else(|| "default".into());
    match &s.injected_pods {
        Err(e) => out.push(bad(
            ID,
            Level::Warn,
            format!("cannot list Pods and namespaces to compare revisions: {e}"),
            "run as a user who may list pods and namespaces (--context)",
        )),
        Ok(pods) => {
            let old: Vec<String> = pods
                .iter()
                .filter_map(|p| {
                    let injected = p.injected_revision();
                    (injected != p.selected_revision).then(|| {
                        format!(
                            "{} (injected by revision {}, selected by {})",
                            p.name,
                            name(&injected),
                            name(&p.selected_revision)
                        )
                    })
                })
                .collect();
            if old.is_empty() {
                out.push(ok(
                    ID,
                    "every injected Pod was injected by the revision that selects it".into(),
                ));
            } else {
                out.push(bad(
                    ID,
                    Level::Warn,
                    format!("Pods still on another revision: {} ({})", old.len(), listed(&old)),
                    "recreate them to move them to the revision that selects them now (kubectl rollout restart \
                     for their Deployments)",
                ));
            }
        }
    }
}

/// Names at most five, then how many more.
fn listed(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut listed = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        listed.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    listed
}

pub(super) fn missed(s: &Snapshot, out: &mut Vec<Check>) {
    const ID: &str = "missed-injections";
    match &s.missed_pods {
        Err(e) => out.push(bad(
            ID,
            Level::Warn,
            format!("cannot list Pods to find annotated ones without entourage.dev/status: {e}"),
            "run as a user who may list pods in all namespaces (--context)",
        )),
        Ok(missed) if missed.is_empty() => out.push(ok(ID, "every Pod that asks for entourage was injected".into())),
        Ok(missed) => out.push(bad(
            ID,
            Level::Fail,
            format!(
                "Pods that ask for entourage run without it (admitted while the webhook was down under \
                 failurePolicy Ignore, or before it was installed): {} ({})",
                missed.len(),
                listed(missed)
            ),
            "recreate them now that the webhook is up (kubectl rollout restart for a Deployment's; delete a \
             bare Pod and create it again)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_the_images_tag() {
        assert_eq!(image_version("ghcr.io/entourage-dev/entourage:0.1.0"), Some("0.1.0"));
        assert_eq!(
            image_version("registry:5000/entourage:v0.2.0@sha256:abc"),
            Some("0.2.0")
        );
        assert_eq!(image_version("registry:5000/entourage@sha256:abc"), None);
    }
}
