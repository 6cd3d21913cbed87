"""entourage beside other mutating webhooks: one that adds entourage's annotation after it ran, one that puts its
own container first."""
import json
import os

import pytest

from conftest import RELEASE_NS, ROOT, helm, injected_names, kubectl, wait_until
from mutators import Mutator, escape

PLAIN = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
         "spec": {"containers": [{"name": "app", "image": "nginx:1.22"}]}}


def add_sidecar_annotation(pod):
    annotations = pod["metadata"].get("annotations")
    if annotations is None:
        return [{"op": "add", "path": "/metadata/annotations",
                 "value": {"entourage.dev/sidecar-logs": "/var/log/app/app.log"}}]
    if "entourage.dev/sidecar-logs" not in annotations:
        return [{"op": "add", "path": "/metadata/annotations/" + escape("entourage.dev/sidecar-logs"),
                 "value": "/var/log/app/app.log"}]
    return []


def dry_run(ns):
    return json.loads(ns.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-",
                                 input=json.dumps(PLAIN)).stdout)


def upgrade(*sets):
    helm("upgrade", "entourage", os.path.join(ROOT, "charts/entourage"), "-n", RELEASE_NS,
         "-f", os.path.join(ROOT, "tests/cluster/values.yaml"), *sets, "--wait", "--timeout", "180s")


@pytest.fixture
def annotator(ns):
    kubectl("label", "namespace", ns.name, "e2e-annotator=on")
    # "zz-": configurations are called in name order, so this one runs after entourage's.
    m = Mutator("zz-e2e-annotator", 18444, {"e2e-annotator": "on"}, add_sidecar_annotation)
    yield m
    m.close()
    upgrade()


def wait_annotated(ns):
    return wait_until("the annotator to be called", lambda: "entourage.dev/sidecar-logs" in dry_run(ns)[
        "metadata"].get("annotations", {}) and dry_run(ns), timeout=20)


def test_control_an_annotation_added_by_a_later_webhook_is_not_seen_with_match_conditions_alone(ns, annotator):
    pod = wait_annotated(ns)
    assert injected_names(pod) == [], "the apiserver does not reinvoke a webhook it never called"


def test_annotation_added_by_a_later_webhook_is_injected_through_reinvocation_when_enabled(ns, annotator):
    upgrade("--set", "webhook.pods.reinvokeAfterOtherMutators=true")
    pod = wait_until("entourage to inject after the annotator", lambda: injected_names(p := wait_annotated(ns))
                     == ["sidecar-app"] and p, timeout=30)
    assert "entourage.dev/status" in pod["metadata"]["annotations"]
    names = [c["name"] for c in pod["spec"]["containers"]]
    assert names == ["app"]
