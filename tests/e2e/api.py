"""A small Kubernetes REST client for the load and latency scenarios, where a kubectl process per call would
cost more than the call. Credentials come from the kubeconfig, read through `kubectl config view`."""
import base64
import http.client
import json
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
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        conn = self._conn()
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
        except (http.client.HTTPException, OSError):
            # Counted by the caller as a failure: a POST is never retried behind its back.
            conn.close()
            self.local.conn = None
            raise

    def create_pod(self, ns, pod, dry_run=False):
        path = f"/api/v1/namespaces/{ns}/pods" + ("?dryRun=All" if dry_run else "")
        return self.request("POST", path, pod)
