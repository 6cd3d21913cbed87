"""`entourage doctor` against the real cluster: exit 0 when healthy, and each break found with the objects named."""
import base64
import json
import os
import subprocess

import pytest

from conftest import KUBECONFIG, RELEASE_NS, ROOT, get, helm, kubectl, wait_until

BINARY = os.path.join(ROOT, "target/x86_64-unknown-linux-musl/release/entourage")
SOCK = "/run/entourage-cluster/containerd/containerd.sock"
CHART = os.path.join(ROOT, "charts/entourage")
VALUES = os.path.join(ROOT, "tests/cluster/values.yaml")


def doctor():
    proc = subprocess.run([BINARY, "doctor", "--log-format", "text", "--kubeconfig", KUBECONFIG],
                          capture_output=True, text=True, timeout=60)
    lines = {line.split(":", 1)[0].split()[-1]: line for line in proc.stdout.splitlines() if line.startswith("[")}
    return proc.returncode, lines, proc.stdout


def deployment(name, replicas=1):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}, "annotations": {
                         "entourage.dev/sidecar-logs": "/var/log/app/a.log"}},
                         "spec": {"schedulerName": "entourage-e2e-unscheduled",
                                  "containers": [{"name": "app", "image": "busybox:1.36"}]}}}}


@pytest.fixture
def restore_release():
    yield
    helm("upgrade", "entourage", CHART, "-n", RELEASE_NS, "-f", VALUES, "--wait", "--timeout", "180s")
    kubectl("-n", RELEASE_NS, "scale", "deployment/entourage", "--replicas=2")
    kubectl("-n", RELEASE_NS, "rollout", "status", "deployment/entourage", "--timeout=120s", timeout=130)


def test_doctor_passes_on_a_healthy_cluster_and_names_a_wrong_ca_bundle_and_a_service_without_endpoints(
        ns, restore_release):
    code, lines, out = doctor()
    assert code == 0, out

    wrong = json.loads(kubectl("get", "mutatingwebhookconfiguration", "entourage", "-o", "json").stdout)
    other_ca = open("/var/lib/entourage-cluster/pki/ca.crt", "rb").read()
    patch = [{"op": "replace", "path": f"/webhooks/{i}/clientConfig/caBundle",
              "value": base64.b64encode(other_ca).decode()} for i in range(len(wrong["webhooks"]))]
    kubectl("patch", "mutatingwebhookconfiguration", "entourage", "--type=json", "-p", json.dumps(patch))
    code, lines, out = doctor()
    assert code == 1 and "[FAIL]" in lines["ca-bundle"] and "entourage" in lines["ca-bundle"], out
    # Put the right CA back the same way (Helm 4 applies server-side: a field another manager set to another
    # value is a conflict for the next `helm upgrade`).
    right = get("secret", "entourage-tls", RELEASE_NS)["data"]["ca.crt"]
    kubectl("patch", "mutatingwebhookconfiguration", "entourage", "--type=json", "-p", json.dumps(
        [dict(op, value=right) for op in patch]))
    assert doctor()[0] == 0
    kubectl("-n", RELEASE_NS, "scale", "deployment/entourage", "--replicas=0")
    wait_until("no endpoints", lambda: "0 of" in doctor()[1].get("service-endpoints", "") or
               "no ready" in doctor()[1].get("service-endpoints", ""), timeout=60)
    code, lines, out = doctor()
    assert code == 1 and "entourage-system/entourage" in lines["service-endpoints"], out


def test_doctor_names_pods_admitted_without_entourage_and_pods_of_an_older_entourage_with_their_owners(
        ns, restore_release):
    ns.apply(deployment("current"))
    wait_until("an injected Pod", lambda: json.loads(ns.kubectl("get", "pods", "-l", "app=current", "-o",
                                                                "json").stdout)["items"], timeout=60)
    # Down under failurePolicy Ignore: the next Pod is admitted without its sidecars.
    helm("upgrade", "entourage", CHART, "-n", RELEASE_NS, "-f", VALUES, "--set",
         "webhook.pods.failurePolicy=Ignore", "--wait", "--timeout", "180s")
    kubectl("-n", RELEASE_NS, "scale", "deployment/entourage", "--replicas=0")
    wait_until("entourage's Pods to go", lambda: not json.loads(kubectl(
        "-n", RELEASE_NS, "get", "pods", "-l", "app.kubernetes.io/name=entourage", "-o", "json").stdout)["items"],
        timeout=90)
    ns.apply(deployment("missed"))
    pods = wait_until("the missed Pod", lambda: json.loads(ns.kubectl("get", "pods", "-l", "app=missed", "-o",
                                                                      "json").stdout)["items"], timeout=60)
    assert "entourage.dev/status" not in pods[0]["metadata"]["annotations"]
    code, lines, out = doctor()
    assert code == 1, out
    missed = lines["missed-injections"]
    assert f"{ns.name}/{pods[0]['metadata']['name']} of ReplicaSet missed-" in missed, out

    # An upgrade to another version: the Pods injected before it are named, each with its owner.
    version = next(l.split('"')[1] for l in open(os.path.join(ROOT, "Cargo.toml")) if l.startswith("version"))
    subprocess.run(["ctr", "--address", SOCK, "-n", "k8s.io", "images", "tag", "--force",
                    f"ghcr.io/entourage-dev/entourage:{version}", "ghcr.io/entourage-dev/entourage:9.9.9"],
                   check=True, capture_output=True)
    helm("upgrade", "entourage", CHART, "-n", RELEASE_NS, "-f", VALUES, "--set", "image.tag=9.9.9",
         "--set", "replicas=2", "--wait", "--timeout", "180s")
    code, lines, out = doctor()
    stale = lines["stale-injections"]
    current = json.loads(ns.kubectl("get", "pods", "-l", "app=current", "-o", "json").stdout)["items"][0]
    assert f"{ns.name}/{current['metadata']['name']} of ReplicaSet current-" in stale and version in stale, out
