"""Two revisions side by side (the chart's `revision`): a Pod's `entourage.dev/rev` label, else its namespace's,
picks exactly one entourage; the two releases share a namespace without selecting each other's replicas; and
`doctor` names the workloads still on the revision their namespace left."""
import json
import os

import pytest

from conftest import RELEASE_NS, ROOT, helm, kubectl, wait_until
from test_doctor import doctor

CHART = os.path.join(ROOT, "charts/entourage")
VALUES = os.path.join(ROOT, "tests/cluster/values.yaml")
CANARY = "entourage-canary"


def pod(name, labels=None):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {},
                         "annotations": {"entourage.dev/sidecar-logs": "/var/log/app/a.log"}},
            "spec": {"schedulerName": "entourage-e2e-unscheduled",
                     "containers": [{"name": "app", "image": "busybox:1.36"}]}}


def status(ns, name):
    """The Pod's entourage.dev/status as JSON, or None when nothing injected it."""
    annotations = json.loads(ns.kubectl("get", "pod", name, "-o", "json").stdout)["metadata"].get("annotations", {})
    text = annotations.get("entourage.dev/status")
    return json.loads(text) if text else None


def reviews_by_release(release, namespace):
    """The names of the Pods in `namespace` whose admission reviews the replicas of `release` logged."""
    out = kubectl("-n", RELEASE_NS, "logs", "-l", f"app.kubernetes.io/instance={release}", "--tail=-1",
                  "--prefix=false", check=False).stdout
    names = []
    for line in out.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        fields = record.get("fields", record)
        if fields.get("kind") == "Pod" and fields.get("namespace") == namespace and fields.get("name"):
            names.append(fields["name"])
    return names


@pytest.fixture(scope="module")
def canary():
    """The canary revision, installed as a second release in entourage's own namespace."""
    helm("install", CANARY, CHART, "-n", RELEASE_NS, "-f", VALUES, "--set", "revision=canary",
         "--set", "certificates.secretName=entourage-canary-tls", "--set", "replicas=1", "--wait",
         "--timeout", "180s")
    # kube-proxy routes the new Service within its sync period: wait until the canary answers through it.
    probe = json.dumps(pod("probe", {"entourage.dev/rev": "canary"}))

    def canary_answers():
        proc = kubectl("-n", "default", "create", "--dry-run=server", "-o", "json", "-f", "-", input=probe,
                       check=False)
        return proc.returncode == 0 and '\\"revision\\":\\"canary\\"' in proc.stdout

    wait_until("the canary to answer through its Service", canary_answers, timeout=120)
    yield CANARY
    helm("uninstall", CANARY, "-n", RELEASE_NS, "--wait", "--timeout", "120s", check=False)


def test_a_pods_revision_label_then_its_namespaces_picks_exactly_one_entourage(ns, canary):
    ns.create(pod("unlabelled"))
    ns.create(pod("labelled", {"entourage.dev/rev": "canary"}))
    ns.create(pod("nobodys", {"entourage.dev/rev": "stable"}))
    kubectl("label", "namespace", ns.name, "entourage.dev/rev=canary")
    ns.create(pod("by-namespace"))
    ns.create(pod("own-label-wins", {"entourage.dev/rev": "stable"}))

    assert "revision" not in status(ns, "unlabelled"), "the default revision injected it"
    assert status(ns, "labelled")["revision"] == "canary"
    assert status(ns, "by-namespace")["revision"] == "canary"
    # A revision nobody installed: no entourage is called, so nothing injects it (doctor's missed-injections).
    assert status(ns, "nobodys") is None
    assert status(ns, "own-label-wins") is None
    # Exactly one release reviewed each Pod.
    default_reviews, canary_reviews = reviews_by_release("entourage", ns.name), reviews_by_release(canary, ns.name)
    for name, reviewer in [("unlabelled", default_reviews), ("labelled", canary_reviews),
                           ("by-namespace", canary_reviews)]:
        other = canary_reviews if reviewer is default_reviews else default_reviews
        assert name in reviewer and name not in other, (name, default_reviews[-10:], canary_reviews[-10:])
    for name in ["nobodys", "own-label-wins"]:
        assert name not in default_reviews + canary_reviews


def test_two_releases_in_one_namespace_serve_only_through_their_own_replicas(canary):
    def endpoints(service):
        slices = json.loads(kubectl("-n", RELEASE_NS, "get", "endpointslices", "-l",
                                    f"kubernetes.io/service-name={service}", "-o", "json").stdout)["items"]
        return {e["targetRef"]["name"] for s in slices for e in s.get("endpoints") or []}

    def replicas(release):
        pods = json.loads(kubectl("-n", RELEASE_NS, "get", "pods", "-l", f"app.kubernetes.io/instance={release}",
                                  "-o", "json").stdout)["items"]
        return {p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")}

    wait_until("each Service to list its own replicas", lambda: endpoints("entourage") == replicas("entourage")
               and endpoints(canary) == replicas(canary), timeout=60)
    assert replicas("entourage") and replicas(canary)
    assert not endpoints("entourage") & endpoints(canary)
    for deployment in ["entourage", canary]:
        selector = json.loads(kubectl("-n", RELEASE_NS, "get", "deployment", deployment, "-o", "json").stdout)[
            "spec"]["selector"]["matchLabels"]
        assert selector["app.kubernetes.io/instance"] == deployment, selector


def test_doctor_names_the_workloads_still_on_the_revision_their_namespace_left(ns, canary):
    ns.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                        # Recreate: the restarted Pod is never scheduled, so it would never replace the old one.
                        "strategy": {"type": "Recreate"},
                        "template": {key: pod("web", {"app": "web"})[key] for key in ["metadata", "spec"]}}})

    def web_pods():
        items = json.loads(ns.kubectl("get", "pods", "-l", "app=web", "-o", "json").stdout)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    wait_until("the Deployment's Pod", lambda: len(web_pods()) == 1)
    # doctor looks at the whole cluster: other tests' namespaces may be listed, never this one's Pods here.
    code, lines, out = doctor()
    assert f"{ns.name}/" not in lines["old-revision"], out

    kubectl("label", "namespace", ns.name, "entourage.dev/rev=canary")
    old = web_pods()[0]["metadata"]["name"]
    code, lines, out = doctor()
    assert "[warn]" in lines["old-revision"], out
    assert f"{ns.name}/{old} of ReplicaSet web-" in lines["old-revision"], out
    assert "injected by revision default, selected by canary" in lines["old-revision"], out

    ns.kubectl("rollout", "restart", "deployment/web")

    def moved():
        pods = web_pods()
        return len(pods) == 1 and pods[0]["metadata"]["name"] != old and json.loads(
            pods[0]["metadata"]["annotations"]["entourage.dev/status"]).get("revision") == "canary"

    wait_until("the restarted Pod, injected by the canary", moved, timeout=90)
    code, lines, out = doctor()
    assert f"{ns.name}/" not in lines["old-revision"], out
