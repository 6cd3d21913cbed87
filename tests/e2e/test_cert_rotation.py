"""Certificate rotation while annotated Pods are created all the time: the chart's own rotation
(`certificates.rotation`) and a cert-manager-style renewal of the Secret fail no create, on the apiserver's kept-alive
connections and on new ones. The controls: a new CA that the caBundle does not trust yet, and a Secret renewed with
a certificate from another CA, fail creates under the same load."""
import base64
import json
import os
import ssl
import subprocess
import time
import uuid

import pytest

from conftest import PKI, RELEASE_NS, ROOT, helm, kubectl, serving_cert, wait_until
from load import Load

CHART = os.path.join(ROOT, "charts/entourage")
VALUES = os.path.join(ROOT, "tests/cluster/values.yaml")
HOST = "entourage.entourage-system.svc"


def upgrade(*values):
    helm("upgrade", "entourage", CHART, "-n", RELEASE_NS, "-f", VALUES, *values, "--force-conflicts", "--wait",
         "--timeout", "180s")


@pytest.fixture
def restore_release():
    yield
    # A fresh pair from the chart, and replicas that serve it (a test may leave a pair its ca.crt does not sign).
    kubectl("-n", RELEASE_NS, "delete", "secret", "entourage-tls", "--ignore-not-found")
    upgrade()
    kubectl("-n", RELEASE_NS, "rollout", "restart", "deployment/entourage")
    kubectl("-n", RELEASE_NS, "rollout", "status", "deployment/entourage", "--timeout=180s", timeout=190)


def secret():
    data = json.loads(kubectl("-n", RELEASE_NS, "get", "secret", "entourage-tls", "-o", "json").stdout)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def served():
    """The certificate each ready replica serves, as DER, by Pod."""
    pods = json.loads(kubectl("-n", RELEASE_NS, "get", "pods", "-l", "app.kubernetes.io/instance=entourage",
                              "-o", "json").stdout)["items"]
    out = {}
    for p in pods:
        ip = p["status"].get("podIP")
        if not ip or p["metadata"].get("deletionTimestamp"):
            continue
        try:
            out[p["metadata"]["name"]] = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate((ip, 8443), timeout=3))
        except OSError:
            pass
    return out


def every_replica_serves(pem):
    der = ssl.PEM_cert_to_DER_cert(pem)
    wait_until("every replica to serve the new certificate", lambda: (s := served()) and all(
        d == der for d in s.values()), timeout=150, interval=1)


def put_secret(tls_crt, tls_key, ca_crt):
    patch = {"data": {"tls.crt": base64.b64encode(tls_crt.encode()).decode(),
                      "tls.key": base64.b64encode(tls_key.encode()).decode(),
                      "ca.crt": base64.b64encode(ca_crt.encode()).decode()}}
    kubectl("-n", RELEASE_NS, "patch", "secret", "entourage-tls", "--type=merge", "-p", json.dumps(patch))


def put_ca_bundle(pem):
    hooks = json.loads(kubectl("get", "mutatingwebhookconfiguration", "entourage", "-o", "json").stdout)["webhooks"]
    patch = [{"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle",
              "value": base64.b64encode(pem.encode()).decode()} for i in range(len(hooks))]
    kubectl("patch", "mutatingwebhookconfiguration", "entourage", "--type=json", "-p", json.dumps(patch))


def new_ca(directory):
    key, crt = os.path.join(directory, "ca.key"), os.path.join(directory, "ca.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "2", "-subj", "/CN=another-ca"], check=True, capture_output=True)
    return directory


def pair(directory, ca_dir):
    os.makedirs(directory, exist_ok=True)
    crt, key = serving_cert(directory, f"DNS:{HOST}", "entourage", ca_dir=ca_dir)
    return open(crt).read(), open(key).read()


def run_load_while(ns, change):
    load = Load(ns.name)
    time.sleep(3)
    change()
    time.sleep(3)
    load.stop()
    print(load.summary())
    return load


def test_a_chart_rotation_under_load_fails_no_create(ns, restore_release):
    before = secret()

    def rotate():
        upgrade("--set", f"certificates.rotation={uuid.uuid4().hex[:8]}")
        after = secret()
        assert after["tls.crt"] != before["tls.crt"]
        assert before["ca.crt"].strip() in after["ca.crt"], "the previous CA stays trusted"
        every_replica_serves(after["tls.crt"])

    load = run_load_while(ns, rotate)
    assert load.failures == [], load.failures[:5]
    assert load.sent >= 10 * load.seconds * 0.9, load.summary()
    assert load.injected == load.created


def test_control_a_new_ca_the_ca_bundle_does_not_trust_yet_fails_creates(ns, restore_release, tmp_path):
    def switch_in_one_step():
        # What a rotation without the previous CA in the bundle does (the render-time `generate` of an older chart
        # rendered again, by `helm template` or after the Secret was deleted): the caBundle becomes the new CA at
        # once, and the Secret with it; replicas serve the old pair until the kubelet updates their volume.
        os.makedirs(tmp_path / "ca")
        ca_dir = new_ca(str(tmp_path / "ca"))
        new = pair(str(tmp_path / "new"), ca_dir)
        ca = open(os.path.join(ca_dir, "ca.crt")).read()
        put_ca_bundle(ca)
        put_secret(*new, ca)
        every_replica_serves(new[0])

    load = run_load_while(ns, switch_in_one_step)
    assert load.failures, "a CA switched in one step fails creates while replicas still serve the old pair"
    assert any("x509" in f or "certificate" in f for f in load.failures), load.failures[:5]


def test_a_cert_manager_style_renewal_of_the_secret_under_load_fails_no_create(ns, restore_release, tmp_path):
    # As cert-manager sets it up: its CA in the Secret's ca.crt and (cainjector) in the caBundle.
    ca = open(os.path.join(PKI, "ca.crt")).read()
    first = pair(str(tmp_path / "first"), PKI)
    put_ca_bundle(ca + secret()["ca.crt"])
    put_secret(*first, ca)
    every_replica_serves(first[0])
    put_ca_bundle(ca)

    renewed = pair(str(tmp_path / "renewed"), PKI)

    def renew():
        put_secret(*renewed, ca)
        every_replica_serves(renewed[0])
        # The apiserver keeps its kept-alive connections: new replicas make it verify the renewed pair on new ones.
        restart_replicas()
        every_replica_serves(renewed[0])

    load = run_load_while(ns, renew)
    assert load.failures == [], load.failures[:5]
    assert load.injected == load.created

    # The control: a renewal whose certificate another CA signed (its ca.crt still the trusted one, the mismatch
    # cert-manager users report): once the apiserver has to open new connections, the same load fails creates.
    other = pair(str(tmp_path / "other"), new_ca(str(tmp_path)))
    put_secret(*other, ca)
    every_replica_serves(other[0])
    restart_replicas()
    every_replica_serves(other[0])
    control = run_load_while(ns, lambda: time.sleep(5))
    assert any("x509" in f or "certificate" in f for f in control.failures), control.summary()


def restart_replicas():
    kubectl("-n", RELEASE_NS, "rollout", "restart", "deployment/entourage")
    kubectl("-n", RELEASE_NS, "rollout", "status", "deployment/entourage", "--timeout=180s", timeout=190)
    wait_until("only the restarted replicas", lambda: len(served()) == 2, timeout=90, interval=1)
