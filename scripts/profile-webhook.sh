#!/usr/bin/env bash
# User-space instructions per review of the release webhook (TLS, hyper, the handler, the log line), beside the
# floor's, under callgrind: each server answers WARM reviews in one run and WARM+N in another, each over CONNS
# keep-alive connections opened once (oha), and the difference over N is one review's instructions (start-up,
# handshakes and warm-up cancel out). Counts, unlike times, repeat exactly on a shared machine.
#
# scripts/profile-webhook.sh [FIXTURE...]   (default: the sidecar Pod and the three-pattern Pod)
# Knobs: N (500), WARM (100), CONNS (5), SERVERS ("floor entourage"), ENTOURAGE (the profile-guided release build),
# CACHE_SIM (0; 1 adds callgrind's cache and branch simulation, and the line then also gives the L1 instruction and
# data misses and the mispredicted branches per review: what makes equal instruction counts cost different CPU
# time). Output:
# target/profile/<server>-<fixture>-<n>.out (callgrind_annotate them for the top entries) and one line per server and
# fixture on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/callgrind-counts.sh
source scripts/callgrind-counts.sh
N=${N:-500}
WARM=${WARM:-100}
CONNS=${CONNS:-5}
SERVERS=${SERVERS:-floor entourage}
FIXTURES=("$@")
[[ ${#FIXTURES[@]} -gt 0 ]] || FIXTURES=(bench/fixtures/pod-sidecar.json bench/fixtures/pod-5k.json)
OUT=target/profile
CERTS=$OUT/certs
PORT=${PORT:-18450}
mkdir -p "$OUT"
# entourage as released (profile-guided, scripts/pgo.sh) unless ENTOURAGE names another build.
HOST=$(rustc -vV | awk '/^host:/ {print $2}')
ENTOURAGE=${ENTOURAGE:-target/$HOST/release/entourage}
[[ ${SKIP_BUILD:-0} == 1 ]] || { scripts/pgo.sh "$HOST" && cargo build --release --quiet --example floor --example ready; }
"$ENTOURAGE" certs --out "$CERTS" --service entourage --namespace entourage-system >/dev/null

# run SERVER FIXTURE REQUESTS: total instructions of one server's life answering REQUESTS reviews.
run() {
  local server=$1 fixture=$2 n=$3 name out pid
  name=$(basename "$fixture" .json)
  out=$OUT/$server-$name-$n.out
  local cmd=(target/release/examples/floor --listen "127.0.0.1:$PORT" --tls-cert "$CERTS/tls.crt" --tls-key "$CERTS/tls.key")
  [[ $server == entourage ]] && cmd=("$ENTOURAGE" --log-format json serve --listen "127.0.0.1:$PORT"
    --tls-cert "$CERTS/tls.crt" --tls-key "$CERTS/tls.key")
  local sim=()
  [[ ${CACHE_SIM:-0} == 1 ]] && sim=(--cache-sim=yes --branch-sim=yes)
  valgrind --tool=callgrind "${sim[@]}" --callgrind-out-file="$out" "${cmd[@]}" >/dev/null 2>"$OUT/$server.log" &
  pid=$!
  target/release/examples/ready "$PORT" "$CERTS/ca.crt" "$(date +%s%N)" >/dev/null
  oha --no-tui --output-format quiet -n "$n" -c "$CONNS" -m POST -D "$fixture" -H 'content-type: application/json' \
    --cacert "$CERTS/ca.crt" "https://localhost:$PORT/mutate?timeout=10s" >/dev/null
  kill -TERM "$pid"
  wait "$pid" || true
  callgrind_totals "$out"
}

for fixture in "${FIXTURES[@]}"; do
  for server in $SERVERS; do
    small=$(run "$server" "$fixture" "$WARM")
    big=$(run "$server" "$fixture" $((WARM + N)))
    line=$(printf '%s %s: %d instructions per review' "$(basename "$fixture" .json)" "$server" \
      "$(per_request Ir "$small" "$big" "$N")")
    if [[ ${CACHE_SIM:-0} == 1 ]]; then
      line+=$(cache_line "$small" "$big" "$N")
    fi
    echo "$line"
  done
done
