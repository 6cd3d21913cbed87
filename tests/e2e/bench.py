#!/usr/bin/env python3
"""`make bench-e2e`: what a user pays for entourage through the real apiserver.

Annotated Pods are created in three setups, side by side in one run, alternating rounds:
- entourage: the chart's release (its namespace is unlabelled);
- floor: a webhook that allows everything and patches nothing (bench/tools/floor.rs), installed the same way
  (Deployment with two replicas and entourage's requests and limits, Service, MutatingWebhookConfiguration with
  the same rules, matchConditions, failurePolicy and timeout), for a namespace labelled entourage-e2e/webhook=floor;
- replay: the floor answering every review with entourage's own patch for the bench Pod (`floor --patch`), for a
  namespace labelled entourage-e2e/webhook=replay: the apiserver does all the work entourage's patch costs it
  (applying it, then defaulting, validating and storing the bigger Pod), and the webhook none of entourage's;
- none: a namespace labelled entourage-e2e/webhook=none, which no webhook selects.
Each is measured with `dryRun=All` creates and with real creates (of Pods that name a scheduler that does not exist, so that only
admission and storage are measured), by one client at a fixed rate and by four at saturation. The report gives each setup's
p50 and p99 and the latency each webhook adds over `none`, and the ratio entourage/floor of the added latency
(target: at most 1.1) and of the saturated throughput, and the same ratio entourage/replay: what entourage's own
work adds beyond what any webhook returning its patch costs the apiserver. Writes target/bench/e2e.json.
"""
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from api import Api  # noqa: E402
from conftest import PKI, ROOT, kubectl, serving_cert, wait_until  # noqa: E402

SOCK = "/run/entourage-cluster/containerd/containerd.sock"
RATE = float(os.environ.get("BENCH_E2E_RATE", 20))
SECONDS = float(os.environ.get("BENCH_E2E_SECONDS", 10))
ROUNDS = int(os.environ.get("BENCH_E2E_ROUNDS", 3))
CLIENTS = int(os.environ.get("BENCH_E2E_CLIENTS", 4))
POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"generateName": "bench-", "annotations": {
           "entourage.dev/sidecar-logs": "/var/log/nginx/access.log,/var/log/nginx/error.log"}},
       "spec": {"schedulerName": "entourage-bench-unscheduled",
                "containers": [{"name": "nginx", "image": "nginx:1.22", "ports": [{"containerPort": 80}]}]}}


def entourage_patch():
    """entourage's patch for the bench Pod, asked of the installed webhook through the apiserver's service proxy."""
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "bench", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "bench-replay",
        "operation": "CREATE", "userInfo": {"username": "bench"}, "object": POD, "dryRun": False}}
    out = kubectl("create", "--raw", "/api/v1/namespaces/entourage-system/services/https:entourage:443/proxy/mutate",
                  "-f", "-", input=json.dumps(review)).stdout
    return base64.b64decode(json.loads(out)["response"]["patch"])


def install_floors():
    """The floor and the replay: one image (bench/tools/floor.rs), two Deployments, two webhooks."""
    binary = os.path.join(ROOT, "target/x86_64-unknown-linux-musl/release/examples/floor")
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet", "--target", "x86_64-unknown-linux-musl",
                    "--example", "floor"], cwd=ROOT, check=True)
    patch = entourage_patch()
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, os.path.join(ROOT, "tests/cluster/images.py"), "floor", d, binary],
                       check=True, capture_output=True, text=True)
        subprocess.run(["ctr", "--address", SOCK, "-n", "k8s.io", "images", "import",
                        os.path.join(d, os.listdir(d)[0])], check=True, capture_output=True)
        kubectl("create", "namespace", "entourage-bench", check=False)
        for name in ("floor", "replay"):
            host = f"{name}.entourage-bench.svc"
            crt, key = serving_cert(d, f"DNS:{host}", host)
            kubectl("-n", "entourage-bench", "create", "secret", "tls", f"{name}-tls", f"--cert={crt}",
                    f"--key={key}", check=False)
    # The same requests and limits as entourage's replicas (the chart's `resources`): a limit throttles.
    resources = json.loads(kubectl("-n", "entourage-system", "get", "deployment", "entourage", "-o", "json").stdout)[
        "spec"]["template"]["spec"]["containers"][0].get("resources", {})
    entourage = json.loads(kubectl("get", "mutatingwebhookconfiguration", "entourage", "-o", "json").stdout)
    objects = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "replay", "namespace": "entourage-bench"},
                "data": {"patch.json": patch.decode()}}]
    for name in ("floor", "replay"):
        hook = json.loads(json.dumps(entourage["webhooks"][0]))
        hook["name"] = f"pods.{name}.bench"
        hook["clientConfig"] = {"service": {"name": name, "namespace": "entourage-bench", "path": "/mutate",
                                            "port": 443},
                                "caBundle": base64.b64encode(open(f"{PKI}/ca.crt", "rb").read()).decode()}
        hook["namespaceSelector"] = {"matchLabels": {"entourage-e2e/webhook": name}}
        hook.pop("objectSelector", None)
        args = ["--listen", "0.0.0.0:8443", "--tls-cert", "/tls/tls.crt", "--tls-key", "/tls/tls.key"]
        mounts = [{"name": "tls", "mountPath": "/tls"}]
        volumes = [{"name": "tls", "secret": {"secretName": f"{name}-tls"}}]
        if name == "replay":
            args += ["--patch", "/patch/patch.json"]
            mounts.append({"name": "patch", "mountPath": "/patch"})
            volumes.append({"name": "patch", "configMap": {"name": "replay"}})
        objects += [
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "entourage-bench"},
             "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                      "template": {"metadata": {"labels": {"app": name}}, "spec": {
                          "containers": [{"name": "floor", "image": "docker.io/entourage/floor:1", "args": args,
                                          "resources": resources,
                                          "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8443,
                                                                         "scheme": "HTTPS"}},
                                          "volumeMounts": mounts}],
                          "volumes": volumes}}}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "entourage-bench"},
             "spec": {"selector": {"app": name}, "ports": [{"port": 443, "targetPort": 8443}]}},
            {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
             "metadata": {"name": f"{name}-bench"}, "webhooks": [hook]},
        ]
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    for name in ("floor", "replay"):
        kubectl("-n", "entourage-bench", "rollout", "status", f"deployment/{name}", "--timeout=120s", timeout=130)


def namespace(name, label):
    kubectl("create", "namespace", name, check=False)
    if label:
        kubectl("label", "namespace", name, f"entourage-e2e/webhook={label}", "--overwrite")
    wait_until("default ServiceAccount", lambda: kubectl("-n", name, "get", "sa", "default", check=False)
               .returncode == 0)


def run(api, ns, dry_run, clients, rate):
    """Creates for SECONDS: one client at `rate`, or `clients` clients as fast as they go. Returns latencies."""
    latencies, failures = [], []
    stop = time.monotonic() + SECONDS

    def client():
        nxt = time.monotonic()
        while time.monotonic() < stop:
            if rate:
                nxt += 1 / rate
                time.sleep(max(0.0, nxt - time.monotonic()))
            t = time.monotonic()
            try:
                status, body = api.create_pod(ns, POD, dry_run=dry_run)
            except OSError as e:
                failures.append(str(e))
                continue
            if status != 201:
                failures.append(f"{status}: {(body or {}).get('message')}")
            else:
                latencies.append(time.monotonic() - t)

    threads = [threading.Thread(target=client) for _ in range(1 if rate else clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"{len(failures)} creates failed in {ns}: {failures[:3]}")
    return latencies


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    install_floors()
    setups = {"entourage": "bench-entourage", "floor": "bench-floor", "replay": "bench-replay", "none": "bench-none"}
    for setup, ns in setups.items():
        namespace(ns, None if setup == "entourage" else setup)
    api = Api()
    # Warm every path (TLS sessions, connections, caches) before measuring.
    for ns in setups.values():
        for _ in range(20):
            api.create_pod(ns, POD, dry_run=True)
    results = {}
    for rnd in range(ROUNDS):
        for mode, dry_run in (("dry-run", True), ("create", False)):
            for load, rate in (("fixed", RATE), ("saturated", 0)):
                for setup, ns in setups.items():
                    lat = run(api, ns, dry_run, CLIENTS, rate)
                    r = results.setdefault(f"{mode}/{load}", {}).setdefault(setup, {"lat": [], "n": 0, "s": 0.0})
                    r["lat"] += lat
                    r["n"] += len(lat)
                    r["s"] += SECONDS
        print(f"round {rnd + 1}/{ROUNDS} done", file=sys.stderr)
    report = {"rounds": ROUNDS, "seconds": SECONDS, "rate": RATE, "clients": CLIENTS, "workloads": {}}
    for workload, by_setup in results.items():
        row = {}
        for setup, r in by_setup.items():
            row[setup] = {"p50_ms": statistics.median(r["lat"]) * 1e3, "p99_ms": pct(r["lat"], 0.99) * 1e3,
                          "per_s": r["n"] / r["s"]}
        for q in ("p50", "p99"):
            floor_added = row["floor"][f"{q}_ms"] - row["none"][f"{q}_ms"]
            ent_added = row["entourage"][f"{q}_ms"] - row["none"][f"{q}_ms"]
            row[f"added_{q}_ms"] = {"entourage": ent_added, "floor": floor_added}
            row[f"added_{q}_ratio"] = ent_added / floor_added if floor_added > 0 else None
            replay_added = row["replay"][f"{q}_ms"] - row["none"][f"{q}_ms"]
            row[f"added_{q}_ms"]["replay"] = replay_added
            row[f"added_{q}_ratio_vs_replay"] = ent_added / replay_added if replay_added > 0 else None
        row["throughput_ratio"] = row["entourage"]["per_s"] / row["floor"]["per_s"]
        row["throughput_ratio_vs_replay"] = row["entourage"]["per_s"] / row["replay"]["per_s"]
        report["workloads"][workload] = row
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    report["commit"] = commit
    os.makedirs(os.path.join(ROOT, "target/bench"), exist_ok=True)
    with open(os.path.join(ROOT, "target/bench/e2e.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"bench-e2e at {commit}: {ROUNDS} rounds of {SECONDS:.0f}s per setup; latency added over no webhook")
    print(f"{'workload':22} {'setup':10} {'p50 ms':>8} {'p99 ms':>8} {'per s':>8} {'added p50':>10} {'added p99':>10}")
    for workload, row in report["workloads"].items():
        for setup in ("none", "floor", "replay", "entourage"):
            r = row[setup]
            added = row["added_p50_ms"].get(setup), row["added_p99_ms"].get(setup)
            fmt = lambda v: f"{v:10.2f}" if v is not None else f"{'':10}"
            print(f"{workload:22} {setup:10} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['per_s']:8.1f} "
                  f"{fmt(added[0])} {fmt(added[1])}")
        ratio = lambda v: f"{v:.2f}x" if v is not None else "n/a"
        print(f"{workload:22} entourage/floor added latency p50 {ratio(row['added_p50_ratio'])}, "
              f"p99 {ratio(row['added_p99_ratio'])} (target <= 1.1x); throughput {row['throughput_ratio']:.2f}x")
        print(f"{workload:22} entourage/replay added latency p50 {ratio(row['added_p50_ratio_vs_replay'])}, "
              f"p99 {ratio(row['added_p99_ratio_vs_replay'])}; throughput {row['throughput_ratio_vs_replay']:.2f}x")
    for ns in list(setups.values()) + ["entourage-bench"]:
        kubectl("delete", "namespace", ns, "--wait=false", check=False)
    kubectl("delete", "mutatingwebhookconfiguration", "floor-bench", "replay-bench", "--ignore-not-found", check=False)


if __name__ == "__main__":
    main()
