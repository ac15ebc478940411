#!/usr/bin/env bash
# The router's dashboard in a real browser: after a replay, headless
# Chromium renders the page (its JS fetches /api/cluster) and the rendered
# numbers must equal /api/cluster's. A screenshot is kept as an artifact in
# BIN_DIR/test-artifacts/dashboard.png. Skips without chromium.
# Usage: test_dashboard.sh BIN_DIR
set -uo pipefail
bin=$1
source "$(dirname "$0")/lib.sh"
command -v chromium >/dev/null || skip "chromium not installed (tests/run.sh installs it)"
make_tmp
browser() {
  chromium --headless --no-sandbox --disable-gpu --disable-quic --disable-background-networking \
    --disable-component-update --no-first-run --disable-sync --user-data-dir="$tmp/profile" \
    --virtual-time-budget=4000 --window-size=1000,820 "$@" 2>/dev/null
}
local_cluster "$tmp/cluster" 3 || fatal "cluster did not start"
url=$(cat "$tmp/cluster/dashboard.url")
"$bin/radixmesh" replay --router "$router" --trace builtin --limit 600 >/dev/null 2>&1 || bad "replay"
# Until the router's published view has every request (stats poll + publish).
all_counted() {
  curl -s "${url}api/cluster" >"$tmp/api.json" &&
    python3 -c 'import json, sys; c = json.load(open(sys.argv[1])); sys.exit(0 if c["routed_requests_total"] == 600 and sum(n["match_requests_total"] for n in c["nodes"]) == 600 else 1)' "$tmp/api.json"
}
poll 30 all_counted || bad "the router's published view never counted all 600 requests"
browser --dump-dom "$url" >"$tmp/dom.html"
curl -s "${url}api/cluster" >"$tmp/api.json"
python3 - "$tmp/dom.html" "$tmp/api.json" <<'PY' && ok || bad "rendered page differs from /api/cluster"
import json, re, sys
dom, c = open(sys.argv[1]).read(), json.load(open(sys.argv[2]))
def text(id_):
    m = re.search(r'id="%s"[^>]*>([^<]*)<' % id_, dom)
    assert m, "no #%s in the rendered page" % id_
    return m.group(1)
pct = lambda x: "%.1f%%" % (100 * x)
assert text("hit") == pct(c["hit_rate"]), (text("hit"), c["hit_rate"])
assert text("healthy") == "%d / %d" % (c["healthy_nodes"], len(c["nodes"]))
assert text("spills") == "%d / %d" % (c["spills_total"], c["failovers_total"])
rows = re.findall(r'<tr data-node="([^"]+)">(.*?)</tr>', dom, re.S)
assert sorted(r[0] for r in rows) == sorted(n["id"] for n in c["nodes"]), rows
for node_id, row in rows:
    n = next(x for x in c["nodes"] if x["id"] == node_id)
    cell = re.search(r'class="hit">([^<]*)<', row).group(1)
    assert cell == pct(n["hit_tokens_total"] / n["query_tokens_total"]), (node_id, cell)
    assert ">%d<" % n["match_requests_total"] in row
assert "<polyline" in dom, "no hit-rate chart drawn"
print("rendered: hit %s, %d node rows" % (text("hit"), len(rows)))
PY
mkdir -p "$bin/test-artifacts"
rm -f "$bin/test-artifacts/dashboard.png"
browser --screenshot="$bin/test-artifacts/dashboard.png" "$url" >/dev/null
python3 -c 'import sys; b = open(sys.argv[1], "rb").read(); sys.exit(0 if b[:8] == b"\x89PNG\r\n\x1a\n" and len(b) > 10000 else 1)' \
  "$bin/test-artifacts/dashboard.png" && ok || bad "no screenshot"
summary
