"""The three patterns as a user meets them: the seed's example, the adapter, the ambassador, on the real kubelet."""
import json
import os
import time
import uuid

from conftest import ROOT, http_get, injected_names, pod_ip, wait_until

SEED_EXAMPLE = open(os.path.join(ROOT, "docs/examples/nginx-sidecar.yaml")).read()


def test_seed_example_streams_nginx_logs_to_kubectl_logs_within_two_seconds(ns):
    ns.apply(SEED_EXAMPLE)
    pod = ns.wait_ready("nginx")
    assert injected_names(pod) == ["sidecar-access", "sidecar-error"]
    ip = pod_ip(ns.name, "nginx")

    marker = f"/hello-{uuid.uuid4().hex}"
    assert http_get(f"http://{ip}{marker}") == "404"
    sent = time.monotonic()
    wait_until("the access line in kubectl logs -c sidecar-access",
               lambda: marker in ns.logs("nginx", "sidecar-access"), timeout=2.0, interval=0.1)
    access_delay = time.monotonic() - sent
    # The same request is a bad one for nginx (no such file): its complaint is in error.log.
    wait_until("the error line in kubectl logs -c sidecar-error",
               lambda: marker in ns.logs("nginx", "sidecar-error"), timeout=2.0, interval=0.1)
    print(f"access line streamed after {access_delay:.2f}s")


def test_adapter_turns_nginx_access_lines_into_json_with_numeric_status(ns):
    ns.apply({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "annotations": {
            "entourage.dev/adapter-logs": "/var/log/nginx/access.log",
            "entourage.dev/adapter-format": "nginx"}},
        "spec": {"containers": [{"name": "nginx", "image": "nginx:1.22", "ports": [{"containerPort": 80}]}]},
    })
    pod = ns.wait_ready("web")
    assert injected_names(pod) == ["adapter-access"]
    ip = pod_ip(ns.name, "web")
    paths = [f"/req-{i}-{uuid.uuid4().hex[:8]}" for i in range(3)]
    for p in paths:
        http_get(f"http://{ip}{p}")
    http_get(f"http://{ip}/")

    def records():
        out = ns.logs("web", "adapter-access")
        recs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return recs if len(recs) >= 4 else None

    recs = wait_until("four JSON records from the adapter", records, timeout=10)
    by_path = {r.get("path"): r for r in recs}
    for p in paths:
        assert p in by_path, f"no record for {p} in {recs}"
        assert by_path[p]["status"] == 404 and isinstance(by_path[p]["status"], int)
    assert by_path["/"]["status"] == 200


UPSTREAM_CONF = """server {
    listen 8080;
    location / {
        default_type text/plain;
        return 200 "upstream saw authorization=[$http_authorization] path=[$uri]\\n";
    }
}
"""


def test_ambassador_reaches_a_service_by_dns_name_with_the_secrets_token_and_502s_without_endpoints(ns):
    token = uuid.uuid4().hex
    ns.kubectl("create", "secret", "generic", "orders-token", f"--from-literal=token={token}")
    ns.kubectl("create", "configmap", "upstream-conf", f"--from-literal=default.conf={UPSTREAM_CONF}")
    ns.apply({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orders", "labels": {"app": "orders"}},
        "spec": {"containers": [{"name": "nginx", "image": "nginx:1.22", "ports": [{"containerPort": 8080}],
                                 "volumeMounts": [{"name": "conf", "mountPath": "/etc/nginx/conf.d"}]}],
                 "volumes": [{"name": "conf", "configMap": {"name": "upstream-conf"}}]},
    })
    ns.kubectl("expose", "pod", "orders", "--port", "80", "--target-port", "8080")
    url = f"http://orders.{ns.name}.svc"
    ns.apply({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app", "annotations": {
            "entourage.dev/ambassador-upstream": url,
            "entourage.dev/ambassador-auth-secret": "orders-token"}},
        "spec": {"containers": [{"name": "app", "image": "docker.io/entourage/e2e-tools:1",
                                 "command": ["sleep", "3600"]}]},
    })
    ns.wait_ready("orders")
    pod = ns.wait_ready("app")
    assert injected_names(pod) == ["ambassador"]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env", [])}
    assert env.get("AMBASSADOR_URL") == "http://127.0.0.1:9000"

    def call():
        return ns.kubectl("exec", "app", "-c", "app", "--", "curl", "-sS", "-w", "\n%{http_code}",
                          "http://localhost:9000/orders/42", check=False).stdout
    out = wait_until("the upstream's answer through the ambassador", lambda: (o := call()).endswith("200") and o,
                     timeout=30)
    assert f"authorization=[Bearer {token}]" in out, out
    assert "path=[/orders/42]" in out, out

    ns.kubectl("delete", "pod", "orders", "--wait=true", "--timeout=60s")
    out = wait_until("a 502 once the upstream has no endpoints", lambda: (o := call()).endswith("502") and o,
                     timeout=30)
    body = out.rsplit("\n", 1)[0]
    assert isinstance(json.loads(body), dict), body
