#!/usr/bin/env bash
# make soak: faults under load against the release binary on loopback, bounded in time.
#
#   1. load      SOAK_REQUESTS (default 1,000,000) reviews over SOAK_CONNECTIONS (16) keep-alive connections:
#                no failure, and the server's RSS after the end within 10 % of its RSS after the warm-up.
#   2. sigterm   25 connections sending without pause, SIGTERM mid-load: every request the server started is
#                answered (the reviews it logged equal the answers the clients received), the server exits 0.
#                Connections refused once the listener is closed are expected, and so is a request written
#                just as the server closes an idle keep-alive connection (unread, so not started).
#   3. rotate    tls.crt/tls.key replaced by a new pair (same CA) while loaded: new connections get the new
#                certificate (`entourage serve` re-reads them every --reload-interval), no request fails.
#
# The load driver is bench/tools/soak.rs. Each phase prints one JSON line of counts.
set -euo pipefail
cd "$(dirname "$0")/.."

requests=${SOAK_REQUESTS:-1000000}
connections=${SOAK_CONNECTIONS:-16}
phase_timeout=${SOAK_PHASE_TIMEOUT:-1200}

cargo build --release --quiet --bin entourage --example soak
bin=target/release/entourage
driver=target/release/examples/soak
work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid"; fi
  rm -rf "$work"
}
trap cleanup EXIT
"$bin" certs --out "$work/certs" >/dev/null

# Starts the server on a free loopback port, logging at info as in production, to $1 (the load phase sends its
# ~1,000,000 lines to /dev/null); sets $server_pid and $addr.
start_server() {
  local log=$1
  shift
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  addr=127.0.0.1:$port
  "$bin" --log-format json serve --listen "$addr" --tls-cert "$work/certs/tls.crt" \
    --tls-key "$work/certs/tls.key" "$@" 2>"$log" &
  server_pid=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "soak: the server did not start"
  exit 1
}

stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid"
  server_pid=
}

drive() { timeout "$phase_timeout" "$driver" --addr "$addr" --ca "$work/certs/ca.crt" "$@"; }

status=0
echo "soak: load ($requests requests over $connections connections)"
start_server /dev/null
drive load --pid "$server_pid" --requests "$requests" --connections "$connections" || status=1
stop_server

echo "soak: SIGTERM under load (25 connections)"
start_server "$work/server.log"
drive sigterm --pid "$server_pid" --connections 25 | tee "$work/sigterm.json" || status=1
if wait "$server_pid"; then echo "soak: server exited 0 after SIGTERM"; else echo "soak: server exit status $?"; status=1; fi
server_pid=
# Every review the server started is logged when its answer is ready; each must have reached the client.
# Requests that met a closing keep-alive connection were never read: they are not in the log.
logged=$(grep -c '"decision"' "$work/server.log" || true)
answered=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$work/sigterm.json")
if [ "$logged" = "$answered" ]; then
  echo "soak: the server logged $logged reviews and the clients received all $answered answers"
else
  echo "soak: the server logged $logged reviews but the clients received $answered answers"
  status=1
fi

echo "soak: certificate rotation under load"
start_server "$work/server.log"
drive rotate --cert-dir "$work/certs" || status=1
stop_server
exit $status
