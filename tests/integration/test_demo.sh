#!/usr/bin/env bash
# The demo against a real node: it must finish, print each scenario, and the
# node's own hit counters must equal the client's totals.
set -uo pipefail
node_bin=$1 cli_bin=$2
source "$(dirname "$0")/lib.sh"
make_tmp
spawn node "$node_bin" --listen 127.0.0.1:0 --node-id demo-test --shutdown-delay-ms 0
addr=$(announced node LISTENING) || fatal "node did not start: $(cat "$tmp/node.log")"
demo=$("$cli_bin" demo --node "$addr") || fatal "demo exit $?"
echo "$demo"
expect_re() { if grep -qE "$1" <<<"$demo"; then ok; else bad "missing: $1"; fi; }
expect_re '^shared system prompt +32 req .*hit rate +9[0-9]\.[0-9]%'
expect_re '^few-shot examples'
expect_re '^multi-turn chat'
expect_re 'saves'
# Client totals vs node counters: "all scenarios ... hit rate X%" and
# "node ...: hit tokens H / query tokens Q = X%" must agree.
client=$(sed -n 's/^all scenarios .*hit rate *\([0-9.]*\)%.*/\1/p' <<<"$demo")
node=$(sed -n 's/^node .*= \([0-9.]*\)%.*/\1/p' <<<"$demo")
if [[ -n "$client" && "$client" == "$node" ]]; then ok; else bad "client $client% != node $node%"; fi
# Bad usage exits 2.
"$cli_bin" demo --bogus >/dev/null 2>&1; rc=$?
if [[ $rc -eq 2 ]]; then ok; else bad "bad flag exit $rc"; fi
summary
