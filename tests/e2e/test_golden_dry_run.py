"""Every golden input through the real apiserver (`--dry-run=server`), judged against the golden answer.

Cases with the default config go through the release the chart installed. Cases with a config of their own go
through a second `entourage serve` (the same release binary) on the node, started with that config and registered
by URL for namespaces labelled entourage-e2e/webhook=host, which the release's webhooks leave alone.
"""
import base64
import json
import os
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

from conftest import ROOT, kubectl, wait_until

GOLDEN = os.path.join(ROOT, "tests/golden")
BINARY = os.path.join(ROOT, "target/x86_64-unknown-linux-musl/release/entourage")
PKI = "/var/lib/entourage-cluster/pki"
NODE_IP = "10.244.0.1"
HOST_PORT = 18443
# Set by the apiserver on every object; never part of what entourage answers.
SERVER_SET = {("metadata", "uid"), ("metadata", "creationTimestamp"), ("metadata", "resourceVersion"),
              ("metadata", "managedFields"), ("metadata", "namespace"), ("metadata", "generation"),
              ("metadata", "selfLink")}


def load(name):
    d = os.path.join(GOLDEN, name)
    read = lambda f: json.load(open(os.path.join(d, f))) if os.path.exists(os.path.join(d, f)) else None
    return {"name": name, "input": read("input.json"), "patched": read("patched.json"),
            "response": read("response.json"), "meta": read("case.json") or {}}


CASES = [load(n) for n in sorted(os.listdir(GOLDEN)) if os.path.isdir(os.path.join(GOLDEN, n))]
DEFAULT = [c for c in CASES if "config" not in c["meta"] and c["meta"].get("operation", "CREATE") == "CREATE"]
OWN_CONFIG = [c for c in CASES if "config" in c["meta"] and c["meta"].get("operation", "CREATE") == "CREATE"]


def contained(want, got, path=()):
    """Every field of `want` is in `got` with the same value; lists match element by element from the start
    (the apiserver appends, e.g. the service-account token volume and its mounts)."""
    if path[-2:] in SERVER_SET or path[:1] == ("status",):
        return
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{'/'.join(path)}: {got!r} is not an object"
        for k, v in want.items():
            if (path + (k,))[-2:] in SERVER_SET or (path == ("metadata",) and k == "name" and not v):
                continue
            assert k in got, f"{'/'.join(path + (k,))} is missing from the apiserver's object"
            contained(v, got[k], path + (k,))
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) >= len(want), f"{'/'.join(path)}: {got!r} lacks {want!r}"
        for i, v in enumerate(want):
            contained(v, got[i], path + (str(i),))
    else:
        assert want == got, f"{'/'.join(path)}: golden {want!r}, apiserver {got!r}"


def dry_run(case, namespace):
    obj = json.loads(json.dumps(case["input"]))
    obj["metadata"]["namespace"] = namespace
    for k in ("uid", "resourceVersion", "creationTimestamp"):
        obj["metadata"].pop(k, None)
    return kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(obj), check=False)


def judge(case, proc):
    resp = case["response"]
    assert "Internal error" not in proc.stderr and "500" not in proc.stderr.split("\n")[0], proc.stderr
    if resp["allowed"]:
        assert proc.returncode == 0, f"golden admits, the apiserver refused:\n{proc.stderr}"
        contained(case["patched"] or case["input"], json.loads(proc.stdout))
        for w in resp.get("warnings", []):
            assert w[:100] in proc.stderr, f"warning {w!r} not shown by kubectl:\n{proc.stderr}"
    else:
        assert proc.returncode != 0, f"golden denies, the apiserver admitted:\n{proc.stdout[:400]}"
        assert "denied the request" in proc.stderr and resp["message"] in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def release_ns():
    name = f"golden-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", name)
    wait_until("default ServiceAccount", lambda: kubectl("-n", name, "get", "sa", "default", check=False)
               .returncode == 0)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.parametrize("case", DEFAULT, ids=[c["name"] for c in DEFAULT])
def test_golden_case_through_the_real_apiserver_with_the_charts_entourage(case, release_ns):
    judge(case, dry_run(case, release_ns))


class HostWebhook:
    """`entourage serve` on the node with one case's config, registered by URL for labelled namespaces."""

    def __init__(self, workdir):
        self.dir = workdir
        self.proc = None
        key, crt = os.path.join(workdir, "tls.key"), os.path.join(workdir, "tls.crt")
        ext = os.path.join(workdir, "ext")
        open(ext, "w").write(f"subjectAltName=IP:{NODE_IP}\nextendedKeyUsage=serverAuth\n")
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key], check=True)
        csr = subprocess.run(["openssl", "req", "-new", "-key", key, "-subj", "/CN=golden"], check=True,
                             capture_output=True).stdout
        subprocess.run(["openssl", "x509", "-req", "-CA", f"{PKI}/ca.crt", "-CAkey", f"{PKI}/ca.key",
                        "-CAcreateserial", "-days", "1", "-extfile", ext, "-out", crt], input=csr, check=True,
                       capture_output=True)
        self.key, self.crt = key, crt
        ca = base64.b64encode(open(f"{PKI}/ca.crt", "rb").read()).decode()
        hooks = []
        for name, group, resources in (("pods.golden.e2e", "", ["pods"]),
                                        ("jobs.golden.e2e", "batch", ["jobs", "cronjobs"])):
            hooks.append({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
                          "failurePolicy": "Fail", "reinvocationPolicy": "IfNeeded", "timeoutSeconds": 10,
                          "clientConfig": {"url": f"https://{NODE_IP}:{HOST_PORT}/mutate", "caBundle": ca},
                          "rules": [{"apiGroups": [group], "apiVersions": ["v1"], "operations": ["CREATE"],
                                     "resources": resources}],
                          "namespaceSelector": {"matchLabels": {"entourage-e2e/webhook": "host"}}})
        kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "golden-host"}, "webhooks": hooks}))

    def serve(self, config_yaml):
        self.stop()
        cfg = os.path.join(self.dir, "config.yaml")
        open(cfg, "w").write(config_yaml)
        self.proc = subprocess.Popen([BINARY, "serve", "--listen", f"{NODE_IP}:{HOST_PORT}", "--config", cfg,
                                      "--tls-cert", self.crt, "--tls-key", self.key],
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "serve.log"), "a"))

        def listening():
            with socket.create_connection((NODE_IP, HOST_PORT), timeout=0.5):
                return True
        wait_until("the host webhook to listen", listening, timeout=10, interval=0.05)

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def close(self):
        self.stop()
        kubectl("delete", "mutatingwebhookconfiguration", "golden-host", "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def host_webhook():
    with tempfile.TemporaryDirectory() as d:
        hook = HostWebhook(d)
        yield hook
        hook.close()


def host_namespace(name):
    if kubectl("get", "namespace", name, check=False).returncode != 0:
        kubectl("create", "namespace", name)
    kubectl("label", "namespace", name, "entourage-e2e/webhook=host", "--overwrite")
    wait_until("default ServiceAccount", lambda: kubectl("-n", name, "get", "sa", "default", check=False)
               .returncode == 0)
    return name


@pytest.mark.parametrize("case", OWN_CONFIG, ids=[c["name"] for c in OWN_CONFIG])
def test_golden_case_with_its_own_config_through_the_real_apiserver(case, host_webhook):
    host_webhook.serve(case["meta"]["config"])
    ns = host_namespace(case["meta"].get("namespace") or "golden-host")
    # The apiserver picks up the webhook configuration shortly after it is applied: the first case waits for it.
    deadline = time.monotonic() + 15
    while True:
        proc = dry_run(case, ns)
        if "golden.e2e" in proc.stderr or proc.returncode != 0 or "entourage.dev/" in proc.stdout or \
                time.monotonic() > deadline:
            break
        time.sleep(0.5)
    judge(case, proc)
