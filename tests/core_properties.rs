//! Properties of the pure core over random input: whatever a Pod author writes and whatever the cluster's config,
//! entourage answers (no panic), a denial names the `entourage.dev/` annotation at fault, and a patch is safe to
//! hand to the apiserver — it applies strictly (RFC 6902) to exactly the object it was computed for, a second
//! review of the patched object adds nothing, nothing it does not own changes, and the patched Pod passes the
//! apiserver's Pod rules. A bad patch fails the user's request whatever the failurePolicy, so these hold for
//! every input, not only for the golden ones.
//!
//! 256 cases per property keep the whole file well under a minute in a debug build.

mod support;

use entourage::{
    admission,
    core::annotations::{self, PREFIX},
    core::config::{Config, KubeVersion, SidecarMode},
    core::mutate::{self, Outcome, Verdict},
};
use proptest::{prelude::*, sample::subsequence};
use serde_json::{json, Map, Value};

fn cases() -> ProptestConfig {
    ProptestConfig {
        // PROPTEST_CASES=5000 for a longer hunt.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(256),
        // Failures print their minimal input; nothing is written next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------------------------

/// Container names, some of which are the names entourage would choose, so that collisions are common.
const CONTAINER_NAMES: &[&str] = &[
    "app",
    "web",
    "init",
    "debugger",
    "sidecar-access",
    "sidecar-access-2",
    "sidecar-app",
    "sidecar-log",
    "adapter-access",
    "adapter-app",
    "ambassador",
    "ambassador-orders",
    // Another injector's, never the app by default (`mutate::target`).
    "istio-proxy",
];

/// Volume names, again including entourage's own choices.
const VOLUME_NAMES: &[&str] = &[
    "data",
    "logs",
    "entourage-var-log-nginx",
    "entourage-var-log-app",
    "entourage-logs",
    "entourage-auth-token",
    "kube-api-access-x1",
];

/// Mount paths at, above and beside the log directories the annotations name.
const MOUNT_PATHS: &[&str] = &[
    "/",
    "/var",
    "/var/log",
    "/var/log/",
    "/var/log/nginx",
    "/var/log/app",
    "/logs",
    "/logs/sub",
    "/data",
    "/var/run/secrets/kubernetes.io/serviceaccount",
];

const PORTS: &[i64] = &[80, 8080, 9000, 9001, 9100, 9101, 9901, 9902, 65535];

/// Env names the ambassador sets (with the default and another `ambassador.urlEnv`), and others.
const ENV_NAMES: &[&str] = &[
    "AMBASSADOR_URL",
    "AMBASSADOR_ORDERS_URL",
    "AMBASSADOR_PAY_URL",
    "BACKEND",
    "LOG_LEVEL",
];

/// Log file paths entourage accepts, at, below and beside the mount paths above.
const GOOD_PATHS: &[&str] = &[
    "/var/log/nginx/access.log",
    "/var/log/nginx/error.log",
    "/var/log/app/app.log",
    "/var/log/app/app.2024.log",
    "/logs/a.log",
    "/logs/sub/b.log",
    "/logs/.hidden",
    "/data/x.log",
    "/srv/Weird_Name..log",
    "/opt/x",
    " /var/log/app/spaced.log ",
];

/// Log file paths entourage refuses.
const BAD_PATHS: &[&str] = &[
    "logs/relative.log",
    "/etc/passwd",
    "/var/x.log",
    "/var/log/nginx/",
    "/a//b.log",
    "/a/../b.log",
    "/a/./b.log",
    "",
    "/var/log/a b.log",
    "/var/log/quote\".log",
];

/// Values for every `entourage.dev/` key: (valid, invalid).
fn values_for(key: &str) -> (Vec<&'static str>, Vec<&'static str>) {
    match key {
        annotations::INJECT => (vec!["true", "false"], vec!["maybe", "", "False"]),
        annotations::ADAPTER_FORMAT => (
            vec![
                "nginx",
                "apache-combined",
                "apache-common",
                "syslog",
                "logfmt",
                "json",
                "plain",
                "regex:(?P<status>\\d+)",
            ],
            vec!["regex:[a-", "regex:abc", "regex:<pattern>", "xml", ""],
        ),
        annotations::ADAPTER_FIELDS => (
            vec!["app=web", "app=web, team=shop", "", ",,"],
            vec!["time=now", "bad", "1x=y", "a=1,a=2", "k=\u{7}"],
        ),
        annotations::AMBASSADOR_UPSTREAM => (
            vec![
                "http://orders:8080",
                "https://pay.payments.svc/api",
                "http://[::1]:8080",
            ],
            vec![
                "ftp://h",
                "http://user:pw@h",
                "orders:8080",
                "http://h?q=1",
                "http://",
                "",
            ],
        ),
        annotations::AMBASSADOR_UPSTREAMS => (
            vec![
                "orders=http://orders:8080,pay=https://pay",
                "orders=http://orders:8080",
                "a=http://a,b=http://b,c=http://c",
            ],
            vec!["Bad=http://x", "a=http://a,a=http://b", "noequals", "x=ftp://h", ""],
        ),
        annotations::AMBASSADOR_PORT => (
            vec!["9000", "9100", "1", "65534", "65535", "80", " 9200 "],
            vec!["0", "70000", "abc"],
        ),
        annotations::AMBASSADOR_AUTH_SECRET => (
            vec!["token", "pay=pay-token", "orders=o,pay=p"],
            vec!["Bad_Name", "unknown=z", "pay", ""],
        ),
        annotations::TARGET_CONTAINER => (vec!["app", "web", "sidecar-access"], vec!["missing", ""]),
        // `web` is the profile `config_strategy` defines now and then.
        annotations::PROFILE => (vec!["web"], vec!["wbe", ""]),
        annotations::STATUS => (vec!["{}", "{\"version\":\"0.0.1\"}"], vec![]),
        annotations::DEFAULTS => (vec!["on", "off"], vec!["maybe"]),
        annotations::KEEP => (
            vec![
                "backoffLimit",
                "concurrencyPolicy",
                "backoffLimit,concurrencyPolicy",
                "",
            ],
            vec!["bogus"],
        ),
        annotations::DEFAULTED => (vec!["backoffLimit"], vec!["x"]),
        _ => (vec!["x"], vec![]),
    }
}

/// Mostly one of `good`, sometimes one of `bad`: most Pods must get past validation to exercise injection.
fn mostly<T: Clone + std::fmt::Debug + 'static>(good: Vec<T>, bad: Vec<T>) -> BoxedStrategy<T> {
    if bad.is_empty() {
        return prop::sample::select(good).boxed();
    }
    prop_oneof![8 => prop::sample::select(good), 1 => prop::sample::select(bad)].boxed()
}

/// A comma-separated list of 1–4 log paths.
fn log_list() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => subsequence(GOOD_PATHS, 1..=4).prop_shuffle(),
        1 => prop::collection::vec(mostly(GOOD_PATHS.to_vec(), BAD_PATHS.to_vec()), 1..5),
    ]
    .prop_map(|v| v.join(","))
}

/// A value for `key`: one from its pools, or (for the path lists) a random list.
fn annotation_value(key: &'static str) -> BoxedStrategy<String> {
    if key == annotations::SIDECAR_LOGS || key == annotations::ADAPTER_LOGS {
        log_list().boxed()
    } else {
        let (good, bad) = values_for(key);
        mostly(good, bad).prop_map(str::to_string).boxed()
    }
}

/// Annotations: a random subset of entourage's keys with random values, other people's keys with `/` and `~`,
/// and now and then a misspelt entourage key.
fn annotations_strategy() -> impl Strategy<Value = Map<String, Value>> {
    // Most Pods ask for something (one or two of the patterns) and add a few other keys; any key may be absent.
    let asks = [
        annotations::SIDECAR_LOGS,
        annotations::ADAPTER_LOGS,
        annotations::AMBASSADOR_UPSTREAM,
        annotations::AMBASSADOR_UPSTREAMS,
    ];
    let others: Vec<&'static str> = annotations::KEYS
        .iter()
        .map(|d| d.key)
        .filter(|k| *k != annotations::STATUS && !asks.contains(k))
        .collect();
    // The adapter's and the ambassador's options mostly come with the annotation they modify.
    let needs = |k: &str| match k {
        annotations::ADAPTER_FORMAT | annotations::ADAPTER_FIELDS => vec![annotations::ADAPTER_LOGS],
        annotations::AMBASSADOR_PORT | annotations::AMBASSADOR_AUTH_SECRET => {
            vec![annotations::AMBASSADOR_UPSTREAM, annotations::AMBASSADOR_UPSTREAMS]
        }
        _ => vec![],
    };
    let keys = (
        subsequence(asks.to_vec(), 1..=2),
        subsequence(others, 0..=4),
        prop::bool::weighted(0.1),
    )
        .prop_map(move |(mut keys, others, orphans)| {
            let chosen = keys.clone();
            keys.extend(others.into_iter().filter(|k| {
                let needed = needs(k);
                orphans || needed.is_empty() || needed.iter().any(|n| chosen.contains(n))
            }));
            keys
        });
    let entourage = keys.prop_flat_map(|keys| {
        keys.into_iter()
            .map(|k| (Just(k), annotation_value(k)))
            .collect::<Vec<_>>()
    });
    let foreign = subsequence(
        vec![
            ("example.com/a~b", "1"),
            ("x/y~1z", "~0~1"),
            ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
            ("entourage.dev/sidecar-log", "/var/log/x.log"),
            ("sidecar.istio.io/inject", "true"),
            ("kubectl.kubernetes.io/default-container", "web"),
        ],
        0..=5,
    );
    (entourage, foreign, prop::bool::weighted(0.05)).prop_map(|(ours, theirs, status)| {
        let mut map = Map::new();
        for (k, v) in theirs {
            map.insert(k.into(), json!(v));
        }
        for (k, v) in ours {
            map.insert(k.into(), json!(v));
        }
        if status {
            map.insert(annotations::STATUS.into(), json!("{}"));
        }
        map
    })
}

/// Unknown fields a newer Kubernetes might send: they must survive untouched.
fn unknown(present: bool) -> Option<Value> {
    present.then(|| json!({"alpha": [1, {"nested": true}], "note": "future ~/ field"}))
}

/// One container named `name`, mounting some of `volumes`.
fn container(name: &'static str, volumes: Vec<&'static str>) -> impl Strategy<Value = Value> {
    let has_volumes = !volumes.is_empty();
    (
        subsequence(MOUNT_PATHS, 0..=4),
        prop::collection::vec(any::<prop::sample::Index>(), 4),
        prop::option::of(subsequence(PORTS, 0..=3)),
        prop::option::of(subsequence(ENV_NAMES, 0..=3)),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(move |(paths, picks, ports, env, future, sub_path)| {
            let mut c = json!({"name": name, "image": "registry.example.com/app:1.0"});
            // Mount paths that differ only by a trailing slash would be the same mount point: keep one.
            let mut seen: Vec<&str> = Vec::new();
            let mounts: Vec<Value> = paths
                .iter()
                .zip(&picks)
                .filter(|_| has_volumes)
                .filter(|(p, _)| {
                    let p: &str = p;
                    let norm = if p.len() > 1 { p.trim_end_matches('/') } else { p };
                    let fresh = !seen.contains(&norm);
                    seen.push(norm);
                    fresh
                })
                .map(|(p, pick)| {
                    let mut m = json!({"name": volumes[pick.index(volumes.len())], "mountPath": p});
                    if sub_path {
                        m["subPath"] = json!("s");
                    }
                    m
                })
                .collect();
            if !mounts.is_empty() {
                c["volumeMounts"] = json!(mounts);
            }
            if let Some(ports) = ports {
                c["ports"] = json!(ports
                    .iter()
                    .map(|p| json!({"containerPort": p, "name": format!("p{p}"), "protocol": "TCP"}))
                    .collect::<Vec<_>>());
            }
            if let Some(env) = env {
                c["env"] = json!(env.iter().map(|e| json!({"name": e, "value": "v"})).collect::<Vec<_>>());
            }
            if let Some(u) = unknown(future) {
                c["futureContainerField"] = u;
            }
            c
        })
}

/// Where a key is absent, present but empty, or present with content.
#[derive(Debug, Clone, Copy)]
enum Presence {
    Absent,
    Empty,
    Full,
}

fn presence() -> impl Strategy<Value = Presence> {
    prop_oneof![Just(Presence::Absent), Just(Presence::Empty), Just(Presence::Full)]
}

/// A valid Pod (the apiserver has validated and defaulted it) with random entourage annotations.
fn pod_strategy() -> impl Strategy<Value = Value> {
    let names = subsequence(CONTAINER_NAMES, 1..=6).prop_shuffle();
    let volumes = subsequence(VOLUME_NAMES, 0..=4);
    (names, volumes, 1usize..=3, presence(), presence(), presence())
        .prop_flat_map(|(names, volumes, n_app, volumes_p, init_p, ephemeral_p)| {
            let n_app = n_app.min(names.len());
            let volumes = if matches!(volumes_p, Presence::Full) { volumes } else { Vec::new() };
            let (apps, rest) = names.split_at(n_app);
            let (init, ephemeral) = rest.split_at(rest.len() / 2 + rest.len() % 2);
            let make = |names: &[&'static str], volumes: &Vec<&'static str>| {
                names.iter().map(|n| container(n, volumes.clone())).collect::<Vec<_>>()
            };
            (
                make(apps, &volumes),
                make(init, &volumes),
                make(ephemeral, &Vec::new()),
                Just(volumes),
                Just((volumes_p, init_p, ephemeral_p)),
                prop::option::weighted(0.9, annotations_strategy()),
                prop::option::of(prop::sample::select(vec!["job-controller", "job-not-controller", "replicaset"])),
                prop::option::of(subsequence(vec!["batch.kubernetes.io/job-name", "app", "job-name"], 0..=3)),
                prop::collection::vec(any::<bool>(), 4),
                any::<bool>(),
                prop::option::weighted(0.2, prop::sample::select(vec!["os", "nodeSelector", "linux"])),
            )
        })
        .prop_map(
            |(apps, init, ephemeral, volumes, (volumes_p, init_p, ephemeral_p), annotations, owner, labels, future, kind, os)| {
                let mut metadata = json!({"generateName": "web-", "namespace": "default"});
                if let Some(a) = annotations {
                    metadata["annotations"] = Value::Object(a);
                }
                if let Some(owner) = owner {
                    let (kind, controller) = match owner {
                        "job-controller" => ("Job", true),
                        "job-not-controller" => ("Job", false),
                        _ => ("ReplicaSet", true),
                    };
                    metadata["ownerReferences"] =
                        json!([{"apiVersion": "batch/v1", "kind": kind, "name": "owner", "uid": "u-1", "controller": controller}]);
                }
                if let Some(labels) = labels {
                    metadata["labels"] = json!(labels.iter().map(|l| (l.to_string(), json!("x"))).collect::<Map<_, _>>());
                }
                if let Some(u) = unknown(future[0]) {
                    metadata["futureMetadataField"] = u;
                }
                let mut spec = json!({"containers": apps, "restartPolicy": "Always", "dnsPolicy": "ClusterFirst"});
                let list = |p: Presence, items: Vec<Value>| match p {
                    Presence::Absent => None,
                    Presence::Empty => Some(json!([])),
                    Presence::Full => Some(json!(items)),
                };
                let volume_values: Vec<Value> = volumes
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        if i % 2 == 0 {
                            json!({"name": v, "emptyDir": {}})
                        } else {
                            json!({"name": v, "configMap": {"name": "cm"}})
                        }
                    })
                    .collect();
                for (key, p, items) in [
                    ("volumes", volumes_p, volume_values),
                    ("initContainers", init_p, init.clone()),
                    ("ephemeralContainers", ephemeral_p, ephemeral.clone()),
                ] {
                    // Containers generated for a key that ends up absent or empty are simply dropped.
                    if let Some(v) = list(p, items) {
                        spec[key] = v;
                    }
                }
                if let Some(u) = unknown(future[1]) {
                    spec["futureSpecField"] = u;
                }
                // Windows Pods, which entourage refuses to inject, by either field; and a Linux one.
                match os {
                    Some("os") => spec["os"] = json!({"name": "windows"}),
                    Some("nodeSelector") => spec["nodeSelector"] = json!({"kubernetes.io/os": "windows", "disk": "ssd"}),
                    Some(_) => spec["os"] = json!({"name": "linux"}),
                    None => {}
                }
                let mut pod = json!({"metadata": metadata, "spec": spec, "apiVersion": "v1"});
                if kind {
                    pod["kind"] = json!("Pod");
                }
                if let Some(u) = unknown(future[2]) {
                    pod["status"] = json!({"phase": "Pending", "futureStatus": u});
                }
                if let Some(u) = unknown(future[3]) {
                    pod["futureTopLevel"] = u;
                }
                pod
            },
        )
}

/// The cluster's config: sidecar mode, Kubernetes version, and the knobs that bound ports and file counts.
fn config_strategy() -> impl Strategy<Value = Config> {
    (
        prop::sample::select(vec![SidecarMode::Auto, SidecarMode::Native, SidecarMode::Classic]),
        prop::option::of(prop::sample::select(vec![(1, 27), (1, 28), (1, 29), (1, 33), (2, 0)])),
        prop::sample::select(vec![
            (9000u16, 9901u16),
            (9100, 9000),
            (65534, 9901),
            (9000, 65534),
            (1, 2),
        ]),
        prop_oneof![3 => Just(8usize), 1 => 1usize..=8],
        prop::sample::select(vec!["AMBASSADOR_URL", "BACKEND"]),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec!["default", "elsewhere"])),
    )
        .prop_map(
            |(mode, version, (port, admin_port), max_log_files, url_env, platform_uid, profile_in)| {
                let mut config = Config::default();
                config.sidecars.mode = mode;
                config.kubernetes_version = version.map(|(major, minor)| KubeVersion { major, minor });
                config.ambassador.port = port;
                config.ambassador.admin_port = admin_port;
                config.sidecars.max_log_files = max_log_files;
                config.ambassador.url_env = url_env.into();
                if platform_uid {
                    config.hardening.run_as_user = None;
                    config.hardening.run_as_group = None;
                }
                // A profile `web`, now and then the default of the Pods' namespace.
                if let Some(namespace) = profile_in {
                    let web = [
                        ("adapter-format", "nginx"),
                        ("sidecar-resources", "memory=128Mi"),
                        ("ambassador-port", "9100"),
                    ];
                    config.profiles.insert(
                        "web".into(),
                        web.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    );
                    config.namespace_profiles.insert(namespace.into(), "web".into());
                }
                assert_eq!(config.problems(), Vec::<String>::new(), "generated configs are valid");
                assert_eq!(
                    entourage::core::mutate::profile::problems(&config),
                    Vec::<String>::new(),
                    "and their profiles"
                );
                config
            },
        )
}

/// A Job or CronJob as the apiserver sends it (API defaults applied or not), with random entourage annotations.
fn batch_strategy() -> impl Strategy<Value = Value> {
    (
        any::<bool>(),
        prop::option::of(annotations_strategy()),
        prop::option::of(prop::sample::select(vec![0i64, 3, 6, 10])),
        prop::option::of(prop::sample::select(vec!["Allow", "Forbid", "Replace"])),
        prop::collection::vec(any::<bool>(), 6),
        pod_strategy(),
    )
        .prop_map(|(cron, annotations, backoff, concurrency, flags, pod)| {
            let mut metadata = json!({"name": "report", "namespace": "default"});
            // Server-side apply's record of what the author wrote (an `Update` entry proves nothing).
            let manager = |operation: &str| {
                json!({"manager": "kubectl", "operation": operation, "fieldsType": "FieldsV1",
                       "fieldsV1": {"f:spec": {"f:backoffLimit": {}, "f:jobTemplate": {"f:spec": {"f:backoffLimit": {}}}}}})
            };
            match (flags[4], flags[5]) {
                (true, true) => metadata["managedFields"] = json!([manager("Apply")]),
                (true, false) => metadata["managedFields"] = json!([manager("Update")]),
                (false, true) => {
                    metadata["ownerReferences"] =
                        json!([{"apiVersion": "batch/v1", "kind": "CronJob", "name": "c", "uid": "u", "controller": true}])
                }
                (false, false) => {}
            }
            if let Some(a) = annotations {
                metadata["annotations"] = Value::Object(a);
            }
            if let Some(u) = unknown(flags[0]) {
                metadata["futureMetadataField"] = u;
            }
            let template = json!({"metadata": pod["metadata"], "spec": pod["spec"]});
            let mut job_spec = json!({"template": template});
            if let Some(b) = backoff {
                job_spec["backoffLimit"] = json!(b);
            }
            if flags[1] {
                job_spec["completions"] = json!(1);
                job_spec["parallelism"] = json!(1);
            }
            if let Some(u) = unknown(flags[2]) {
                job_spec["futureJobField"] = u;
            }
            if cron {
                let mut spec = json!({"schedule": "*/5 * * * *", "jobTemplate": {"spec": job_spec}});
                if let Some(c) = concurrency {
                    spec["concurrencyPolicy"] = json!(c);
                }
                if flags[3] {
                    spec["successfulJobsHistoryLimit"] = json!(3);
                    spec["failedJobsHistoryLimit"] = json!(1);
                    spec["suspend"] = json!(false);
                }
                json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": metadata, "spec": spec})
            } else {
                json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec})
            }
        })
}

/// Any JSON value, nested a few levels: objects of a shape nobody planned for.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z/~.]{0,8}".prop_map(Value::from),
        prop::sample::select(GOOD_PATHS).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "metadata",
                    "annotations",
                    "spec",
                    "containers",
                    "initContainers",
                    "volumes",
                    "volumeMounts",
                    "name",
                    "mountPath",
                    "env",
                    "ports",
                    "containerPort",
                    "entourage.dev/sidecar-logs",
                    "entourage.dev/ambassador-upstream",
                    "x",
                ]),
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// An adapter's format and static fields, the fields' keys drawn mostly from the keys that format writes itself
/// (and the adapter's own keys): pairs that collide, and some that do not.
fn format_and_colliding_fields() -> impl Strategy<Value = (String, Vec<String>)> {
    let formats = vec![
        "nginx",
        "apache-combined",
        "apache-common",
        "syslog",
        "plain",
        "logfmt",
        "json",
        "regex:(?P<status>\\d+) (?P<user_id>\\w+)",
    ];
    prop::sample::select(formats).prop_flat_map(|format| {
        let parsed: entourage::core::logformat::Format = format.parse().unwrap();
        let mut keys: Vec<String> = parsed
            .keys()
            .unwrap_or_default()
            .iter()
            .map(|k| k.to_string())
            .collect();
        keys.extend(["status", "level", "file", "team", "app", "zone"].map(String::from));
        let field = (prop::sample::select(keys), "[a-z0-9 ]{0,6}").prop_map(|(k, v)| format!("{k}={v}"));
        (Just(format.to_string()), prop::collection::vec(field, 1..4))
    })
}

/// The argv `entourage adapt` would get for these annotations, built by hand: the runtime's side of the rule.
fn adapt_argv(format: &str, fields: &[String]) -> Vec<String> {
    let mut argv: Vec<String> = [
        "entourage",
        "adapt",
        "--file",
        "/var/log/app/app.log",
        "--format",
        format,
    ]
    .map(String::from)
    .to_vec();
    for field in fields {
        argv.extend(["--field".to_string(), field.trim().to_string()]);
    }
    argv
}

// ---------------------------------------------------------------------------------------------------------------
// The apiserver's part
// ---------------------------------------------------------------------------------------------------------------

/// Wraps `object` in a review, sends it through the real decoder and the core.
fn review(object: &Value, kind: (&str, &str, &str), config: &Config) -> Outcome {
    let mut review = support::review(kind, "default", "CREATE", object);
    if !review["request"]["name"].is_string() {
        // The apiserver's request.name is always a string, whatever the object holds.
        review["request"]["name"] = json!("");
    }
    // Members sorted by name put `object` before `operation`: the decoder keeps the object's text and parses
    // it at the end. In the apiserver's order it parses the object as it goes. Both must decide the same.
    let sorted =
        admission::decode(&serde_json::to_vec(&review).unwrap(), config).expect("a well-formed review decodes");
    let ordered = admission::decode(&support::apiserver_order(&review), config).expect("a well-formed review decodes");
    let outcome = mutate::mutate(&ordered.request, config);
    assert_eq!(
        mutate::mutate(&sorted.request, config),
        outcome,
        "member order changed the answer"
    );
    outcome
}

/// A review whose `object` is neither an object nor null is no review of an object: both decoders refuse it, in
/// either member order, naming `request.object` (no apiserver sends one; an `allowed` answer would pass it silently).
fn refused_as_not_an_object(object: &Value, kind: (&str, &str, &str)) -> Result<(), TestCaseError> {
    let review = support::review(kind, "default", "CREATE", object);
    for body in [serde_json::to_vec(&review).unwrap(), support::apiserver_order(&review)] {
        for decoded in [
            admission::decode(&body, &Config::default()).err(),
            admission::decode_whole(&body).err(),
        ] {
            let error = decoded.map(|e| e.to_string()).unwrap_or_default();
            prop_assert!(error.contains("request.object is"), "{object}: {error:?}");
        }
    }
    Ok(())
}

/// The member at `path` as the decoder names it (`spec.containers[0].name`, `metadata.annotations["a/b"]`).
fn member_at<'v>(object: &'v Value, path: &str) -> Option<&'v Value> {
    let mut value = object;
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix('[') {
            let end = if inner.starts_with('"') {
                inner.find("\"]")? + 1
            } else {
                inner.find(']')?
            };
            let token = &inner[..end];
            value = match serde_json::from_str::<String>(token) {
                Ok(key) => value.get(key)?,
                Err(_) => value.get(token.parse::<usize>().ok()?)?,
            };
            rest = &inner[end + 1..];
        } else {
            let inner = rest.strip_prefix('.').unwrap_or(rest);
            let end = inner.find(['.', '[']).unwrap_or(inner.len());
            value = value.get(&inner[..end])?;
            rest = &inner[end..];
        }
    }
    Some(value)
}

/// Whether the review of `object` is refused for a member the core reads holding another type. Refused or not,
/// both decoders agree in either member order, and a refusal names a member that really holds the type it says.
fn refused_for_a_member_of_another_type(object: &Value, kind: (&str, &str, &str)) -> Result<bool, TestCaseError> {
    let mut review = support::review(kind, "default", "CREATE", object);
    if !review["request"]["name"].is_string() {
        // The apiserver's request.name is always a string, whatever the object holds.
        review["request"]["name"] = json!("");
    }
    let mut errors = Vec::new();
    for body in [serde_json::to_vec(&review).unwrap(), support::apiserver_order(&review)] {
        errors.push(
            admission::decode(&body, &Config::default())
                .err()
                .map(|e| e.to_string()),
        );
        errors.push(admission::decode_whole(&body).err().map(|e| e.to_string()));
    }
    let Some(Some(error)) = errors.iter().find(|e| e.is_some()) else {
        return Ok(false);
    };
    prop_assert!(
        errors.iter().all(Option::is_some),
        "the decoders disagree: {:?}",
        errors
    );
    let named = error
        .split("request.object.")
        .nth(1)
        .and_then(|rest| rest.split_once(" is "));
    let Some((path, found)) = named else {
        return Err(TestCaseError::fail(format!(
            "the refusal names no member of request.object: {error}"
        )));
    };
    let member = member_at(object, path);
    prop_assert!(
        member.is_some(),
        "{} names {}, which {} does not have",
        error,
        path,
        object
    );
    let described = entourage::core::reads::JsonType::of(member.unwrap()).described();
    prop_assert!(found.starts_with(described), "{}: {} is {}", error, path, described);
    Ok(true)
}

/// The webhook parses only the parts of a Pod the core reads (`entourage::admission::pruned`); the core given the whole object
/// must decide exactly the same, patch and warnings included.
fn same_answer_as_the_full_object(object: &Value, config: &Config) -> Result<(), TestCaseError> {
    let mut webhook = review(object, POD, config);
    // The one thing `mutate` adds for the log line.
    webhook.generate_name = None;
    let is_pod = object.get("kind").and_then(Value::as_str).is_none_or(|k| k == "Pod");
    if object.is_object() && is_pod {
        // In the namespace the review names (`review`), as the webhook takes it from the request, not the object.
        prop_assert_eq!(mutate::pod::mutate_pod_in(object, Some("default"), config), webhook);
    }
    Ok(())
}

/// The webhook parses only the parts of a Job or CronJob the defaults read (`entourage::core::mutate::job::READS`);
/// the core given the whole object must decide exactly the same, in either member order.
fn same_batch_answer_as_the_full_object(
    object: &Value,
    kind: (&str, &str, &str),
    config: &Config,
) -> Result<(), TestCaseError> {
    let mut review = support::review(kind, "default", "CREATE", object);
    if !review["request"]["name"].is_string() {
        review["request"]["name"] = json!("");
    }
    for body in [serde_json::to_vec(&review).unwrap(), support::apiserver_order(&review)] {
        let whole = admission::decode_whole(&body).expect("a well-formed review decodes whole");
        let pruned = admission::decode(&body, config).expect("a well-formed review decodes");
        prop_assert_eq!(
            mutate::mutate(&pruned.request, config),
            mutate::mutate(&whole.request, config)
        );
    }
    Ok(())
}

/// Applies the outcome's patch the way the apiserver does.
fn apply(object: &Value, outcome: &Outcome) -> Result<Value, TestCaseError> {
    support::apply(object, &serde_json::to_value(&outcome.patch).unwrap()).map_err(|e| {
        TestCaseError::fail(format!(
            "{e}\npatch: {}",
            serde_json::to_string(&outcome.patch).unwrap()
        ))
    })
}

/// A denial names the annotation at fault and carries no patch.
fn check_verdict(outcome: &Outcome) -> Result<(), TestCaseError> {
    if let Verdict::Deny(message) = &outcome.verdict {
        prop_assert!(message.contains(PREFIX), "denial names no annotation: {message}");
        prop_assert!(outcome.patch.0.is_empty(), "a denial carries a patch");
    }
    Ok(())
}

fn ops(outcome: &Outcome) -> Vec<(String, String)> {
    serde_json::to_value(&outcome.patch)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|op| {
            (
                op["op"].as_str().unwrap().to_string(),
                op["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const POD: (&str, &str, &str) = ("", "v1", "Pod");

/// Ambassadors share the Pod's network namespace: their listen and admin ports must differ from each other and
/// from every port the Pod declares, or one of them cannot bind.
fn check_ambassador_ports(pod: &Value, patched: &Value) -> Result<(), TestCaseError> {
    let all = |p: &Value| -> Vec<Value> {
        ["/spec/containers", "/spec/initContainers"]
            .iter()
            .flat_map(|k| p.pointer(k).and_then(Value::as_array).cloned().unwrap_or_default())
            .collect()
    };
    let mut ports: Vec<i64> = all(pod)
        .iter()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["containerPort"].as_i64())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let original = all(pod);
    for c in all(patched).iter().filter(|c| !original.contains(c)) {
        let args: Vec<&str> = c["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if args.first() != Some(&"ambassador") {
            continue;
        }
        for flag in ["--listen", "--admin"] {
            let port = args
                .iter()
                .position(|a| *a == flag)
                .and_then(|i| args.get(i + 1))
                .and_then(|addr| addr.rsplit(':').next()?.parse::<i64>().ok());
            let Some(port) = port else {
                return Err(TestCaseError::fail(format!("ambassador without {flag} port: {args:?}")));
            };
            prop_assert!((1..=65535).contains(&port), "{} {} out of range", flag, port);
            prop_assert!(
                !ports.contains(&port),
                "{} {} is taken in the Pod\npatched: {}",
                flag,
                port,
                patched
            );
            ports.push(port);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn pod_patches_apply_are_idempotent_keep_the_pod_valid_and_preserve_what_entourage_does_not_own(
        pod in pod_strategy(),
        config in config_strategy(),
    ) {
        prop_assert_eq!(support::pod_rule_violations(&pod), Vec::<String>::new(), "generated Pods are valid");
        let outcome = review(&pod, POD, &config);
        check_verdict(&outcome)?;
        if outcome.verdict != Verdict::Allow {
            // A denial is a decision about the annotations: the same Pod gets the same answer every time.
            prop_assert_eq!(review(&pod, POD, &config), outcome);
            return Ok(());
        }
        let patched = apply(&pod, &outcome)?;
        // Injection only ever adds: no user value is replaced or removed.
        for (op, path) in ops(&outcome) {
            prop_assert_eq!(op.as_str(), "add", "{} {}", op, path);
        }
        if let Err(e) = support::preserved(&pod, &patched, &[]) {
            return Err(TestCaseError::fail(format!("{e}\npatched: {patched}")));
        }
        let violations = support::pod_rule_violations(&patched);
        prop_assert!(violations.is_empty(), "{:?}\npatched: {}", violations, patched);
        check_ambassador_ports(&pod, &patched)?;
        // Every injected container starts: its argv passes the binary's flag parser and its program's own checks.
        for (container, argv) in support::runtimes::injected_argv(&pod, &patched, &config) {
            let started = support::runtimes::starts(&argv);
            prop_assert!(started.is_ok(), "{} would not start: {:?}: {:?}", container, argv, started);
        }
        let again = review(&patched, POD, &config);
        prop_assert_eq!(&again.verdict, &Verdict::Allow, "the patched Pod is denied on reinvocation");
        prop_assert!(again.patch.0.is_empty(), "second review patched again: {}", serde_json::to_string(&again.patch).unwrap());
        if !outcome.patch.0.is_empty() {
            let status = patched.pointer("/metadata/annotations").and_then(|a| a.get(annotations::STATUS));
            prop_assert!(status.is_some_and(Value::is_string), "an injected Pod records its status");
        }
    }

    #[test]
    fn job_and_cronjob_patches_apply_are_idempotent_and_touch_only_spec_and_the_defaulted_annotation(
        object in batch_strategy(),
        config in config_strategy(),
    ) {
        let kind = ("batch", "v1", if object["kind"] == "CronJob" { "CronJob" } else { "Job" });
        let outcome = review(&object, kind, &config);
        check_verdict(&outcome)?;
        if outcome.verdict != Verdict::Allow {
            prop_assert_eq!(review(&object, kind, &config), outcome);
            return Ok(());
        }
        let patched = apply(&object, &outcome)?;
        let mut owned = Vec::new();
        for (op, path) in ops(&outcome) {
            let allowed = path.starts_with("/spec/")
                || path == "/metadata/annotations/entourage.dev~1defaulted"
                || (path == "/metadata/annotations" && op == "add" && object.pointer(&path).is_none());
            prop_assert!(allowed, "{} {} is outside /spec/ and the defaulted annotation", op, path);
            prop_assert!(op != "remove", "defaults never remove: {}", path);
            owned.push(path);
        }
        if object.pointer("/metadata/annotations").is_none() {
            let created = patched.pointer("/metadata/annotations").and_then(Value::as_object);
            prop_assert!(
                created.is_none_or(|a| a.keys().all(|k| k == annotations::DEFAULTED)),
                "created annotations hold more than the defaulted one: {:?}", created
            );
        }
        let owned: Vec<&str> = owned.iter().map(String::as_str).collect();
        if let Err(e) = support::preserved(&object, &patched, &owned) {
            return Err(TestCaseError::fail(format!("{e}\npatched: {patched}")));
        }
        let again = review(&patched, kind, &config);
        prop_assert_eq!(&again.verdict, &Verdict::Allow, "the patched object is denied on reinvocation");
        prop_assert!(again.patch.0.is_empty(), "second review patched again: {}", serde_json::to_string(&again.patch).unwrap());
    }

    #[test]
    fn objects_of_any_shape_get_an_answer_and_any_patch_applies(
        object in any_json(),
        annotations in annotations_strategy(),
        kind in prop::sample::select(vec![POD, ("batch", "v1", "Job"), ("batch", "v1", "CronJob")]),
        config in config_strategy(),
    ) {
        // A random tree, sometimes with a metadata.annotations map that asks for an entourage.
        let mut object = object;
        if let Some(map) = object.as_object_mut() {
            if !map.contains_key("metadata") {
                map.insert("metadata".into(), json!({"annotations": annotations}));
            }
        }
        if !(object.is_object() || object.is_null()) {
            return refused_as_not_an_object(&object, kind);
        }
        if refused_for_a_member_of_another_type(&object, kind)? {
            return Ok(());
        }
        let outcome = review(&object, kind, &config);
        check_verdict(&outcome)?;
        apply(&object, &outcome)?;
    }

    #[test]
    fn pruned_and_full_pods_get_the_same_answer(pod in pod_strategy(), config in config_strategy()) {
        same_answer_as_the_full_object(&pod, &config)?;
    }

    #[test]
    fn pruned_and_full_objects_of_any_shape_get_the_same_answer(
        object in any_json(),
        annotations in annotations_strategy(),
        config in config_strategy(),
    ) {
        let mut object = object;
        if let Some(map) = object.as_object_mut() {
            map.entry("metadata").or_insert_with(|| json!({"annotations": annotations}));
        }
        if !(object.is_object() || object.is_null()) {
            return refused_as_not_an_object(&object, POD);
        }
        if refused_for_a_member_of_another_type(&object, POD)? {
            return Ok(());
        }
        same_answer_as_the_full_object(&object, &config)?;
    }

    #[test]
    fn pruned_and_full_jobs_get_the_same_answer(object in batch_strategy(), config in config_strategy()) {
        let kind = ("batch", "v1", if object["kind"] == "CronJob" { "CronJob" } else { "Job" });
        same_batch_answer_as_the_full_object(&object, kind, &config)?;
    }

    #[test]
    fn pruned_and_full_batch_objects_of_any_shape_get_the_same_answer(
        object in any_json(),
        annotations in annotations_strategy(),
        cron in any::<bool>(),
        config in config_strategy(),
    ) {
        let kind = ("batch", "v1", if cron { "CronJob" } else { "Job" });
        let mut object = object;
        if let Some(map) = object.as_object_mut() {
            map.entry("metadata").or_insert_with(|| json!({"annotations": annotations}));
        }
        if !(object.is_object() || object.is_null()) {
            return refused_as_not_an_object(&object, kind);
        }
        same_batch_answer_as_the_full_object(&object, kind, &config)?;
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = admission::decode(&body, &Config::default());
    }

    #[test]
    fn decoding_a_damaged_review_never_panics_and_what_decodes_gets_an_answer(
        cut in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        pod in pod_strategy(),
        config in config_strategy(),
    ) {
        // Both member orders: they take different paths through the decoder.
        let review = support::review(POD, "default", "CREATE", &pod);
        let mut body = if edits.len() % 2 == 0 {
            support::apiserver_order(&review)
        } else {
            serde_json::to_vec(&review).unwrap()
        };
        for (at, byte) in edits {
            let i = at.index(body.len());
            body[i] = byte;
        }
        // Half of the cases are also truncated, as a connection closed mid-body would leave them.
        if cut.index(2) == 0 {
            body.truncate(cut.index(body.len() + 1));
        }
        if let Ok(review) = admission::decode(&body, &config) {
            let outcome = mutate::mutate(&review.request, &config);
            check_verdict(&outcome)?;
            let whole = admission::decode_whole(&body).expect("what decodes for the core decodes whole");
            if let Some(object) = whole.request.object {
                apply(&object, &outcome)?;
            }
        }
    }

    #[test]
    fn adapter_fields_that_collide_with_the_formats_keys_are_denied_exactly_when_the_adapter_refuses_them(
        (format, fields) in format_and_colliding_fields(),
    ) {
        let config = Config::default();
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "annotations": {
                annotations::ADAPTER_LOGS: "/var/log/app/app.log",
                annotations::ADAPTER_FORMAT: format,
                annotations::ADAPTER_FIELDS: fields.join(","),
            }},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]},
        });
        let outcome = review(&pod, POD, &config);
        let runtime = support::runtimes::starts(&adapt_argv(&format, &fields));
        match &outcome.verdict {
            Verdict::Allow => {
                prop_assert!(runtime.is_ok(), "admitted, but the adapter refuses: {:?}", runtime);
                let patched = apply(&pod, &outcome)?;
                let injected = support::runtimes::injected_argv(&pod, &patched, &config);
                prop_assert!(!injected.is_empty(), "admitted without an adapter");
                for (container, argv) in injected {
                    let started = support::runtimes::starts(&argv);
                    prop_assert!(started.is_ok(), "{} would not start: {:?}: {:?}", container, argv, started);
                }
            }
            Verdict::Deny(message) => {
                prop_assert!(runtime.is_err(), "denied, but the adapter starts: {}", message);
                prop_assert!(message.contains(annotations::ADAPTER_FIELDS), "{}", message);
            }
        }
    }
}
