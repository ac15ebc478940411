#!/usr/bin/env bash
# The demo against a real node: it must finish, print each scenario, and the
# node's own hit counters must equal the client's totals.
set -euo pipefail
node_bin=$1 cli_bin=$2
out=$(mktemp) log=$(mktemp)
"$node_bin" --listen 127.0.0.1:0 --node-id demo-test --shutdown-delay-ms 0 >"$out" 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -f "$out" "$log"' EXIT
for _ in $(seq 1 100); do
  grep -q '^LISTENING ' "$out" && break
  read -r -t 0.1 <> <(:) || true
done
addr=$(sed -n 's/^LISTENING //p' "$out")
[[ -n "$addr" ]] || { echo "node did not start"; cat "$log"; exit 1; }
demo=$("$cli_bin" demo --node "$addr")
echo "$demo"
pass=0 fail=0
expect() { if grep -qE "$1" <<<"$demo"; then pass=$((pass+1)); else echo "missing: $1"; fail=$((fail+1)); fi; }
expect '^shared system prompt +32 req .*hit rate +9[0-9]\.[0-9]%'
expect '^few-shot examples'
expect '^multi-turn chat'
expect 'saves'
# Client totals vs node counters: "all scenarios ... hit rate X%" and
# "node ...: hit tokens H / query tokens Q = X%" must agree.
client=$(sed -n 's/^all scenarios .*hit rate *\([0-9.]*\)%.*/\1/p' <<<"$demo")
node=$(sed -n 's/^node .*= \([0-9.]*\)%.*/\1/p' <<<"$demo")
if [[ -n "$client" && "$client" == "$node" ]]; then pass=$((pass+1)); else echo "client $client% != node $node%"; fail=$((fail+1)); fi
# Bad usage exits 2.
set +e
"$cli_bin" demo --bogus >/dev/null 2>&1; rc=$?
set -e
if [[ $rc -eq 2 ]]; then pass=$((pass+1)); else echo "bad flag exit $rc"; fail=$((fail+1)); fi
echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
