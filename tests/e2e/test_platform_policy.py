"""Injected Pods under the policies platform teams set: Pod Security `restricted` and a ResourceQuota that
requires limits. Each keeps a control: the seed's hand-written sidecar, refused by the same policy."""
import json

from conftest import injected_names, kubectl

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
