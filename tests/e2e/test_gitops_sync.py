"""A GitOps controller syncing entourage's chart, the way Argo CD does it: `helm template` (no cluster to look up),
the hooks first (PreSync, each deleted before it is made again), then `kubectl apply` of the rest, and the same
release synced a second time while annotated Pods are created all the time. With the chart's default certificates
(`certificates.source: job`) the two renders are identical and no create fails. The control: the render-time
`certificates.source: generate`, synced the same way, renders a new CA each time and fails creates with x509
errors until the replicas catch up."""
import json
import os
import subprocess
import time
import uuid

import pytest

from conftest import HELM, ROOT, kubectl, wait_until
from load import Load

CHART = os.path.join(ROOT, "charts/entourage")
VALUES = os.path.join(ROOT, "tests/cluster/values.yaml")
RELEASE = "gitops"
REVISION = "gitops"


def render(namespace, *values):
    """`helm template` as Argo CD runs it: no cluster, so `lookup` finds nothing."""
    out = subprocess.run([HELM, "template", RELEASE, CHART, "-n", namespace, "-f", VALUES,
                          "--set", f"revision={REVISION}", "--set", "replicas=1", *values],
                         capture_output=True, text=True, check=True).stdout
    return out


def documents(text):
    """The rendered YAML as objects (kubectl prints one JSON object after another)."""
    out = kubectl("create", "--dry-run=client", "-o", "json", "-f", "-", input=text).stdout
    decoder, docs, at = json.JSONDecoder(), [], 0
    while at < len(out.rstrip()):
        doc, end = decoder.raw_decode(out, at)
        docs.extend(doc["items"] if doc.get("kind") == "List" else [doc])
        at = end
        while at < len(out) and out[at].isspace():
            at += 1
    return docs


def is_pre_hook(doc):
    events = doc["metadata"].get("annotations", {}).get("helm.sh/hook", "")
    return any(e in events.split(",") for e in ("pre-install", "pre-upgrade"))


def as_list(docs):
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})


def sync(namespace, text):
    """One sync: PreSync hooks (before-hook-creation: delete, make, wait for the Job; hook-succeeded: delete),
    then the rest with client-side apply, Argo CD's default."""
    docs = documents(text)
    hooks = [d for d in docs if is_pre_hook(d)]
    rest = [d for d in docs if not is_pre_hook(d)]
    if hooks:
        kubectl("-n", namespace, "delete", "--ignore-not-found", "--wait=true", "-f", "-", input=as_list(hooks))
        kubectl("-n", namespace, "apply", "-f", "-", input=as_list(hooks))
        for job in (d for d in hooks if d["kind"] == "Job"):
            kubectl("-n", namespace, "wait", "--for=condition=Complete", f"job/{job['metadata']['name']}",
                    "--timeout=120s", timeout=130)
        kubectl("-n", namespace, "delete", "--ignore-not-found", "-f", "-", input=as_list(hooks))
    kubectl("-n", namespace, "apply", "-f", "-", input=as_list(rest))
    kubectl("-n", namespace, "rollout", "status", f"deployment/{RELEASE}-entourage", "--timeout=180s", timeout=190)


def probe(name):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": {"entourage.dev/sidecar-logs": "/var/log/app/a.log"}},
            "spec": {"schedulerName": "entourage-e2e-unscheduled",
                     "containers": [{"name": "app", "image": "busybox:1.36"}]}}


@pytest.fixture
def gitops_release():
    # Its own namespace per test, deleted without waiting; the cluster-scoped objects are deleted by name.
    namespace = f"entourage-gitops-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", namespace)
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    yield namespace
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    for kind in ("mutatingwebhookconfiguration", "clusterrole", "clusterrolebinding"):
        kubectl("delete", kind, f"{RELEASE}-entourage", "--ignore-not-found", check=False)


def first_sync_then_again_under_load(ns, namespace, *values):
    """Syncs, waits until the release injects Pods of `ns`, then creates Pods all the time while the release is
    rendered and synced again, and for 12 s after (past the kubelet's Secret volume update, every 10 s here). Returns the two renders and the load."""
    kubectl("label", "namespace", ns.name, f"entourage.dev/rev={REVISION}")
    first = render(namespace, *values)
    sync(namespace, first)

    def injects():
        proc = kubectl("-n", ns.name, "create", "--dry-run=server", "-o", "json", "-f", "-",
                       input=json.dumps(probe("probe")), check=False)
        return proc.returncode == 0 and f'\\"revision\\":\\"{REVISION}\\"' in proc.stdout

    wait_until("the synced release to inject through its Service", injects, timeout=180)
    load = Load(ns.name)
    time.sleep(3)
    second = render(namespace, *values)
    sync(namespace, second)
    time.sleep(12)
    load.stop()
    print(load.summary())
    return first, second, load


def test_syncing_the_chart_twice_like_argo_cd_renders_the_same_and_fails_no_create(ns, gitops_release):
    first, second, load = first_sync_then_again_under_load(ns, gitops_release)
    assert first == second, "helm template renders the same objects every time"
    assert "kind: Secret" not in first, "no Secret made at render time"
    assert load.failures == [], load.failures[:5]
    assert load.sent >= 10 * load.seconds * 0.9, load.summary()
    assert load.injected == load.created, load.summary()
    # The Job made the Secret once, and the replicas wrote its CA into the webhooks.
    secret = json.loads(kubectl("-n", gitops_release, "get", "secret", "entourage-tls", "-o", "json").stdout)
    bundles = {w["clientConfig"].get("caBundle") for w in json.loads(kubectl(
        "get", "mutatingwebhookconfiguration", f"{RELEASE}-entourage", "-o", "json").stdout)["webhooks"]}
    assert bundles == {secret["data"]["ca.crt"]}


def test_control_a_render_time_certificate_synced_twice_fails_creates(ns, gitops_release):
    first, second, load = first_sync_then_again_under_load(ns, gitops_release, "--set", "certificates.source=generate")
    assert first != second, "each render makes a new CA"
    assert load.failures, "a caBundle switched to a new CA before the replicas serve its certificate fails creates"
    assert any("x509" in f or "certificate" in f for f in load.failures), load.failures[:5]
