"""The opt-in watchdog: Pods a controller owns that asked for entourage and were admitted without it (the webhook
down under failurePolicy Ignore) are recreated with their entourage; a bare Pod and a Job's Pod never are. The
control: the same outage without the watchdog leaves them without it."""
import json
import os
import time

import pytest

from conftest import RELEASE_NS, ROOT, helm, kubectl, wait_until

CHART = os.path.join(ROOT, "charts/entourage")
VALUES = os.path.join(ROOT, "tests/cluster/values.yaml")
IGNORE = ["--set", "webhook.pods.failurePolicy=Ignore"]
WATCHDOG = ["--set", "watchdog.enabled=true", "--set", "watchdog.interval=2s", "--set", "watchdog.minAge=0s"]
ASKS = {"entourage.dev/sidecar-logs": "/var/log/app/a.log"}
SPEC = {"schedulerName": "entourage-e2e-unscheduled", "containers": [{"name": "app", "image": "busybox:1.36"}]}


def upgrade(*values):
    helm("upgrade", "entourage", CHART, "-n", RELEASE_NS, "-f", VALUES, *values, "--wait", "--timeout", "180s")
    kubectl("-n", RELEASE_NS, "rollout", "status", "deployment/entourage", "--timeout=180s", timeout=190)


def scale(replicas):
    kubectl("-n", RELEASE_NS, "scale", "deployment/entourage", f"--replicas={replicas}")
    if replicas == 0:
        wait_until("no entourage replica", lambda: not json.loads(kubectl(
            "-n", RELEASE_NS, "get", "pods", "-l", "app.kubernetes.io/instance=entourage", "-o", "json").stdout)["items"],
            timeout=90)
    else:
        kubectl("-n", RELEASE_NS, "rollout", "status", "deployment/entourage", "--timeout=120s", timeout=130)


@pytest.fixture
def restore_release():
    yield
    upgrade()
    scale(2)


def pods(ns):
    """Live Pods by name: (uid, injected, owner kind)."""
    items = json.loads(ns.kubectl("get", "pods", "-o", "json").stdout)["items"]
    return {p["metadata"]["name"]: (p["metadata"]["uid"],
                                    "entourage.dev/status" in p["metadata"].get("annotations", {}),
                                    next((o["kind"] for o in p["metadata"].get("ownerReferences", [])), None))
            for p in items if not p["metadata"].get("deletionTimestamp")}


def created_during_an_outage(ns):
    """A Deployment's two Pods, a bare Pod and a Job's Pod, all asking for entourage, created while it is down."""
    scale(0)
    ns.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}, "annotations": ASKS}, "spec": SPEC}}})
    ns.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare", "annotations": ASKS}, "spec": SPEC})
    ns.create({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
               "spec": {"template": {"metadata": {"annotations": ASKS},
                                     "spec": dict(SPEC, restartPolicy="Never")}}})
    wait_until("the four Pods", lambda: len(pods(ns)) == 4)
    before = pods(ns)
    assert not any(injected for _, injected, _ in before.values()), before
    return before


def test_without_the_watchdog_pods_admitted_during_an_outage_stay_without_entourage(ns, restore_release):
    upgrade(*IGNORE)
    before = created_during_an_outage(ns)
    scale(2)
    time.sleep(15)
    assert pods(ns) == before, "nothing recreated them"


def test_the_watchdog_recreates_a_controllers_pods_admitted_without_entourage_and_no_other(ns, restore_release):
    upgrade(*IGNORE, *WATCHDOG)
    before = created_during_an_outage(ns)
    scale(2)

    def replaced():
        now = pods(ns)
        web = [v for k, v in now.items() if k.startswith("web-")]
        return len(web) == 2 and all(injected for _, injected, _ in web) and not any(
            uid == before_uid for _, (uid, _, _) in now.items() for before_uid, _, _ in
            [before[k] for k in before if k.startswith("web-")])

    wait_until("the Deployment's Pods recreated with their entourage", replaced, timeout=90)
    after = pods(ns)
    assert after["bare"] == before["bare"], "a bare Pod is never touched: nothing would recreate it"
    job_pods = {k: v for k, v in after.items() if v[2] == "Job"}
    assert job_pods == {k: v for k, v in before.items() if v[2] == "Job"}, "a Job's Pod is never touched"
    logs = kubectl("-n", RELEASE_NS, "logs", "-l", "app.kubernetes.io/instance=entourage", "-c", "watchdog",
                   "--tail=-1", check=False).stdout
    assert "evicted a Pod admitted without the entourage it asks for" in logs, logs[-2000:]
