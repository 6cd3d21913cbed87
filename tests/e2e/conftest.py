"""The end-to-end suite's helpers: kubectl as a user runs it, a namespace per test, waits on real conditions.

`make e2e` starts the cluster (tests/cluster), runs this suite with KUBECONFIG set, and stops the cluster.
"""
import json
import os
import re
import subprocess
import time
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KUBECTL = os.path.join(ROOT, "target/tools/bin/kubectl")
HELM = os.path.join(ROOT, "target/tools/bin/helm")
KUBECONFIG = os.environ.get("KUBECONFIG", os.path.join(ROOT, "target/cluster/kubeconfig"))
RELEASE_NS = "entourage-system"
PKI = "/var/lib/entourage-cluster/pki"
NODE_IP = "10.244.0.1"


def serving_cert(directory, san, cn, ca_dir=PKI):
    """A serving certificate for `san` (`IP:…` or `DNS:…`) signed by the cluster's CA, for the webhooks the tests
    run themselves; returns the paths (tls.crt, tls.key) in `directory`."""
    key, crt, ext = (os.path.join(directory, f) for f in ("tls.key", "tls.crt", "ext"))
    with open(ext, "w") as f:
        f.write(f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n")
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key], check=True)
    csr = subprocess.run(["openssl", "req", "-new", "-key", key, "-subj", f"/CN={cn}"], check=True,
                         capture_output=True).stdout
    subprocess.run(["openssl", "x509", "-req", "-CA", f"{ca_dir}/ca.crt", "-CAkey", f"{ca_dir}/ca.key",
                    "-CAcreateserial", "-days", "30", "-extfile", ext, "-out", crt], input=csr, check=True,
                   capture_output=True)
    return crt, key


def kubectl(*args, input=None, check=True, timeout=120):
    """Runs kubectl; returns the CompletedProcess (text). `check` raises with kubectl's own words on failure."""
    proc = subprocess.run([KUBECTL, "--kubeconfig", KUBECONFIG, *args], input=input, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc


def helm(*args, check=True, timeout=300):
    proc = subprocess.run([HELM, "--kubeconfig", KUBECONFIG, *args], capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}{proc.stdout}")
    return proc


def get(kind, name, ns=None):
    args = ["get", kind, name, "-o", "json"] + (["-n", ns] if ns else [])
    return json.loads(kubectl(*args).stdout)


def wait_until(what, fn, timeout=60.0, interval=0.25):
    """Polls fn until it returns a truthy value, which is returned; fails naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except (AssertionError, subprocess.SubprocessError, ValueError, KeyError, OSError) as e:
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f": {last}" if last else ""))


def injected_names(pod):
    """Names of the containers entourage added (native: init containers with restartPolicy Always)."""
    spec = pod["spec"]
    native = [c["name"] for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    return native


def pod_ip(ns, name):
    return wait_until(f"{name}'s IP", lambda: get("pod", name, ns)["status"].get("podIP"))


def http_get(url, timeout=5):
    """A request from the node to a Pod IP, as the apiserver or a peer would make it."""
    proc = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", str(timeout), url],
                          capture_output=True, text=True)
    return proc.stdout.strip()


class Namespace:
    def __init__(self, name):
        self.name = name

    def kubectl(self, *args, **kw):
        return kubectl("-n", self.name, *args, **kw)

    def apply(self, manifest, **kw):
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.kubectl("apply", "-f", "-", input=text, **kw)

    def create(self, manifest, *args, **kw):
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.kubectl("create", "-f", "-", *args, input=text, **kw)

    def get(self, kind, name):
        return get(kind, name, self.name)

    def wait_ready(self, name, timeout=90):
        self.kubectl("wait", "--for=condition=Ready", f"pod/{name}", f"--timeout={timeout}s", timeout=timeout + 10)
        return self.get("pod", name)

    def logs(self, pod, container, *extra):
        return self.kubectl("logs", pod, "-c", container, *extra, check=False).stdout


PROBE = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "entourage-probe", "annotations": {"entourage.dev/sidecar-logs": "/var/log/a.log"}},
         "spec": {"containers": [{"name": "app", "image": "nginx:1.22"}]}}


def entourage_answers():
    """The apiserver reaches entourage through its Service and applies its patch (a server-side dry run)."""
    proc = kubectl("-n", "default", "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(PROBE),
                   check=False)
    return proc.returncode == 0 and "entourage.dev/status" in json.loads(proc.stdout)["metadata"]["annotations"]


@pytest.fixture(autouse=True)
def entourage_is_up():
    """Every test starts with entourage answering: a test before it may have scaled, upgraded or reinstalled it,
    and kube-proxy routes the Service to new endpoints only within its sync period."""
    wait_until("entourage to answer through its Service", entourage_answers, timeout=120)


@pytest.fixture
def ns(request):
    """A fresh namespace per test, named after it; deleted afterwards without waiting."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().replace("test_", ""))[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", name)
    wait_until(f"the default ServiceAccount in {name}",
               lambda: kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode == 0)
    yield Namespace(name)
    kubectl("delete", "namespace", name, "--wait=false", check=False)
