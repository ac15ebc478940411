#!/usr/bin/env bash
# Configures and builds radixmesh into DIR (default build/).
#   scripts/build.sh [DIR] [extra cmake args...]
# RM_TARGETS="a b ..." builds only those targets (the suite's TSan and fuzz
# stages need a few of them, not the whole tree).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/build}
shift || true
cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
targets=()
for t in ${RM_TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$dir" -j"$(nproc)" "${targets[@]}" >/dev/null
