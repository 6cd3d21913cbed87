//! The ambassador pattern: a local proxy per upstream, and the app told where to find it.
//!
//! The app gets `AMBASSADOR_URL` (or `AMBASSADOR_<NAME>_URL` per named upstream) pointing at a loopback port;
//! the ambassador container (`entourage ambassador`) forwards to the upstream. The auth Secret is mounted
//! read-only into the ambassador only, never into the app.

use k8s_openapi::{
    api::core::v1::{EnvVar, HTTPGetAction, KeyToPath, Probe, SecretVolumeSource, Volume, VolumeMount},
    apimachinery::pkg::util::intstr::IntOrString,
};
use serde_json::Value;

use super::{
    harden::Injected,
    pod::{Plan, PodView},
    Pattern,
};
use crate::support::names::label;
use crate::{
    core::annotations::{self, AnnotationError, Upstream},
    core::config::Config,
};

/// Where auth Secrets are mounted in the ambassador.
const AUTH_DIR: &str = "/var/run/secrets/entourage";

/// Plans one ambassador per upstream; a port the Pod already declares is refused.
pub(crate) fn plan<'c>(
    upstreams: &[Upstream],
    view: &PodView<'_>,
    config: &'c Config,
    plan: &mut Plan<'c>,
) -> Result<(), Vec<AnnotationError>> {
    let declared: Vec<(i64, &str)> = view
        .all_containers()
        .flat_map(|c| {
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            c.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(move |p| Some((p.get("containerPort")?.as_i64()?, name)))
        })
        .collect();
    let mut errors = Vec::new();
    for (i, upstream) in upstreams.iter().enumerate() {
        // One admin port per ambassador, counting up from the config's: it must not run past 65535.
        let Ok(admin) = u16::try_from(usize::from(config.ambassador.admin_port) + i) else {
            errors.push(AnnotationError {
                key: annotations::AMBASSADOR_UPSTREAMS,
                value: upstream.name.clone().unwrap_or_else(|| upstream.url.clone()),
                rule: format!(
                    "needs admin port {} past 65535 (config ambassador.adminPort is {})",
                    usize::from(config.ambassador.admin_port) + i,
                    config.ambassador.admin_port
                ),
            });
            continue;
        };
        let local_ports: Vec<u16> = upstreams.iter().map(|u| u.port).collect();
        if let Some((_, owner)) = declared.iter().find(|(p, _)| *p == i64::from(upstream.port)) {
            errors.push(AnnotationError {
                key: annotations::AMBASSADOR_PORT,
                value: upstream.port.to_string(),
                rule: format!("is already declared by container {owner:?}; choose a free port"),
            });
        }
        if local_ports.contains(&admin) || declared.iter().any(|(p, _)| *p == i64::from(admin)) {
            errors.push(AnnotationError {
                key: annotations::AMBASSADOR_PORT,
                value: upstream.port.to_string(),
                rule: format!("leaves no room for the ambassador's admin port {admin} (config ambassador.adminPort), which the Pod uses"),
            });
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    for (i, upstream) in upstreams.iter().enumerate() {
        let admin = config.ambassador.admin_port + u16::try_from(i).unwrap_or(0);
        add_one(upstream, admin, view, config, plan);
    }
    Ok(())
}

/// The env var that tells the app where an ambassador listens.
fn env_name(upstream: &Upstream, config: &Config) -> String {
    match &upstream.name {
        None => config.ambassador.url_env.clone(),
        Some(name) => format!("AMBASSADOR_{}_URL", name.to_ascii_uppercase().replace('-', "_")),
    }
}

/// Whether `name` could be an [`env_name`] under `config`: the only env entries of a Pod the core looks up (to
/// leave an app's own setting alone), so the webhook's decoder keeps no others (`crate::review::pruned::Reads::EachNamed`).
pub fn reads_env(name: &str, config: &Config) -> bool {
    name == config.ambassador.url_env || (name.starts_with("AMBASSADOR_") && name.ends_with("_URL"))
}

fn add_one<'c>(upstream: &Upstream, admin: u16, view: &PodView<'_>, config: &'c Config, plan: &mut Plan<'c>) {
    let env_name = env_name(upstream, config);
    let url = format!("http://127.0.0.1:{}", upstream.port);
    let app_has_env = view.target().get("env").and_then(Value::as_array).is_some_and(|env| {
        env.iter()
            .any(|e| e.get("name").and_then(Value::as_str) == Some(env_name.as_str()))
    });
    if app_has_env {
        plan.warnings.push(format!(
            "entourage: container {:?} keeps its own {env_name}; the ambassador listens on {url}",
            view.target_name()
        ));
    } else {
        plan.app_env.push(EnvVar {
            name: env_name,
            value: Some(url),
            value_from: None,
        });
    }

    let mut args: Vec<String> = vec![
        "ambassador".into(),
        "--listen".into(),
        format!("127.0.0.1:{}", upstream.port),
        "--upstream".into(),
        upstream.url.clone(),
        // The kubelet probes the Pod IP, so the admin port listens on every address; it serves /healthz only.
        "--admin".into(),
        format!("0.0.0.0:{admin}"),
        "--timeout".into(),
        config.ambassador.timeout.clone(),
    ];
    if !plan.native {
        // Every container of a classic Pod gets SIGTERM at once: the app, shutting down, still calls through us.
        args.push("--drain-period".into());
        args.push(config.sidecars.drain_period.clone());
    }
    let mut mounts = Vec::new();
    if let Some(secret) = &upstream.auth_secret {
        let volume = auth_volume(secret, config, plan);
        let dir = format!("{AUTH_DIR}/{secret}");
        args.push("--auth-file".into());
        args.push(format!("{dir}/{}", config.ambassador.auth_secret_key));
        mounts.push(VolumeMount {
            name: volume,
            mount_path: dir,
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let probe = |period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz".into()),
            port: IntOrString::Int(admin.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let base = match &upstream.name {
        None => "ambassador".to_string(),
        Some(name) => format!("ambassador-{}", label(name, 40, "upstream")),
    };
    let native = plan.native;
    plan.add_container(view, Pattern::Ambassador, &base, |name, own| Injected {
        args: Some(args.clone()),
        volume_mounts: mounts.clone(),
        readiness_probe: Some(probe(5, 3)),
        // A native sidecar's startup probe holds the app back until the proxy is listening.
        startup_probe: native.then(|| probe(1, 30)),
        ..Injected::new(name, &config.images.entourage, native, config, own)
    });
}

/// The volume holding `secret` (one per Secret, however many upstreams share it).
fn auth_volume(secret: &str, config: &Config, plan: &mut Plan) -> String {
    if let Some(existing) = plan
        .volumes
        .iter()
        .find(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(secret))
    {
        return existing.name.clone();
    }
    let name = plan
        .volume_names
        .claim(&format!("entourage-auth-{}", label(secret, 40, "secret")));
    let key = config.ambassador.auth_secret_key.clone();
    plan.volumes.push(Volume {
        name: name.clone(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_string()),
            items: Some(vec![KeyToPath {
                key: key.clone(),
                path: key,
                mode: None,
            }]),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    });
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_env_var_an_ambassador_sets_is_one_the_decoder_keeps() {
        let mut config = Config::default();
        for url_env in ["AMBASSADOR_URL", "BACKEND", "X"] {
            config.ambassador.url_env = url_env.into();
            for name in [None, Some("orders"), Some("pay-v2"), Some("a"), Some("x-y-z-9")] {
                let upstream = Upstream {
                    name: name.map(str::to_string),
                    url: "http://orders.shop.svc:8080".into(),
                    port: 9000,
                    auth_secret: None,
                };
                let env = env_name(&upstream, &config);
                assert!(reads_env(&env, &config), "{env} under urlEnv {url_env}");
            }
        }
        assert!(!reads_env("LOG_LEVEL", &config));
    }
}
