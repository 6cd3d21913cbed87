#!/usr/bin/env bash
# The release binary, built with profile-guided optimisation (PGO): build entourage instrumented, run it through
# scripts/pgo-train.py (the webhook, the ambassador over HTTP/1.1, mutual TLS and gRPC, the log readers), merge the
# profile, and build the release binary with it. LLVM then lays the hot code of a review or a proxied request out
# together and moves the cold code (errors, start-up, the CLI) away from it: the same instructions, fewer of them
# on the hot path, and far fewer instruction-cache misses (docs/performance.md, "The release build is profile-guided").
#
#   scripts/pgo.sh TRIPLE        e.g. x86_64-unknown-linux-gnu (make release, the benches) or
#                                x86_64-unknown-linux-musl (make static: the cluster; the Dockerfile still builds plain)
#
# Output: target/TRIPLE/release/entourage. The profile (target/pgo/TRIPLE.profdata) is kept and reused while it is
# newer than every source, Cargo.toml, Cargo.lock and the training script, so a second build is cargo's usual
# incremental one. PGO=0 builds the same binary without a profile (quicker, for a development loop).
set -euo pipefail
cd "$(dirname "$0")/.."
TRIPLE=${1:?usage: scripts/pgo.sh TRIPLE}
PROFILE=$PWD/target/pgo/$TRIPLE.profdata
log() { printf '\033[1m== pgo: %s\033[0m\n' "$*" >&2; }

if [[ ${PGO:-1} == 0 ]]; then
  log "PGO=0: building without a profile"
  exec cargo build --release --locked --bin entourage --target "$TRIPLE"
fi

# llvm-profdata must be the one of rustc's own LLVM (the raw profile format changes between LLVM versions).
SYSROOT_BIN=$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | awk '/^host:/ {print $2}')/bin
if [[ ! -x $SYSROOT_BIN/llvm-profdata ]]; then
  log "adding rustup's llvm-tools (llvm-profdata)"
  rustup component add llvm-tools >/dev/null
fi
PROFDATA=$SYSROOT_BIN/llvm-profdata

stale() { # the profile is missing or older than anything that shapes the code or the training
  [[ ! -f $PROFILE ]] && return 0
  [[ -n $(find src Cargo.toml Cargo.lock scripts/pgo-train.py scripts/pgo.sh -newer "$PROFILE" -print -quit) ]]
}

if stale; then
  RAW=$PWD/target/pgo/$TRIPLE-raw
  rm -rf "$RAW" && mkdir -p "$RAW"
  # --target keeps RUSTFLAGS off build scripts and proc macros; a target dir of its own keeps the instrumented
  # build from replacing the release one's artefacts.
  log "instrumented build ($TRIPLE)"
  RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$RAW" cargo build --release --locked --bin entourage --target "$TRIPLE" \
    --target-dir "target/pgo/build-$TRIPLE"
  log "training"
  LLVM_PROFILE_FILE="$RAW/%p-%m.profraw" python3 scripts/pgo-train.py \
    "target/pgo/build-$TRIPLE/$TRIPLE/release/entourage" "target/pgo/$TRIPLE-train"
  "$PROFDATA" merge -o "$PROFILE" "$RAW"
  log "profile: $(du -h "$PROFILE" | cut -f1) from $(find "$RAW" -name '*.profraw' | wc -l) processes"
fi

# Cargo keys its artefacts on RUSTFLAGS, not on the profile's content: a path named for the content makes a new
# profile rebuild every crate with it, and an unchanged one reuse them.
USED=$PWD/target/pgo/$TRIPLE-$(sha256sum "$PROFILE" | cut -c1-16).profdata
[[ -f $USED ]] || { rm -f "$PWD/target/pgo/$TRIPLE"-????????????????.profdata; cp "$PROFILE" "$USED"; }
log "release build with the profile ($TRIPLE)"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$USED" cargo build --release --locked --bin entourage --target "$TRIPLE"
