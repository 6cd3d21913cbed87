"""Upgrading a release whose chart rendered its certificate Secret (`certificates.source: generate`, the default
of earlier charts) to the default hook Job: the upgrade stops rendering the Secret, and the Job marks it
`helm.sh/resource-policy: keep` first, so Helm keeps it; the caBundle and the serving certificate stay, and no
create fails while annotated Pods are created all the time. The control: the same upgrade to a value set that
also stops rendering it, without the Job, deletes the Secret."""
import json
import os
import time
import uuid

import pytest

from conftest import ROOT, helm, kubectl, wait_until
from load import Load

CHART = os.path.join(ROOT, "charts/entourage")
VALUES = os.path.join(ROOT, "tests/cluster/values.yaml")
RELEASE = "legacy"
REVISION = "legacy"


def release(namespace, command, *values):
    helm(command, RELEASE, CHART, "-n", namespace, "-f", VALUES, "--set", f"revision={REVISION}",
         "--set", "replicas=1", *values, "--wait", "--timeout", "180s")


def secret(namespace):
    proc = kubectl("-n", namespace, "get", "secret", "entourage-tls", "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def ca_bundles():
    hooks = json.loads(kubectl("get", "mutatingwebhookconfiguration", f"{RELEASE}-entourage", "-o", "json").stdout)
    return {w["clientConfig"].get("caBundle") for w in hooks["webhooks"]}


@pytest.fixture
def generated_release(ns):
    # Its own namespace per test, deleted without waiting.
    namespace = f"entourage-legacy-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", namespace)
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    release(namespace, "install", "--set", "certificates.source=generate")
    kubectl("label", "namespace", ns.name, f"entourage.dev/rev={REVISION}")
    probe = {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": "probe", "annotations": {"entourage.dev/sidecar-logs": "/var/log/app/a.log"}},
             "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}}

    def injects():
        proc = kubectl("-n", ns.name, "create", "--dry-run=server", "-o", "json", "-f", "-",
                       input=json.dumps(probe), check=False)
        return proc.returncode == 0 and f'\\"revision\\":\\"{REVISION}\\"' in proc.stdout

    wait_until("the release to inject through its Service", injects, timeout=180)
    yield namespace
    helm("uninstall", RELEASE, "-n", namespace, "--timeout", "60s", check=False)
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_upgrading_from_a_rendered_secret_to_the_job_keeps_it_and_fails_no_create(ns, generated_release):
    before = secret(generated_release)
    assert before["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE, "Helm owns it"
    bundles = ca_bundles()
    load = Load(ns.name)
    time.sleep(3)
    release(generated_release, "upgrade")
    time.sleep(12)
    load.stop()
    print(load.summary())
    after = secret(generated_release)
    assert after is not None, "the upgrade kept the Secret"
    assert after["data"] == before["data"], "the same CA and serving certificate"
    assert after["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert ca_bundles() == bundles
    assert load.failures == [], load.failures[:5]
    assert load.injected == load.created, load.summary()


def test_control_the_same_upgrade_without_the_job_deletes_the_secret(ns, generated_release):
    assert secret(generated_release) is not None
    # existingSecret stops rendering the Secret too, and runs no Job to keep it.
    helm("upgrade", RELEASE, CHART, "-n", generated_release, "-f", VALUES, "--set", f"revision={REVISION}",
         "--set", "replicas=1", "--set", "certificates.source=existingSecret", "--timeout", "60s")
    assert secret(generated_release) is None, "Helm deleted the Secret the earlier chart rendered"
