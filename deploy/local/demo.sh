#!/usr/bin/env bash
# The main job: install what is missing, build, start a local cluster (a
# router and 3 cache nodes on loopback), replay a demo workload through it
# (the shared Mooncake trace when ../shared/traces has it, else a built-in
# generated workload of system prompts, few-shot prompts, multi-turn chats
# and RAG documents), print the summary, the cluster table and the dashboard
# URL; when run from a terminal, keep the cluster up until Enter.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
demo_setup cluster.sh
router=$(RADIXMESH_BIN=$bin "$root/deploy/local/cluster.sh" start "$state" 3)
end=$((SECONDS + 30)) # until the router has all nodes on its ring
until "$bin/radixmesh" stats --router "$router" 2>/dev/null | grep -q '3/3 nodes healthy'; do
  ((SECONDS < end)) || { echo "the router did not see all 3 nodes within 30 s" >&2; exit 1; }
  sleep 0.1
done
trace="$root/../shared/traces/mooncake_synthetic_trace.jsonl"
if [[ -f "$trace" ]]; then
  echo "replaying the Mooncake trace ($trace) through router $router" >&2
  args=(--trace "$trace" --block-tokens 64)
else
  echo "no ../shared/traces here: replaying the built-in workload through router $router" >&2
  args=(--trace builtin --limit 3000)
fi
"$bin/radixmesh" replay --router "$router" "${args[@]}" --concurrency 4 --ttft-model 10000
echo
"$bin/radixmesh" stats --router "$router"
echo
echo "dashboard: $(cat "$state/dashboard.url")   (cluster table: $bin/radixmesh stats --router $router --watch)"
demo_hold
