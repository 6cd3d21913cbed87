#!/usr/bin/env bash
# The protocol half of `make bench-ambassador`: the ambassador beside nginx configured as the same proxy, for gRPC
# unary calls (nginx: grpc_pass over h2c, upstream keep-alive) and for one streamed download (nginx: proxy_pass with
# buffering off; its WebSocket location carries the upgrade headers, as the ambassador relays upgrades). One worker
# each, pinned to CPU 0 with the upstream; the load tool on CPU 1.
#
# The upstream is nginx itself, so that neither proxy is measured against a slow server: an h2c server answering
# every call with one gRPC message and `grpc-status: 0` in the trailers, and a plain HTTP/1.1 server with a
# STREAM_MB file. gRPC load is h2load (nghttp2-client), STREAM_CONNECTIONS connections x STREAMS streams each, as
# gRPC clients multiplex; the streamed download is curl over one connection. Each measurement is repeated ROUNDS
# times alternating targets, medians reported, with the proxy's CPU time per call from /proc.
#
# Output: target/bench/ambassador-protocols.json and .md. Knobs: DURATION=10 ROUNDS=3 STREAM_MB=1024
# STREAM_CONNECTIONS=4 STREAMS=16 BASE_PORT=28280
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/target/bench"
WORK="$OUT/ambassador-protocols-run"
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
STREAM_MB=${STREAM_MB:-1024}
STREAM_CONNECTIONS=${STREAM_CONNECTIONS:-4}
STREAMS=${STREAMS:-16}
BASE_PORT=${BASE_PORT:-28280}
GRPC_UPSTREAM=$((BASE_PORT + 1))
FILE_UPSTREAM=$((BASE_PORT + 2))
NGINX_GRPC=$((BASE_PORT + 3))
NGINX_HTTP=$((BASE_PORT + 4))
AMB_GRPC=$((BASE_PORT + 5))
AMB_HTTP=$((BASE_PORT + 6))
ADMIN_GRPC=$((BASE_PORT + 7))
ADMIN_HTTP=$((BASE_PORT + 8))

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench-ambassador-protocols: %s\n' "$*" >&2; exit 1; }

command -v nginx >/dev/null || die "nginx is missing (apt-get install nginx-light)"
if ! command -v h2load >/dev/null; then
    [ "$(id -u)" -eq 0 ] || die "h2load is missing (apt-get install nghttp2-client)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nghttp2-client >/dev/null
fi

# The ports are BASE_PORT+1 to +8: refuse to start on a taken one (a local cluster's CoreDNS holds 18181, inside the
# old default range).
for port in $(seq $((BASE_PORT + 1)) $((BASE_PORT + 8))); do
    if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
        die "port $port is taken (ss -ltn); choose another BASE_PORT"
    fi
done

# shellcheck source=scripts/cpu-time.sh
source "$ROOT/scripts/cpu-time.sh"

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

SERVER_PIN=()
LOAD_PIN=()
pinned=false
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    SERVER_PIN=(taskset -c 0)
    LOAD_PIN=(taskset -c 1)
    pinned=true
fi

rm -rf "$WORK"
mkdir -p "$WORK/tmp"
# The release build, profile-guided (scripts/pgo.sh), as scripts/bench-ambassador.sh measures it.
HOST=$(rustc -vV | awk '/^host:/ {print $2}')
BIN=${AMBASSADOR_BIN:-$ROOT/target/$HOST/release/entourage}
[ -x "$BIN" ] || (cd "$ROOT" && scripts/pgo.sh "$HOST")

# One gRPC message: a zero flag, a 4-byte big-endian length, then the payload; the same as request and response.
printf '\x00\x00\x00\x00\x05hello' >"$WORK/message.bin"
truncate -s "${STREAM_MB}M" "$WORK/stream.bin"

cat >"$WORK/upstream.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/upstream.pid;
error_log $WORK/upstream-error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $WORK/tmp;
    server {
        listen 127.0.0.1:$GRPC_UPSTREAM http2;
        keepalive_requests 100000000;
        location / {
            default_type application/grpc;
            add_trailer grpc-status 0 always;
            add_trailer grpc-message "" always;
            # Any body will do: neither proxy nor h2load parses gRPC messages.
            return 200 "hello";
        }
    }
    server {
        listen 127.0.0.1:$FILE_UPSTREAM;
        keepalive_requests 100000000;
        sendfile on;
        location / { root $WORK; }
    }
}
EOF
cat >"$WORK/proxy.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/proxy.pid;
error_log $WORK/proxy-error.log warn;
events { worker_connections 8192; }
http {
    access_log $WORK/nginx-proxy-access.log combined buffer=64k flush=1s;
    client_body_temp_path $WORK/tmp;
    proxy_temp_path $WORK/tmp;
    upstream grpc_up { server 127.0.0.1:$GRPC_UPSTREAM; keepalive 64; keepalive_requests 100000000; }
    upstream file_up { server 127.0.0.1:$FILE_UPSTREAM; keepalive 64; keepalive_requests 100000000; }
    map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
    server {
        listen 127.0.0.1:$NGINX_GRPC http2;
        keepalive_requests 100000000;
        location / { grpc_pass grpc://grpc_up; grpc_read_timeout 30s; }
    }
    server {
        listen 127.0.0.1:$NGINX_HTTP;
        keepalive_requests 100000000;
        location / {
            proxy_pass http://file_up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Streamed as it arrives, like the ambassador; through a 64 KiB buffer rather than the default page.
            proxy_buffering off;
            proxy_buffer_size 64k;
            proxy_buffers 4 64k;
        }
        location /ws {
            proxy_pass http://file_up;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_read_timeout 1h;
        }
    }
}
EOF

"${SERVER_PIN[@]}" nginx -p "$WORK" -c "$WORK/upstream.conf" -e "$WORK/upstream-error.log" &
PIDS+=($!)
upstream_master=$!
"${SERVER_PIN[@]}" nginx -p "$WORK" -c "$WORK/proxy.conf" -e "$WORK/proxy-error.log" &
PIDS+=($!)
proxy_master=$!
"${SERVER_PIN[@]}" "$BIN" ambassador --listen "127.0.0.1:$AMB_GRPC" --admin "127.0.0.1:$ADMIN_GRPC" \
    --upstream "http://127.0.0.1:$GRPC_UPSTREAM" --max-concurrent 4096 >"$WORK/amb-grpc-access.log" 2>"$WORK/amb-grpc.err" &
PIDS+=($!)
amb_grpc=$!
"${SERVER_PIN[@]}" "$BIN" ambassador --listen "127.0.0.1:$AMB_HTTP" --admin "127.0.0.1:$ADMIN_HTTP" \
    --upstream "http://127.0.0.1:$FILE_UPSTREAM" >"$WORK/amb-http-access.log" 2>"$WORK/amb-http.err" &
PIDS+=($!)
amb_http=$!

deadline=$((SECONDS + 60))
until curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_GRPC/healthz" && curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_HTTP/healthz" \
    && curl -sf -o /dev/null "http://127.0.0.1:$NGINX_HTTP/message.bin"; do
    [ "$SECONDS" -lt "$deadline" ] || die "the servers never became ready"
    sleep 0.2
done
nginx_worker=$(pgrep -P "$proxy_master" | tr '\n' ' ')

# grpc NAME PORT PIDS: one h2load run of DURATION seconds; req/s, successful calls and CPU µs per call.
grpc() {
    local name=$1 port=$2 pids=$3 before after
    # shellcheck disable=SC2086
    before=$(cpu_ns $pids)
    "${LOAD_PIN[@]}" h2load -D "$DURATION" -c "$STREAM_CONNECTIONS" -m "$STREAMS" -t 1 \
        -H 'content-type: application/grpc' -H 'te: trailers' -d "$WORK/message.bin" \
        "http://127.0.0.1:$port/test.Echo/Unary" >"$WORK/$name.txt"
    # shellcheck disable=SC2086
    after=$(cpu_ns $pids)
    local rps ok
    rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$WORK/$name.txt")
    ok=$(awk '/^status codes:/ {print $3}' "$WORK/$name.txt")
    [ "${ok:-0}" -gt 0 ] || die "$name: no 2xx answers: $(cat "$WORK/$name.txt")"
    jq -n --argjson rps "$rps" --argjson ok "$ok" --argjson ns "$((after - before))" \
        '{rps: $rps, calls: $ok, cpu_us_per_call: ($ns / 1e3 / $ok)}' >"$WORK/$name.json"
    say "$name: $rps calls/s, $(jq '.cpu_us_per_call * 10 | round / 10' "$WORK/$name.json") CPU µs/call"
}

# stream NAME PORT: one download of the STREAM_MB file over one connection; MB/s.
stream() {
    local name=$1 port=$2 speed
    speed=$("${LOAD_PIN[@]}" curl -s -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$port/stream.bin")
    jq -n --argjson bps "$speed" '{mb_per_s: ($bps / 1e6)}' >"$WORK/$name.json"
    say "$name: $(jq '.mb_per_s | floor' "$WORK/$name.json") MB/s"
}

median() { jq -s "[.[] | $2] | sort | .[(length / 2 | floor)]" "$WORK"/"$1"-*.json; }

say "warming up"
"${LOAD_PIN[@]}" h2load -D 2 -c "$STREAM_CONNECTIONS" -m "$STREAMS" -t 1 -H 'content-type: application/grpc' \
    -H 'te: trailers' -d "$WORK/message.bin" "http://127.0.0.1:$AMB_GRPC/test.Echo/Unary" >/dev/null
"${LOAD_PIN[@]}" h2load -D 2 -c "$STREAM_CONNECTIONS" -m "$STREAMS" -t 1 -H 'content-type: application/grpc' \
    -H 'te: trailers' -d "$WORK/message.bin" "http://127.0.0.1:$NGINX_GRPC/test.Echo/Unary" >/dev/null
for round in $(seq "$ROUNDS"); do
    grpc "grpc-direct-$round" "$GRPC_UPSTREAM" "$(pgrep -P "$upstream_master" | tr '\n' ' ')"
    grpc "grpc-ambassador-$round" "$AMB_GRPC" "$amb_grpc"
    grpc "grpc-nginx-$round" "$NGINX_GRPC" "$nginx_worker"
done
for round in $(seq "$ROUNDS"); do
    stream "stream-direct-$round" "$FILE_UPSTREAM"
    stream "stream-ambassador-$round" "$AMB_HTTP"
    stream "stream-nginx-$round" "$NGINX_HTTP"
done
grep -q '"protocol":"grpc"' "$WORK/amb-grpc-access.log" || die "the ambassador logged no gRPC call"

jq -n \
    --argjson ga "$(median grpc-ambassador .rps)" --argjson gn "$(median grpc-nginx .rps)" \
    --argjson gd "$(median grpc-direct .rps)" \
    --argjson ca "$(median grpc-ambassador .cpu_us_per_call)" --argjson cn "$(median grpc-nginx .cpu_us_per_call)" \
    --argjson sa "$(median stream-ambassador .mb_per_s)" --argjson sn "$(median stream-nginx .mb_per_s)" \
    --argjson sd "$(median stream-direct .mb_per_s)" \
    --argjson rounds "$ROUNDS" --argjson duration "$DURATION" --argjson pinned "$pinned" \
    --arg load "h2load -c $STREAM_CONNECTIONS -m $STREAMS -t 1" --arg nginx "$(nginx -v 2>&1)" --argjson mb "$STREAM_MB" \
    '{nginx: $nginx, grpc_load: $load, duration_s: $duration, rounds: $rounds, pinned: $pinned, stream_mb: $mb,
      grpc_unary: {direct_rps: $gd, ambassador_rps: $ga, nginx_rps: $gn,
                   ambassador_cpu_us_per_call: ($ca * 10 | round / 10), nginx_cpu_us_per_call: ($cn * 10 | round / 10)},
      streaming: {direct_mb_s: ($sd | floor), ambassador_mb_s: ($sa | floor), nginx_mb_s: ($sn | floor)},
      ratios: {grpc_unary_rps_vs_nginx: (($ga / $gn * 1000 | round) / 1000),
               grpc_cpu_per_call_vs_nginx: (($ca / $cn * 1000 | round) / 1000),
               streaming_mb_s_vs_nginx: (($sa / $sn * 1000 | round) / 1000)}}' >"$OUT/ambassador-protocols.json"
jq -r '"| measure | ambassador | nginx | ratio | target |",
       "|---|---:|---:|---:|---|",
       "| gRPC unary calls/s | \(.grpc_unary.ambassador_rps|floor) | \(.grpc_unary.nginx_rps|floor) | \(.ratios.grpc_unary_rps_vs_nginx) | ≥ 1.0 |",
       "| gRPC CPU µs per call | \(.grpc_unary.ambassador_cpu_us_per_call) | \(.grpc_unary.nginx_cpu_us_per_call) | \(.ratios.grpc_cpu_per_call_vs_nginx) | — |",
       "| streaming MB/s, one connection | \(.streaming.ambassador_mb_s) | \(.streaming.nginx_mb_s) | \(.ratios.streaming_mb_s_vs_nginx) | ≥ 0.9 |",
       "",
       "(direct: \(.grpc_unary.direct_rps|floor) calls/s, \(.streaming.direct_mb_s) MB/s; \(.grpc_load), \(.duration_s) s x \(.rounds) rounds, medians; pinned: \(.pinned); \(.nginx))"' \
    "$OUT/ambassador-protocols.json" | tee "$OUT/ambassador-protocols.md"
