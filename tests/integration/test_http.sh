#!/usr/bin/env bash
# HTTP endpoints of both daemons: /healthz, /readyz (503 while draining),
# /metrics (the daemon's own figures, then its server's RPC and HTTP ones;
# pipelined requests past the output bound all answered), the
# router's /api/cluster (equal to the nodes' own counters) and its
# dashboard page; read-only (405) and unknown paths (404).
# Usage: test_http.sh BIN_DIR
set -uo pipefail
bin=$1
tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT
source "$(dirname "$0")/lib.sh"
check() { if [[ "$2" == "$3" ]]; then ok; else bad "$1: got '$2', want '$3'"; fi; }
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
# Waits (at most 30 s) for a line "KEY value" in a daemon's stdout.
line() {
  poll 30 grep -q "^$2 " "$1" || return 1
  sed -n "s/^$2 //p" "$1" | head -1
}
start() { # name, args... -> sets $grpc and $http
  "$@" >"$tmp/$name.out" 2>"$tmp/$name.log" &
  pids+=($!)
  grpc=$(line "$tmp/$name.out" LISTENING) && http=$(line "$tmp/$name.out" HTTP)
}
list=""
for i in 0 1; do
  name=n$i start "$bin/radixmesh-node" --listen 127.0.0.1:0 --http 127.0.0.1:0 --node-id n$i \
    --shutdown-delay-ms 0 || { bad "node $i did not start"; exit 1; }
  nh[$i]=$http
  list+="${list:+,}n$i=$grpc"
done
name=r start "$bin/radixmesh-router" --listen 127.0.0.1:0 --http 127.0.0.1:0 --nodes "$list" \
  --health-interval-ms 200 --stats-interval 200 --shutdown-delay-ms 5000 || { bad "router"; exit 1; }
rg=$grpc rh=$http

check "node /healthz" "$(code "http://${nh[0]}/healthz")" 200
check "node /readyz" "$(code "http://${nh[0]}/readyz")" 200
check "node /nope" "$(code "http://${nh[0]}/nope")" 404
check "node POST" "$(code -X POST "http://${nh[0]}/metrics")" 405
# A 405 names the methods allowed (RFC 9110 15.5.6).
grep -qi '^Allow: GET, HEAD' <(curl -s -D - -o /dev/null -X POST "http://${nh[0]}/metrics") && ok ||
  bad "node POST: 405 without Allow: GET, HEAD"
m=$(curl -s "http://${nh[0]}/metrics")
for name in radixmesh_match_requests_total radixmesh_hit_tokens_total radixmesh_query_tokens_total \
            'radixmesh_pool_pages{node="n0",state="free"}' radixmesh_active_leases radixmesh_build_info \
            'radixmesh_rpc_duration_seconds_count{node="n0",method="Match"}' \
            'radixmesh_http_connections{node="n0"}' 'radixmesh_snapshot_timestamp_seconds{node="n0"}'; do
  grep -qF "$name" <<<"$m" && ok || bad "node metric $name missing"
done
# Sends the bytes of Python expression $2 to $1 on one connection (from a
# thread, reading meanwhile) and prints, of all that comes back until the
# server closes: how many 200 and 400 replies, and whether it ends in "ok".
exchange() {
  python3 - "$1" "$2" <<'EOF'
import socket, sys, threading
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=120)
threading.Thread(target=s.sendall, args=(eval(sys.argv[2]),), daemon=True).start()
data = b""
while chunk := s.recv(1 << 16):
    data += chunk
print(data.count(b"HTTP/1.1 200 OK\r\n"), data.count(b"HTTP/1.1 400 Bad Request\r\n"),
      data.endswith(b"\r\n\r\nok\n"))
EOF
}
# Pipelined requests whose replies pile up past the server's output bound
# (it stops reading and parsing until they drain) are all answered, in
# order, while the client reads them.
got=$(exchange "${nh[0]}" 'b"".join(b"GET /metrics?%d HTTP/1.1\r\nHost: x\r\n\r\n" % i
  for i in range(1500)) + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"')
check "pipelined replies past the output bound" "$got" "1501 0 True"
paused() { # the pauses it took show in the next published /metrics
  local n
  n=$(curl -s "http://${nh[0]}/metrics" | sed -n 's/^radixmesh_http_backpressure_pauses_total{[^}]*} //p')
  [[ ${n:-0} -gt 0 ]]
}
poll 30 paused && ok || bad "the pipelined client never paused the server"
# A malformed request: 400, and the connection is closed.
got=$(exchange "${nh[0]}" 'b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP AT ALL\r\n\r\n"')
check "malformed request after a good one" "$got" "1 1 False"
# A request asking to switch protocols (Upgrade, CONNECT) is answered as
# HTTP (this server never switches), and the next one on the connection too.
got=$(exchange "${nh[0]}" '(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
  b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")')
check "a request after an Upgrade request" "$got" "2 0 True"
# Every sample line is "name{labels} number".
if grep -v '^#' <<<"$m" | grep -qvE '^radixmesh_[a-z_]+\{[^}]*\} -?[0-9.e+]+$'; then bad "malformed metric line"; else ok; fi

router_ready() { [[ $(code "http://$rh/readyz") == 200 ]]; } # both nodes on its ring
poll 30 router_ready && ok || bad "router /readyz never 200"
"$bin/radixmesh" replay --router "$rg" --trace builtin --limit 300 >/dev/null 2>&1 || bad "replay"
# /api/cluster catches up with the nodes' own /metrics within a few polls.
agrees() {
  local api node_hits=0 node_q=0 mm
  api=$(curl -s "http://$rh/api/cluster")
  for i in 0 1; do
    mm=$(curl -s "http://${nh[$i]}/metrics")
    node_hits=$((node_hits + $(sed -n 's/^radixmesh_hit_tokens_total{[^}]*} //p' <<<"$mm")))
    node_q=$((node_q + $(sed -n 's/^radixmesh_query_tokens_total{[^}]*} //p' <<<"$mm")))
  done
  python3 -c "
import json, sys
c = json.loads(sys.argv[1])
assert c['hit_tokens_total'] == int(sys.argv[2]) and c['query_tokens_total'] == int(sys.argv[3])
assert c['query_tokens_total'] > 0 and abs(c['hit_rate'] - c['hit_tokens_total'] / c['query_tokens_total']) < 1e-12
assert len(c['nodes']) == 2 and all(n['healthy'] for n in c['nodes'])
assert sum(n['routed_requests'] for n in c['nodes']) == c['routed_requests_total'] == 300
assert isinstance(c['history'], list)
" "$api" "$node_hits" "$node_q" 2>/dev/null
}
poll 30 agrees && ok || bad "/api/cluster does not match the nodes: $(curl -s "http://$rh/api/cluster")"
m=$(curl -s "http://$rh/metrics")
for name in radixmesh_cluster_hit_tokens_total radixmesh_cluster_query_tokens_total \
            'radixmesh_node_up{router=' 'radixmesh_node_dropped_tokens_total{router=' \
            radixmesh_router_spills_total radixmesh_router_failovers_total \
            'radixmesh_loop_stalls_total{router=' 'radixmesh_http_connections{router='; do
  grep -qF "$name" <<<"$m" && ok || bad "router metric $name missing"
done
page=$(curl -s "http://$rh/")
grep -q "<svg id='chart'" <<<"$page" && grep -q "fetch('/api/cluster')" <<<"$page" && ok || bad "dashboard page"
grep -qE 'src=|href=.http' <<<"$page" && bad "dashboard loads external resources" || ok
# Draining: NOT ready while the shutdown delay runs, still alive.
kill -TERM "${pids[2]}"
draining() { [[ $(code "http://$rh/readyz") == 503 ]]; }
poll 10 draining && ok || bad "router /readyz while draining: not 503"
check "router /healthz while draining" "$(code "http://$rh/healthz")" 200
# Every daemon exits cleanly (under a sanitizer or valgrind: no leak, no
# error, or the exit status says so).
kill -TERM "${pids[0]}" "${pids[1]}"
for i in 0 1 2; do
  wait "${pids[$i]}"; st=$?
  check "daemon $i exit status" "$st" 0
done
pids=()
summary
