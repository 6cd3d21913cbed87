#!/usr/bin/env bash
# Benchmark of `entourage adapt --format nginx` against `cat` (the floor: reading the file) and `jq -cR .` (a common
# "wrap each line in JSON" baseline), side by side in one run, each pinned to one core when taskset is available.
#
# Environment:
#   ADAPT_BENCH_MB=200     size of the generated nginx combined log, in MB
#   ADAPT_BENCH_BIG=1      also follow a 1 GiB file and check that the adapter's memory stays flat
#   ADAPT_BENCH_CPU=1      the core to pin to
#   ADAPT_BENCH_RUNS=3     runs per command (the fastest is reported)
# Writes a Markdown table to stdout and target/bench/adapter.json. Not part of `cargo test`.
set -euo pipefail

cd "$(dirname "$0")/.."
size_mb=${ADAPT_BENCH_MB:-200}
cpu=${ADAPT_BENCH_CPU:-1}
runs=${ADAPT_BENCH_RUNS:-3}
out_dir=target/bench
mkdir -p "$out_dir"

# generate FILE MB: realistic nginx `combined` lines (IPv4 and IPv6, users, query strings, escaped quotes, `-`).
generate() {
  python3 - "$1" "$2" <<'PY'
import random, sys, datetime
path, mb = sys.argv[1], int(sys.argv[2])
rnd = random.Random(42)
ips = [f"{rnd.randint(1,223)}.{rnd.randint(0,255)}.{rnd.randint(0,255)}.{rnd.randint(1,254)}" for _ in range(500)]
ips += [f"2001:db8:{rnd.randint(0,0xffff):x}::{rnd.randint(1,0xffff):x}" for _ in range(100)]
users = ["-"] * 20 + ["alice", "bob", "svc-batch"]
methods = ["GET"] * 12 + ["POST"] * 3 + ["PUT", "DELETE", "HEAD", "OPTIONS"]
paths = ["/", "/healthz", "/api/v1/items", "/api/v1/items/{id}", "/api/v1/orders?page={n}&sort=desc",
         "/static/js/app.{id}.js", "/static/css/site.css", "/search?q=red+shoes&size={n}", "/login", "/cart/checkout"]
statuses = [200] * 30 + [201, 204, 301, 302, 304, 304, 400, 401, 403, 404, 404, 429, 499, 500, 502, 503]
referers = ["-"] * 5 + ["https://shop.example.com/", "https://www.google.com/search?q=shop", "https://shop.example.com/cart"]
agents = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "kube-probe/1.33", "curl/8.5.0", "Go-http-client/1.1", "python-requests/2.31.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Weird \\x22quoted\\x22 agent/1.0", "-",
]
months = ["Jan","Feb","Mar","Apr","May","Jun","Jul","Aug","Sep","Oct","Nov","Dec"]
t = datetime.datetime(2024, 5, 1, 0, 0, 0)
target = mb * 1000 * 1000
written = 0
with open(path, "w") as f:
    buf = []
    while written < target:
        t += datetime.timedelta(milliseconds=rnd.randint(0, 40))
        ts = f"{t.day:02d}/{months[t.month-1]}/{t.year}:{t.hour:02d}:{t.minute:02d}:{t.second:02d} +0000"
        p = rnd.choice(paths).format(id=rnd.randint(1, 99999), n=rnd.randint(1, 50))
        line = (f'{rnd.choice(ips)} - {rnd.choice(users)} [{ts}] "{rnd.choice(methods)} {p} HTTP/1.1" '
                f'{rnd.choice(statuses)} {rnd.randint(0, 250000)} "{rnd.choice(referers)}" "{rnd.choice(agents)}"\n')
        buf.append(line)
        written += len(line)
        if len(buf) >= 10000:
            f.write("".join(buf)); buf = []
    f.write("".join(buf))
PY
}

data="$out_dir/nginx-${size_mb}mb.log"
if [[ ! -s "$data" ]]; then
  echo "generating $data (${size_mb} MB)..." >&2
  generate "$data" "$size_mb"
fi

cargo build --release --quiet
bin=target/release/entourage

pin=()
if command -v taskset >/dev/null && [[ $(nproc) -gt 1 ]]; then
  pin=(taskset -c "$cpu")
fi
if ! command -v jq >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    apt-get install -y -qq jq >/dev/null || true
  fi
fi

lines=$(wc -l <"$data")
bytes=$(stat -c %s "$data")
cat "$data" >/dev/null # warm the page cache so every contender reads from memory

# measure NAME CMD...: wall time (µs), max RSS (KiB) and CPU time (s) of CMD with stdout to /dev/null; the run
# with the shortest wall time of $runs is kept. CPU time is reported too because wall time means little on a machine
# busy with other work.
results=()
measure() {
  local name=$1
  shift
  local rss_file start end micros best="" best_micros=0
  rss_file=$(mktemp)
  for ((run = 0; run < runs; run++)); do
    start=$(date +%s%N)
    /usr/bin/time -f '%M %U %S' -o "$rss_file" "${pin[@]}" "$@" >/dev/null
    end=$(date +%s%N)
    micros=$(((end - start) / 1000))
    if [[ -z "$best" || $micros -lt $best_micros ]]; then
      best_micros=$micros
      best="$name $micros $(tail -n1 "$rss_file")"
    fi
  done
  results+=("$best")
  rm -f "$rss_file"
}

measure cat cat "$data"
measure "entourage-adapt" "$bin" adapt --file "$data" --format nginx --from-start --exit-at-eof
if command -v jq >/dev/null; then
  measure "jq-cR" jq -cR . "$data"
fi

# Correctness, untimed: one object per line, none of them a parse error.
emitted=$("$bin" adapt --file "$data" --format nginx --from-start --exit-at-eof | tee >(grep -c '"parse_error":true' >"$out_dir/parse_errors" || true) | wc -l)
sleep 0.2
parse_errors=$(cat "$out_dir/parse_errors")
if [[ "$emitted" -ne "$lines" ]]; then
  echo "FAIL: the adapter emitted $emitted objects for $lines lines" >&2
  exit 1
fi

big_rss=""
if [[ "${ADAPT_BENCH_BIG:-0}" == 1 ]]; then
  big="$out_dir/nginx-1gib.log"
  [[ -s "$big" ]] || generate "$big" 1074
  rss_file=$(mktemp)
  /usr/bin/time -f '%M %U %S' -o "$rss_file" "${pin[@]}" "$bin" adapt --file "$big" --format nginx --from-start --exit-at-eof >/dev/null
  big_rss=$(tail -n1 "$rss_file" | cut -d' ' -f1)
  rm -f "$rss_file"
fi

python3 - "$lines" "$bytes" "$emitted" "$parse_errors" "${big_rss:-}" "$out_dir/adapter.json" "${pin[*]:-none}" "${results[@]}" <<'PY'
import json, sys
lines, size, emitted, parse_errors, big_rss, out, pin = sys.argv[1:8]
lines, size = int(lines), int(size)
rows = []
for r in sys.argv[8:]:
    name, micros, rss, user, sys_ = r.split()
    secs = int(micros) / 1e6
    cpu = max(float(user) + float(sys_), 0.01)
    rows.append({"name": name, "seconds": round(secs, 3), "cpu_seconds": round(cpu, 2),
                 "lines_per_s": round(lines / secs), "lines_per_cpu_s": round(lines / cpu),
                 "mib_per_s": round(size / secs / 2**20, 1), "max_rss_kib": int(rss)})
by = {r["name"]: r for r in rows}
adapt = by["entourage-adapt"]
report = {"file_lines": lines, "file_bytes": size, "pinned": pin, "emitted": int(emitted),
          "parse_errors": int(parse_errors), "results": rows,
          "adapt_vs_cat_time": round(adapt["seconds"] / by["cat"]["seconds"], 2)}
if "jq-cR" in by:
    report["jq_vs_adapt_time"] = round(by["jq-cR"]["seconds"] / adapt["seconds"], 2)
if big_rss:
    report["big_file_max_rss_kib"] = int(big_rss)
    report["memory_flat"] = int(big_rss) <= adapt["max_rss_kib"] * 1.25 + 2048
json.dump(report, open(out, "w"), indent=2)
print(f"{lines} lines, {size / 2**20:.0f} MiB, pinned: {pin}\n")
print("| command | seconds | lines/s | MiB/s | CPU seconds | lines/CPU-s | max RSS (MiB) |")
print("|---|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['name']} | {r['seconds']:.3f} | {r['lines_per_s']:,} | {r['mib_per_s']} | {r['cpu_seconds']:.2f} "
          f"| {r['lines_per_cpu_s']:,} | {r['max_rss_kib'] / 1024:.1f} |")
print(f"\nadapter time / cat time: {report['adapt_vs_cat_time']}x", end="")
if "jq_vs_adapt_time" in report:
    print(f"; jq time / adapter time: {report['jq_vs_adapt_time']}x", end="")
print(f"; parse errors: {parse_errors}")
if big_rss:
    print(f"1 GiB file: adapter max RSS {int(big_rss) / 1024:.1f} MiB (memory flat: {report['memory_flat']})")
print(f"written {out}")
PY
