#!/usr/bin/env bash
# Side-by-side benchmark on loopback: a tiny nginx upstream reached directly, through `entourage ambassador`, and
# through nginx configured as the same reverse proxy (upstream keep-alive, one worker, no response buffering).
# With MTLS=on (the default) both proxies reach the upstream over mutual TLS, as an ambassador carrying the app's
# identity does: the upstream requires a client certificate from a test CA, and each proxy presents one and verifies
# the upstream against that CA (nginx: proxy_ssl_certificate, proxy_ssl_verify, TLS sessions reused). The
# ambassador serves its Prometheus metrics as always; the run ends by scraping them. The direct target stays plain
# HTTP on a second port of the same upstream: it is the floor both proxies add to.
#
# For each target it measures the maximum throughput (closed loop, oha) and then the latency at a fixed rate of
# half the ambassador's maximum (open loop, bench/tools/pace: requests evenly spaced, each timed from its due time;
# oha's -q releases them in millisecond bursts). Servers are pinned to CPU 0 and the load tool to CPU 1 when
# taskset and two CPUs are available. Every measurement is repeated ROUNDS times, alternating targets so that
# background noise hits them alike, and the median is reported. Alongside req/s and latency it reports the server's
# CPU time per request (from /proc), which stays meaningful on a machine busy with other work; at the fixed rate
# also how busy the server core is (proxy and upstream share it). Before measuring, bench/tools/stalls probes every
# core for the stalls the machine causes on its own (a vCPU descheduled by the hypervisor), which set the tail of
# any latency measured here.
#
# What makes the two proxies equivalent: one worker each (nginx's worker_processes 1, the ambassador's one-thread
# runtime), both on the upstream's core; both keep one upstream connection per client connection alive (nginx's
# upstream keepalive, the ambassador's pool); both log one line per request into a buffer flushed in batches (nginx's
# access_log with buffer=, the ambassador's JSON line on stdout, a file here); both speak the same TLS to the
# upstream (nginx 1.22's default protocols stop at TLS 1.2, so both negotiate ECDHE-ECDSA-AES256-GCM-SHA384) with
# sessions kept; both add X-Forwarded-For and X-Forwarded-Proto. CPU per request is reported at both loads: at the
# maximum (the issue's figure) and at the fixed rate, which is how a sidecar actually runs.
#
# BASELINE=path/to/entourage adds a fourth target, that binary's ambassador with the same flags, measured in the same
# alternating rounds: a change is judged by its ratio to the baseline of the same run, not across runs.
#
# Output: a Markdown table on stdout (also target/bench/ambassador.md) and target/bench/ambassador.json.
# Knobs (environment): DURATION=10s WARMUP=2s CONNECTIONS=64 ROUNDS=3 BASE_PORT=28180 NGINX_ACCESS_LOG=on|off
# STALL_SECONDS=5 MTLS=on|off BASELINE= KEEP_AWAKE=on|off (idle-class busy loops on both cores at the fixed rate)
# The ports are BASE_PORT+1 to +7, checked free before starting. The default stays below the kernel's ephemeral range
# (32768 and up) and clear of 18181, which a local cluster's CoreDNS may hold.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/target/bench"
WORK="$OUT/ambassador-run"
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-3}
BASE_PORT=${BASE_PORT:-28180}
NGINX_ACCESS_LOG=${NGINX_ACCESS_LOG:-on}
KEEP_AWAKE=${KEEP_AWAKE:-on}
MTLS=${MTLS:-on}
UPSTREAM_PORT=$((BASE_PORT + 1))
UPSTREAM_TLS_PORT=$((BASE_PORT + 5))
NGINX_PORT=$((BASE_PORT + 2))
AMBASSADOR_PORT=$((BASE_PORT + 3))
ADMIN_PORT=$((BASE_PORT + 4))
BASELINE=${BASELINE:-}
BASELINE_PORT=$((BASE_PORT + 6))
BASELINE_ADMIN_PORT=$((BASE_PORT + 7))

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench-ambassador: %s\n' "$*" >&2; exit 1; }

apt_install() {
    [ "$(id -u)" -eq 0 ] || die "$1 is missing and installing it needs root (apt-get install -y $*)"
    say "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null 2>&1 || {
        DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null 2>&1
        DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null
    }
}

ensure_tools() {
    command -v nginx >/dev/null || apt_install nginx-light || apt_install nginx
    command -v jq >/dev/null || apt_install jq
    command -v curl >/dev/null || apt_install curl
    if ! command -v oha >/dev/null; then
        say "installing oha (cargo install oha --locked)"
        cargo install oha --locked
    fi
}

# ports_free PORT...: fails naming the first port something already listens on.
ports_free() {
    local port
    for port in "$@"; do
        if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
            die "port $port is taken (ss -ltn); choose another BASE_PORT"
        fi
    done
}

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

wait_http() { # url: waits until it answers 200
    local deadline=$((SECONDS + 60))
    until [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "$1 never answered 200"
        sleep 0.1
    done
}

# write_certs: a CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA (openssl).
write_certs() {
    local dir="$WORK/pki"
    mkdir -p "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=bench CA" \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    local name ext
    for name in server client; do
        if [ "$name" = server ]; then
            # nginx verifies the upstream by DNS name only (no IP SANs); rustls verifies the IP the URL names.
            ext="subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
        else
            ext="extendedKeyUsage=clientAuth"
        fi
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=bench $name" \
            -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
        openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
            -extfile <(printf '%s\n' "$ext") -out "$dir/$name.crt" 2>/dev/null
    done
}

write_nginx_configs() {
    local access_log="off"
    if [ "$NGINX_ACCESS_LOG" = on ]; then
        # Comparable to the ambassador, which always writes one line per request to a buffered stdout.
        access_log="$WORK/nginx-proxy-access.log combined buffer=64k flush=1s"
    fi
    cat >"$WORK/upstream.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/upstream.pid;
error_log $WORK/upstream-error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $WORK/tmp-upstream;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT backlog=4096;
        keepalive_requests 10000000;
        location / { return 200 "ok"; }
    }
    server {
        listen 127.0.0.1:$UPSTREAM_TLS_PORT ssl backlog=4096;
        keepalive_requests 10000000;
        ssl_certificate $WORK/pki/server.crt;
        ssl_certificate_key $WORK/pki/server.key;
        ssl_client_certificate $WORK/pki/ca.crt;
        ssl_verify_client on;
        location / { return 200 "ok"; }
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
    access_log $access_log;
    client_body_temp_path $WORK/tmp-proxy;
    proxy_temp_path $WORK/tmp-proxy-cache;
    upstream app {
        server 127.0.0.1:$PROXIED_PORT;
        keepalive 256;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        keepalive_requests 10000000;
        location / {
            proxy_pass $PROXIED_SCHEME://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host 127.0.0.1:$PROXIED_PORT;
            proxy_ssl_certificate $WORK/pki/client.crt;
            proxy_ssl_certificate_key $WORK/pki/client.key;
            proxy_ssl_trusted_certificate $WORK/pki/ca.crt;
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
            proxy_buffering off;
        }
    }
}
EOF
}

# shellcheck source=scripts/cpu-time.sh
source "$ROOT/scripts/cpu-time.sh"

# measure NAME TARGET URL [RATE]: one run, kept in $WORK/NAME.json together with the CPU time the target's server
# process spent per request: oha at full speed, or bench/tools/pace at RATE req/s (after a WARMUP at that rate; its CPU
# time counts the warm-up's requests too). CPU per request is the figure least disturbed by other load on the
# machine, so it is the one to compare when req/s and percentiles are noisy.
measure() {
    local name=$1 target=$2 url=$3 rate=${4:-}
    local before after core_before core_after wall_before wall_after
    # shellcheck disable=SC2086 # a list of pids
    before=$(cpu_ns ${SERVER_PIDS[$target]})
    # The server core also runs the upstream: its busy share is both processes' CPU time over the wall time.
    # shellcheck disable=SC2086
    core_before=$(cpu_ns $(server_core_pids "$target"))
    wall_before=$(date +%s%N)
    if [ -n "$rate" ]; then
        "${LOAD_PIN[@]}" "$PACE" "$url" --rate "$rate" --connections "$CONNECTIONS" --duration "${DURATION%s}" \
            --warmup "${WARMUP%s}" --output "$WORK/$name.raw.json"
    else
        "${LOAD_PIN[@]}" oha -z "$DURATION" -c "$CONNECTIONS" --worker-threads 1 --no-tui --output-format json \
            "$url" >"$WORK/$name.raw.json"
    fi
    wall_after=$(date +%s%N)
    # shellcheck disable=SC2086
    after=$(cpu_ns ${SERVER_PIDS[$target]})
    # shellcheck disable=SC2086
    core_after=$(cpu_ns $(server_core_pids "$target"))
    jq --argjson ns "$((after - before))" --argjson core_ns "$((core_after - core_before))" \
        --argjson wall_ns "$((wall_after - wall_before))" \
        '. + {requests: ([.statusCodeDistribution[]] | add // 0)}
           | (.pace.answeredWithWarmup // .requests) as $served
           | . + {cpu_us_per_request: (if $served > 0 then $ns / 1e3 / $served else null end),
                  server_core_busy: ($core_ns / $wall_ns)}' \
        "$WORK/$name.raw.json" >"$WORK/$name.json"
    local ok total
    ok=$(jq '.statusCodeDistribution["200"] // 0' "$WORK/$name.json")
    total=$(jq '.requests' "$WORK/$name.json")
    [ "$ok" -gt 0 ] && [ "$ok" = "$total" ] || die "$name: only $ok of $total responses were 200"
    say "$(jq -r --arg n "$name" '"\($n): \(.summary.requestsPerSec|floor) req/s, p50 \(.latencyPercentiles.p50*1e6|floor) µs, p99 \(.latencyPercentiles.p99*1e6|floor) µs, \(.cpu_us_per_request*10|round/10) CPU µs/req"' "$WORK/$name.json")"
}

# server_core_pids TARGET: the processes on the server core during a run against TARGET (the proxy, if any, and
# the upstream's worker).
server_core_pids() {
    if [ "$1" = direct ]; then
        echo "${SERVER_PIDS[direct]}"
    else
        echo "${SERVER_PIDS[$1]} ${SERVER_PIDS[direct]}"
    fi
}

# probe_stalls: how long the machine itself stops each CPU (bench/tools/stalls, one busy loop per core, all at once),
# written to $WORK/stalls.json. Requests in flight during such a stall wait it out, whatever the server does.
probe_stalls() {
    local cpu pids=()
    for cpu in $(seq 0 $(($(nproc) - 1))); do
        taskset -c "$cpu" "$STALLS" --seconds "${STALL_SECONDS:-5}" --label "cpu$cpu" >"$WORK/stalls-cpu$cpu.json" &
        pids+=($!)
    done
    wait "${pids[@]}"
    jq -s '.' "$WORK"/stalls-cpu*.json >"$WORK/stalls.json"
    say "$(jq -r '[.[] | "\(.label): \(.gaps_over_1ms) stalls over 1 ms (max \(.max_ms) ms, \(.stalled_fraction * 1000 | round / 10) % of the time)"] | join("; ")' "$WORK/stalls.json")"
}

# median KIND TARGET FIELD: median over rounds of a jq field of the round files. Only the rounds' own files: the
# pattern used to take oha's raw output (NAME.raw.json) along, whose missing CPU fields sorted first as nulls, so
# the "median" of CPU per request was the smallest round's figure.
median() {
    local kind=$1 target=$2 field=$3
    jq -s "[.[] | $field] | sort | .[(length / 2 | floor)]" "$WORK/$kind"-"$target"-*[0-9].json
}

# paired KIND A B FIELD: the median over rounds of A's FIELD over B's in the same round. Rounds alternate targets,
# so each pair ran back to back under the same machine conditions; on a busy machine this is the steadier ratio.
paired() {
    local kind=$1 a=$2 b=$3 field=$4 round ratios=()
    for round in $(seq "$ROUNDS"); do
        ratios+=("$(jq -n --slurpfile x "$WORK/$kind-$a-$round.json" --slurpfile y "$WORK/$kind-$b-$round.json" \
            "\$x[0]$field / \$y[0]$field")")
    done
    printf '%s\n' "${ratios[@]}" | jq -s 'sort | .[(length / 2 | floor)] * 1000 | round / 1000'
}

main() {
    ensure_tools
    rm -rf "$WORK"
    mkdir -p "$WORK/tmp-upstream" "$WORK/tmp-proxy" "$WORK/tmp-proxy-cache"

    SERVER_PIN=()
    LOAD_PIN=()
    local pinned=false
    if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
        SERVER_PIN=(taskset -c 0)
        LOAD_PIN=(taskset -c 1)
        pinned=true
    fi

    ports_free "$UPSTREAM_PORT" "$NGINX_PORT" "$AMBASSADOR_PORT" "$ADMIN_PORT" "$UPSTREAM_TLS_PORT" \
        "$BASELINE_PORT" "$BASELINE_ADMIN_PORT"
    say "building the release binary (profile-guided, scripts/pgo.sh) and the load tools"
    local host
    host=$(rustc -vV | awk '/^host:/ {print $2}')
    (cd "$ROOT" && scripts/pgo.sh "$host" && cargo build --release --quiet --example pace --example stalls)
    AMBASSADOR_BIN="$ROOT/target/$host/release/entourage"
    PACE="$ROOT/target/release/examples/pace"
    STALLS="$ROOT/target/release/examples/stalls"

    PROXIED_SCHEME=http
    PROXIED_PORT=$UPSTREAM_PORT
    local tls_flags=()
    if [ "$MTLS" = on ]; then
        PROXIED_SCHEME=https
        PROXIED_PORT=$UPSTREAM_TLS_PORT
        tls_flags=(--ca-file "$WORK/pki/ca.crt" --client-cert "$WORK/pki/client.crt" --client-key "$WORK/pki/client.key")
    fi
    write_certs
    write_nginx_configs
    "${SERVER_PIN[@]}" nginx -p "$WORK" -c "$WORK/upstream.conf" -e "$WORK/upstream-error.log" &
    PIDS+=($!)
    local upstream_master=$!
    "${SERVER_PIN[@]}" nginx -p "$WORK" -c "$WORK/proxy.conf" -e "$WORK/proxy-error.log" &
    PIDS+=($!)
    local proxy_master=$!
    "${SERVER_PIN[@]}" "$AMBASSADOR_BIN" ambassador \
        --listen "127.0.0.1:$AMBASSADOR_PORT" --admin "127.0.0.1:$ADMIN_PORT" \
        --upstream "$PROXIED_SCHEME://127.0.0.1:$PROXIED_PORT" "${tls_flags[@]}" \
        >"$WORK/ambassador-access.log" 2>"$WORK/ambassador-stderr.log" &
    PIDS+=($!)
    local ambassador_pid=$! baseline_pid=
    if [ -n "$BASELINE" ]; then
        "${SERVER_PIN[@]}" "$BASELINE" ambassador \
            --listen "127.0.0.1:$BASELINE_PORT" --admin "127.0.0.1:$BASELINE_ADMIN_PORT" \
            --upstream "$PROXIED_SCHEME://127.0.0.1:$PROXIED_PORT" "${tls_flags[@]}" \
            >"$WORK/baseline-access.log" 2>"$WORK/baseline-stderr.log" &
        PIDS+=($!)
        baseline_pid=$!
        wait_http "http://127.0.0.1:$BASELINE_ADMIN_PORT/healthz"
        wait_http "http://127.0.0.1:$BASELINE_PORT/"
    fi

    wait_http "http://127.0.0.1:$UPSTREAM_PORT/"
    wait_http "http://127.0.0.1:$NGINX_PORT/"
    wait_http "http://127.0.0.1:$ADMIN_PORT/healthz"
    wait_http "http://127.0.0.1:$AMBASSADOR_PORT/"
    # The nginx masters only supervise; their single workers do the work.
    declare -gA SERVER_PIDS=(
        [direct]="$(pgrep -P "$upstream_master" | tr '\n' ' ')"
        [ambassador]="$ambassador_pid"
        [nginx]="$(pgrep -P "$proxy_master" | tr '\n' ' ')"
        [baseline]="$baseline_pid"
    )

    declare -A URL=(
        [direct]="http://127.0.0.1:$UPSTREAM_PORT/"
        [ambassador]="http://127.0.0.1:$AMBASSADOR_PORT/"
        [nginx]="http://127.0.0.1:$NGINX_PORT/"
        [baseline]="http://127.0.0.1:$BASELINE_PORT/"
    )
    local targets=(direct ambassador nginx) target round
    [ -z "$BASELINE" ] || targets+=(baseline)

    echo '[]' >"$WORK/stalls.json"
    if [ "$pinned" = true ]; then
        say "probing the machine's own stalls (${STALL_SECONDS:-5} s, every core, servers idle)"
        probe_stalls
    fi

    say "warming up"
    for target in "${targets[@]}"; do
        "${LOAD_PIN[@]}" oha -z "$WARMUP" -c "$CONNECTIONS" --worker-threads 1 --no-tui --output-format json \
            "${URL[$target]}" >/dev/null
    done

    say "maximum throughput: $ROUNDS rounds of $DURATION, $CONNECTIONS connections"
    for round in $(seq "$ROUNDS"); do
        for target in "${targets[@]}"; do
            measure "max-$target-$round" "$target" "${URL[$target]}"
        done
    done

    local rate
    rate=$(median max ambassador '.summary.requestsPerSec' | jq '. / 2 | floor')
    say "fixed rate: $rate req/s (half the ambassador's median maximum)"
    # At half load a core is idle much of the time, and on a virtual machine an idle vCPU halts: the first packet
    # after a pause waits for it to be woken (tens of µs or more). The direct target leaves the server core idle
    # three times as often as either proxy does, so its p50 came out above the proxies' and "added p50" went
    # negative. A busy loop at the idle scheduling class on each core keeps them from halting and takes no time from
    # anything else (any other task preempts it at once); CPU per request counts only the servers' own threads.
    local awake=() cpu
    if [ "$KEEP_AWAKE" = on ] && [ "$pinned" = true ] && command -v chrt >/dev/null; then
        for cpu in 0 1; do
            chrt --idle 0 taskset -c "$cpu" bash -c 'while :; do :; done' &
            awake+=($!)
            PIDS+=($!)
        done
    fi
    for round in $(seq "$ROUNDS"); do
        for target in "${targets[@]}"; do
            measure "fixed-$target-$round" "$target" "${URL[$target]}" "$rate"
        done
    done
    for cpu in "${awake[@]}"; do kill "$cpu" 2>/dev/null || true; done

    # The ambassador counted every request it answered; a scrape that parses and moved shows metrics were on.
    local scraped
    scraped=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" |
        awk '/^entourage_ambassador_requests_total\{.*class="2xx"/ {n += $NF} END {printf "%d", n}')
    [ "${scraped:-0}" -gt 0 ] || die "the ambassador's /metrics counted no requests"
    say "the ambassador's /metrics counted $scraped answered requests"

    local report='{}'
    for target in "${targets[@]}"; do
        report=$(jq -n --argjson r "$report" --arg t "$target" \
            --argjson rps "$(median max "$target" '.summary.requestsPerSec')" \
            --argjson p50 "$(median max "$target" '.latencyPercentiles.p50')" \
            --argjson p99 "$(median max "$target" '.latencyPercentiles.p99')" \
            --argjson cpu "$(median max "$target" '.cpu_us_per_request')" \
            --argjson fp50 "$(median fixed "$target" '.latencyPercentiles.p50')" \
            --argjson fp99 "$(median fixed "$target" '.latencyPercentiles.p99')" \
            --argjson fcpu "$(median fixed "$target" '.cpu_us_per_request')" \
            --argjson fbusy "$(median fixed "$target" '.server_core_busy')" \
            '$r + {($t): {max: {rps: ($rps|floor), p50_us: ($p50*1e6|floor), p99_us: ($p99*1e6|floor),
                                 cpu_us_per_request: ($cpu*10|round/10)},
                          fixed_rate: {p50_us: ($fp50*1e6|floor), p99_us: ($fp99*1e6|floor),
                                       cpu_us_per_request: ($fcpu*10|round/10),
                                       server_core_busy: ($fbusy*1000|round/1000)}}}')
    done
    local paired_cpu paired_rps paired_fixed_cpu paired_baseline_cpu=null
    paired_cpu=$(paired max ambassador nginx .cpu_us_per_request)
    paired_rps=$(paired max ambassador nginx .summary.requestsPerSec)
    paired_fixed_cpu=$(paired fixed ambassador nginx .cpu_us_per_request)
    [ -z "$BASELINE" ] || paired_baseline_cpu=$(paired max ambassador baseline .cpu_us_per_request)
    jq -n --argjson r "$report" --argjson rate "$rate" --arg duration "$DURATION" \
        --argjson paired_cpu "$paired_cpu" --argjson paired_rps "$paired_rps" \
        --argjson paired_fixed_cpu "$paired_fixed_cpu" --argjson paired_baseline_cpu "$paired_baseline_cpu" \
        --argjson connections "$CONNECTIONS" --argjson rounds "$ROUNDS" --argjson pinned "$pinned" \
        --arg nginx_log "$NGINX_ACCESS_LOG" --arg mtls "$MTLS" --argjson scraped "$scraped" --arg oha "$(oha --version)" --arg nginx "$(nginx -v 2>&1)" \
        --slurpfile stalls "$WORK/stalls.json" --arg baseline "$BASELINE" --arg keep_awake "$KEEP_AWAKE" \
        '{tool: "\($oha) for maximum throughput, bench/tools/pace for the fixed rate", nginx: $nginx, duration: $duration, connections: $connections, rounds: $rounds,
          pinned: $pinned, nginx_access_log: $nginx_log, baseline: (if $baseline == "" then null else $baseline end), keep_awake_at_fixed_rate: $keep_awake, mtls_to_upstream: $mtls, ambassador_metrics_requests: $scraped,
          fixed_rate: $rate, machine_stalls: $stalls[0], targets: $r,
          ratios: {
            ambassador_vs_nginx_rps: (($r.ambassador.max.rps / $r.nginx.max.rps * 1000 | round) / 1000),
            ambassador_vs_direct_rps: (($r.ambassador.max.rps / $r.direct.max.rps * 1000 | round) / 1000),
            ambassador_vs_nginx_cpu_per_request: (($r.ambassador.max.cpu_us_per_request / $r.nginx.max.cpu_us_per_request * 1000 | round) / 1000),
            paired: {ambassador_vs_nginx_rps: $paired_rps, ambassador_vs_nginx_cpu_per_request: $paired_cpu,
                     ambassador_vs_nginx_cpu_per_request_at_half_load: $paired_fixed_cpu,
                     ambassador_vs_baseline_cpu_per_request: $paired_baseline_cpu},
            ambassador_vs_nginx_cpu_per_request_at_half_load: (($r.ambassador.fixed_rate.cpu_us_per_request / $r.nginx.fixed_rate.cpu_us_per_request * 1000 | round) / 1000),
            ambassador_vs_baseline_cpu_per_request: (if $r.baseline then (($r.ambassador.max.cpu_us_per_request / $r.baseline.max.cpu_us_per_request * 1000 | round) / 1000) else null end),
            ambassador_vs_baseline_rps: (if $r.baseline then (($r.ambassador.max.rps / $r.baseline.max.rps * 1000 | round) / 1000) else null end),
            ambassador_added_p99_us_at_half_load: ($r.ambassador.fixed_rate.p99_us - $r.direct.fixed_rate.p99_us),
            ambassador_added_p50_us_at_half_load: ($r.ambassador.fixed_rate.p50_us - $r.direct.fixed_rate.p50_us),
            nginx_added_p50_us_at_half_load: ($r.nginx.fixed_rate.p50_us - $r.direct.fixed_rate.p50_us),
            ambassador_vs_nginx_added_p50_at_half_load: (if ($r.nginx.fixed_rate.p50_us - $r.direct.fixed_rate.p50_us) > 0
                then ((($r.ambassador.fixed_rate.p50_us - $r.direct.fixed_rate.p50_us) / ($r.nginx.fixed_rate.p50_us - $r.direct.fixed_rate.p50_us) * 1000 | round) / 1000)
                else null end),
            nginx_added_p99_us_at_half_load: ($r.nginx.fixed_rate.p99_us - $r.direct.fixed_rate.p99_us)
          }}' >"$OUT/ambassador.json"

    jq -r '
        "| target | max req/s | p50 µs (max) | p99 µs (max) | server CPU µs/req | p50 µs @ \(.fixed_rate) req/s | p99 µs @ \(.fixed_rate) req/s | server CPU µs/req @ \(.fixed_rate) req/s | server core busy @ \(.fixed_rate) req/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        (.targets | to_entries[] |
            "| \(.key) | \(.value.max.rps) | \(.value.max.p50_us) | \(.value.max.p99_us) | \(.value.max.cpu_us_per_request) | \(.value.fixed_rate.p50_us) | \(.value.fixed_rate.p99_us) | \(.value.fixed_rate.cpu_us_per_request) | \(.value.fixed_rate.server_core_busy * 100 | round) % |"),
        "",
        "ambassador/nginx throughput: \(.ratios.ambassador_vs_nginx_rps); CPU per request: \(.ratios.ambassador_vs_nginx_cpu_per_request) (at half load: \(.ratios.ambassador_vs_nginx_cpu_per_request_at_half_load)); ambassador/direct throughput: \(.ratios.ambassador_vs_direct_rps)",
        "paired (median of the rounds\u0027 own ratios): throughput \(.ratios.paired.ambassador_vs_nginx_rps), CPU per request \(.ratios.paired.ambassador_vs_nginx_cpu_per_request) (at half load: \(.ratios.paired.ambassador_vs_nginx_cpu_per_request_at_half_load))\(if .baseline then "; CPU per request against the baseline: \(.ratios.paired.ambassador_vs_baseline_cpu_per_request)" else "" end)",
        (if .baseline then "ambassador/baseline (\(.baseline)): throughput \(.ratios.ambassador_vs_baseline_rps), CPU per request \(.ratios.ambassador_vs_baseline_cpu_per_request)" else empty end),
        "added p99 at half load: ambassador \(.ratios.ambassador_added_p99_us_at_half_load) µs, nginx \(.ratios.nginx_added_p99_us_at_half_load) µs",
        "added p50 at half load: ambassador \(.ratios.ambassador_added_p50_us_at_half_load) µs, nginx \(.ratios.nginx_added_p50_us_at_half_load) µs (ratio \(.ratios.ambassador_vs_nginx_added_p50_at_half_load))",
        "mTLS to the upstream: \(.mtls_to_upstream); ambassador /metrics counted \(.ambassador_metrics_requests) requests",
        "server core busy: the proxy and the upstream, which share the server core, as a share of the wall time",
        (if (.machine_stalls | length) > 0 then
            "machine stalls with the servers idle (bench/tools/stalls): " + ([.machine_stalls[] | "\(.label) \(.gaps_over_1ms) over 1 ms in \(.seconds) s, max \(.max_ms) ms, \(.stalled_fraction * 1000 | round / 10) % of the time"] | join("; "))
         else empty end),
        "(\(.tool), \(.connections) connections, \(.duration) x \(.rounds) rounds, medians; pinned: \(.pinned); nginx access log: \(.nginx_access_log))"
    ' "$OUT/ambassador.json" | tee "$OUT/ambassador.md"
}

main "$@"
