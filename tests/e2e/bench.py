#!/usr/bin/env python3
"""`make bench-e2e`: what a user pays for entourage through the real apiserver.

Annotated Pods are created in three setups, side by side in one run, alternating rounds:
- entourage: the chart's release (its namespace is unlabelled);
- floor: a webhook that allows everything and patches nothing (bench/tools/floor.rs), installed the same way
  (Deployment with two replicas and entourage's requests and limits, Service, MutatingWebhookConfiguration with
  the same rules, matchConditions, failurePolicy and timeout), for a namespace labelled entourage-e2e/webhook=floor;
- none: a namespace labelled entourage-e2e/webhook=none, which no webhook selects.
Each is measured with `dryRun=All` creates and with real creates (of Pods that name a scheduler that does not exist, so that only
admission and storage are measured), by one client at a fixed rate and by four at saturation. The report gives each setup's
p50 and p99 and the latency each webhook adds over `none`, and the ratio entourage/floor of the added latency
(target: at most 1.1) and of the saturated throughput. Writes target/bench/e2e.json.
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


def install_floor():
    binary = os.path.join(ROOT, "target/x86_64-unknown-linux-musl/release/examples/floor")
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet", "--target", "x86_64-unknown-linux-musl",
                    "--example", "floor"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, os.path.join(ROOT, "tests/cluster/images.py"), "floor", d, binary],
                             check=True, capture_output=True, text=True)
        subprocess.run(["ctr", "--address", SOCK, "-n", "k8s.io", "images", "import",
                        os.path.join(d, os.listdir(d)[0])], check=True, capture_output=True)
        host = "floor.entourage-bench.svc"
        crt, key = serving_cert(d, f"DNS:{host}", host)
        kubectl("create", "namespace", "entourage-bench", check=False)
        kubectl("-n", "entourage-bench", "create", "secret", "tls", "floor-tls", f"--cert={crt}", f"--key={key}",
                check=False)
    # The same requests and limits as entourage's replicas (the chart's `resources`): a limit throttles.
    resources = json.loads(kubectl("-n", "entourage-system", "get", "deployment", "entourage", "-o", "json").stdout)[
        "spec"]["template"]["spec"]["containers"][0].get("resources", {})
    entourage = json.loads(kubectl("get", "mutatingwebhookconfiguration", "entourage", "-o", "json").stdout)
    hook = json.loads(json.dumps(entourage["webhooks"][0]))
    hook["name"] = "pods.floor.bench"
    hook["clientConfig"] = {"service": {"name": "floor", "namespace": "entourage-bench", "path": "/mutate",
                                        "port": 443},
                            "caBundle": base64.b64encode(open(f"{PKI}/ca.crt", "rb").read()).decode()}
    hook["namespaceSelector"] = {"matchLabels": {"entourage-e2e/webhook": "floor"}}
    objects = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "floor", "namespace": "entourage-bench"},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "floor"}},
                  "template": {"metadata": {"labels": {"app": "floor"}}, "spec": {
                      "containers": [{"name": "floor", "image": "docker.io/entourage/floor:1",
                                      "args": ["--listen", "0.0.0.0:8443", "--tls-cert", "/tls/tls.crt",
                                               "--tls-key", "/tls/tls.key"],
                                      "resources": resources,
                                      "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8443,
                                                                     "scheme": "HTTPS"}},
                                      "volumeMounts": [{"name": "tls", "mountPath": "/tls"}]}],
                      "volumes": [{"name": "tls", "secret": {"secretName": "floor-tls"}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "floor", "namespace": "entourage-bench"},
         "spec": {"selector": {"app": "floor"}, "ports": [{"port": 443, "targetPort": 8443}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
         "metadata": {"name": "floor-bench"}, "webhooks": [hook]},
    ]
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    kubectl("-n", "entourage-bench", "rollout", "status", "deployment/floor", "--timeout=120s", timeout=130)


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
    install_floor()
    setups = {"entourage": "bench-entourage", "floor": "bench-floor", "none": "bench-none"}
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
        row["throughput_ratio"] = row["entourage"]["per_s"] / row["floor"]["per_s"]
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
        for setup in ("none", "floor", "entourage"):
            r = row[setup]
            added = row["added_p50_ms"].get(setup), row["added_p99_ms"].get(setup)
            fmt = lambda v: f"{v:10.2f}" if v is not None else f"{'':10}"
            print(f"{workload:22} {setup:10} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['per_s']:8.1f} "
                  f"{fmt(added[0])} {fmt(added[1])}")
        ratio = lambda v: f"{v:.2f}x" if v is not None else "n/a"
        print(f"{workload:22} entourage/floor added latency p50 {ratio(row['added_p50_ratio'])}, "
              f"p99 {ratio(row['added_p99_ratio'])} (target <= 1.1x); throughput {row['throughput_ratio']:.2f}x")
    for ns in list(setups.values()) + ["entourage-bench"]:
        kubectl("delete", "namespace", ns, "--wait=false", check=False)
    kubectl("delete", "mutatingwebhookconfiguration", "floor-bench", "--ignore-not-found", check=False)


if __name__ == "__main__":
    main()
