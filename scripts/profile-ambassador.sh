#!/usr/bin/env bash
# User-space instructions per request of the ambassador and of nginx as the same reverse proxy, HTTP/1.1 with mutual
# TLS to an nginx upstream (the setup of scripts/bench-ambassador.sh, trimmed), under callgrind: each proxy serves
# WARM requests in one run and WARM+N in another over CONNS keep-alive connections opened once (oha), and the
# difference over N is one request's instructions (start-up, handshakes and warm-up cancel out). Counts, unlike
# times, repeat exactly on a shared machine. The upstream runs outside valgrind.
#
# scripts/profile-ambassador.sh
# Knobs: N (2000), WARM (200), CONNS (8), PROXIES ("nginx ambassador"), AMBASSADOR (the profile-guided release build),
# BASE_PORT (28480), CACHE_SIM (0; 1 adds callgrind's cache and branch simulation, and the line then also gives the
# L1 instruction and data misses and the mispredicted branches per request). Output: target/profile/ambassador/<proxy>-<n>.out (callgrind_annotate them for the top entries)
# and one line per proxy on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/callgrind-counts.sh
source scripts/callgrind-counts.sh
N=${N:-2000}
WARM=${WARM:-200}
CONNS=${CONNS:-8}
PROXIES=${PROXIES:-nginx ambassador}
HOST=$(rustc -vV | awk '/^host:/ {print $2}')
AMBASSADOR=${AMBASSADOR:-target/$HOST/release/entourage}
BASE_PORT=${BASE_PORT:-28480}
UPSTREAM_PORT=$((BASE_PORT + 1))
PROXY_PORT=$((BASE_PORT + 2))
ADMIN_PORT=$((BASE_PORT + 3))
OUT=$PWD/target/profile/ambassador
PKI=$OUT/pki
mkdir -p "$OUT/tmp" "$PKI"
[[ ${SKIP_BUILD:-0} == 1 ]] || scripts/pgo.sh "$HOST"

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=profile CA" \
  -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
for name in server client; do
  ext="extendedKeyUsage=clientAuth"
  [[ $name == server ]] && ext="subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=profile $name" \
    -keyout "$PKI/$name.key" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 2 \
    -extfile <(printf '%s\n' "$ext") -out "$PKI/$name.crt" 2>/dev/null
done

cat >"$OUT/upstream.conf" <<EOF
worker_processes 1;
daemon off;
pid $OUT/upstream.pid;
error_log $OUT/upstream-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $OUT/tmp;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT ssl;
        keepalive_requests 10000000;
        ssl_certificate $PKI/server.crt;
        ssl_certificate_key $PKI/server.key;
        ssl_client_certificate $PKI/ca.crt;
        ssl_verify_client on;
        location / { return 200 "ok"; }
    }
}
EOF
# The proxy exactly as scripts/bench-ambassador.sh configures it, in one process (no master) for valgrind.
cat >"$OUT/proxy.conf" <<EOF
master_process off;
daemon off;
pid $OUT/proxy.pid;
error_log $OUT/proxy-error.log warn;
events { worker_connections 1024; }
http {
    access_log $OUT/nginx-access.log combined buffer=64k flush=1s;
    client_body_temp_path $OUT/tmp;
    proxy_temp_path $OUT/tmp;
    upstream app {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 256;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$PROXY_PORT;
        keepalive_requests 10000000;
        location / {
            proxy_pass https://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host 127.0.0.1:$UPSTREAM_PORT;
            proxy_ssl_certificate $PKI/client.crt;
            proxy_ssl_certificate_key $PKI/client.key;
            proxy_ssl_trusted_certificate $PKI/ca.crt;
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_buffering off;
        }
    }
}
EOF
nginx -p "$OUT" -c "$OUT/upstream.conf" -e "$OUT/upstream-error.log" &
PIDS+=($!)

wait_up() { # url: until it answers 200 (valgrind starts slowly)
  local deadline=$((SECONDS + 120))
  until [[ $(curl -s -o /dev/null -w '%{http_code}' "$1") == 200 ]]; do
    [[ $SECONDS -lt $deadline ]] || { echo "$1 never answered 200" >&2; exit 1; }
    sleep 0.2
  done
}

# run PROXY REQUESTS: total instructions of one proxy's life answering REQUESTS requests (plus wait_up's one).
run() {
  local proxy=$1 n=$2 out=$OUT/$1-$2.out pid
  local cmd=(nginx -p "$OUT" -c "$OUT/proxy.conf" -e "$OUT/proxy-error.log")
  [[ $proxy == ambassador ]] && cmd=("$AMBASSADOR" ambassador --listen "127.0.0.1:$PROXY_PORT"
    --admin "127.0.0.1:$ADMIN_PORT" --upstream "https://127.0.0.1:$UPSTREAM_PORT" --ca-file "$PKI/ca.crt"
    --client-cert "$PKI/client.crt" --client-key "$PKI/client.key")
  local sim=()
  [[ ${CACHE_SIM:-0} == 1 ]] && sim=(--cache-sim=yes --branch-sim=yes)
  valgrind --tool=callgrind "${sim[@]}" --callgrind-out-file="$out" "${cmd[@]}" >"$OUT/$proxy-access.log" 2>"$OUT/$proxy.log" &
  pid=$!
  wait_up "http://127.0.0.1:$PROXY_PORT/"
  oha --no-tui --output-format quiet -n "$n" -c "$CONNS" "http://127.0.0.1:$PROXY_PORT/" >/dev/null
  kill -TERM "$pid"
  wait "$pid" || true
  callgrind_totals "$out"
}

for proxy in $PROXIES; do
  small=$(run "$proxy" "$WARM")
  big=$(run "$proxy" $((WARM + N)))
  line=$(printf '%s: %d instructions per request' "$proxy" "$(per_request Ir "$small" "$big" "$N")")
  if [[ ${CACHE_SIM:-0} == 1 ]]; then
    line+=$(cache_line "$small" "$big" "$N")
  fi
  echo "$line"
done
