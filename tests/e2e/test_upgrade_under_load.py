"""helm upgrade (new image tag and config) and certificate rotation while annotated Pods are created all the time:
zero creates fail."""
import json
import os
import subprocess
import time

import pytest

from conftest import RELEASE_NS, ROOT, helm, kubectl, wait_until
from load import Load

SOCK = "/run/entourage-cluster/containerd/containerd.sock"
VALUES = os.path.join(ROOT, "tests/cluster/values.yaml")
CHART = os.path.join(ROOT, "charts/entourage")


def version():
    return next(l.split('"')[1] for l in open(os.path.join(ROOT, "Cargo.toml")) if l.startswith("version"))


def tag_image(new_tag):
    subprocess.run(["ctr", "--address", SOCK, "-n", "k8s.io", "images", "tag", "--force",
                    f"ghcr.io/entourage-dev/entourage:{version()}", f"ghcr.io/entourage-dev/entourage:{new_tag}"],
                   check=True, capture_output=True)


def replica_images():
    pods = json.loads(kubectl("-n", RELEASE_NS, "get", "pods", "-l", "app.kubernetes.io/name=entourage", "-o",
                              "json").stdout)["items"]
    return {c["image"] for p in pods if not p["metadata"].get("deletionTimestamp") for c in p["spec"]["containers"]}


@pytest.fixture
def restore_release():
    yield
    helm("upgrade", "entourage", CHART, "-n", RELEASE_NS, "-f", VALUES, "--wait", "--timeout", "180s")


def test_helm_upgrade_with_a_new_image_and_config_under_load_fails_no_create(ns, restore_release):
    tag_image(f"{version()}-next")
    load = Load(ns.name)
    time.sleep(3)
    helm("upgrade", "entourage", CHART, "-n", RELEASE_NS, "-f", VALUES, "--set", f"image.tag={version()}-next",
         "--set", "config.resources.requests.cpu=11m", "--wait", "--timeout", "180s")
    kubectl("-n", RELEASE_NS, "rollout", "status", "deployment/entourage", "--timeout=180s", timeout=190)
    wait_until("only new replicas", lambda: replica_images() == {f"ghcr.io/entourage-dev/entourage:{version()}-next"},
               timeout=90)
    time.sleep(3)
    load.stop()
    print(load.summary())
    assert load.failures == [], load.failures[:5]
    assert load.sent >= 10 * load.seconds * 0.9, load.summary()
    assert load.injected == load.created


def test_control_replicas_killed_without_their_drain_fail_creates_under_the_same_load(ns, restore_release):
    load = Load(ns.name)
    time.sleep(2)
    for _ in range(3):
        kubectl("-n", RELEASE_NS, "delete", "pods", "-l", "app.kubernetes.io/name=entourage", "--grace-period=0",
                "--force", "--wait=false")
        time.sleep(4)
    kubectl("-n", RELEASE_NS, "rollout", "status", "deployment/entourage", "--timeout=180s", timeout=190)
    load.stop()
    print(load.summary())
    assert load.failures, "killing every replica at once under load should fail some creates"
