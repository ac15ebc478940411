#!/usr/bin/env bash
# A local radixmesh cluster on loopback: N cache nodes and a router, each on
# a free port. State (pids, logs, addresses) lives in DIR.
#
#   deploy/local/cluster.sh start DIR [NODES] [-- node flags...]
#        prints the router address (also in DIR/router.addr); the dashboard
#        URL is in DIR/dashboard.url
#   deploy/local/cluster.sh stop DIR
#
# Binaries come from $RADIXMESH_BIN (default: build/ beside this script).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${RADIXMESH_BIN:-$root/build}

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$root/deploy/local/lib.sh"

cmd=${1:-}; dir=${2:-}
[[ -n "$cmd" && -n "$dir" ]] || { echo "usage: $0 start|stop DIR [NODES] [-- node flags]" >&2; exit 2; }
case "$cmd" in
start)
  nodes=${3:-3}
  shift 3 2>/dev/null || shift $#
  [[ "${1:-}" == "--" ]] && shift
  mkdir -p "$dir"
  : >"$dir/pids"
  list=""
  for i in $(seq 0 $((nodes - 1))); do
    addr=$(launch "node-$i" LISTENING "$bin/radixmesh-node" --listen 127.0.0.1:0 --node-id "node-$i" \
      --shutdown-delay-ms 0 "$@") || exit 1
    list+="${list:+,}node-$i=$addr"
  done
  raddr=$(launch router LISTENING "$bin/radixmesh-router" --listen 127.0.0.1:0 --http 127.0.0.1:0 \
    --nodes "$list" --router-id local-router --shutdown-delay-ms 0 --health-interval-ms 250 \
    --stats-interval 250) || exit 1
  echo "$raddr" >"$dir/router.addr"
  rhttp=$(wait_line HTTP "$dir/router.out" "$(tail -1 "$dir/pids")") ||
    { echo "router HTTP did not start:" >&2; cat "$dir/router.log" >&2; exit 1; }
  echo "http://$rhttp/" >"$dir/dashboard.url"
  echo "$raddr"
  ;;
stop)
  [[ -f "$dir/pids" ]] || exit 0
  while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$dir/pids"
  while read -r pid; do # each gets up to 30 s to drain, then SIGKILL
    end=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < end)); do sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
  done <"$dir/pids"
  rm -f "$dir/pids"
  ;;
*) echo "usage: $0 start|stop DIR [NODES] [-- node flags]" >&2; exit 2 ;;
esac
