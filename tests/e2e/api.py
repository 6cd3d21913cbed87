"""A small Kubernetes REST client for the load and latency scenarios, where a kubectl process per call would
cost more than the call. Credentials come from the kubeconfig, read through `kubectl config view`."""
import base64
import http.client
import json
import re
import ssl
import tempfile
import threading
import urllib.parse

from conftest import kubectl


class Api:
    def __init__(self):
        cfg = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
        cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
        url = urllib.parse.urlparse(cluster["server"])
        self.host, self.port = url.hostname, url.port or 443
        self.ctx = ssl.create_default_context(cafile=cluster.get("certificate-authority"))
        if "certificate-authority-data" in cluster:
            self.ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"])
                                                  .decode())
        cert, key = user.get("client-certificate"), user.get("client-key")
        if "client-certificate-data" in user:
            self._tmp = tempfile.NamedTemporaryFile("wb", suffix=".pem")
            self._tmp.write(base64.b64decode(user["client-certificate-data"]))
            self._tmp.write(base64.b64decode(user["client-key-data"]))
            self._tmp.flush()
            cert, key = self._tmp.name, None
        self.ctx.load_cert_chain(cert, key)
        self.local = threading.local()

    def _conn(self):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=60)
            self.local.conn = conn
        return conn

    def request(self, method, path, body=None):
        """(status, decoded JSON body) over one keep-alive connection per thread."""
        status, decoded, _ = self.request_with_warnings(method, path, body)
        return status, decoded

    def request_with_warnings(self, method, path, body=None, content_type="application/json"):
        """(status, decoded JSON body, the texts of the response's Warning headers)."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        conn = self._conn()
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            # RFC 7234 warn-text: `299 - "text"`, as the apiserver sends its own and webhooks' warnings.
            warnings = [re.sub(r'\\(.)', r'\1', w.split(" ", 2)[2][1:-1]) for w in resp.headers.get_all("Warning") or []]
            return resp.status, (json.loads(raw) if raw else None), warnings
        except (http.client.HTTPException, OSError):
            # Counted by the caller as a failure: a POST is never retried behind its back.
            conn.close()
            self.local.conn = None
            raise

    def create(self, obj, ns, dry_run=False, field_validation=None):
        """POST of a Pod, Job or CronJob; returns (status, body, warnings)."""
        group = {"v1": "/api/v1"}.get(obj["apiVersion"], f"/apis/{obj['apiVersion']}")
        resource = {"Pod": "pods", "Job": "jobs", "CronJob": "cronjobs"}[obj["kind"]]
        query = [q for q in ("dryRun=All" if dry_run else "",
                             f"fieldValidation={field_validation}" if field_validation else "") if q]
        path = f"{group}/namespaces/{ns}/{resource}" + ("?" + "&".join(query) if query else "")
        return self.request_with_warnings("POST", path, obj)

    def apply(self, obj, ns, manager, dry_run=False):
        """Server-side apply (a PATCH of type application/apply-patch+yaml) as `manager`."""
        group = {"v1": "/api/v1"}.get(obj["apiVersion"], f"/apis/{obj['apiVersion']}")
        resource = {"Pod": "pods", "Job": "jobs", "CronJob": "cronjobs"}[obj["kind"]]
        path = (f"{group}/namespaces/{ns}/{resource}/{obj['metadata']['name']}?fieldManager={manager}"
                + ("&dryRun=All" if dry_run else ""))
        return self.request_with_warnings("PATCH", path, obj, content_type="application/apply-patch+yaml")

    def create_pod(self, ns, pod, dry_run=False):
        path = f"/api/v1/namespaces/{ns}/pods" + ("?dryRun=All" if dry_run else "")
        return self.request("POST", path, pod)
