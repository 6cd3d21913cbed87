"""Every golden input through the real apiserver (`--dry-run=server`), judged against the golden answer.

Cases with the default config go through the release the chart installed. Cases with a config of their own go
through a second `entourage serve` (the same release binary) on the node, started with that config and registered
by URL for namespaces labelled entourage-e2e/webhook=host, which the release's webhooks leave alone.
"""
import base64
import json
import os
import re
import socket
import subprocess
import tempfile
import uuid
from decimal import Decimal

import pytest

from conftest import NODE_IP, PKI, ROOT, kubectl, serving_cert, wait_until

GOLDEN = os.path.join(ROOT, "tests/golden")
BINARY = os.path.join(ROOT, "target/x86_64-unknown-linux-musl/release/entourage")
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


QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
SUFFIX = {None: 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
          "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
# Golden inputs no real apiserver accepts, and the words of its refusal. The apiserver validates the object after
# every webhook; these are refused for what the user wrote, not for what entourage added.
INVALID_INPUT = {
    "annotation-keys-with-slash-and-tilde-are-escaped":
        'metadata.annotations: Invalid value: "example.com/a~b"',
    "cronjob-time-zone-in-schedule-is-respected":
        "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
}
# Golden inputs that lack a field the apiserver always defaults before any webhook: the object entourage returns
# is the same, but its warning names the API default it replaced ("to keep 6") rather than an absent field.
DEFAULTED_BEFORE_US = {"cronjob-concurrency-policy-absent-gets-forbid", "job-backoff-limit-absent-gets-policy-value"}


def quantity(value):
    """A resource quantity as a number: the apiserver writes 0.25 as 250m and 1024Mi as 1Gi."""
    m = QUANTITY.match(value) if isinstance(value, str) else None
    return Decimal(m.group(1)) * SUFFIX[m.group(2)] if m else None


def contained(want, got, path=()):
    """Every field of `want` is in `got` with the same value; lists match element by element from the start
    (the apiserver appends, e.g. the service-account token volume and its mounts)."""
    if path[:1] == ("status",):
        return
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{'/'.join(path)}: {got!r} is not an object"
        for k, v in want.items():
            if (path + (k,))[-2:] in SERVER_SET or (path == ("metadata",) and k == "name" and not v):
                continue
            if v in ({}, []) and k not in got:
                continue  # the apiserver writes no empty maps or lists (omitempty)
            assert k in got, f"{'/'.join(path + (k,))} is missing from the apiserver's object"
            contained(v, got[k], path + (k,))
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) >= len(want), f"{'/'.join(path)}: {got!r} lacks {want!r}"
        for i, v in enumerate(want):
            contained(v, got[i], path + (str(i),))
    elif "resources" in path and quantity(want) is not None:
        assert quantity(want) == quantity(got), f"{'/'.join(path)}: golden {want!r}, apiserver {got!r}"
    else:
        assert want == got, f"{'/'.join(path)}: golden {want!r}, apiserver {got!r}"


def drop_unknown(obj, warnings):
    """Removes the fields the apiserver reported as unknown (`unknown field "spec.containers[0].x"`): a typed
    apiserver drops them while decoding, before any webhook sees the object."""
    obj = json.loads(json.dumps(obj))
    for w in warnings:
        m = re.match(r'unknown field "(.*)"$', w)
        if not m:
            continue
        parts = [p for p in re.split(r"[.\[\]]+", m.group(1)) if p]
        node = obj
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node.get(p, {})
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    return obj


def owned(value, fields):
    """The part of `value` that a managedFields entry (FieldsV1: `f:name`, `k:{...}` list keys, `v:` values)
    names; a field with no children is taken whole."""
    if not fields:
        return value
    if isinstance(value, dict):
        return {k[2:]: owned(value[k[2:]], sub) for k, sub in fields.items()
                if k.startswith("f:") and k[2:] in value}
    if isinstance(value, list):
        out = []
        for k, sub in fields.items():
            if k.startswith("k:"):
                key = json.loads(k[2:])
                out += [{**key, **owned(item, sub)} for item in value
                        if all(item.get(a) == b for a, b in key.items())]
            elif k.startswith("v:"):
                out.append(json.loads(k[2:]))
        return out
    return value


def dry_run(case, namespace):
    """The golden input, created with dryRun=All through the REST API (kubectl would rewrite the
    last-applied-configuration annotation some cases are about). Returns (status, body, warnings)."""
    obj = json.loads(json.dumps(case["input"]))
    obj["metadata"]["namespace"] = namespace
    for k in ("uid", "resourceVersion", "creationTimestamp"):
        obj["metadata"].pop(k, None)
    # A field owned by a server-side apply is what the user wrote: replay such a case as the apply it was, of
    # exactly the fields its managedFields give the applier.
    appliers = [m for m in obj["metadata"].get("managedFields", []) if m.get("operation") == "Apply"]
    if appliers:
        body = owned(obj, appliers[0]["fieldsV1"])
        body.update({"apiVersion": obj["apiVersion"], "kind": obj["kind"]})
        body.setdefault("metadata", {}).update(name=obj["metadata"]["name"], namespace=namespace)
        return API().apply(body, namespace, appliers[0]["manager"], dry_run=True)
    return API().create(obj, namespace, dry_run=True, field_validation="Warn")


def judge(case, answer):
    status, body, warnings = answer
    resp = case["response"]
    assert status != 500 and status < 500, (status, body)
    if case["name"] in INVALID_INPUT:
        assert status == 422 and INVALID_INPUT[case["name"]] in body["message"], (status, body)
        return
    if resp["allowed"]:
        assert status == 201, f"golden admits, the apiserver refused ({status}): {body.get('message')}"
        contained(drop_unknown(case["patched"] or case["input"], warnings), body)
        for w in resp.get("warnings", []) if case["name"] not in DEFAULTED_BEFORE_US else []:
            assert any(w[:200] in got for got in warnings), f"warning {w!r} not in {warnings}"
    else:
        assert status in (400, 403, 422), f"golden denies, the apiserver answered {status}"
        assert "denied the request" in body["message"] and resp["message"] in body["message"], body["message"]


_api = []


def API():
    if not _api:
        from api import Api
        _api.append(Api())
    return _api[0]


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
        self.crt, self.key = serving_cert(workdir, f"IP:{NODE_IP}", "golden")
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
            assert self.proc.poll() is None, open(os.path.join(self.dir, "serve.log")).read()[-2000:]
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


PROBE = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "probe", "annotations": {"entourage.dev/sidecar-logs": "/var/log/a.log"}},
         "spec": {"containers": [{"name": "app", "image": "nginx:1.22"}]}}
HOST_NAMESPACES = []


@pytest.fixture(scope="module")
def host_webhook():
    with tempfile.TemporaryDirectory() as d:
        hook = HostWebhook(d)
        hook.serve("{}")
        ns = host_namespace("golden-host")
        # The apiserver picks the new configuration up from its informer: wait until it calls the host webhook.
        wait_until("the apiserver to call the host webhook", lambda: "entourage.dev/status" in (
            API().create(PROBE, ns, dry_run=True)[1].get("metadata", {}).get("annotations", {})), timeout=30)
        yield hook
        hook.close()
        for name in HOST_NAMESPACES:
            kubectl("delete", "namespace", name, "--wait=false", check=False)


def host_namespace(name):
    if kubectl("get", "namespace", name, check=False).returncode != 0:
        kubectl("create", "namespace", name)
        HOST_NAMESPACES.append(name)
    kubectl("label", "namespace", name, "entourage-e2e/webhook=host", "--overwrite")
    wait_until("default ServiceAccount", lambda: kubectl("-n", name, "get", "sa", "default", check=False)
               .returncode == 0)
    return name


@pytest.mark.parametrize("case", OWN_CONFIG, ids=[c["name"] for c in OWN_CONFIG])
def test_golden_case_with_its_own_config_through_the_real_apiserver(case, host_webhook):
    host_webhook.serve(case["meta"]["config"])
    ns = host_namespace(case["meta"].get("namespace") or "golden-host")
    # The apiserver picks up the webhook configuration shortly after it is applied: the first case waits for it.
    judge(case, dry_run(case, ns))
