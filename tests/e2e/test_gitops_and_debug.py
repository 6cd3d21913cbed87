"""GitOps controllers and kubectl debug against injected and defaulted objects."""
import json

from conftest import injected_names, wait_until

TEMPLATE = {"metadata": {"labels": {"app": "g"}, "annotations": {"entourage.dev/sidecar-logs": "/var/log/app/a.log"}},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sh", "-c", "true"]}]}}


def manifests():
    deploy_template = json.loads(json.dumps(TEMPLATE))
    deploy_template["spec"]["restartPolicy"] = "Always"
    deploy_template["spec"]["containers"][0]["command"] = ["sleep", "100000"]
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "g"},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "g"}}, "template": deploy_template}},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "g"},
         "spec": {"template": TEMPLATE}},
        {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "g"},
         "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": TEMPLATE}}}},
    ]


def test_server_side_apply_twice_leaves_nothing_to_diff_and_keeps_entourages_defaults(ns):
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests()})
    for _ in range(2):
        ns.kubectl("apply", "--server-side", "--field-manager=gitops", "-f", "-", input=doc)
    diff = ns.kubectl("diff", "--server-side", "--field-manager=gitops", "-f", "-", input=doc, check=False)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    assert ns.get("job", "g")["spec"]["backoffLimit"] == 3
    assert ns.get("cronjob", "g")["spec"]["concurrencyPolicy"] == "Forbid"


def test_kubectl_debug_ephemeral_container_and_copy_get_no_second_set_of_sidecars(ns):
    ns.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dbg", "annotations": {
        "entourage.dev/sidecar-logs": "/var/log/app/a.log"}},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "100000"]}]}})
    ns.wait_ready("dbg")
    ns.kubectl("debug", "dbg", "--image=busybox:1.36", "-c", "debugger", "--", "sleep", "1000")
    pod = wait_until("the ephemeral container", lambda: (p := ns.get("pod", "dbg"))["spec"].get(
        "ephemeralContainers") and p, timeout=30)
    assert [c["name"] for c in pod["spec"]["ephemeralContainers"]] == ["debugger"]
    assert injected_names(pod) == ["sidecar-a"]

    ns.kubectl("debug", "dbg", "--copy-to=dbg-copy", "--container=app", "--", "sleep", "1000")
    copy = ns.wait_ready("dbg-copy")
    assert injected_names(copy) == ["sidecar-a"]
    names = [c["name"] for c in copy["spec"].get("initContainers", []) + copy["spec"]["containers"]]
    assert len(names) == len(set(names)) == 2, names
