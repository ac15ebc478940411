#!/usr/bin/env bash
# Every performance figure of the project in one run, each against a
# baseline measured in the same run (see BENCHMARKS.md):
#   node: radix ops, Match RPC vs bare gRPC-core server, ReadKV vs loopback
#         TCP, metadata bytes per cached token;
#   router: trace replay hit rate vs an ideal single LRU and load balance,
#         hot-system-prompt workload, router-proxied Match vs bare server,
#         Route latency p50/p99;
#   placement: what eight LRU caches can reach under any placement rule,
#         oracles included, at 5-50% capacity (in process, ~2 s);
#   estimators (issue 16): the nodes' memory curves and the router's ideal
#         and infinite shadows against exact figures on chat, agentic,
#         builtin and the Mooncake trace (8 nodes at 10%), their CPU per
#         request against the node's Match+Insert, and their memory (~10 s);
#   worker: the reference transformer's time to first token without a cache
#         and with the shared prefix's KV from a real node, 128..4k-token
#         prefixes (table + build/bench_ttft.svg), and the A/B 1,536-token
#         figure (~40 s; --quick: up to 1k, one repetition).
#   scripts/bench.sh [--quick]
#
# scripts/bench.sh --workloads [SEED] instead measures issue 15's table:
# the Mooncake trace and the generated chat and agentic workloads (seed 42
# unless given), each at 64- and 512-token blocks, through a live 8-node
# cluster (bench_router) and in process at 10% capacity (bench_placement);
# ~20 min, 2 GB of memory for agentic at 512-token blocks.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/deps.sh"
"$root/scripts/build.sh"
cd "$root"
if [[ ${1:-} == --workloads ]]; then
  seed=${2:-42}
  for trace in ../shared/traces/mooncake_synthetic_trace.jsonl chat agentic; do
    for block in 64 512; do
      ./build/bench_router ./build/radixmesh-node ./build/radixmesh-router --trace "$trace" \
        --seed "$seed" --block-tokens "$block"
      ./build/bench_placement --trace "$trace" --seed "$seed" --block-tokens "$block" --capacity 10
      echo
    done
  done
  exit 0
fi
./build/bench_node ./build/radixmesh-node "$@"
echo
./build/bench_router ./build/radixmesh-node ./build/radixmesh-router "$@"
echo
./build/bench_placement
echo
./build/bench_shadow
echo
./build/bench_ttft ./build/radixmesh-node --svg build/bench_ttft.svg "$@"
