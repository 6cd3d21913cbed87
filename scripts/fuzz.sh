#!/usr/bin/env bash
# make fuzz: coverage-guided fuzzing of the admission core with AFL++ (the `afl` crate, stable toolchain).
#
# Installs cargo-afl and builds AFL++ if missing, seeds each target's corpus from tests/golden/*/input.json and
# tests/fixtures/*.json, runs every target for FUZZ_SECONDS (default 60) and prints executions, corpus size,
# crashes and hangs per target. Exits non-zero when any target found a crash; crashing inputs are kept in
# fuzz/out/<target>/default/crashes/ (replay one with `fuzz/target/release/<target> < FILE`).
#
#   FUZZ_SECONDS=300 scripts/fuzz.sh            # longer runs
#   FUZZ_TARGETS="annotations" scripts/fuzz.sh  # one target
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-"review pod annotations position"}

if ! cargo afl --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-afl (stable toolchain; AFL++ is built from source, which needs a C compiler)"
  cargo install --locked cargo-afl
fi
# cargo-afl builds AFL++ once per user and toolchain (afl-fuzz prints its banner once it is there).
banner=$(cargo afl fuzz -h 2>&1 || true)
if ! grep -q 'afl-fuzz' <<<"$banner"; then
  cargo afl config --build
fi

echo "fuzz: building the targets"
(cd fuzz && cargo afl build --release --quiet)

echo "fuzz: seeding corpora"
python3 - <<'PY'
import glob, json, os
root = "fuzz/corpus"
def write(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
def review(obj):
    api = obj.get("apiVersion", "v1")
    group, version = api.split("/", 1) if "/" in api else ("", api)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "seed", "kind": {"group": group, "version": version, "kind": obj.get("kind", "Pod")},
        "operation": "CREATE", "namespace": "default", "object": obj}}
for i, path in enumerate(sorted(glob.glob("tests/golden/*/input.json"))):
    obj = json.load(open(path))
    name = os.path.basename(os.path.dirname(path))
    compact = json.dumps(obj, separators=(",", ":")).encode()
    write("pod", name, bytes([i % 256]) + compact)
    write("review", name, bytes([i % 256]) + json.dumps(review(obj), separators=(",", ":")).encode())
    ann = obj.get("metadata", {}).get("annotations", {}) or {}
    lines = "\n".join(k[len("entourage.dev/"):] + "=" + v if k.startswith("entourage.dev/") else k + "=" + v
                      for k, v in ann.items() if isinstance(v, str))
    write("annotations", name, bytes([i % 256, i % 6]) + lines.encode())
# position: [mode, cut, at] + a log file + a position (or its damage); one seed per kind of restart.
log = b"".join(b"%06d GET /index.html 200\n" % i for i in range(8))
for mode in range(16):
    write("position", f"mode-{mode}", bytes([mode, len(log), 75]) + log + b'{"version":1,"file":"x","dev":1,"ino":2,"offset":3,"before":"0a"}')
for path in sorted(glob.glob("tests/fixtures/*.json")):
    write("review", os.path.basename(path), b"\x00" + json.dumps(json.load(open(path)), separators=(",", ":")).encode())
PY

export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_QUIET=1
found=0
summary=()
for target in $targets; do
  echo "fuzz: $target for ${seconds}s"
  rm -rf "fuzz/out/$target"
  mkdir -p fuzz/out
  cargo afl fuzz -V "$seconds" -x fuzz/dict/entourage.dict -i "fuzz/corpus/$target" -o "fuzz/out/$target" \
    "fuzz/target/release/$target" >"fuzz/out/$target.log" 2>&1 || {
      echo "fuzz: afl-fuzz failed for $target; last lines:"; tail -20 "fuzz/out/$target.log"; exit 1; }
  stats="fuzz/out/$target/default/fuzzer_stats"
  get() { awk -F': *' -v k="$1" '$1 ~ "^"k" *$" {print $2}' "$stats"; }
  crashes=$(get saved_crashes)
  line="$target: $(get execs_done) executions in $(get run_time)s, corpus $(get corpus_count), crashes $crashes, hangs $(get saved_hangs)"
  summary+=("$line")
  if [ "${crashes:-0}" != "0" ]; then
    found=1
    ls "fuzz/out/$target/default/crashes/"
  fi
done
echo "fuzz: summary"
printf '  %s\n' "${summary[@]}"
exit $found
