#!/usr/bin/env bash
# Reference workers behind a gateway router, on loopback, each port free:
# for each of N workers (default 2)
#   kv-I      radixmesh-node holding the worker's KV (--kv-bytes-per-token
#             of its model, 16-token pages)
#   worker-I  radixmesh-worker --http, its prompt KV in kv-I (--cache)
#   node-I    the worker's sidecar: radixmesh-node --worker-url
#             http://worker-I (4-token pages: the gateway's text
#             pseudo-tokens are 4 bytes, so a page is the worker's 16 bytes)
# and a router over node-0..N-1 with --gateway and --http, scraping the
# workers' /metrics every 250 ms. The sidecars mirror what the gateway
# sent (the router's predicted hit rate); the workers' own hit rate is
# what their KV nodes really served. State (pids, logs, addresses) lives in
# DIR.
#
#   deploy/local/worker_cluster.sh start DIR [N]   prints the gateway address
#        (also DIR/gateway.addr); DIR/router_http.addr, DIR/dashboard.url,
#        DIR/worker-I.addr
#   deploy/local/worker_cluster.sh stop DIR
#
# Binaries come from $RADIXMESH_BIN (default: build/ beside this script);
# $WORKER_FLAGS go to every worker (model flags: --layers, --d-model, ...).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${RADIXMESH_BIN:-$root/build}
read -r -a wflags <<<"${WORKER_FLAGS:-}"

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$root/deploy/local/lib.sh"
LAUNCH_WAIT=60

cmd=${1:-}; dir=${2:-}
[[ -n "$cmd" && -n "$dir" ]] || { echo "usage: $0 start|stop DIR [N]" >&2; exit 2; }
case "$cmd" in
start)
  n=${3:-2}
  mkdir -p "$dir"
  : >"$dir/pids"
  kvb=$("$bin/radixmesh-worker" "${wflags[@]}" --describe --log-level warn |
        sed -n 's/.*"kv_bytes_per_token":\([0-9]*\).*/\1/p')
  [[ -n "$kvb" ]] || { echo "radixmesh-worker ${wflags[*]} --describe failed" >&2; exit 1; }
  list=""
  for i in $(seq 0 $((n - 1))); do
    kv=$(launch "kv-$i" LISTENING "$bin/radixmesh-node" --listen 127.0.0.1:0 --node-id "kv-$i" \
         --kv-bytes-per-token "$kvb" --page-tokens 16 --pool-tokens 32768 --shutdown-delay-ms 0)
    w=$(launch "worker-$i" HTTP "$bin/radixmesh-worker" --http 127.0.0.1:0 --cache "$kv" "${wflags[@]}")
    echo "$w" >"$dir/worker-$i.addr"
    sc=$(launch "node-$i" LISTENING "$bin/radixmesh-node" --listen 127.0.0.1:0 --node-id "node-$i" \
         --page-tokens 4 --worker-url "http://$w" --shutdown-delay-ms 0)
    list+="${list:+,}node-$i=$sc"
  done
  launch router GATEWAY "$bin/radixmesh-router" --listen 127.0.0.1:0 --http 127.0.0.1:0 \
    --gateway 127.0.0.1:0 --nodes "$list" --router-id local-router --shutdown-delay-ms 0 \
    --health-interval-ms 250 --stats-interval 250 --worker-scrape-interval-ms 250 >"$dir/gateway.addr"
  wait_line HTTP "$dir/router.out" "$(tail -1 "$dir/pids")" 60 >"$dir/router_http.addr"
  echo "http://$(cat "$dir/router_http.addr")/" >"$dir/dashboard.url"
  cat "$dir/gateway.addr"
  ;;
stop) # the same pids file as cluster.sh's
  exec "$root/deploy/local/cluster.sh" stop "$dir"
  ;;
*) echo "usage: $0 start|stop DIR [N]" >&2; exit 2 ;;
esac
