"""`kubectl apply -k` of the dev overlay on a cluster without the chart's release (this file runs last: it takes
the Helm release away and puts it back)."""
import base64
import json
import os
import subprocess

from conftest import KUBECONFIG, RELEASE_NS, ROOT, get, helm, injected_names, kubectl, wait_until

PROBE = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "probe", "annotations": {"entourage.dev/sidecar-logs": "/var/log/app/app.log"}},
         "spec": {"containers": [{"name": "app", "image": "nginx:1.22"}]}}


def injected_by_dry_run(ns):
    proc = kubectl("-n", ns, "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(PROBE),
                   check=False)
    return proc.returncode == 0 and injected_names(json.loads(proc.stdout)) == ["sidecar-app"]


def test_kustomize_dev_overlay_installs_a_working_entourage_and_patches_the_real_ca_bundle(ns):
    helm("uninstall", "entourage", "-n", RELEASE_NS, "--wait", "--timeout", "120s")
    wait_until("the release's Pods to go", lambda: not json.loads(kubectl(
        "-n", RELEASE_NS, "get", "pods", "-o", "json").stdout)["items"], timeout=90)
    try:
        # The dev certificates, made by the release binary (`make certs` would build the debug one).
        if not os.path.exists(os.path.join(ROOT, "certs/tls.crt")):
            subprocess.run([os.path.join(ROOT, "target/x86_64-unknown-linux-musl/release/entourage"), "certs",
                            "--out", os.path.join(ROOT, "certs"), "--service", "entourage", "--namespace",
                            RELEASE_NS], check=True, capture_output=True)
        make = subprocess.run(["make", "-C", ROOT, "--no-print-directory", "deploy",
                               f"KUBECTL={ROOT}/target/tools/bin/kubectl --kubeconfig {KUBECONFIG}"],
                              capture_output=True, text=True, timeout=300)
        assert make.returncode == 0, make.stdout + make.stderr
        wait_until("the overlay's entourage to inject", lambda: injected_by_dry_run(ns.name), timeout=60)

        # --patch-ca-bundle: a replica writes its CA into the real MutatingWebhookConfiguration at start.
        ca = get("secret", "entourage-tls", RELEASE_NS)["data"]["ca.crt"]
        wrong = base64.b64encode(open("/var/lib/entourage-cluster/pki/ca.crt", "rb").read()).decode()
        patch = [{"op": "replace", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": wrong}
                 for i in range(len(get("mutatingwebhookconfiguration", "entourage")["webhooks"]))]
        kubectl("patch", "mutatingwebhookconfiguration", "entourage", "--type=json", "-p", json.dumps(patch))
        # The control: with the wrong CA, the apiserver cannot call entourage and the Pod is refused.
        wait_until("the wrong caBundle to break calls", lambda: not injected_by_dry_run(ns.name), timeout=30)
        kubectl("-n", RELEASE_NS, "rollout", "restart", "deployment/entourage")
        kubectl("-n", RELEASE_NS, "rollout", "status", "deployment/entourage", "--timeout=180s", timeout=190)
        hooks = get("mutatingwebhookconfiguration", "entourage")["webhooks"]
        assert {h["clientConfig"]["caBundle"] for h in hooks} == {ca}
        wait_until("entourage to inject again", lambda: injected_by_dry_run(ns.name), timeout=60)
    finally:
        kubectl("delete", "--ignore-not-found", "--wait=true", "-k", os.path.join(ROOT, "manifests/overlays/dev"),
                check=False, timeout=180)
        helm("upgrade", "--install", "entourage", os.path.join(ROOT, "charts/entourage"), "-n", RELEASE_NS,
             "--create-namespace", "-f", os.path.join(ROOT, "tests/cluster/values.yaml"), "--wait",
             "--timeout", "180s")
