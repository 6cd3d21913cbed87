"""An app Pod calls a gRPC Service through its ambassador, on the real kubelet, DNS and kube-proxy.

Client and server are grpc-go's own (tests/cluster/grpcpeer, the image docker.io/entourage/e2e-grpc:1): the standard
health service, called by the app over h2c on the ambassador's loopback port as gRPC clients call a local proxy.
The ambassador carries the call upstream as HTTP/2 with no protocol annotation, adds the Secret's token, and brings
back the status and trailing metadata the server sent.
"""
import json
import uuid

from conftest import injected_names, wait_until

GRPC_IMAGE = "docker.io/entourage/e2e-grpc:1"


def test_app_pod_calls_a_grpc_service_through_its_ambassador_with_the_secrets_token(ns):
    token = uuid.uuid4().hex
    ns.kubectl("create", "secret", "generic", "greeter-token", f"--from-literal=token={token}")
    ns.apply({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "greeter", "labels": {"app": "greeter"}},
        "spec": {"containers": [{"name": "server", "image": GRPC_IMAGE, "args": ["serve", ":50051"],
                                 "ports": [{"containerPort": 50051}]}]},
    })
    ns.kubectl("expose", "pod", "greeter", "--port", "50051", "--target-port", "50051")
    ns.apply({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app", "annotations": {
            "entourage.dev/ambassador-upstream": f"http://greeter.{ns.name}.svc:50051",
            "entourage.dev/ambassador-auth-secret": "greeter-token"}},
        "spec": {"containers": [{"name": "app", "image": GRPC_IMAGE, "command": ["sleep", "3600"]}]},
    })
    ns.wait_ready("greeter")
    pod = ns.wait_ready("app")
    assert injected_names(pod) == ["ambassador"]

    def call():
        out = ns.kubectl("exec", "app", "-c", "app", "--", "grpc-peer", "call", "127.0.0.1:9000",
                         check=False).stdout
        seen = json.loads(out) if out.startswith("{") else None
        return seen if seen and seen.get("code") == "OK" else None

    # kube-proxy routes the new Service within its sync period: the first calls may find no endpoint.
    seen = wait_until("a gRPC call answered OK through the ambassador", call, timeout=60, interval=1)
    assert seen == {
        "code": "OK",
        "serving": "SERVING",
        "seen_authorization": f"Bearer {token}",
        "unknown_service_code": "NotFound",
    }, seen

    # The ambassador logged the calls as gRPC, with the status codes from the trailers.
    def logged():
        lines = [json.loads(line) for line in ns.logs("app", "ambassador").splitlines() if line.startswith("{")]
        calls = [line for line in lines if line.get("path") == "/grpc.health.v1.Health/Check"]
        return calls if {line.get("grpc_status") for line in calls} >= {0, 5} else None

    calls = wait_until("the ambassador's access-log lines for both calls", logged, timeout=10)
    assert {line["protocol"] for line in calls} == {"grpc"}, calls
