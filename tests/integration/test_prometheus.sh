#!/usr/bin/env bash
# A real Prometheus server (Debian's) scrapes a local cluster: promtool
# accepts every /metrics and the alert rules; after load, PromQL's
# sum(rate(hit)) / sum(rate(query)) matches the router's own hit rate and
# the recording rule evaluates. Skips (exit 0, says so) without prometheus.
# Usage: test_prometheus.sh BIN_DIR
set -uo pipefail
bin=$1
source "$(dirname "$0")/lib.sh"
root=$rm_root
command -v prometheus >/dev/null && command -v promtool >/dev/null ||
  skip "prometheus/promtool not installed (tests/run.sh installs them)"
make_tmp

promtool check rules "$root/deploy/prometheus/rules.yml" >/dev/null && ok || bad "promtool check rules"
local_cluster "$tmp/cluster" 2 -- --http 127.0.0.1:0 || fatal "cluster did not start"
rh=$(sed -n 's|^http://\(.*\)/$|\1|p' "$tmp/cluster/dashboard.url")
targets="'$rh'"
for i in 0 1; do
  nh=$(sed -n 's/^HTTP //p' "$tmp/cluster/node-$i.out")
  targets+=", '$nh'"
  curl -s "http://$nh/metrics" | promtool check metrics && ok || bad "promtool check metrics (node $i)"
done
curl -s "http://$rh/metrics" | promtool check metrics && ok || bad "promtool check metrics (router)"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$tmp/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ['$root/deploy/prometheus/rules.yml']
scrape_configs:
  - job_name: radixmesh
    static_configs:
      - targets: [$targets]
YML
spawn prom prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
  --web.listen-address="127.0.0.1:$port" --log.level=warn
q() { curl -s --get "http://127.0.0.1:$port/api/v1/query" --data-urlencode "query=$1"; }
val() { python3 -c 'import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "none")'; }
# All three targets scraped (so every counter has a zero sample before load).
three_up() { [[ "$(q 'sum(up)' 2>/dev/null | val 2>/dev/null)" == "3" ]]; }
poll 60 three_up && ok || { bad "prometheus did not scrape 3 targets"; cat "$tmp/prom.out" "$tmp/prom.log"; }
"$bin/radixmesh" replay --router "$router" --trace builtin --limit 1500 --concurrency 2 >/dev/null 2>&1 ||
  bad "replay"
# Wait until Prometheus and the router both hold the final counters.
caught_up() {
  local want got
  want=$(curl -s "http://$rh/api/cluster" | python3 -c 'import json, sys; print(json.load(sys.stdin)["query_tokens_total"])')
  got=$(q 'sum(radixmesh_query_tokens_total)' | val)
  [[ "$got" == "$want" && "$want" != "0" ]]
}
poll 60 caught_up || bad "prometheus never held the router's final query tokens"
router_rate=$(curl -s "http://$rh/api/cluster" | python3 -c 'import json, sys; print(json.load(sys.stdin)["hit_rate"])')
prom_rate=$(q 'sum(rate(radixmesh_hit_tokens_total[2m])) / sum(rate(radixmesh_query_tokens_total[2m]))' | val)
echo "router hit rate $router_rate, prometheus rate-based $prom_rate"
python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if a > 0.5 and abs(a - b) < 0.02 else 1)" \
  "$router_rate" "$prom_rate" && ok || bad "prometheus $prom_rate vs router $router_rate"
cum=$(q 'sum(radixmesh_hit_tokens_total) / sum(radixmesh_query_tokens_total)' | val)
python3 -c "import sys; sys.exit(0 if abs(float(sys.argv[1]) - float(sys.argv[2])) < 1e-9 else 1)" \
  "$router_rate" "$cum" && ok || bad "cumulative $cum vs router $router_rate"
rule_evaluated() { [[ "$(q 'radixmesh:cluster_hit_rate:rate5m' | val)" != "none" ]]; }
poll 30 rule_evaluated && ok || bad "recording rule did not evaluate"
p99=$(q 'histogram_quantile(0.99, sum by (le) (rate(radixmesh_rpc_duration_seconds_bucket{method="Match"}[2m])))' | val)
python3 -c "import sys; v = float(sys.argv[1]); sys.exit(0 if 0 < v < 10 else 1)" "$p99" 2>/dev/null && ok || bad "Match p99 from histograms: $p99"
# Every metric the Grafana dashboard queries exists in what we scrape.
names=$(q 'count by (__name__) ({job="radixmesh"})' | python3 -c 'import json, sys; print(" ".join(r["metric"]["__name__"] for r in json.load(sys.stdin)["data"]["result"]))')
python3 - "$root/deploy/grafana/radixmesh.json" "$names" <<'PY' && ok || bad "grafana dashboard queries unknown metrics"
import json, re, sys
have = set(sys.argv[2].split())
d = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in d["panels"] for t in p["targets"]]
used = {m for e in exprs for m in re.findall(r"radixmesh_[a-z_]+", e)}
missing = sorted(u for u in used if u not in have)
assert len(d["panels"]) >= 8 and not missing, missing
PY
summary
