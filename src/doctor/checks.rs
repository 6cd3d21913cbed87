//! The checks, on what [`super::cluster`] read: pure functions, one [`Check`] (one line) per finding.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration},
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use rustls::pki_types::UnixTime;
use serde_json::Value;

use super::{cert, cluster::Snapshot, DoctorArgs};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// As it should be.
    Ok,
    /// Works, but will hurt (a certificate close to expiry, stale injections).
    Warn,
    /// Broken: Pods are or will be refused, or injected without what they asked for.
    Fail,
}

/// One finding: which check, how bad, what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The check's name.
    pub id: &'static str,
    /// How bad.
    pub level: Level,
    /// What was found.
    pub message: String,
    /// How to fix it (none when all is well).
    pub fix: Option<String>,
}

fn ok(id: &'static str, message: String) -> Check {
    Check {
        id,
        level: Level::Ok,
        message,
        fix: None,
    }
}

fn bad(id: &'static str, level: Level, message: String, fix: impl Into<String>) -> Check {
    Check {
        id,
        level,
        message,
        fix: Some(fix.into()),
    }
}

/// Every check, in order.
pub fn run(s: &Snapshot, args: &DoctorArgs, now: UnixTime) -> Vec<Check> {
    let mut out = Vec::new();
    let ours = configuration(s, args, &mut out).unwrap_or_default();
    if !ours.is_empty() {
        ca_bundle(s, args, &ours, now, &mut out);
    }
    expiry(s, args, now, &mut out);
    endpoints(s, args, &mut out);
    reach(s, args, &mut out);
    if !ours.is_empty() {
        exclusions(s, &ours, &mut out);
        match_conditions(&ours, &mut out);
        failure_policy(&ours, &mut out);
    }
    stale(s, args, &mut out);
    out
}

/// The webhooks that call our Service.
fn configuration<'s>(s: &'s Snapshot, args: &DoctorArgs, out: &mut Vec<Check>) -> Option<Vec<&'s MutatingWebhook>> {
    const ID: &str = "webhook-configuration";
    let name = &args.webhook_configuration;
    let configuration: &MutatingWebhookConfiguration = match &s.webhook_configuration {
        Err(e) => {
            out.push(bad(
                ID,
                Level::Fail,
                format!("cannot read MutatingWebhookConfiguration {name}: {e}"),
                "run as a user who may get mutatingwebhookconfigurations (--context)",
            ));
            return None;
        }
        Ok(None) => {
            out.push(bad(
                ID,
                Level::Fail,
                format!("MutatingWebhookConfiguration {name} does not exist: no Pod is sent to entourage"),
                "install entourage (kubectl apply -k manifests), or name the configuration with --webhook-configuration",
            ));
            return None;
        }
        Ok(Some(c)) => c,
    };
    let all: Vec<&MutatingWebhook> = configuration.webhooks.iter().flatten().collect();
    let ours: Vec<&MutatingWebhook> = all
        .iter()
        .copied()
        .filter(|w| {
            w.client_config
                .service
                .as_ref()
                .is_some_and(|svc| svc.name == args.service && svc.namespace == args.namespace)
        })
        .collect();
    if ours.is_empty() {
        let targets: Vec<String> = all
            .iter()
            .map(|w| match &w.client_config.service {
                Some(svc) => format!("{} -> {}/{}", w.name, svc.namespace, svc.name),
                None => format!("{} -> {}", w.name, w.client_config.url.as_deref().unwrap_or("nothing")),
            })
            .collect();
        out.push(bad(
            ID,
            Level::Fail,
            format!(
                "no webhook of {name} calls Service {}/{} ({})",
                args.namespace,
                args.service,
                if targets.is_empty() {
                    "it has no webhooks".to_string()
                } else {
                    targets.join(", ")
                }
            ),
            "reinstall the configuration, or point --namespace and --service at the Service it calls",
        ));
        return None;
    }
    let names: Vec<&str> = ours.iter().map(|w| w.name.as_str()).collect();
    out.push(ok(
        ID,
        format!(
            "MutatingWebhookConfiguration {name}: {} call Service {}/{}",
            names.join(", "),
            args.namespace,
            args.service
        ),
    ));
    Some(ours)
}

/// The name the API server verifies the serving certificate against.
fn dns_name(args: &DoctorArgs) -> String {
    format!("{}.{}.svc", args.service, args.namespace)
}

fn secret_name(args: &DoctorArgs) -> String {
    format!("Secret {}/{}", args.namespace, args.tls_secret)
}

/// The Secret's `tls.crt`, or the finding that says why there is none.
fn serving<'s>(s: &'s Snapshot, args: &DoctorArgs, id: &'static str) -> Result<&'s [u8], Check> {
    match &s.serving_certificate {
        Ok(Some(pem)) => Ok(pem),
        Ok(None) => Err(bad(
            id,
            Level::Fail,
            format!(
                "{} does not exist or has no tls.crt: the webhook has no certificate to serve",
                secret_name(args)
            ),
            "create it (entourage certs, then kubectl create secret tls; or the cert-manager overlay), or name it \
             with --tls-secret",
        )),
        Err(e) => Err(bad(
            id,
            Level::Fail,
            format!("cannot read {}: {e}", secret_name(args)),
            "run as a user who may get secrets in that namespace (--context), or name it with --tls-secret",
        )),
    }
}

fn ca_bundle(s: &Snapshot, args: &DoctorArgs, ours: &[&MutatingWebhook], now: UnixTime, out: &mut Vec<Check>) {
    const ID: &str = "ca-bundle";
    let pem = match serving(s, args, ID) {
        Ok(pem) => pem,
        Err(check) => return out.push(check),
    };
    let fix = format!(
        "write the CA that signed the serving certificate into the caBundle: kubectl -n {} rollout restart \
         deployment/{} (serve --patch-ca-bundle writes it at start), or let cert-manager's cainjector do it",
        args.namespace, args.deployment
    );
    let before = out.len();
    for webhook in ours {
        let problem = match &webhook.client_config.ca_bundle {
            None => Some("has no caBundle: the API server cannot verify entourage and every call fails".to_string()),
            Some(bundle) => cert::verify(&bundle.0, pem, &dns_name(args), now)
                .err()
                .map(|e| format!("caBundle {e} (in {})", secret_name(args))),
        };
        if let Some(problem) = problem {
            out.push(bad(ID, Level::Fail, format!("{} {problem}", webhook.name), fix.clone()));
        }
    }
    if out.len() == before {
        out.push(ok(
            ID,
            format!(
                "every caBundle verifies the serving certificate in {} for {}",
                secret_name(args),
                dns_name(args)
            ),
        ));
    }
}

/// `2027-01-31`.
fn date(now: UnixTime, seconds_left: i64) -> String {
    let at = i64::try_from(now.as_secs())
        .unwrap_or(i64::MAX)
        .saturating_add(seconds_left);
    chrono::DateTime::from_timestamp(at, 0).map_or_else(|| at.to_string(), |d| d.format("%Y-%m-%d").to_string())
}

fn expiry(s: &Snapshot, args: &DoctorArgs, now: UnixTime, out: &mut Vec<Check>) {
    const ID: &str = "certificate-expiry";
    let pem = match serving(s, args, ID) {
        Ok(pem) => pem,
        // Already reported by ca-bundle when the configuration was read.
        Err(check) if s.webhook_configuration.as_ref().is_ok_and(Option::is_none) => return out.push(check),
        Err(_) => return,
    };
    let left = match cert::seconds_left(pem, now) {
        Ok(left) => left,
        Err(e) => {
            return out.push(bad(
                ID,
                Level::Fail,
                format!("tls.crt of {}: {e}", secret_name(args)),
                "replace it with a PEM certificate",
            ))
        }
    };
    let renew = "renew it: cert-manager renews before expiry; otherwise write a new certificate into the Secret \
                 (the webhook reloads it without a restart)";
    let days = left.div_euclid(86_400);
    let when = date(now, left);
    if left <= 0 {
        out.push(bad(
            ID,
            Level::Fail,
            format!(
                "the serving certificate in {} expired on {when}: every admission call fails",
                secret_name(args)
            ),
            renew,
        ));
    } else if days < i64::from(args.expiry_warning_days) {
        out.push(bad(
            ID,
            Level::Warn,
            format!(
                "the serving certificate in {} expires in {days} days ({when})",
                secret_name(args)
            ),
            renew,
        ));
    } else {
        out.push(ok(
            ID,
            format!("the serving certificate is valid for {days} more days ({when})"),
        ));
    }
}

fn endpoints(s: &Snapshot, args: &DoctorArgs, out: &mut Vec<Check>) {
    const ID: &str = "service-endpoints";
    let service = format!("Service {}/{}", args.namespace, args.service);
    match &s.service {
        Err(e) => {
            return out.push(bad(
                ID,
                Level::Fail,
                format!("cannot read {service}: {e}"),
                "check --context",
            ))
        }
        Ok(None) => {
            return out.push(bad(
                ID,
                Level::Fail,
                format!("{service} does not exist: every admission call fails"),
                "install entourage (kubectl apply -k manifests), or name it with --service",
            ))
        }
        Ok(Some(_)) => {}
    }
    let slices = match &s.endpoint_slices {
        Ok(slices) => slices,
        Err(e) => {
            return out.push(bad(
                ID,
                Level::Fail,
                format!("cannot list the EndpointSlices of {service}: {e}"),
                "run as a user who may list endpointslices (--context)",
            ))
        }
    };
    let endpoints: Vec<_> = slices.iter().flat_map(|s| s.endpoints.iter()).collect();
    // `ready` unset means ready (the EndpointSlice API's own rule).
    let ready = endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .count();
    if ready == 0 {
        out.push(bad(
            ID,
            Level::Fail,
            format!(
                "{service} has no ready endpoints ({} not ready): every admission call fails",
                endpoints.len()
            ),
            format!(
                "see why the webhook Pods are not ready: kubectl -n {} describe pods -l app.kubernetes.io/name=entourage",
                args.namespace
            ),
        ));
    } else {
        out.push(ok(
            ID,
            format!("{service}: {ready} of {} endpoints ready", endpoints.len()),
        ));
    }
}

fn reach(s: &Snapshot, args: &DoctorArgs, out: &mut Vec<Check>) {
    const ID: &str = "apiserver-reach";
    let port = super::cluster::webhook_port(s.webhook_configuration.as_ref().ok().and_then(Option::as_ref), args);
    match &s.proxied_readyz {
        Ok(_) => out.push(ok(
            ID,
            format!(
                "the API server reaches the webhook through Service {}/{} port {port} (GET /readyz)",
                args.namespace, args.service
            ),
        )),
        Err(e) => out.push(bad(
            ID,
            Level::Fail,
            format!(
                "the API server cannot reach the webhook through Service {}/{} port {port}: {e}",
                args.namespace, args.service
            ),
            "let the control plane reach the webhook Pods on their port (GKE private clusters: a firewall rule from \
             the control plane's range, or serve on 443 or 10250; EKS with a custom CNI: hostNetwork)",
        )),
    }
}

/// Whether `selector` selects an object with `labels` (an absent selector selects everything).
pub fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector else { return true };
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            // The API refuses any other operator; a selector it kept cannot have one.
            _ => false,
        }
    });
    by_labels && by_expressions
}

fn exclusions(s: &Snapshot, ours: &[&MutatingWebhook], out: &mut Vec<Check>) {
    const ID: &str = "namespace-exclusion";
    let before = out.len();
    for webhook in ours {
        for (namespace, labels) in &s.namespace_labels {
            if selects(webhook.namespace_selector.as_ref(), labels) {
                out.push(bad(
                    ID,
                    Level::Fail,
                    format!(
                        "{} sends {namespace}'s objects to entourage (its namespaceSelector selects it)",
                        webhook.name
                    ),
                    format!(
                        "add {namespace} to the namespaceSelector (kubernetes.io/metadata.name NotIn): the control \
                         plane's and the webhook's own Pods must start while the webhook is down"
                    ),
                ));
            }
        }
    }
    if out.len() == before {
        let names: Vec<&str> = s.namespace_labels.keys().map(String::as_str).collect();
        out.push(ok(ID, format!("every webhook leaves {} alone", names.join(" and "))));
    }
}

/// Whether a webhook is called for Pods.
fn handles_pods(webhook: &MutatingWebhook) -> bool {
    webhook.rules.iter().flatten().any(|r| {
        r.api_groups.iter().flatten().any(|g| g.is_empty() || g == "*")
            && r.resources.iter().flatten().any(|res| res == "pods" || res == "*")
    })
}

fn has_conditions(webhook: &MutatingWebhook) -> bool {
    webhook.match_conditions.as_ref().is_some_and(|c| !c.is_empty())
}

fn match_conditions(ours: &[&MutatingWebhook], out: &mut Vec<Check>) {
    const ID: &str = "match-conditions";
    for webhook in ours.iter().filter(|w| handles_pods(w)) {
        if has_conditions(webhook) {
            out.push(ok(
                ID,
                format!("{} is called only for Pods its matchConditions select", webhook.name),
            ));
        } else {
            out.push(bad(
                ID,
                Level::Warn,
                format!(
                    "{} has no matchConditions: every Pod created in a selected namespace calls entourage, not only \
                     those with an entourage.dev/ annotation",
                    webhook.name
                ),
                "add the has-entourage-annotation matchCondition of manifests/base/webhook.yaml (Kubernetes 1.30+)",
            ));
        }
    }
}

fn failure_policy(ours: &[&MutatingWebhook], out: &mut Vec<Check>) {
    const ID: &str = "failure-policy";
    let before = out.len();
    let mut summary = Vec::new();
    for webhook in ours {
        // Unset is Fail in admissionregistration/v1.
        let policy = webhook.failure_policy.as_deref().unwrap_or("Fail");
        summary.push(format!("{} {policy}", webhook.name));
        match (handles_pods(webhook), policy) {
            (true, "Fail") if !has_conditions(webhook) => out.push(bad(
                ID,
                Level::Fail,
                format!(
                    "{} has failurePolicy Fail and no matchConditions: while entourage is down no Pod can be created \
                     in any namespace it selects",
                    webhook.name
                ),
                "add the has-entourage-annotation matchCondition, so that only Pods that ask for entourage wait for it",
            )),
            (true, "Ignore") => out.push(bad(
                ID,
                Level::Warn,
                format!(
                    "{} has failurePolicy Ignore: while entourage is down, Pods that ask for sidecars start without them",
                    webhook.name
                ),
                "set failurePolicy: Fail (with matchConditions, only annotated Pods wait for entourage)",
            )),
            (false, "Fail") => out.push(bad(
                ID,
                Level::Warn,
                format!(
                    "{} has failurePolicy Fail: while entourage is down no Job or CronJob can be created, for \
                     defaults that are optional",
                    webhook.name
                ),
                "set failurePolicy: Ignore",
            )),
            _ => {}
        }
    }
    if out.len() == before {
        out.push(ok(ID, summary.join(", ")));
    }
}

/// The version in an image reference's tag (`…/entourage:0.1.0@sha256:…` is `0.1.0`).
fn image_version(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let tag = last.split_once(':')?.1;
    Some(tag.strip_prefix('v').unwrap_or(tag))
}

fn stale(s: &Snapshot, args: &DoctorArgs, out: &mut Vec<Check>) {
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
    let stale: Vec<String> = pods
        .iter()
        .filter_map(|(pod, status)| {
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
        const SHOWN: usize = 5;
        let more = stale.len().saturating_sub(SHOWN);
        let mut listed = stale.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
        if more > 0 {
            listed.push_str(&format!(" and {more} more"));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(name: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("kubernetes.io/metadata.name".to_string(), name.to_string())])
    }

    #[test]
    fn selectors_follow_the_api_semantics() {
        let not_in = |values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "kubernetes.io/metadata.name".into(),
                operator: "NotIn".into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            match_labels: None,
        };
        let manifests = not_in(&["kube-system", "entourage-system"]);
        assert!(!selects(Some(&manifests), &labels("kube-system")));
        assert!(selects(Some(&manifests), &labels("default")));
        assert!(selects(None, &labels("kube-system")));
        assert!(selects(Some(&LabelSelector::default()), &labels("kube-system")));
        let opt_in = LabelSelector {
            match_labels: Some(BTreeMap::from([("entourage".to_string(), "enabled".to_string())])),
            match_expressions: None,
        };
        assert!(!selects(Some(&opt_in), &labels("kube-system")));
    }

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
