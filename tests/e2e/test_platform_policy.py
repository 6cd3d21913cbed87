"""Injected Pods under the policies platform teams set: Pod Security `restricted`, a ResourceQuota that requires
limits, and a LimitRange below entourage's container defaults. Each keeps a control: the seed's hand-written
sidecar refused by the same policy, or the LimitRanger's own message with entourage's check off."""
import json
import os

import pytest

from conftest import RELEASE_NS, ROOT, helm, injected_names, kubectl, wait_until

CHART = os.path.join(ROOT, "charts/entourage")
VALUES = os.path.join(ROOT, "tests/cluster/values.yaml")

RESTRICTED_APP = {"name": "app", "image": "busybox:1.36", "command": ["sh", "-c", "echo hi >> /var/log/app/a.log; "
                                                                               "exec sleep 100000"],
                  "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "allowPrivilegeEscalation": False,
                                      "capabilities": {"drop": ["ALL"]},
                                      "seccompProfile": {"type": "RuntimeDefault"}},
                  "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                                "limits": {"cpu": "100m", "memory": "32Mi"}}}


def pod(name, annotations, containers):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "annotations": annotations},
            "spec": {"containers": containers}}


def by_hand(name):
    return pod(name, {}, [RESTRICTED_APP, {"name": "tail", "image": "busybox:1.36",
                                           "args": ["/bin/sh", "-c", "tail -n+1 -f /var/log/app/a.log"]}])


def test_injected_pods_start_in_a_pod_security_restricted_namespace(ns):
    kubectl("label", "namespace", ns.name, "pod-security.kubernetes.io/enforce=restricted")
    ns.apply(pod("web", {"entourage.dev/sidecar-logs": "/var/log/app/a.log"}, [RESTRICTED_APP]))
    running = ns.wait_ready("web")
    assert injected_names(running) == ["sidecar-a"]
    assert "hi" in ns.logs("web", "sidecar-a")
    control = ns.kubectl("apply", "-f", "-", input=json.dumps(by_hand("by-hand")), check=False)
    assert control.returncode != 0 and 'violates PodSecurity "restricted' in control.stderr, control.stderr


def test_injected_pods_are_admitted_where_a_resource_quota_requires_limits(ns):
    ns.apply({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "limits-required"},
              "spec": {"hard": {"requests.cpu": "4", "requests.memory": "4Gi", "limits.cpu": "4",
                                "limits.memory": "4Gi"}}})
    ns.apply(pod("web", {"entourage.dev/sidecar-logs": "/var/log/app/a.log"}, [RESTRICTED_APP]))
    assert injected_names(ns.wait_ready("web")) == ["sidecar-a"]
    control = ns.kubectl("apply", "-f", "-", input=json.dumps(by_hand("by-hand")), check=False)
    assert control.returncode != 0 and "must specify limits.cpu" in control.stderr, control.stderr


def test_a_limit_range_below_entourages_defaults_refuses_the_pod_naming_the_limit_and_the_fix(ns):
    ns.apply({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "small-containers"},
              "spec": {"limits": [{"type": "Container", "max": {"cpu": "100m"}}]}})
    wait_until("entourage to know the LimitRange", lambda: "LimitRange small-containers" in ns.kubectl(
        "create", "--dry-run=server", "-f", "-", check=False, input=json.dumps(
            pod("probe", {"entourage.dev/sidecar-logs": "/var/log/app/a.log"}, [RESTRICTED_APP]))).stderr,
        timeout=60)
    refused = ns.kubectl("create", "-f", "-", check=False, input=json.dumps(
        pod("web", {"entourage.dev/sidecar-logs": "/var/log/app/a.log"}, [RESTRICTED_APP])))
    assert refused.returncode != 0
    for words in ['denied the request: entourage: LimitRange small-containers', "at most cpu 100m per container",
                  "sidecar container sidecar-a gets limits.cpu 200m",
                  'entourage.dev/sidecar-resources: "cpu=100m"', "resources.limits.cpu in entourage's config"]:
        assert words in refused.stderr, refused.stderr
    # The fix the message names: the Pod is admitted and starts.
    fixed = pod("web", {"entourage.dev/sidecar-logs": "/var/log/app/a.log",
                        "entourage.dev/sidecar-resources": "cpu=100m"}, [RESTRICTED_APP])
    ns.apply(fixed)
    assert injected_names(ns.wait_ready("web")) == ["sidecar-a"]
    # A Deployment's ReplicaSet shows the same message in its FailedCreate event.
    ns.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
              "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}},
                       "template": {"metadata": {"labels": {"app": "api"},
                                                 "annotations": {"entourage.dev/sidecar-logs": "/var/log/app/a.log"}},
                                    "spec": {"containers": [RESTRICTED_APP]}}}})

    def failed_create():
        events = json.loads(ns.kubectl("get", "events", "--field-selector", "reason=FailedCreate", "-o",
                                       "json").stdout)["items"]
        return next((e["message"] for e in events if e["involvedObject"]["kind"] == "ReplicaSet"), None)

    message = wait_until("the ReplicaSet's FailedCreate event", failed_create, timeout=60)
    assert "LimitRange small-containers" in message and "entourage.dev/sidecar-resources" in message, message


@pytest.fixture
def without_limit_range_check():
    helm("upgrade", "entourage", CHART, "-n", RELEASE_NS, "-f", VALUES, "--set", "webhook.limitRanges=false",
         "--wait", "--timeout", "180s")
    kubectl("-n", RELEASE_NS, "rollout", "status", "deployment/entourage", "--timeout=180s", timeout=190)
    yield
    helm("upgrade", "entourage", CHART, "-n", RELEASE_NS, "-f", VALUES, "--wait", "--timeout", "180s")
    kubectl("-n", RELEASE_NS, "rollout", "status", "deployment/entourage", "--timeout=180s", timeout=190)


def test_control_without_entourages_check_the_limit_ranger_refuses_without_naming_the_fix(
        ns, without_limit_range_check):
    ns.apply({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "small-containers"},
              "spec": {"limits": [{"type": "Container", "max": {"cpu": "100m"}}]}})
    refused = ns.kubectl("create", "-f", "-", check=False, input=json.dumps(
        pod("web", {"entourage.dev/sidecar-logs": "/var/log/app/a.log"}, [RESTRICTED_APP])))
    assert refused.returncode != 0 and "maximum cpu usage per Container is 100m" in refused.stderr, refused.stderr
    assert "entourage.dev/" not in refused.stderr and "entourage's config" not in refused.stderr, refused.stderr
