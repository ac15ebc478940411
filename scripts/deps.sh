#!/usr/bin/env bash
# Installs the Debian packages radixmesh needs that are missing.
#   scripts/deps.sh          build + run dependencies
#   scripts/deps.sh --test   also the test-only tools
# Runs apt-get only when something is missing, so it is cheap to repeat.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libgrpc-dev libuv1-dev libnanopb-dev nanopb libssl-dev
      libjansson-dev libhttp-parser-dev libzmq3-dev)
if [[ "${1:-}" == "--test" ]]; then
  pkgs+=(python3 python3-grpcio python3-grpc-tools python3-yaml valgrind curl prometheus chromium
        kubectl yamllint clang python3-zmq python3-msgpack)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  if [[ $(id -u) -ne 0 ]]; then
    echo "scripts/deps.sh: run as root (or install: ${missing[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# libFuzzer ships in the clang runtime package of clang's own major version.
if [[ "${1:-}" == "--test" ]]; then
  v=$(clang --version | sed -n 's/.*clang version \([0-9][0-9]*\).*/\1/p' | head -1)
  rt=libclang-rt-$v-dev
  if [[ -n "$v" ]] && ! dpkg-query -W -f='${Status}' "$rt" 2>/dev/null | grep -q 'install ok installed'; then
    echo "installing: $rt" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$rt" >/dev/null
  fi
fi
