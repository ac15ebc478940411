#!/usr/bin/env bash
# The reference worker demo: installs what is missing, builds, starts two
# radixmesh-workers (the default model: 4 layers, d_model 256) behind a
# gateway router, each with its KV node and its sidecar node
# (deploy/local/worker_cluster.sh), replays a small chat workload through
# the gateway (8 conversations of 3 turns behind one shared system prompt,
# text prompts), and prints the workers' own hit rate (from the usage they
# returned and from their /metrics as the router scraped them) beside the
# router's predicted one, and the dashboard URL, where both are shown. Run
# from a terminal, the cluster stays up until Enter. A minute or less on a
# 2-core machine; WORKER_FLAGS (e.g. "--layers 2 --d-model 64 --vocab 512")
# picks a smaller model, CHAT_FLAGS changes the workload.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
demo_setup worker_cluster.sh
echo "starting 2 workers, their KV nodes and sidecars, and a gateway router..." >&2
gw=$(RADIXMESH_BIN=$bin "$root/deploy/local/worker_cluster.sh" start "$state" 2)
read -r -a chat <<<"${CHAT_FLAGS:-}"
"$bin/radixmesh-chat" --url "$gw" --router-http "$(cat "$state/router_http.addr")" --wait-workers 2 \
  --conversations 8 --turns 3 --concurrency 2 --system-bytes 1024 --max-tokens 16 "${chat[@]}"
echo
echo "gateway: http://$gw/v1/completions   dashboard: $(cat "$state/dashboard.url")"
demo_hold
