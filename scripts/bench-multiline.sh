#!/usr/bin/env bash
# Benchmark of multiline grouping: `entourage adapt` over one mixed corpus (Java-style log: 90 % of the lines are
# single-line events, 10 % belong to stack traces of 8-30 lines) with grouping off and on, side by side in one run,
# each pinned to one core when taskset is available, with the plain format and with the five-group regex format a
# logback pattern needs (its time converted to RFC 3339). Target: >= 1 M lines/s with grouping on, in both formats.
#
# Environment:
#   MULTI_BENCH_MB=100     size of the generated corpus, in MB
#   MULTI_BENCH_CPU=1      the core to pin to
#   MULTI_BENCH_RUNS=3     runs per command (the fastest is reported)
#   MULTI_BENCH_BASELINE=  another entourage binary (an older build) to run the same commands with, side by side
# Writes a Markdown table to stdout and target/bench/multiline.json. Not part of `cargo test`.
set -euo pipefail

cd "$(dirname "$0")/.."
size_mb=${MULTI_BENCH_MB:-100}
cpu=${MULTI_BENCH_CPU:-1}
runs=${MULTI_BENCH_RUNS:-3}
out_dir=target/bench
mkdir -p "$out_dir"

data="$out_dir/multiline-${size_mb}mb.log"
if [[ ! -s "$data" ]]; then
  echo "generating $data (${size_mb} MB)..." >&2
  python3 - "$data" "$size_mb" <<'PY'
import random, sys, datetime
path, mb = sys.argv[1], int(sys.argv[2])
rnd = random.Random(20)
levels = ["INFO"] * 8 + ["DEBUG", "WARN"]
threads = [f"pool-1-thread-{i}" for i in range(1, 9)] + ["main"]
classes = ["c.e.shop.Cart", "c.e.shop.Checkout", "c.e.pay.Gateway", "c.e.http.Server"]
frames = ["com.example.shop.Cart.add", "com.example.shop.Checkout.run", "com.example.pay.Gateway.charge",
          "java.base/java.util.concurrent.ThreadPoolExecutor.runWorker", "org.eclipse.jetty.server.Server.handle"]
t = datetime.datetime(2024, 5, 1)
target, written, trace_lines, lines = mb * 1000 * 1000, 0, 0, 0
with open(path, "w") as f:
    buf = []
    while written < target:
        t += datetime.timedelta(milliseconds=rnd.randint(0, 5))
        head = f"{t:%Y-%m-%d %H:%M:%S}.{t.microsecond // 1000:03d}"
        # Keep traces at 10 % of the lines.
        if trace_lines * 10 < lines:
            n = rnd.randint(8, 30)
            ev = [f"{head} ERROR [{rnd.choice(threads)}] {rnd.choice(classes)} - request {rnd.randint(1, 10**6)} failed",
                  f"java.lang.IllegalStateException: cart {rnd.randint(1, 9999)} is closed"]
            for i in range(n - 2):
                if i == n // 2:
                    ev.append("Caused by: java.io.IOException: connection reset")
                else:
                    ev.append(f"\tat {rnd.choice(frames)}(Source.java:{rnd.randint(10, 900)})")
            ev.append(f"\t... {rnd.randint(3, 40)} more")
            trace_lines += len(ev)
        else:
            ev = [f"{head} {rnd.choice(levels)} [{rnd.choice(threads)}] {rnd.choice(classes)} - "
                  f"user {rnd.randint(1, 10**5)} item {rnd.randint(1, 10**4)} took {rnd.randint(1, 900)}ms"]
        lines += len(ev)
        text = "\n".join(ev) + "\n"
        buf.append(text)
        written += len(text)
        if len(buf) >= 10000:
            f.write("".join(buf)); buf = []
    f.write("".join(buf))
PY
fi

cargo build --release --quiet
bin=target/release/entourage

pin=()
if command -v taskset >/dev/null && [[ $(nproc) -gt 1 ]]; then
  pin=(taskset -c "$cpu")
fi

lines=$(wc -l <"$data")
bytes=$(stat -c %s "$data")
trace_lines=$(grep -c -v '^[0-9]' "$data" || true)
cat "$data" >/dev/null # warm the page cache

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

regex='regex:^(?P<time>\S+ \S+) (?P<level>\w+) \[(?P<thread>[^\]]+)\] (?P<logger>\S+) - (?P<message>.*)$'
commands() {
  local prefix=$1 exe=$2
  measure "${prefix}plain-grouping-off" "$exe" adapt --file "$data" --format plain --exit-at-eof
  measure "${prefix}plain-grouping-java" "$exe" adapt --file "$data" --format plain --exit-at-eof --multiline java
  measure "${prefix}regex-grouping-off" "$exe" adapt --file "$data" --format "$regex" --exit-at-eof
  measure "${prefix}regex-grouping-java" "$exe" adapt --file "$data" --format "$regex" --exit-at-eof --multiline java
}
commands "" "$bin"
if [[ -n "${MULTI_BENCH_BASELINE:-}" ]]; then
  commands "baseline-" "$MULTI_BENCH_BASELINE"
fi

# Correctness, untimed: one record per event (every line that starts with a date starts one).
events=$(grep -c '^[0-9]' "$data")
records=$("$bin" adapt --file "$data" --format plain --exit-at-eof --multiline java | wc -l)
if [[ "$records" -ne "$events" ]]; then
  echo "FAIL: grouping emitted $records records for $events events" >&2
  exit 1
fi

python3 - "$lines" "$bytes" "$trace_lines" "$events" "$out_dir/multiline.json" "${pin[*]:-none}" "${results[@]}" <<'PY'
import json, sys
lines, size, trace_lines, events, out, pin = sys.argv[1:7]
lines, size = int(lines), int(size)
rows = []
for r in sys.argv[7:]:
    name, micros, rss, user, sys_ = r.split()
    secs = int(micros) / 1e6
    cpu = max(float(user) + float(sys_), 0.01)
    rows.append({"name": name, "seconds": round(secs, 3), "cpu_seconds": round(cpu, 2),
                 "lines_per_s": round(lines / secs), "lines_per_cpu_s": round(lines / cpu),
                 "max_rss_kib": int(rss)})
by = {r["name"]: r for r in rows}
report = {"file_lines": lines, "file_bytes": size, "trace_lines": int(trace_lines), "events": int(events),
          "pinned": pin, "results": rows,
          "plain_on_vs_off_time": round(by["plain-grouping-java"]["seconds"] / by["plain-grouping-off"]["seconds"], 2),
          "regex_on_vs_off_time": round(by["regex-grouping-java"]["seconds"] / by["regex-grouping-off"]["seconds"], 2),
          "target_1m_lines_per_s": all(by[n]["lines_per_s"] >= 1_000_000
                                       for n in ("plain-grouping-java", "regex-grouping-java"))}
json.dump(report, open(out, "w"), indent=2)
print(f"{lines} lines ({int(trace_lines) * 100 / lines:.1f} % in traces), {events} events, "
      f"{size / 2**20:.0f} MiB, pinned: {pin}\n")
print("| command | seconds | lines/s | CPU seconds | lines/CPU-s | max RSS (MiB) |")
print("|---|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['name']} | {r['seconds']:.3f} | {r['lines_per_s']:,} | {r['cpu_seconds']:.2f} "
          f"| {r['lines_per_cpu_s']:,} | {r['max_rss_kib'] / 1024:.1f} |")
print(f"\ngrouping on / off time: plain {report['plain_on_vs_off_time']}x, regex {report['regex_on_vs_off_time']}x; "
      f">= 1 M lines/s with grouping (plain and regex): {report['target_1m_lines_per_s']}")
for n in ("plain-grouping-off", "plain-grouping-java", "regex-grouping-off", "regex-grouping-java"):
    if "baseline-" + n in by:
        report.setdefault("vs_baseline_lines_per_s", {})[n] = round(by[n]["lines_per_s"] / by["baseline-" + n]["lines_per_s"], 2)
if "vs_baseline_lines_per_s" in report:
    json.dump(report, open(out, "w"), indent=2)
    print("against the baseline (lines/s): " + ", ".join(f"{n} {x}x" for n, x in report["vs_baseline_lines_per_s"].items()))
print(f"written {out}")
PY
