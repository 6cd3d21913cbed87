"""A real WebSocket server and client (the `websockets` package) for the ambassador's process tests.

    python3 ws_peer.py serve            prints `PORT <n>`, then echoes until killed
    python3 ws_peer.py call URL         runs the exchange and prints one JSON object with what the client saw
    python3 ws_peer.py hold URL         opens a connection, prints `OPEN`, waits for a line on stdin, then sends one
                                        message, closes with 1000 and prints JSON: the echo and the close it got

The server echoes each message (text as text, bytes as bytes), answers `whoami` with the Authorization header of
the handshake, pushes a message of its own on `push`, and closes with code 4000 on `bye`.
"""

import asyncio
import json
import sys

import websockets


async def handler(ws):
    async for message in ws:
        if message == "whoami":
            await ws.send(ws.request.headers.get("Authorization", "<none>"))
        elif message == "push":
            await ws.send("pushed by the server")
        elif message == "bye":
            await ws.close(4000, "server says bye")
            return
        else:
            await ws.send(message)


async def serve():
    async with websockets.serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print("PORT %d" % port, flush=True)
        await asyncio.Future()


async def call(url):
    out = {}
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send("hello")
        out["text"] = await ws.recv()
        await ws.send(b"\x00\x01binary\xff")
        out["binary"] = (await ws.recv()).hex()
        big = "x" * (1 << 20)
        await ws.send(big)
        out["big_echoed"] = (await ws.recv()) == big
        await ws.send("whoami")
        out["whoami"] = await ws.recv()
        await ws.send("push")
        out["push"] = await ws.recv()
        await ws.close(1000, "client done")
        out["client_close"] = [ws.close_code, ws.close_reason]
    # A second connection, closed by the server this time.
    async with websockets.connect(url) as ws:
        await ws.send("bye")
        try:
            await ws.recv()
            out["server_close"] = "no close"
        except websockets.ConnectionClosed as closed:
            out["server_close"] = [closed.rcvd.code if closed.rcvd else None, closed.rcvd.reason if closed.rcvd else None]
    json.dump(out, sys.stdout, sort_keys=True)
    print(flush=True)


async def hold(url):
    out = {}
    async with websockets.connect(url) as ws:
        print("OPEN", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        try:
            await ws.send("after the signal")
            out["echo"] = await ws.recv()
            await ws.close(1000, "client done")
        except websockets.ConnectionClosed:
            pass
        # What the server side sent back in the closing handshake; None when the connection was cut without one.
        out["close_received"] = [rcvd.code, rcvd.reason] if (rcvd := ws.protocol.close_rcvd) else None
    json.dump(out, sys.stdout, sort_keys=True)
    print(flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(serve())
    elif sys.argv[1] == "hold":
        asyncio.run(hold(sys.argv[2]))
    else:
        asyncio.run(call(sys.argv[2]))
