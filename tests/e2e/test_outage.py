"""entourage down: Pods that never asked for it are created as fast as ever (matchConditions keep the apiserver from
calling it), annotated Pods are refused within timeoutSeconds naming entourage, and all is well once it is back."""
import json
import os
import re
import statistics
import time

import pytest

from conftest import RELEASE_NS, ROOT, helm, kubectl, wait_until

PLAIN = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "plain-"},
         "spec": {"containers": [{"name": "app", "image": "nginx:1.22"}]}}
ANNOTATED = {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"generateName": "asked-", "annotations": {"entourage.dev/sidecar-logs": "/var/log/a.log"}},
             "spec": {"containers": [{"name": "app", "image": "nginx:1.22"}]}}


def webhook_calls():
    """The apiserver's own count of calls to entourage's Pod webhook."""
    metrics = kubectl("get", "--raw", "/metrics").stdout
    return sum(float(m.group(1)) for m in re.finditer(
        r'^apiserver_admission_webhook_request_total\{[^}]*name="pods\.entourage\.dev"[^}]*\} (\S+)$', metrics, re.M))


def timed_creates(api, ns, pod, n):
    latencies, statuses = [], []
    for _ in range(n):
        t = time.monotonic()
        status, body = api.create_pod(ns, pod, dry_run=True)
        latencies.append(time.monotonic() - t)
        statuses.append((status, (body or {}).get("message", "")))
    return latencies, statuses


def scale(replicas):
    kubectl("-n", RELEASE_NS, "scale", "deployment/entourage", f"--replicas={replicas}")
    if replicas:
        kubectl("-n", RELEASE_NS, "rollout", "status", "deployment/entourage", "--timeout=120s", timeout=130)
        wait_until("entourage's endpoints", lambda: endpoints() == replicas, timeout=60)
    else:
        wait_until("entourage's Pods to go", lambda: not json.loads(kubectl(
            "-n", RELEASE_NS, "get", "pods", "-l", "app.kubernetes.io/name=entourage", "-o", "json").stdout)["items"],
            timeout=90)


def endpoints():
    slices = json.loads(kubectl("-n", RELEASE_NS, "get", "endpointslices", "-l",
                                "kubernetes.io/service-name=entourage", "-o", "json").stdout)["items"]
    return sum(1 for s in slices for e in s.get("endpoints") or [] if e.get("conditions", {}).get("ready"))


@pytest.fixture
def api():
    from api import Api
    return Api()


@pytest.fixture
def restore_release():
    yield
    helm("upgrade", "entourage", os.path.join(ROOT, "charts/entourage"), "-n", RELEASE_NS,
         "-f", os.path.join(ROOT, "tests/cluster/values.yaml"), "--wait", "--timeout", "180s")
    scale(2)


def test_outage_leaves_pods_that_did_not_ask_alone_and_refuses_annotated_ones_naming_entourage(ns, api,
                                                                                               restore_release):
    up, _ = timed_creates(api, ns.name, PLAIN, 30)
    up_system, _ = timed_creates(api, "kube-system", PLAIN, 10)
    scale(0)
    calls = webhook_calls()
    down, statuses = timed_creates(api, ns.name, PLAIN, 30)
    down_system, system_statuses = timed_creates(api, "kube-system", PLAIN, 10)
    assert {s for s, _ in statuses + system_statuses} == {201}, statuses + system_statuses
    assert webhook_calls() == calls, "the apiserver called entourage for Pods without an entourage.dev/ annotation"
    ratio = statistics.median(down) / statistics.median(up)
    print(f"unannotated create p50 down/up: {ratio:.2f} ({statistics.median(down) * 1e3:.1f} ms vs "
          f"{statistics.median(up) * 1e3:.1f} ms); kube-system {statistics.median(down_system) * 1e3:.1f} ms vs "
          f"{statistics.median(up_system) * 1e3:.1f} ms")

    timeout_seconds = json.loads(kubectl("get", "mutatingwebhookconfiguration", "entourage", "-o", "json").stdout)[
        "webhooks"][0]["timeoutSeconds"]
    t = time.monotonic()
    status, body = api.create_pod(ns.name, ANNOTATED)
    refused_after = time.monotonic() - t
    assert status >= 400, body
    assert 'failed calling webhook "pods.entourage.dev"' in body["message"], body["message"]
    assert refused_after <= timeout_seconds + 1, refused_after
    print(f"annotated Pod refused after {refused_after:.2f}s (timeoutSeconds {timeout_seconds}): {body['message']}")

    back = time.monotonic()
    scale(2)
    # kube-proxy routes the Service to the new endpoints within its sync period.
    wait_until("annotated Pods to be admitted again", lambda: api.create_pod(ns.name, ANNOTATED, dry_run=True)[0]
               == 201, timeout=30)
    status, body = api.create_pod(ns.name, ANNOTATED)
    assert status == 201 and "entourage.dev/status" in body["metadata"]["annotations"], body
    print(f"admitted again {time.monotonic() - back:.1f}s after scaling back to 2")


def test_control_without_match_conditions_an_outage_refuses_every_pod(ns, api, restore_release):
    helm("upgrade", "entourage", os.path.join(ROOT, "charts/entourage"), "-n", RELEASE_NS,
         "-f", os.path.join(ROOT, "tests/cluster/values.yaml"), "--set", "webhook.pods.matchConditions=false",
         "--wait", "--timeout", "180s")
    scale(0)
    status, body = api.create_pod(ns.name, PLAIN, dry_run=True)
    assert status >= 400 and "pods.entourage.dev" in body["message"], (status, body)
