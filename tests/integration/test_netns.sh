#!/usr/bin/env bash
# A small multi-host network on one machine: a router and 3 nodes, each in
# its own network namespace with its own address on a bridge (the project's
# own test hosts). Load runs through the router; one node's link is cut
# mid-load -> routing moves off it with no client error; the link comes
# back -> the node rejoins the ring. Needs root and iproute2; skips (with a
# message) otherwise.   Usage: test_netns.sh BIN_DIR
set -uo pipefail
bin=$1
source "$(dirname "$0")/lib.sh"
if [[ $(id -u) -ne 0 ]] || ! command -v ip >/dev/null || ! ip netns add rm-probe-$$ 2>/dev/null; then
  skip "needs root and iproute2 with network namespaces"
fi
ip netns del rm-probe-$$
tag=$$
sw=rmsw$tag hosts=(rmr$tag rmn0$tag rmn1$tag rmn2$tag)
addr=(10.77.0.2 10.77.0.10 10.77.0.11 10.77.0.12)
make_tmp
at_exit 'for h in "${hosts[@]}" "$sw"; do ip netns del "$h" 2>/dev/null; done'

ip netns add "$sw"
ip -n "$sw" link add br0 type bridge
ip -n "$sw" link set br0 up
for i in 0 1 2 3; do
  h=${hosts[$i]}
  ip netns add "$h"
  ip link add "v$i$tag" type veth peer name "e$i$tag"
  ip link set "v$i$tag" netns "$sw"
  ip -n "$sw" link set "v$i$tag" master br0 up
  ip link set "e$i$tag" netns "$h"
  ip -n "$h" addr add "${addr[$i]}/24" dev "e$i$tag"
  ip -n "$h" link set "e$i$tag" up
  ip -n "$h" link set lo up
done
list=""
for i in 1 2 3; do
  spawn n$i ip netns exec "${hosts[$i]}" "$bin/radixmesh-node" --listen "${addr[$i]}:7001" \
    --node-id "n$((i - 1))" --shutdown-delay-ms 0
  list+="${list:+,}n$((i - 1))=${addr[$i]}:7001"
done
spawn r ip netns exec "${hosts[0]}" "$bin/radixmesh-router" --listen "${addr[0]}:7000" --nodes "$list" \
  --health-interval-ms 200 --stats-interval 200 --call-timeout-ms 500 --shutdown-delay-ms 0
stats() { ip netns exec "${hosts[0]}" "$bin/radixmesh" stats --router "${addr[0]}:7000" 2>/dev/null; }
healthy() { stats | grep -q "$1/3 nodes healthy"; }
wait_healthy() { poll "$2" healthy "$1"; } # want, seconds
wait_healthy 3 10 && ok || { bad "cluster did not come up"; cat "$tmp/r.log"; }

# Load through the router from the router's host; cut n1's link mid-run.
spawn replay ip netns exec "${hosts[0]}" "$bin/radixmesh" replay --router "${addr[0]}:7000" \
  --trace builtin --limit 2400 --concurrency 2 --speed 2 --json
# Cut the link once load is flowing (the router has routed a share of it).
routed_some() { [[ $(stats | sed -n 's/^routed \([0-9]*\),.*/\1/p') -ge 300 ]]; }
poll 60 routed_some || bad "the replay did not get going"
ip -n "${hosts[2]}" link set "e2$tag" down
wait_healthy 2 10 && ok || bad "cut node stayed on the ring"
stats | grep -E '^n1 .* DOWN' >/dev/null && ok || bad "n1 not shown down"
reap replay; rc=$?
[[ $rc -eq 0 ]] && ok || bad "replay exit $rc: $(tail -2 "$tmp/replay.log")"
tail -1 "$tmp/replay.out" | /usr/bin/python3 -c '
import json, sys
o = json.loads(sys.stdin.read())
assert o["errors"] == 0 and o["requests"] == 2400, o
print("replay through the cut: %d requests, %d errors, hit rate %.3f, per node %s" % (o["requests"], o["errors"], o["token_hit_rate"], o["per_node"]))
' && ok || bad "client errors during the cut"
grep -q "leaves the ring" "$tmp/r.log" && ok || bad "router did not log the node leaving"
# Restore: the node rejoins.
ip -n "${hosts[2]}" link set "e2$tag" up
wait_healthy 3 20 && ok || bad "node did not rejoin after the link came back"
summary
