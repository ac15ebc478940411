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

# Waits (at most 30 s, or until the daemon exits) for the "WORD host:port"
# line a daemon prints once it listens; prints host:port.
wait_line() {
  local word=$1 out=$2 pid=$3 end=$((SECONDS + 30))
  while ((SECONDS < end)); do
    if grep -q "^$word " "$out" 2>/dev/null; then
      sed -n "s/^$word //p" "$out" | head -1
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05 # one poll step
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
    addr=$(wait_line LISTENING "$dir/node-$i.out" $!) || { echo "node-$i did not start:" >&2; cat "$dir/node-$i.log" >&2; exit 1; }
    list+="${list:+,}node-$i=$addr"
  done
  "$bin/radixmesh-router" --listen 127.0.0.1:0 --http 127.0.0.1:0 --nodes "$list" --router-id local-router \
    --shutdown-delay-ms 0 --health-interval-ms 250 --stats-interval 250 \
    >"$dir/router.out" 2>"$dir/router.log" &
  rpid=$!
  echo $rpid >>"$dir/pids"
  raddr=$(wait_line LISTENING "$dir/router.out" $rpid) || { echo "router did not start:" >&2; cat "$dir/router.log" >&2; exit 1; }
  echo "$raddr" >"$dir/router.addr"
  rhttp=$(wait_line HTTP "$dir/router.out" $rpid) || { echo "router HTTP did not start:" >&2; cat "$dir/router.log" >&2; exit 1; }
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
