"""A real gRPC server and client (grpcio) for the ambassador's process tests.

No generated code: the service `test.Echo` is registered with grpcio's generic handlers and messages are raw bytes,
so nothing needs protoc. `serve` prints `PORT <n>` once listening and serves until killed; `call` runs every
scenario against a target and prints one JSON object with what the client saw (codes, details, messages,
trailing metadata), so that the test can compare a run through the ambassador with a run straight to the server.

    python3 grpc_peer.py serve [--cert C --key K [--client-ca CA]]
    python3 grpc_peer.py call TARGET [--deadline-ms N]
"""

import argparse
import json
import queue
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "test.Echo"
CALLS = {}
CALLS_LOCK = threading.Lock()


def count(key):
    with CALLS_LOCK:
        CALLS[key] = CALLS.get(key, 0) + 1
        return CALLS[key]


def seen(context):
    """What the server saw of the call: the credential and whether a deadline came with it."""
    metadata = dict(context.invocation_metadata())
    remaining = context.time_remaining()
    return {
        "authorization": metadata.get("authorization"),
        "x-app": metadata.get("x-app"),
        # The client asks for 7 s: what arrives is a little less (time spent on the way), never more.
        "deadline_within_7s": remaining is not None and 0 < remaining <= 7.05,
    }


def unary(request, context):
    if request.startswith(b"sleep:"):
        time.sleep(float(request[6:]))
        return b"woke"
    if request == b"fail":
        context.set_trailing_metadata((("x-why", "missing"),))
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: caf\u00e9 50%")
    if request.startswith(b"flaky:"):
        # Fails with UNAVAILABLE (before any message) on every odd call of its key.
        if count(request) % 2 == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        return b"served after %d calls" % CALLS[request]
    if request.startswith(b"calls:"):
        return str(CALLS.get(request[6:], 0)).encode()
    if request == b"seen":
        return json.dumps(seen(context)).encode()
    context.set_trailing_metadata((("x-trailer", "t-" + request.decode()), ("x-bin-bin", b"\x00\x01\xff")))
    return b"echo:" + request


def server_stream(request, context):
    if request.startswith(b"flaky-stream:"):
        # One message, then UNAVAILABLE: the call has produced output and must not be retried.
        count(request)
        yield b"first"
        context.abort(grpc.StatusCode.UNAVAILABLE, "gone after the first message")
    for i in range(int(request)):
        yield b"item-%d" % i
    context.set_trailing_metadata((("x-count", request.decode()),))


def client_stream(requests, context):
    parts = [r for r in requests]
    context.set_trailing_metadata((("x-parts", str(len(parts))),))
    return b"+".join(parts)


def bidi(requests, context):
    for r in requests:
        yield b"re:" + r


def serve(args):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if args.cert:
        with open(args.key, "rb") as f:
            key = f.read()
        with open(args.cert, "rb") as f:
            cert = f.read()
        ca = None
        if args.client_ca:
            with open(args.client_ca, "rb") as f:
                ca = f.read()
        creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("PORT %d" % port, flush=True)
    server.wait_for_termination()


def outcome(fn):
    try:
        value, call = fn()
        return {
            "code": call.code().name,
            "value": value,
            "trailing": {k: (v.hex() if isinstance(v, bytes) else v) for k, v in call.trailing_metadata()},
        }
    except grpc.RpcError as e:
        return {
            "code": e.code().name,
            "details": e.details(),
            "trailing": {k: (v.hex() if isinstance(v, bytes) else v) for k, v in (e.trailing_metadata() or ())},
        }


def text(b):
    return b.decode("utf-8", "replace")


def call(args):
    channel = grpc.insecure_channel(args.target)
    unary_call = channel.unary_unary("/%s/Unary" % SERVICE)
    stream_call = channel.unary_stream("/%s/ServerStream" % SERVICE)
    upload_call = channel.stream_unary("/%s/ClientStream" % SERVICE)
    bidi_call = channel.stream_stream("/%s/Bidi" % SERVICE)
    timeout = 30
    results = {}

    def u(payload, **kw):
        kw.setdefault("timeout", timeout)
        value, c = unary_call.with_call(payload, **kw)
        return text(value), c

    scenarios = args.scenarios.split(",")
    if "unary" in scenarios:
        results["unary"] = outcome(lambda: u(b"hello"))
        results["status"] = outcome(lambda: u(b"fail"))
        results["seen"] = outcome(lambda: u(b"seen", timeout=7, metadata=(("x-app", "1"),)))
        results["deadline"] = outcome(lambda: u(b"sleep:3", timeout=args.deadline_ms / 1000))
        results["unimplemented"] = outcome(
            lambda: channel.unary_unary("/%s/Nope" % SERVICE).with_call(b"x", timeout=timeout)
        )

    if "streams" in scenarios:

        def server_streaming():
            it = stream_call(b"5", timeout=timeout)
            items = [text(m) for m in it]
            return items, it

        results["server_stream"] = outcome(server_streaming)

        def client_streaming():
            value, c = upload_call.with_call(iter([b"a", b"bb", b"ccc"]), timeout=timeout)
            return text(value), c

        results["client_stream"] = outcome(client_streaming)

        def bidirectional():
            # Each message is sent only after the answer to the previous one arrived: a proxy that waited for
            # the end of either stream would deadlock here (and the deadline would say so).
            q = queue.Queue()

            def messages():
                while True:
                    m = q.get()
                    if m is None:
                        return
                    yield m

            it = bidi_call(messages(), timeout=timeout)
            got = []
            for m in (b"one", b"two", b"three"):
                q.put(m)
                got.append(text(next(it)))
            q.put(None)
            got.extend(text(m) for m in it)
            return got, it

        results["bidi"] = outcome(bidirectional)

    if "retry" in scenarios:
        results["flaky"] = outcome(lambda: u(b"flaky:" + args.key.encode()))
        results["flaky_calls"] = outcome(lambda: u(b"calls:flaky:" + args.key.encode()))

        def flaky_stream():
            it = stream_call(b"flaky-stream:" + args.key.encode(), timeout=timeout)
            items = [text(m) for m in it]
            return items, it

        results["flaky_stream"] = outcome(flaky_stream)
        results["flaky_stream_calls"] = outcome(lambda: u(b"calls:flaky-stream:" + args.key.encode()))

    json.dump(results, sys.stdout, sort_keys=True)
    print(flush=True)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--cert")
    s.add_argument("--key")
    s.add_argument("--client-ca")
    c = sub.add_parser("call")
    c.add_argument("target")
    c.add_argument("--scenarios", default="unary,streams")
    c.add_argument("--deadline-ms", type=int, default=500)
    c.add_argument("--key", default="k")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args)
    else:
        call(args)


if __name__ == "__main__":
    main()
