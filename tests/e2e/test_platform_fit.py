"""The clusters people run: a platform that assigns the uid (OpenShift's restricted-v2, played by a
ValidatingAdmissionPolicy), another injector that puts its container first, Windows Pods."""
import json
import os

import pytest

from conftest import RELEASE_NS, ROOT, helm, kubectl, wait_until
from mutators import Mutator

VALUES = os.path.join(ROOT, "tests/cluster/values.yaml")
CHART = os.path.join(ROOT, "charts/entourage")
LOW, HIGH = 1000660000, 1000669999
# What restricted-v2's MustRunAsRange does to a Pod that names a uid: refuse any outside the namespace's range.
UID_RANGE_POLICY = {
    "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
    "metadata": {"name": "e2e-uid-range"},
    "spec": {"failurePolicy": "Fail",
             "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                     "operations": ["CREATE"], "resources": ["pods"]}]},
             "validations": [{
                 "expression": f"(object.spec.containers + (has(object.spec.initContainers) ? "
                               f"object.spec.initContainers : [])).all(c, !has(c.securityContext) || "
                               f"!has(c.securityContext.runAsUser) || (c.securityContext.runAsUser >= {LOW} && "
                               f"c.securityContext.runAsUser <= {HIGH}))",
                 "message": f"runAsUser must be in the namespace's range {LOW}-{HIGH}"}]}}
UID_RANGE_BINDING = {
    "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
    "metadata": {"name": "e2e-uid-range"},
    "spec": {"policyName": "e2e-uid-range", "validationActions": ["Deny"],
             "matchResources": {"namespaceSelector": {"matchLabels": {"e2e-scc": "restricted-v2"}}}}}


def uid_pod(name):
    script = "echo from-uid-$(id -u) >> /var/log/app/a.log; exec sleep 100000"
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": {"entourage.dev/sidecar-logs": "/var/log/app/a.log"}},
            # The SCC writes the namespace's uid into the Pod; this Pod carries it as OpenShift would leave it.
            "spec": {"securityContext": {"runAsUser": LOW + 1, "runAsNonRoot": True},
                     "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sh", "-c", script]}]}}


@pytest.fixture
def uid_range(ns):
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                   "items": [UID_RANGE_POLICY, UID_RANGE_BINDING]}))
    kubectl("label", "namespace", ns.name, "e2e-scc=restricted-v2")
    yield
    kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", "e2e-uid-range",
            "--ignore-not-found", check=False)
    helm("upgrade", "entourage", CHART, "-n", RELEASE_NS, "-f", VALUES, "--wait", "--timeout", "180s")


def test_where_the_platform_assigns_the_uid_injected_pods_start_and_share_the_log_files(ns, uid_range):
    # The control: the chart's default uid (65534) is outside the range, and the Pod is refused.
    # A server-side dry run: a Pod created before the policy is in force would make every later try a no-op.
    proc = wait_until("the policy to refuse the default uid", lambda: (p := ns.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(uid_pod("default-uid")), check=False)).returncode
        != 0 and p, timeout=30)
    assert "runAsUser must be in the namespace's range" in proc.stderr, proc.stderr
    helm("upgrade", "entourage", CHART, "-n", RELEASE_NS, "-f", VALUES, "--set", "platformAssignsUid=true",
         "--wait", "--timeout", "180s")
    pod = wait_until("the platform-uid config to be in force", lambda: (p := ns.kubectl(
        "apply", "-f", "-", input=json.dumps(uid_pod("platform-uid")), check=False)).returncode == 0 and p,
        timeout=120)
    pod = ns.wait_ready("platform-uid")
    sidecar = next(c for c in pod["spec"]["initContainers"] if c["name"] == "sidecar-a")
    assert "runAsUser" not in sidecar["securityContext"] and sidecar["securityContext"]["runAsNonRoot"] is True
    wait_until("the app's line, written as the platform's uid", lambda: f"from-uid-{LOW + 1}" in ns.logs(
        "platform-uid", "sidecar-a"), timeout=20)


def mesh_proxy_first(pod):
    if any(c["name"] == "istio-proxy" for c in pod["spec"]["containers"]):
        return []
    return [{"op": "add", "path": "/spec/containers/0",
             "value": {"name": "istio-proxy", "image": "busybox:1.36", "command": ["sleep", "100000"]}}]


def test_log_volume_lands_in_the_app_container_when_another_injector_put_its_container_first(ns):
    kubectl("label", "namespace", ns.name, "e2e-mesh=on")
    # "aa-": configurations run in name order, so this one runs before entourage's.
    mesh = Mutator("aa-e2e-mesh", 18445, {"e2e-mesh": "on"}, mesh_proxy_first)
    try:
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web", "annotations": {"entourage.dev/sidecar-logs": "/var/log/app/a.log"}},
               "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "command": [
                   "sh", "-c", "echo hello >> /var/log/app/a.log; exec sleep 100000"]}]}}
        wait_until("the mesh webhook to be called", lambda: json.loads(ns.kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(pod)).stdout)["spec"][
            "containers"][0]["name"] == "istio-proxy", timeout=20)
        ns.apply(pod)
        running = ns.wait_ready("web")
        containers = {c["name"]: c for c in running["spec"]["containers"]}
        assert list(containers) == ["istio-proxy", "app"]
        mounts = lambda c: [m["mountPath"] for m in c.get("volumeMounts", [])]
        assert "/var/log/app" in mounts(containers["app"])
        assert "/var/log/app" not in mounts(containers["istio-proxy"])
        wait_until("the app's line in the sidecar", lambda: "hello" in ns.logs("web", "sidecar-a"), timeout=20)
    finally:
        mesh.close()


def test_windows_pod_that_asks_for_entourage_is_refused_with_the_reason_and_the_annotation_to_remove(ns):
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "win", "annotations": {"entourage.dev/sidecar-logs": "C:\\logs\\app.log"}},
           "spec": {"os": {"name": "windows"}, "containers": [{"name": "app", "image": "nginx:1.22"}]}}
    proc = ns.kubectl("apply", "-f", "-", input=json.dumps(pod), check=False)
    assert proc.returncode != 0 and "entourage.dev/sidecar-logs" in proc.stderr, proc.stderr
    assert "Linux only, but this Pod runs on Windows (spec.os.name is windows)" in proc.stderr, proc.stderr
    pod["metadata"]["annotations"] = {}
    ns.apply(pod)
