"""A steady stream of annotated Pod creates, counting what the client saw: every answer that is not 201 (or a
connection error) is a failed create."""
import threading
import time

from api import Api

POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"generateName": "load-", "annotations": {"entourage.dev/sidecar-logs": "/var/log/app/a.log"}},
       # No scheduler by that name exists: the Pods are stored and never started, so the load is admission only.
       "spec": {"schedulerName": "entourage-e2e-unscheduled",
                "containers": [{"name": "app", "image": "nginx:1.22"}]}}


class Load:
    def __init__(self, ns, rate=15.0, clients=2):
        self.ns, self.rate, self.api = ns, rate, Api()
        self.sent, self.created, self.failures, self.injected = 0, 0, [], 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        self.started = time.monotonic()
        for t in self.threads:
            t.start()

    def _client(self):
        period = len(self.threads) / self.rate
        nxt = time.monotonic()
        while not self.stopping.is_set():
            nxt += period
            time.sleep(max(0.0, nxt - time.monotonic()))
            with self.lock:
                self.sent += 1
            try:
                status, body = self.api.create_pod(self.ns, POD)
            except OSError as e:
                status, body = None, {"message": f"connection: {e}"}
            with self.lock:
                if status == 201:
                    self.created += 1
                    if "entourage.dev/status" in body["metadata"].get("annotations", {}):
                        self.injected += 1
                else:
                    self.failures.append(f"{status}: {(body or {}).get('message')}")

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(30)
        self.seconds = time.monotonic() - self.started
        return self

    def summary(self):
        return (f"{self.sent} creates in {self.seconds:.0f}s ({self.sent / self.seconds:.1f}/s): "
                f"{self.created} created ({self.injected} injected), {len(self.failures)} failed")
