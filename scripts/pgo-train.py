"""The training run of a profile-guided build (scripts/pgo.sh): an instrumented entourage does what a cluster asks
of it, as real processes on loopback, and writes the profile the release build is then optimised with.

    python3 scripts/pgo-train.py BIN WORKDIR

What it runs, each role the way the webhook injects it or the chart starts it:
- `serve`: every review in tests/fixtures and bench/fixtures (Pods of each pattern, Jobs, CronJobs, unannotated
  objects, denials) over keep-alive HTTPS connections, with the JSON log line;
- `ambassador`, HTTP/1.1: GETs and POSTs to an upstream over mutual TLS, and to a plain-HTTP upstream;
- `ambassador`, gRPC: unary and streaming calls over h2c, when grpcio is installed (tests/support/grpc_peer.py);
- `stream` and `adapt --format nginx`: a growing nginx access log, read to its end.

The counts only set which code is hot; nothing here is measured or asserted. Each process is stopped with SIGTERM
and exits on its own, which is when the instrumented binary writes its profile.
"""

import http.client
import json
import pathlib
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = pathlib.Path(__file__).resolve().parent.parent
REVIEWS = 12000
AMBASSADOR_REQUESTS = 8000
GRPC_CALLS = 1500
LOG_LINES = 60000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"pgo-train: {proc.args[:2]} exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"pgo-train: nothing listened on {port} within {seconds}s")


def stop(proc):
    """SIGTERM, then wait: the profile is written when the process exits by itself."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        sys.exit(f"pgo-train: {proc.args[:2]} ignored SIGTERM for 30 s; its profile is lost")


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def certificates(pki):
    """A CA, a serving certificate for localhost and a client certificate, all P-256."""
    pki.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=pgo CA", "-keyout", pki / "ca.key", "-out", pki / "ca.crt")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (pki / f"{name}.ext").write_text(ext + "\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN=pgo {name}",
                "-keyout", pki / f"{name}.key", "-out", pki / f"{name}.csr")
        openssl("x509", "-req", "-in", pki / f"{name}.csr", "-CA", pki / "ca.crt", "-CAkey", pki / "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", pki / f"{name}.ext", "-out", pki / f"{name}.crt")


def in_threads(n, work):
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def reviews():
    """Every sample AdmissionReview the repository has, as bytes."""
    bodies = []
    for path in sorted([*ROOT.glob("tests/fixtures/*.json"), *ROOT.glob("bench/fixtures/*.json")]):
        try:
            if json.loads(path.read_text()).get("kind") == "AdmissionReview":
                bodies.append(path.read_bytes())
        except (ValueError, AttributeError):
            continue
    if not bodies:
        sys.exit("pgo-train: no AdmissionReview fixtures found")
    return bodies


def train_webhook(bin_, work, pki):
    port = free_port()
    log = open(work / "serve.log", "wb")
    proc = subprocess.Popen([bin_, "--log-format", "json", "serve", "--listen", f"127.0.0.1:{port}",
                             "--tls-cert", pki / "server.crt", "--tls-key", pki / "server.key"],
                            stdout=subprocess.DEVNULL, stderr=log)
    wait_port(port, proc)
    bodies = reviews()
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))

    def client(i):
        conn = http.client.HTTPSConnection("localhost", port, context=context)
        for n in range(REVIEWS // 8):
            conn.request("POST", "/mutate?timeout=10s", body=bodies[(i + n) % len(bodies)],
                         headers={"Content-Type": "application/json"})
            conn.getresponse().read()
        conn.close()

    in_threads(8, client)
    stop(proc)


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The head and the body go out in two writes: without this, each answer waits for the delayed ACK (40 ms).
    disable_nagle_algorithm = True

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b"ok\n" * 20
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = answer

    def log_message(self, *args):
        pass


def upstream(pki=None):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    server.daemon_threads = True
    if pki:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.crt"))
        context.load_cert_chain(pki / "server.crt", pki / "server.key")
        context.verify_mode = ssl.CERT_REQUIRED
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def ambassador(bin_, work, name, upstream_url, *extra):
    port, admin = free_port(), free_port()
    log = open(work / f"{name}.log", "wb")
    proc = subprocess.Popen([bin_, "ambassador", "--listen", f"127.0.0.1:{port}", "--upstream", upstream_url,
                             "--admin", f"127.0.0.1:{admin}", "--timeout", "30s", "--retries", "2",
                             "--breaker-failures", "5", "--breaker-cooldown", "10s", "--max-concurrent", "256",
                             *extra], stdout=log, stderr=log)
    wait_port(port, proc)
    return proc, port


def train_ambassador_http(bin_, work, pki):
    for name, server, scheme, extra in (
        ("ambassador-mtls", upstream(pki), "https",
         ["--ca-file", pki / "ca.crt", "--client-cert", pki / "client.crt", "--client-key", pki / "client.key"]),
        ("ambassador-http", upstream(), "http", []),
    ):
        proc, port = ambassador(bin_, work, name, f"{scheme}://127.0.0.1:{server.server_address[1]}", *extra)

        def client(i):
            conn = http.client.HTTPConnection("127.0.0.1", port)
            for n in range(AMBASSADOR_REQUESTS // 16):
                if n % 4 == 3:
                    conn.request("POST", f"/orders/{n}", body=b'{"item": 1}' * 40,
                                 headers={"Content-Type": "application/json"})
                else:
                    conn.request("GET", f"/orders/{n}?page={i}", headers={"Accept": "application/json"})
                conn.getresponse().read()
            conn.close()

        in_threads(8, client)
        stop(proc)
        server.shutdown()


def train_ambassador_grpc(bin_, work):
    try:
        import grpc
    except ImportError:
        print("pgo-train: grpcio is not installed; the profile has no gRPC calls", file=sys.stderr)
        return
    peer = subprocess.Popen([sys.executable, ROOT / "tests/support/grpc_peer.py", "serve"], stdout=subprocess.PIPE)
    grpc_port = int(peer.stdout.readline().split()[1])
    proc, port = ambassador(bin_, work, "ambassador-grpc", f"http://127.0.0.1:{grpc_port}")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    unary = channel.unary_unary("/test.Echo/Unary")
    server_stream = channel.unary_stream("/test.Echo/ServerStream")
    client_stream = channel.stream_unary("/test.Echo/ClientStream")
    bidi = channel.stream_stream("/test.Echo/Bidi")
    for n in range(GRPC_CALLS):
        unary(b"message-%d" % n, timeout=10)
        if n % 10 == 0:
            list(server_stream(b"5", timeout=10))
            client_stream(iter([b"a", b"b", b"c"]), timeout=10)
            list(bidi(iter([b"a", b"b", b"c"]), timeout=10))
    channel.close()
    stop(proc)
    peer.kill()
    peer.wait()


def train_readers(bin_, work):
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    access = logs / "access.log"
    line = ('10.0.0.%d - - [08/Dec/2026:05:00:00 +0000] "GET /orders/%d HTTP/1.1" 200 %d "-" '
            '"Mozilla/5.0 (X11; Linux x86_64)"\n')
    readers = []
    for role, extra in (("stream", []), ("adapt", ["--format", "nginx"])):
        readers.append(subprocess.Popen(
            [bin_, role, "--file", access, "--position", logs / f"{role}.pos", "--create", "--give-back",
             "--backlog-warn-bytes", "134217728", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    with open(access, "a") as f:
        for n in range(LOG_LINES):
            f.write(line % (n % 250, n, n % 5000))
            if n % 5000 == 0:
                f.flush()
                time.sleep(0.05)
    size = access.stat().st_size
    deadline = time.monotonic() + 60

    def shipped(role):
        """The offset a reader's position file says it has shipped (0 before its first checkpoint)."""
        try:
            return json.loads((logs / f"{role}.pos").read_text())["offset"]
        except (OSError, ValueError, KeyError):
            return 0

    while time.monotonic() < deadline and any(shipped(role) < size for role in ("stream", "adapt")):
        time.sleep(0.2)
    for proc in readers:
        stop(proc)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    bin_, work = sys.argv[1], pathlib.Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    pki = work / "pki"
    certificates(pki)
    for name, step in (("webhook", lambda: train_webhook(bin_, work, pki)),
                       ("ambassador HTTP/1.1", lambda: train_ambassador_http(bin_, work, pki)),
                       ("ambassador gRPC", lambda: train_ambassador_grpc(bin_, work)),
                       ("log readers", lambda: train_readers(bin_, work))):
        started = time.monotonic()
        step()
        print(f"pgo-train: {name} in {time.monotonic() - started:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
