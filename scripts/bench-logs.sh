#!/usr/bin/env bash
# make bench-logs: the log readers side by side, in one run, each pinned to one core (taskset), on the same nginx
# corpus (LOGS_BENCH_MB, default 1024 = 1 GiB; realistic `combined` lines):
#
# - static file, from its start to its last line, page cache warm, fastest of LOGS_BENCH_RUNS (default 3): `cat`
#   (the floor), coreutils `tail -n+1 -F`, `entourage stream` with checkpoints (--position) and disk give-back (--give-back) off, checkpoints on, both on;
#   `entourage adapt --format nginx` as it was when the log-pipeline issue was filed (today's adapter: commit
#   LOGS_BENCH_OLD_REF, default 5819b9d, built from `git archive` into target/bench/old) and this tree's, everything
#   off and everything on;
# - flowing: the app appends the corpus at LOGS_BENCH_RATE MiB/s (default 100: about 520,000 lines/s, a hundred
#   times a busy nginx; a reader can only bound the backlog of a writer it outruns) while the reader follows; the
#   file's allocated size (what the kubelet counts against sizeLimit) is sampled every 5 ms; give-back on and off.
#
# Each reader is measured by bench/tools/logbench.rs (wall time to the last line, CPU and max RSS from
# /usr/bin/time, max allocated size). Writes target/bench/logs.json, a Markdown table on stdout and the chart
# docs/bench/logs.svg. Not part of `cargo test`; heavy: run it alone.
set -euo pipefail

cd "$(dirname "$0")/.."
size_mb=${LOGS_BENCH_MB:-1024}
rate=${LOGS_BENCH_RATE:-100}
cpu=${LOGS_BENCH_CPU:-1}
out_dir=target/bench
work="$out_dir/logs"
mkdir -p "$work"

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

# Today's adapter: the tree at LOGS_BENCH_OLD_REF, built with the same release profile and the same target dir
# (its dependencies are shared; only the entourage crate differs), then copied aside.
old_ref=${LOGS_BENCH_OLD_REF:-5819b9d}
old="$out_dir/old/entourage-$old_ref"
if [[ ! -x "$old" || "${LOGS_BENCH_REBUILD_OLD:-0}" == 1 ]]; then
  echo "building $old_ref's entourage (today's adapter)..." >&2
  rm -rf "$out_dir/old-src" && mkdir -p "$out_dir/old-src" "$out_dir/old"
  git archive "$old_ref" | tar -x -C "$out_dir/old-src"
  cargo build --release --quiet --bin entourage --manifest-path "$out_dir/old-src/Cargo.toml" --target-dir target
  cp target/release/entourage "$old"
  rm -rf "$out_dir/old-src"
fi
cargo build --release --quiet --bin entourage --example logbench
bin=target/release/entourage
bench=target/release/examples/logbench

pin=()
if command -v taskset >/dev/null && [[ $(nproc) -gt 1 ]]; then
  pin=(taskset -c "$cpu")
fi
lines=$(wc -l <"$data")
bytes=$(stat -c %s "$data")
cat "$data" >/dev/null # page cache warm

results="$work/results.jsonl"
: >"$results"
# static NAME COPY CMD...: reads $data (or, when COPY=1, a fresh copy of it, since give-back punches holes in
# what it reads, written back to disk like the original) from its start; {file} in CMD is the file. A static read
# takes about a second, where a stray wake-up of the shared machine weighs: each runs LOGS_BENCH_RUNS times
# (default 3), the fastest is kept.
static() {
  local name=$1 copy=$2
  shift 2
  echo "  $name" >&2
  local runs="$work/runs.jsonl"
  : >"$runs"
  for ((run = 0; run < ${LOGS_BENCH_RUNS:-3}; run++)); do
    local file="$data"
    rm -f "$work"/*.pos "$work"/*.pos.started
    if [[ $copy == 1 ]]; then
      file="$work/copy.log"
      cp "$data" "$file" && sync "$file" && cat "$file" >/dev/null
    fi
    local cmd=()
    for a in "$@"; do cmd+=("${a//\{file\}/$file}"); done
    "$bench" run --name "$name" --lines "$lines" --file "$file" -- "${pin[@]}" "${cmd[@]}" >>"$runs"
  done
  python3 -c 'import json, sys; rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(json.dumps(min(rows, key=lambda r: r["wall_s"])))' "$runs" >>"$results"
}
# flow NAME CMD...: the app appends the corpus to a new file at $rate MiB/s while the reader follows it.
flow() {
  local name=$1
  shift
  local file="$work/flow.log"
  rm -f "$file" "$work"/*.pos "$work"/*.pos.started
  : >"$file"
  local cmd=()
  for a in "$@"; do cmd+=("${a//\{file\}/$file}"); done
  echo "  $name" >&2
  "$bench" run --name "$name" --lines "$lines" --file "$file" --feed "$data" --rate "$rate" -- "${pin[@]}" "${cmd[@]}" >>"$results"
}

pos="$work/reader.pos"
echo "static file, ${size_mb} MB, $lines lines:" >&2
static "cat" 0 cat {file}
static "tail -F (coreutils)" 0 tail -n+1 -F {file}
static "entourage stream, off" 0 "$bin" stream --file {file}
static "entourage stream, checkpoints" 0 "$bin" stream --file {file} --position "$pos"
static "entourage stream, checkpoints+give-back" 1 "$bin" stream --file {file} --position "$pos" --give-back
static "today's adapter" 0 "$old" adapt --file {file} --format nginx --from-start
static "entourage adapt, off" 0 "$bin" adapt --file {file} --format nginx
static "entourage adapt, checkpoints+give-back" 1 "$bin" adapt --file {file} --format nginx --position "$pos" --give-back
echo "flowing at $rate MiB/s:" >&2
flow "flow: tail -F (coreutils)" tail -n+1 -F {file}
flow "flow: entourage stream, off" "$bin" stream --file {file}
flow "flow: entourage stream, checkpoints+give-back" "$bin" stream --file {file} --position "$pos" --give-back
flow "flow: entourage adapt, checkpoints+give-back" "$bin" adapt --file {file} --format nginx --position "$pos" --give-back
rm -f "$work/copy.log" "$work/flow.log"

python3 - "$results" "$out_dir/logs.json" "$lines" "$bytes" "$rate" "${pin[*]:-none}" <<'PY'
import json, sys
path, out, lines, size, rate, pin = sys.argv[1:7]
lines, size = int(lines), int(size)
rows = [json.loads(l) for l in open(path) if l.strip()]
for r in rows:
    r["bytes_per_s"] = size / r["wall_s"]
by = {r["name"]: r for r in rows}
def ratio(a, b, key="wall_s"):
    return round(by[b][key] / by[a][key], 2) if a in by and b in by else None
report = {
    "file_lines": lines, "file_bytes": size, "flow_rate_mib_s": float(rate), "pinned": pin, "results": rows,
    "ratios": {
        "stream_all_on_throughput_vs_tail": ratio("entourage stream, checkpoints+give-back", "tail -F (coreutils)"),
        "stream_off_throughput_vs_tail": ratio("entourage stream, off", "tail -F (coreutils)"),
        "stream_all_on_throughput_vs_cat": ratio("entourage stream, checkpoints+give-back", "cat"),
        "adapt_all_on_throughput_vs_today": ratio("entourage adapt, checkpoints+give-back", "today's adapter"),
        "adapt_off_throughput_vs_today": ratio("entourage adapt, off", "today's adapter"),
    },
}
json.dump(report, open(out, "w"), indent=2)
print(f"{lines} lines, {size / 2**20:.0f} MiB, pinned: {pin}; flowing runs append at {rate} MiB/s\n")
print("| reader | seconds | lines/s | MiB/s | CPU s | lines/CPU-s | max RSS MiB | max allocated MiB | complete |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
for r in rows:
    print(f"| {r['name']} | {r['wall_s']:.2f} | {r['lines_per_s']:,.0f} | {r['bytes_per_s'] / 2**20:,.0f} | {r['cpu_s']:.2f} "
          f"| {r['lines_per_cpu_s']:,.0f} | {r['max_rss_kib'] / 1024:.1f} | {r['max_allocated_bytes'] / 2**20:,.1f} | {r['complete']} |")
print()
for k, v in report["ratios"].items():
    print(f"{k}: {v}")
print(f"written {out}")
PY
"$bench" chart "$out_dir/logs.json" docs/bench/logs.svg
echo "written docs/bench/logs.svg" >&2

# Multiline grouping off and on over a mixed Java-style corpus (90 % single lines, 10 % traces), side by side:
# its own table and target/bench/multiline.json.
scripts/bench-multiline.sh
