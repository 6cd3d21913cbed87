//! The ambassador pattern: a local proxy per upstream, and the app told where to find it.
//!
//! The app gets `AMBASSADOR_URL` (or `AMBASSADOR_<NAME>_URL` per named upstream) pointing at a loopback port;
//! the ambassador container (`entourage ambassador`) forwards to the upstream. The auth Secret is mounted
//! read-only into the ambassador only, never into the app.

use k8s_openapi::{
    api::core::v1::{
        ConfigMapVolumeSource, EnvVar, HTTPGetAction, KeyToPath, Probe, ProjectedVolumeSource, SecretVolumeSource,
        ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use serde_json::Value;

use super::{
    injected::Injected,
    plan::{Plan, PodView},
    Pattern,
};
use crate::support::names::label;
use crate::support::protocol::UpstreamProtocol;
use crate::{
    core::annotations::{self, AnnotationError, CaSource, Upstream},
    core::config::Config,
};

/// Where auth Secrets are mounted in the ambassador.
const AUTH_DIR: &str = "/var/run/secrets/entourage";
/// Where projected workload tokens are mounted in the ambassador.
const TOKEN_DIR: &str = "/var/run/secrets/entourage-token";
/// The file of the projected token.
const TOKEN_FILE: &str = "token";
/// Where client certificate Secrets are mounted in the ambassador.
const CLIENT_CERT_DIR: &str = "/var/run/secrets/entourage-client-cert";
/// Where CA bundles are mounted in the ambassador.
const CA_DIR: &str = "/var/run/secrets/entourage-ca";
/// Where OAuth2 client credential Secrets are mounted in the ambassador.
const OAUTH2_DIR: &str = "/var/run/secrets/entourage-oauth2";
/// The keys of an OAuth2 client credential Secret.
const OAUTH2_CLIENT_ID: &str = "client-id";
const OAUTH2_CLIENT_SECRET: &str = "client-secret";
/// The certificate and key of a `kubernetes.io/tls` Secret.
const TLS_CERT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";

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
/// leave an app's own setting alone), so the webhook's decoder keeps no others (`crate::admission::pruned::Reads::EachNamed`).
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
        // The kubelet probes the Pod IP, so the admin port listens on every address (/healthz, /livez, /metrics only).
        "--admin".into(),
        format!("0.0.0.0:{admin}"),
        "--timeout".into(),
        config.ambassador.timeout.clone(),
    ];
    let a = &config.ambassador;
    for (flag, value) in [
        ("--retries", a.retries.to_string()),
        ("--breaker-failures", a.breaker_failures.to_string()),
        ("--breaker-cooldown", a.breaker_cooldown.clone()),
        ("--max-concurrent", a.max_concurrent.to_string()),
    ] {
        args.push(flag.into());
        args.push(value);
    }
    if upstream.protocol != UpstreamProtocol::Auto {
        args.push("--upstream-protocol".into());
        args.push(upstream.protocol.as_str().into());
    }
    if !plan.native {
        // Every container of a classic Pod gets SIGTERM at once: the app, shutting down, still calls through us.
        args.push("--drain-period".into());
        args.push(config.sidecars.drain_period.clone());
    }
    let mut mounts = Vec::new();
    let mut mount = |volume: String, dir: String| {
        mounts.push(VolumeMount {
            name: volume,
            mount_path: dir.clone(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        dir
    };
    if let Some(secret) = &upstream.auth_secret {
        let volume = secret_volume(secret, "auth", &[&a.auth_secret_key], plan);
        let dir = mount(volume, format!("{AUTH_DIR}/{secret}"));
        args.push("--auth-file".into());
        args.push(format!("{dir}/{}", a.auth_secret_key));
    }
    if let Some(audience) = &upstream.token_audience {
        let volume = token_volume(audience, a.token_expiration_seconds, plan);
        let dir = mount(volume.clone(), format!("{TOKEN_DIR}/{volume}"));
        // The kubelet swaps the `..data` link when it renews the token; the ambassador re-reads the file.
        args.push("--auth-file".into());
        args.push(format!("{dir}/{TOKEN_FILE}"));
    }
    if let Some(oauth2) = &upstream.oauth2 {
        let volume = secret_volume(
            &oauth2.secret,
            "oauth2",
            &[OAUTH2_CLIENT_ID, OAUTH2_CLIENT_SECRET],
            plan,
        );
        let dir = mount(volume, format!("{OAUTH2_DIR}/{}", oauth2.secret));
        args.extend(["--oauth2-token-url".into(), oauth2.token_url.clone()]);
        args.extend(["--oauth2-client-id-file".into(), format!("{dir}/{OAUTH2_CLIENT_ID}")]);
        args.extend([
            "--oauth2-client-secret-file".into(),
            format!("{dir}/{OAUTH2_CLIENT_SECRET}"),
        ]);
        for scope in &oauth2.scopes {
            args.extend(["--oauth2-scope".into(), scope.clone()]);
        }
    }
    if let Some(secret) = &upstream.client_cert_secret {
        let volume = secret_volume(secret, "client-cert", &[TLS_CERT, TLS_KEY], plan);
        let dir = mount(volume, format!("{CLIENT_CERT_DIR}/{secret}"));
        args.extend(["--client-cert".into(), format!("{dir}/{TLS_CERT}")]);
        args.extend(["--client-key".into(), format!("{dir}/{TLS_KEY}")]);
    }
    if let Some(ca) = &upstream.ca {
        let (volume, name) = match ca {
            CaSource::Secret(name) => (secret_volume(name, "ca", &[&a.ca_key], plan), name),
            CaSource::ConfigMap(name) => (config_map_volume(name, &a.ca_key, plan), name),
        };
        let dir = mount(volume, format!("{CA_DIR}/{name}"));
        args.extend(["--ca-file".into(), format!("{dir}/{}", a.ca_key)]);
    }
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
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
        readiness_probe: Some(probe("/healthz", 5, 3)),
        // A wedged proxy stops answering on the admin port it shares a thread with, and gets restarted.
        liveness_probe: Some(probe("/livez", 10, 3)),
        // A native sidecar's startup probe holds the app back until the proxy is listening.
        startup_probe: native.then(|| probe("/healthz", 1, 30)),
        ..Injected::new(name, &config.images.entourage, native, config, own)
    });
}

/// The volume of Secret `secret` with `keys` (one per Secret and use, however many upstreams share it).
fn secret_volume(secret: &str, purpose: &str, keys: &[&str], plan: &mut Plan) -> String {
    let items: Vec<KeyToPath> = keys
        .iter()
        .map(|key| KeyToPath {
            key: key.to_string(),
            path: key.to_string(),
            mode: None,
        })
        .collect();
    let same = |v: &Volume| {
        v.secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some(secret) && s.items.as_deref() == Some(items.as_slice()))
    };
    if let Some(existing) = plan.volumes.iter().find(|v| same(v)) {
        return existing.name.clone();
    }
    let name = plan
        .volume_names
        .claim(&format!("entourage-{purpose}-{}", label(secret, 40, "secret")));
    plan.volumes.push(Volume {
        name: name.clone(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_string()),
            items: Some(items),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    });
    name
}

/// The volume of ConfigMap `name` with its `key` (the CA bundle).
fn config_map_volume(name: &str, key: &str, plan: &mut Plan) -> String {
    let same = |v: &Volume| v.config_map.as_ref().is_some_and(|c| c.name == name);
    if let Some(existing) = plan.volumes.iter().find(|v| same(v)) {
        return existing.name.clone();
    }
    let volume = plan
        .volume_names
        .claim(&format!("entourage-ca-{}", label(name, 40, "ca")));
    plan.volumes.push(Volume {
        name: volume.clone(),
        config_map: Some(ConfigMapVolumeSource {
            name: name.to_string(),
            items: Some(vec![KeyToPath {
                key: key.to_string(),
                path: key.to_string(),
                mode: None,
            }]),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    });
    volume
}

/// A projected ServiceAccount token for `audience`, renewed by the kubelet at 80 % of `expiration_seconds`. It is
/// mounted into the ambassador only: the app's own token (if any) stays the default-audience one, so a token
/// meant for the upstream never reaches the app.
fn token_volume(audience: &str, expiration_seconds: i64, plan: &mut Plan) -> String {
    let same = |v: &Volume| {
        v.projected
            .as_ref()
            .and_then(|p| p.sources.as_deref())
            .is_some_and(|sources| {
                sources
                    .iter()
                    .any(|s| s.service_account_token.as_ref().and_then(|t| t.audience.as_deref()) == Some(audience))
            })
    };
    if let Some(existing) = plan.volumes.iter().find(|v| same(v)) {
        return existing.name.clone();
    }
    let name = plan
        .volume_names
        .claim(&format!("entourage-token-{}", label(audience, 40, "audience")));
    plan.volumes.push(Volume {
        name: name.clone(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(audience.to_string()),
                    expiration_seconds: Some(expiration_seconds),
                    path: TOKEN_FILE.into(),
                }),
                ..VolumeProjection::default()
            }]),
            ..ProjectedVolumeSource::default()
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
                    ..Upstream::default()
                };
                let env = env_name(&upstream, &config);
                assert!(reads_env(&env, &config), "{env} under urlEnv {url_env}");
            }
        }
        assert!(!reads_env("LOG_LEVEL", &config));
    }
}
