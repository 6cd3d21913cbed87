#!/usr/bin/env python3
"""A stand-in for the Kubernetes API, enough for `helm template --dry-run=server` (which runs the chart's `lookup`).

Serves discovery for the kinds the chart renders, and the objects given in a JSON list file (argv[1]); every other
object is a 404, as in an empty cluster. Listens on a free loopback port and prints it on the first line of stdout.
Used by tests/install_chart.rs to prove what `helm upgrade` keeps: the certificate Secret, an older Deployment's
selector.
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

CORE = {"Secret": "secrets", "ServiceAccount": "serviceaccounts", "ConfigMap": "configmaps", "Service": "services"}
GROUPS = {
    "apps": {"Deployment": ("deployments", True)},
    "policy": {"PodDisruptionBudget": ("poddisruptionbudgets", True)},
    "networking.k8s.io": {"NetworkPolicy": ("networkpolicies", True)},
    "rbac.authorization.k8s.io": {"ClusterRole": ("clusterroles", False), "ClusterRoleBinding": ("clusterrolebindings", False)},
    "admissionregistration.k8s.io": {"MutatingWebhookConfiguration": ("mutatingwebhookconfigurations", False)},
}


def resources(group_version, kinds):
    return {
        "kind": "APIResourceList",
        "groupVersion": group_version,
        "resources": [
            {"name": name, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind, "verbs": ["get", "list"]}
            for kind, (name, namespaced) in kinds.items()
        ],
    }


def routes(objects):
    table = {
        "/version": {"major": "1", "minor": "33", "gitVersion": "v1.33.0"},
        "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
        "/apis": {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {"name": g, "versions": [{"groupVersion": g + "/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": g + "/v1", "version": "v1"}}
                for g in GROUPS
            ],
        },
        "/api/v1": resources("v1", {k: (n, True) for k, n in CORE.items()}),
    }
    for group, kinds in GROUPS.items():
        table[f"/apis/{group}/v1"] = resources(group + "/v1", kinds)
    for o in objects:
        kind, meta = o["kind"], o["metadata"]
        if kind in CORE:
            table[f"/api/v1/namespaces/{meta['namespace']}/{CORE[kind]}/{meta['name']}"] = o
        for group, kinds in GROUPS.items():
            if o.get("apiVersion") == group + "/v1" and kind in kinds:
                plural, namespaced = kinds[kind]
                where = f"namespaces/{meta['namespace']}/" if namespaced else ""
                table[f"/apis/{group}/v1/{where}{plural}/{meta['name']}"] = o
    return table


def main():
    table = routes(json.load(open(sys.argv[1])))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = table.get(self.path.split("?")[0])
            status = 200 if body is not None else 404
            if body is None:
                body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
