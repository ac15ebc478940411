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

# Waits (at most 10 s) for a daemon's "LISTENING host:port" line.
wait_listen() {
  local out=$1 pid=$2
  for _ in $(seq 1 200); do
    if grep -q '^LISTENING ' "$out" 2>/dev/null; then
      sed -n 's/^LISTENING //p' "$out" | head -1
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    read -r -t 0.05 <> <(:) || true
  done
  return 1
}

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
    "$bin/radixmesh-node" --listen 127.0.0.1:0 --node-id "node-$i" --shutdown-delay-ms 0 "$@" \
      >"$dir/node-$i.out" 2>"$dir/node-$i.log" &
    echo $! >>"$dir/pids"
    addr=$(wait_listen "$dir/node-$i.out" $!) || { echo "node-$i did not start:" >&2; cat "$dir/node-$i.log" >&2; exit 1; }
    list+="${list:+,}node-$i=$addr"
  done
  "$bin/radixmesh-router" --listen 127.0.0.1:0 --http 127.0.0.1:0 --nodes "$list" --router-id local-router \
    --shutdown-delay-ms 0 --health-interval-ms 250 --stats-interval 250 \
    >"$dir/router.out" 2>"$dir/router.log" &
  echo $! >>"$dir/pids"
  raddr=$(wait_listen "$dir/router.out" $!) || { echo "router did not start:" >&2; cat "$dir/router.log" >&2; exit 1; }
  echo "$raddr" >"$dir/router.addr"
  for _ in $(seq 1 100); do grep -q '^HTTP ' "$dir/router.out" && break; read -r -t 0.05 <> <(:) || true; done
  echo "http://$(sed -n 's/^HTTP //p' "$dir/router.out")/" >"$dir/dashboard.url"
  echo "$raddr"
  ;;
stop)
  [[ -f "$dir/pids" ]] || exit 0
  while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$dir/pids"
  while read -r pid; do
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; read -r -t 0.05 <> <(:) || true; done
    kill -9 "$pid" 2>/dev/null || true
  done <"$dir/pids"
  rm -f "$dir/pids"
  ;;
*) echo "usage: $0 start|stop DIR [NODES] [-- node flags]" >&2; exit 2 ;;
esac
