#!/usr/bin/env bash
# The main job: install what is missing, build, start a cache node on a free
# loopback port, play the prefix-sharing demo against it, stop the node.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
"$root/scripts/deps.sh"
echo "building..." >&2
"$root/scripts/build.sh"
bin=$root/build
log=$(mktemp)
out=$(mktemp)
"$bin/radixmesh-node" --listen 127.0.0.1:0 --node-id demo-node --shutdown-delay-ms 0 \
  >"$out" 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -f "$log" "$out"' EXIT
for _ in $(seq 1 100); do  # wait for the LISTENING line (at most 10 s)
  grep -q '^LISTENING ' "$out" && break
  kill -0 $pid 2>/dev/null || { cat "$log" >&2; exit 1; }
  read -r -t 0.1 <> <(:) || true
done
addr=$(sed -n 's/^LISTENING //p' "$out")
[[ -n "$addr" ]] || { echo "node did not start" >&2; cat "$log" >&2; exit 1; }
"$bin/radixmesh" demo --node "$addr"
