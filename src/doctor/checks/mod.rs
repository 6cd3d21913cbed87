//! The checks, on what [`super::cluster`] read: pure functions, one [`Check`] (one line) per finding.
//! [`policy`] judges the webhooks' own settings, [`stale`] the injected Pods' versions.

mod policy;
mod stale;

pub use policy::selects;

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, MutatingWebhookConfiguration};
use rustls::pki_types::UnixTime;

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

pub(super) fn ok(id: &'static str, message: String) -> Check {
    Check {
        id,
        level: Level::Ok,
        message,
        fix: None,
    }
}

pub(super) fn bad(id: &'static str, level: Level, message: String, fix: impl Into<String>) -> Check {
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
    expiry(s, args, &ours, now, &mut out);
    endpoints(s, args, &mut out);
    reach(s, args, &mut out);
    if !ours.is_empty() {
        policy::exclusions(s, &ours, &mut out);
        policy::match_conditions(&ours, &mut out);
        policy::failure_policy(&ours, &mut out);
    }
    stale::stale(s, args, &mut out);
    stale::missed(s, &mut out);
    stale::old_revision(s, &mut out);
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

/// The soonest expiry that breaks admission: the serving certificate's, or that of the CA a caBundle trusts (of
/// a bundle holding several CAs, as during a CA rotation, the one that lasts longest).
fn expiry(s: &Snapshot, args: &DoctorArgs, ours: &[&MutatingWebhook], now: UnixTime, out: &mut Vec<Check>) {
    const ID: &str = "certificate-expiry";
    let pem = match serving(s, args, ID) {
        Ok(pem) => pem,
        // ca-bundle reported it already when it ran.
        Err(check) if ours.is_empty() => return out.push(check),
        Err(_) => return,
    };
    let serving_left = match cert::seconds_left(pem, now) {
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
    let mut soonest = (
        serving_left,
        format!("the serving certificate in {}", secret_name(args)),
    );
    for webhook in ours {
        let bundle = webhook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.as_slice())
            .unwrap_or_default();
        let longest = cert::pem_certificates(bundle)
            .iter()
            .filter_map(|ca| cert::der_seconds_left(ca, now).ok())
            .max();
        if let Some(left) = longest.filter(|left| *left < soonest.0) {
            soonest = (left, format!("the CA in {}'s caBundle", webhook.name));
        }
    }
    let (left, what) = soonest;
    let renew = "renew it: cert-manager renews before expiry; otherwise write a new certificate (and CA) into the \
                 Secret (the webhook reloads it without a restart) and the caBundle";
    let days = left.div_euclid(86_400);
    let when = date(now, left);
    if left <= 0 {
        out.push(bad(
            ID,
            Level::Fail,
            format!("{what} expired on {when}: every admission call fails"),
            renew,
        ));
    } else if days < i64::from(args.expiry_warning_days) {
        out.push(bad(
            ID,
            Level::Warn,
            format!("{what} expires in {days} days ({when})"),
            renew,
        ));
    } else {
        out.push(ok(
            ID,
            format!("the serving certificate and its CA are valid for {days} more days ({when})"),
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
