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
#   worker: the reference transformer's time to first token without a cache
#         and with the shared prefix's KV from a real node, 128..4k-token
#         prefixes (table + build/bench_ttft.svg), and the A/B 1,536-token
#         figure (~40 s; --quick: up to 1k, one repetition).
#   scripts/bench.sh [--quick]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/deps.sh"
"$root/scripts/build.sh"
cd "$root"
./build/bench_node ./build/radixmesh-node "$@"
echo
./build/bench_router ./build/radixmesh-node ./build/radixmesh-router "$@"
echo
./build/bench_placement
echo
./build/bench_ttft ./build/radixmesh-node --svg build/bench_ttft.svg "$@"
