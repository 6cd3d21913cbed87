//! What the webhook injects for the ambassador, read as a user and as the ambassador would: every command line
//! it renders is one `entourage ambassador` accepts (one parser for each value), and credentials (auth Secret,
//! client certificate, workload token, OAuth2 client secret) are mounted into the ambassador, never into the app.

mod support;

use clap::{Args, Command};
use entourage::{admission, core::config::Config, core::mutate};
use serde_json::{json, Value};

/// The Pod after the webhook's patch.
fn patched(annotations: Value, config: &Config) -> Value {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", "namespace": "shop", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "shop/app:1"}]}
    });
    let body = serde_json::to_vec(&support::review(("", "v1", "Pod"), "shop", "CREATE", &pod)).unwrap();
    let review = admission::decode(&body, config).unwrap();
    let outcome = mutate::mutate(&review.request, config);
    let patch = serde_json::to_value(&outcome.patch).unwrap();
    support::apply(&pod, &patch).unwrap_or_else(|e| panic!("{e}: {outcome:?}"))
}

fn all_identities() -> Value {
    json!({
        "entourage.dev/ambassador-upstreams":
            "orders=https://orders.shop.svc:8443,vault=https://vault.vault.svc:8200,pay=https://pay.example.com",
        "entourage.dev/ambassador-client-cert-secret": "orders=orders-client-tls",
        "entourage.dev/ambassador-ca": "orders=shop-ca,pay=secret:pay-ca",
        "entourage.dev/ambassador-token-audience": "vault=vault",
        "entourage.dev/ambassador-oauth2": "upstream=pay,token-url=https://auth.example.com/token,secret=pay-oauth,scope=pay.read",
    })
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    let spec = &pod["spec"];
    spec["initContainers"]
        .as_array()
        .into_iter()
        .chain(spec["containers"].as_array())
        .flatten()
}

fn argv(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

fn ambassador_parser() -> Command {
    entourage::ambassador::AmbassadorArgs::augment_args(Command::new("entourage").no_binary_name(true))
}

#[test]
fn every_ambassador_command_line_the_webhook_renders_is_one_the_ambassador_accepts() {
    let yaml = "ambassador:\n  retries: 4\n  breakerFailures: 7\n  breakerCooldown: 1m30s\n  maxConcurrent: 64\n  tokenExpirationSeconds: 7200\n";
    for config in [Config::default(), Config::from_yaml(yaml, "test").unwrap()] {
        let pod = patched(all_identities(), &config);
        let ambassadors: Vec<&Value> = containers(&pod)
            .filter(|c| c["name"].as_str().unwrap().starts_with("ambassador-"))
            .collect();
        assert_eq!(ambassadors.len(), 3);
        for container in ambassadors {
            let argv = argv(container);
            assert_eq!(argv[0], "ambassador");
            if let Err(e) = ambassador_parser().try_get_matches_from(&argv[1..]) {
                panic!("entourage ambassador refuses what the webhook injects: {e}\n{argv:?}");
            }
            let a = &config.ambassador;
            for (flag, value) in [
                ("--retries", a.retries.to_string()),
                ("--breaker-failures", a.breaker_failures.to_string()),
                ("--breaker-cooldown", a.breaker_cooldown.clone()),
                ("--max-concurrent", a.max_concurrent.to_string()),
            ] {
                assert!(
                    argv.windows(2).any(|w| w == [flag, value.as_str()]),
                    "{flag} {value} in {argv:?}"
                );
            }
            assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
            assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
        }
        let token = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|v| v.pointer("/projected/sources/0/serviceAccountToken"))
            .expect("a projected token volume");
        assert_eq!(token["audience"], "vault");
        assert_eq!(token["expirationSeconds"], config.ambassador.token_expiration_seconds);
    }
}

#[test]
fn breaker_cooldowns_the_ambassador_would_refuse_are_refused_at_config_load() {
    for bad in ["0s", "10", "soon"] {
        let err = Config::from_yaml(&format!("ambassador:\n  breakerCooldown: {bad:?}\n"), "t").unwrap_err();
        assert!(err.to_string().contains("ambassador.breakerCooldown"), "{bad}: {err}");
        let refused = ambassador_parser().try_get_matches_from(["--upstream", "http://a", "--breaker-cooldown", bad]);
        assert!(refused.is_err(), "{bad}");
    }
    for bad in [
        "maxConcurrent: 0",
        "tokenExpirationSeconds: 599",
        "tokenExpirationSeconds: 86401",
    ] {
        let err = Config::from_yaml(&format!("ambassador:\n  {bad}\n"), "t").unwrap_err();
        let key = bad.split(':').next().unwrap();
        assert!(err.to_string().contains(&format!("ambassador.{key}")), "{bad}: {err}");
    }
}

#[test]
fn credentials_are_mounted_into_the_ambassadors_only_never_into_the_app() {
    let pod = patched(all_identities(), &Config::default());
    let app = containers(&pod).find(|c| c["name"] == "app").unwrap();
    assert!(app.get("volumeMounts").is_none(), "{app}");
    let credential_volumes: Vec<&str> = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for volume in ["client-cert", "ca", "token", "oauth2"] {
        assert!(
            credential_volumes
                .iter()
                .any(|v| v.starts_with(&format!("entourage-{volume}-"))),
            "{volume} in {credential_volumes:?}"
        );
    }
    for container in containers(&pod) {
        let mounts: Vec<&str> = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["name"].as_str())
            .collect();
        let is_ambassador = container["name"].as_str().unwrap().starts_with("ambassador-");
        assert!(
            mounts.iter().all(|m| is_ambassador || !credential_volumes.contains(m)),
            "{container}"
        );
        assert!(container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|e| e.get("valueFrom").is_none()));
    }
    let vault = containers(&pod).find(|c| c["name"] == "ambassador-vault").unwrap();
    let vault_argv = argv(vault);
    let token_file = vault_argv
        .windows(2)
        .find(|w| w[0] == "--auth-file")
        .map(|w| w[1].clone())
        .expect("the workload token is the vault ambassador's bearer");
    let mount = &vault["volumeMounts"][0];
    assert_eq!(token_file, format!("{}/token", mount["mountPath"].as_str().unwrap()));
    assert_eq!(mount["readOnly"], true);
}
