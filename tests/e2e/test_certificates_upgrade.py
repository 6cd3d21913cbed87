"""Upgrading a release whose chart rendered its certificate Secret (`certificates.source: generate`, the default
of earlier charts) to the default hook Job: the upgrade stops rendering the Secret, and the Job marks it
`helm.sh/resource-policy: keep` first, so Helm keeps it; the caBundle and the serving certificate stay, and no
create fails while annotated Pods are created all the time. The control: the same upgrade to a value set that
also stops rendering it, without the Job, deletes the Secret."""
import json
import os
import time

import pytest

from conftest import ROOT, helm, kubectl, wait_until
from load import Load

CHART = os.path.join(ROOT, "charts/entourage")
VALUES = os.path.join(ROOT, "tests/cluster/values.yaml")
RELEASE = "legacy"
NAMESPACE = "entourage-legacy"
REVISION = "legacy"


def release(command, *values):
    helm(command, RELEASE, CHART, "-n", NAMESPACE, "-f", VALUES, "--set", f"revision={REVISION}",
         "--set", "replicas=2", *values, "--wait", "--timeout", "180s")


def secret():
    proc = kubectl("-n", NAMESPACE, "get", "secret", "entourage-tls", "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def ca_bundles():
    hooks = json.loads(kubectl("get", "mutatingwebhookconfiguration", f"{RELEASE}-entourage", "-o", "json").stdout)
    return {w["clientConfig"].get("caBundle") for w in hooks["webhooks"]}


@pytest.fixture
def generated_release(ns):
    kubectl("create", "namespace", NAMESPACE)
    kubectl("label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted")
    release("install", "--set", "certificates.source=generate")
    kubectl("label", "namespace", ns.name, f"entourage.dev/rev={REVISION}")
    probe = {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": "probe", "annotations": {"entourage.dev/sidecar-logs": "/var/log/app/a.log"}},
             "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}}

    def injects():
        proc = kubectl("-n", ns.name, "create", "--dry-run=server", "-o", "json", "-f", "-",
                       input=json.dumps(probe), check=False)
        return proc.returncode == 0 and f'\\"revision\\":\\"{REVISION}\\"' in proc.stdout

    wait_until("the release to inject through its Service", injects, timeout=180)
    yield
    helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "120s", check=False)
    kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    wait_until(f"namespace {NAMESPACE} to go", lambda: kubectl(
        "get", "namespace", NAMESPACE, check=False).returncode != 0, timeout=120)


def test_upgrading_from_a_rendered_secret_to_the_job_keeps_it_and_fails_no_create(ns, generated_release):
    before = secret()
    assert before["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE, "Helm owns it"
    bundles = ca_bundles()
    load = Load(ns.name)
    time.sleep(3)
    release("upgrade")
    time.sleep(20)
    load.stop()
    print(load.summary())
    after = secret()
    assert after is not None, "the upgrade kept the Secret"
    assert after["data"] == before["data"], "the same CA and serving certificate"
    assert after["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert ca_bundles() == bundles
    assert load.failures == [], load.failures[:5]
    assert load.injected == load.created, load.summary()


def test_control_the_same_upgrade_without_the_job_deletes_the_secret(ns, generated_release):
    assert secret() is not None
    # existingSecret stops rendering the Secret too, and runs no Job to keep it.
    helm("upgrade", RELEASE, CHART, "-n", NAMESPACE, "-f", VALUES, "--set", f"revision={REVISION}",
         "--set", "replicas=2", "--set", "certificates.source=existingSecret", "--timeout", "60s")
    assert secret() is None, "Helm deleted the Secret the earlier chart rendered"
