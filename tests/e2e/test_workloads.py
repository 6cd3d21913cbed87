"""Jobs, CronJobs and Deployments: Pods that controllers create, injected and defaulted by the real apiserver."""
import json

from conftest import injected_names, wait_until

LOG_WRITER = ("for i in 1 2 3 4 5; do echo \"line $i\" >> /var/log/app/app.log; sleep 0.2; done")


def pod_template(annotations):
    return {
        "metadata": {"annotations": annotations},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sh", "-c", LOG_WRITER]}]},
    }


def test_job_with_a_log_sidecar_completes_and_gets_the_policys_backoff_limit(ns):
    ns.apply({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "report"},
              "spec": {"template": pod_template({"entourage.dev/sidecar-logs": "/var/log/app/app.log"})}})
    ns.kubectl("wait", "--for=condition=Complete", "job/report", "--timeout=120s", timeout=130)
    job = ns.get("job", "report")
    # The chart's config: jobs.job.backoffLimit 3 (the apiserver had defaulted it to 6 before we saw it).
    assert job["spec"]["backoffLimit"] == 3
    pods = json.loads(ns.kubectl("get", "pods", "-l", "job-name=report", "-o", "json").stdout)["items"]
    assert len(pods) == 1
    assert injected_names(pods[0]) == ["sidecar-app"]
    assert pods[0]["status"]["phase"] == "Succeeded"
    out = ns.logs(pods[0]["metadata"]["name"], "sidecar-app")
    assert [line for line in out.splitlines() if line.startswith("line ")] == [f"line {i}" for i in range(1, 6)]


def test_cronjob_gets_forbid_and_its_jobs_pods_get_their_sidecars(ns):
    ns.apply({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
              "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {
                  "template": pod_template({"entourage.dev/sidecar-logs": "/var/log/app/app.log"})}}}})
    cron = ns.get("cronjob", "nightly")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    ns.kubectl("create", "job", "--from=cronjob/nightly", "nightly-now")
    ns.kubectl("wait", "--for=condition=Complete", "job/nightly-now", "--timeout=120s", timeout=130)
    pods = json.loads(ns.kubectl("get", "pods", "-l", "job-name=nightly-now", "-o", "json").stdout)["items"]
    assert [injected_names(p) for p in pods] == [["sidecar-app"]]
    assert "entourage.dev/status" in pods[0]["metadata"]["annotations"]


def deployment(name, replicas):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name},
                                               "annotations": {"entourage.dev/sidecar-logs":
                                                               "/var/log/nginx/access.log"}},
                                  "spec": {"containers": [{"name": "nginx", "image": "nginx:1.22"}]}}}}


def test_deployment_pods_made_by_the_replicaset_controller_are_injected_once_even_after_rollout_restart(ns):
    ns.apply(deployment("web", 2))
    ns.kubectl("rollout", "status", "deployment/web", "--timeout=120s", timeout=130)

    def pods():
        items = json.loads(ns.kubectl("get", "pods", "-l", "app=web", "-o", "json").stdout)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]
    first = pods()
    assert len(first) == 2
    for p in first:
        assert injected_names(p) == ["sidecar-access"], p["spec"]
        assert p["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    ns.kubectl("rollout", "restart", "deployment/web")
    ns.kubectl("rollout", "status", "deployment/web", "--timeout=120s", timeout=130)
    after = wait_until("the old Pods to go", lambda: (p := pods()) and len(p) == 2 and p, timeout=60)
    assert {p["metadata"]["name"] for p in after}.isdisjoint({p["metadata"]["name"] for p in first})
    for p in after:
        names = [c["name"] for c in p["spec"].get("initContainers", []) + p["spec"]["containers"]]
        assert names == ["sidecar-access", "nginx"], names
        volumes = [v["name"] for v in p["spec"]["volumes"] if not v["name"].startswith("kube-api-access")]
        assert len(volumes) == len(set(volumes))
