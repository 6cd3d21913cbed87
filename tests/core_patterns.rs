//! The classic patterns from the seed notes, checked as a user would read the result.

mod support;

use entourage::{admission, core::config::Config, core::mutate};
use serde_json::{json, Value};

fn patched(fixture: &str, config: &Config) -> (Value, mutate::Outcome) {
    let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
    let body = std::fs::read(path).unwrap();
    let review = admission::decode(&body, config).unwrap();
    let outcome = mutate::mutate(&review.request, config);
    let object = admission::decode_whole(&body).unwrap().request.object.unwrap();
    let patch = serde_json::to_value(&outcome.patch).unwrap();
    (support::apply(&object, &patch).unwrap(), outcome)
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

#[test]
fn nginx_sample_becomes_the_seed_two_sidecar_pod() {
    let (pod, _) = patched("pod-sidecar-nginx.json", &Config::default());
    let containers = &pod["spec"]["containers"];
    assert_eq!(names(containers), ["nginx"]);
    // Native sidecars: they start before nginx and stop after it.
    let init = &pod["spec"]["initContainers"];
    assert_eq!(names(init), ["sidecar-access", "sidecar-error"]);
    let volume = pod["spec"]["volumes"][0].clone();
    assert_eq!(volume["emptyDir"]["sizeLimit"], "256Mi");
    let shared = volume["name"].clone();
    assert_eq!(
        containers[0]["volumeMounts"],
        json!([{"name": shared, "mountPath": "/var/log/nginx"}])
    );
    let state = pod["spec"]["volumes"][1].clone();
    assert_eq!(state["name"], "entourage-state");
    assert_eq!(state["emptyDir"]["sizeLimit"], "1Mi");
    for (i, file, name) in [
        (0, "/var/log/nginx/access.log", "sidecar-access"),
        (1, "/var/log/nginx/error.log", "sidecar-error"),
    ] {
        let sidecar = &init[i];
        assert_eq!(sidecar["restartPolicy"], "Always");
        assert_eq!(sidecar["image"], Config::default().images.entourage);
        assert_eq!(sidecar["command"], Value::Null, "the image's ENTRYPOINT is the binary");
        let position = format!("/var/lib/entourage/{name}.pos");
        assert_eq!(
            sidecar["args"],
            json!([
                "stream",
                "--file",
                file,
                "--position",
                position,
                "--create",
                "--give-back",
                "--backlog-warn-bytes",
                "134217728"
            ]),
            "exec form, no shell; warns at half of the 256Mi sizeLimit"
        );
        assert_eq!(
            sidecar["startupProbe"]["exec"]["command"],
            json!(["/entourage", "started", "--position", position]),
            "nginx starts once the reader has created the log file"
        );
        assert_eq!(
            sidecar["volumeMounts"],
            json!([
                {"name": shared, "mountPath": "/var/log/nginx"},
                {"name": "entourage-state", "mountPath": "/var/lib/entourage"}
            ]),
            "the log volume read-write (the reader creates the file and gives back space), its state volume"
        );
        let sc = &sidecar["securityContext"];
        assert_eq!(
            (sc["runAsNonRoot"].clone(), sc["runAsUser"].clone()),
            (json!(true), json!(65534))
        );
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    }
}

#[test]
fn classic_sidecar_keeps_following_for_the_drain_period_after_sigterm() {
    let mut config = Config::default();
    config.sidecars.mode = entourage::core::config::SidecarMode::Classic;
    let (pod, _) = patched("pod-sidecar-nginx.json", &config);
    let sidecar = &pod["spec"]["containers"][1];
    assert_eq!(sidecar["name"], "sidecar-access");
    let args = sidecar["args"].as_array().unwrap();
    assert_eq!(args[args.len() - 2..], [json!("--drain-period"), json!("10s")]);
    assert_eq!(
        sidecar["startupProbe"],
        Value::Null,
        "a classic container holds nothing back"
    );
}

#[test]
fn busybox_streamer_is_a_config_choice_with_the_log_volume_read_only() {
    let mut config = Config::default();
    config.sidecars.streamer = entourage::core::config::Streamer::Busybox;
    let (pod, _) = patched("pod-sidecar-nginx.json", &config);
    let sidecar = &pod["spec"]["initContainers"][0];
    assert_eq!(sidecar["image"], "busybox:1.36");
    assert_eq!(
        sidecar["command"],
        json!(["tail", "-n+1", "-F", "/var/log/nginx/access.log"])
    );
    assert_eq!(sidecar["volumeMounts"][0]["readOnly"], true);
    assert_eq!(pod["spec"]["volumes"].as_array().unwrap().len(), 1, "no state volume");
}

#[test]
fn job_owned_variant_gets_native_sidecars_first_in_init_containers() {
    let (pod, outcome) = patched("pod-sidecar-job.json", &Config::default());
    assert!(outcome.warnings.is_empty());
    let init = &pod["spec"]["initContainers"];
    assert_eq!(names(init), ["sidecar-run"]);
    assert_eq!(init[0]["restartPolicy"], "Always");
    assert_eq!(
        init[0]["startupProbe"]["exec"]["command"],
        json!([
            "/entourage",
            "started",
            "--position",
            "/var/lib/entourage/sidecar-run.pos"
        ]),
        "the app starts once the reader has created the log file"
    );
    assert!(
        !init[0]["args"].as_array().unwrap().contains(&json!("--drain-period")),
        "a native sidecar stops after the app: nothing to wait for"
    );
    assert_eq!(
        names(&pod["spec"]["containers"]),
        ["report"],
        "the app runs alone in containers, so the Job completes"
    );
}

#[test]
fn adapter_sample_runs_entourage_adapt_on_the_shared_file() {
    let (pod, _) = patched("pod-adapter-nginx.json", &Config::default());
    let adapter = &pod["spec"]["initContainers"][0];
    assert_eq!(adapter["name"], "adapter-access");
    assert_eq!(adapter["image"], Config::default().images.entourage);
    assert_eq!(
        adapter["args"],
        json!([
            "adapt",
            "--file",
            "/var/log/app/access.log",
            "--position",
            "/var/lib/entourage/adapter-access.pos",
            "--create",
            "--give-back",
            "--backlog-warn-bytes",
            "134217728",
            "--format",
            "nginx",
            "--field",
            "app=web",
            "--field",
            "team=shop"
        ])
    );
}

#[test]
fn ambassador_sample_points_the_app_at_localhost_and_mounts_the_secret_only_in_the_ambassador() {
    let (pod, _) = patched("pod-ambassador.json", &Config::default());
    let app = &pod["spec"]["containers"][0];
    assert_eq!(
        app["env"],
        json!([{"name": "AMBASSADOR_URL", "value": "http://127.0.0.1:9000"}])
    );
    assert!(app.get("volumeMounts").is_none(), "the app never sees the auth Secret");
    let ambassador = &pod["spec"]["initContainers"][0];
    assert_eq!(ambassador["name"], "ambassador");
    let args: Vec<&str> = ambassador["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        args[..5],
        [
            "ambassador",
            "--listen",
            "127.0.0.1:9000",
            "--upstream",
            "http://orders.shop.svc.cluster.local:8080"
        ]
    );
    assert!(args
        .windows(2)
        .any(|w| w == ["--auth-file", "/var/run/secrets/entourage/orders-token/token"]));
    assert_eq!(ambassador["volumeMounts"][0]["readOnly"], true);
    assert_eq!(ambassador["readinessProbe"]["httpGet"]["path"], "/healthz");
}

/// The ambassador container's `command` + `args` (whichever list carries `ambassador`) of a patched Pod.
fn ambassador_argv(pod: &Value) -> Vec<String> {
    let spec = &pod["spec"];
    let containers = spec["initContainers"]
        .as_array()
        .into_iter()
        .chain(spec["containers"].as_array())
        .flatten();
    for c in containers {
        let argv: Vec<String> = c["command"]
            .as_array()
            .into_iter()
            .chain(c["args"].as_array())
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        if let Some(at) = argv.iter().position(|a| a == "ambassador") {
            return argv[at..].to_vec();
        }
    }
    panic!("no ambassador container in {pod}");
}

#[test]
fn every_timeout_the_config_accepts_is_one_the_injected_ambassador_accepts() {
    use clap::{Args, Command};
    let ambassador =
        || entourage::ambassador::AmbassadorArgs::augment_args(Command::new("entourage").no_binary_name(true));
    for timeout in ["1ms", "500ms", "30s", "2m", "1h", "1m30s", "90s"] {
        let config = Config::from_yaml(&format!("ambassador:\n  timeout: {timeout:?}\n"), "test")
            .unwrap_or_else(|e| panic!("timeout {timeout:?} refused by config: {e}"));
        let (pod, _) = patched("pod-ambassador.json", &config);
        let argv = ambassador_argv(&pod);
        assert!(argv.iter().any(|a| a == timeout), "{argv:?}");
        if let Err(e) = ambassador().try_get_matches_from(&argv[1..]) {
            panic!("entourage ambassador refuses what the webhook injects for timeout {timeout:?}: {e}");
        }
    }
    // What the ambassador would refuse (it exits at start), the config refuses at load, naming the key.
    for timeout in ["0s", "0ms", "30", "1d", ""] {
        let err = Config::from_yaml(&format!("ambassador:\n  timeout: {timeout:?}\n"), "test").unwrap_err();
        assert!(err.to_string().contains("ambassador.timeout"), "{timeout:?}: {err}");
        assert!(ambassador()
            .try_get_matches_from([
                "--listen",
                "127.0.0.1:9000",
                "--upstream",
                "http://a",
                "--timeout",
                timeout
            ])
            .is_err());
    }
}

/// Where the injected containers of a patched Pod went: `(in initContainers as native sidecars, in containers)`.
fn placement(pod: &Value) -> (Vec<&str>, Vec<&str>) {
    let init = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["restartPolicy"] == "Always")
        .filter_map(|c| c["name"].as_str())
        .collect();
    let classic = names(&pod["spec"]["containers"])
        .into_iter()
        .filter(|n| n.starts_with("sidecar-") || n.starts_with("adapter-") || n.starts_with("ambassador"))
        .collect();
    (init, classic)
}

#[test]
fn every_pod_gets_native_sidecars_unless_config_says_the_cluster_is_older_than_1_29() {
    // A Deployment's Pod (no owner we know of), a bare Pod and a Job's Pod.
    let fixtures = ["pod-sidecar-nginx.json", "pod-ambassador.json", "pod-sidecar-job.json"];
    for fixture in fixtures {
        let (pod, _) = patched(fixture, &Config::default());
        let (native, classic) = placement(&pod);
        assert!(
            !native.is_empty() && classic.is_empty(),
            "{fixture}: {native:?} / {classic:?}"
        );
    }
    let old = Config::from_yaml("kubernetesVersion: \"1.28\"\n", "test").unwrap();
    for fixture in fixtures {
        let (pod, outcome) = patched(fixture, &old);
        let (native, classic) = placement(&pod);
        assert!(
            native.is_empty() && !classic.is_empty(),
            "{fixture}: {native:?} / {classic:?}"
        );
        if fixture == "pod-sidecar-job.json" {
            assert!(
                outcome.warnings.iter().any(|w| w.contains("will not complete")),
                "a classic Job Pod is warned about: {:?}",
                outcome.warnings
            );
        }
    }
    let new = Config::from_yaml("kubernetesVersion: \"1.29\"\n", "test").unwrap();
    let (pod, _) = patched("pod-sidecar-nginx.json", &new);
    assert!(placement(&pod).1.is_empty(), "1.29 has native sidecars on by default");
}

#[test]
fn classic_ambassadors_keep_serving_for_the_configured_drain_period_and_native_ones_do_not() {
    use clap::{Args, Command};
    let ambassador =
        || entourage::ambassador::AmbassadorArgs::augment_args(Command::new("entourage").no_binary_name(true));
    let classic = Config::from_yaml("sidecars:\n  mode: classic\n  drainPeriod: 20s\n", "test").unwrap();
    let (pod, _) = patched("pod-ambassador.json", &classic);
    let argv = ambassador_argv(&pod);
    let at = argv
        .iter()
        .position(|a| a == "--drain-period")
        .expect("classic mode drains");
    assert_eq!(argv[at + 1], "20s");
    let matches = ambassador().try_get_matches_from(&argv[1..]).unwrap();
    assert_eq!(
        matches.get_one::<std::time::Duration>("drain_period"),
        Some(&std::time::Duration::from_secs(20))
    );
    let (pod, _) = patched("pod-ambassador.json", &Config::default());
    assert!(!ambassador_argv(&pod).iter().any(|a| a == "--drain-period"));
    // What the runtime would refuse, config refuses at load.
    for bad in ["6m", "soon", "-1s"] {
        let err = Config::from_yaml(&format!("sidecars:\n  drainPeriod: {bad:?}\n"), "test").unwrap_err();
        assert!(err.to_string().contains("sidecars.drainPeriod"), "{bad}: {err}");
    }
}
