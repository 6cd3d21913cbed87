"""Small mutating webhooks of other vendors, played by this test process on the node: HTTPS servers the apiserver
calls by URL, each with a certificate from the cluster's CA."""
import base64
import json
import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import NODE_IP, PKI, kubectl, serving_cert



def escape(key):
    return key.replace("~", "~0").replace("/", "~1")


class Mutator:
    """Serves /mutate with `patch_for(pod) -> list of JSON patch operations`, registered as the
    MutatingWebhookConfiguration `name` for Pods in namespaces with label `selector`."""

    def __init__(self, name, port, selector, patch_for):
        self.name, self.port, self.patch_for = name, port, patch_for
        self.dir = tempfile.mkdtemp(prefix=name)
        crt, key = serving_cert(self.dir, f"IP:{NODE_IP}", name)
        mutator = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request = review["request"]
                ops = mutator.patch_for(request["object"])
                response = {"uid": request["uid"], "allowed": True}
                if ops:
                    response["patchType"] = "JSONPatch"
                    response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
                body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                   "response": response}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer((NODE_IP, port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        ca = base64.b64encode(open(f"{PKI}/ca.crt", "rb").read()).decode()
        kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{"name": f"{name}.e2e.test", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                          "failurePolicy": "Fail", "reinvocationPolicy": "IfNeeded", "timeoutSeconds": 5,
                          "clientConfig": {"url": f"https://{NODE_IP}:{port}/mutate", "caBundle": ca},
                          "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                     "resources": ["pods"]}],
                          "namespaceSelector": {"matchLabels": selector}}]}))

    def close(self):
        kubectl("delete", "mutatingwebhookconfiguration", self.name, "--ignore-not-found", check=False)
        self.server.shutdown()
        self.server.server_close()
