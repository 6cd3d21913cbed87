#!/usr/bin/env bash
# The node's packages from Debian (containerd 1.6, runc, the CNI plugins, iptables), what the images are made of
# (nginx, a static busybox, curl) and musl-tools for the static release binary. Installs only what is missing.
set -euo pipefail
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
for p in containerd runc containernetworking-plugins iptables conntrack nginx-light busybox-static curl musl-tools openssl; do
  have "$p" || need+=("$p")
done
if ((${#need[@]})); then
  echo "[cluster] apt-get install ${need[*]}" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl
python3 -c 'import pytest' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check pytest
