#!/usr/bin/env bash
# The router's dashboard in a real browser: after a replay, headless
# Chromium renders the page (its JS fetches /api/cluster) and the rendered
# numbers -- hit rates, node rows, the hit budget's stages and memory
# curve -- must equal /api/cluster's. A screenshot is kept as an artifact in
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
    dropped = re.search(r'class="dropped[^"]*">([^<]*)<', row).group(1)
    assert dropped == str(n["dropped_tokens_total"]), (node_id, dropped)
    # The mirror column: precise (the worker's KV events), approx, or - (no worker).
    mirror = re.search(r'class="mirror"[^>]*>([^<]*)<', row).group(1)
    assert mirror == (n.get("mirror") or "-"), (node_id, mirror, n.get("mirror"))
assert "<polyline" in dom, "no hit-rate chart drawn"
# The hit budget: a bar per stage, the memory curve's points, as the API says.
b = c["hit_budget"]
assert b["achieved"] == c["hit_rate"] and b["infinite"] is not None and b["ideal"] is not None, b
for k in ("infinite", "ideal", "achieved", "delivered"):
    want = "-" if b[k] is None else pct(b[k])
    assert text("budget-" + k) == want, (k, text("budget-" + k), b[k])
marks = dict(re.findall(r'class="mc" data-memory="([^"]+)"[^>]*>([^<]*)<', dom))
points = [p for p in b["memory_curve"] if p["hit_rate"] is not None]
assert len(points) == 5, b["memory_curve"]
for p in points:
    assert marks["%g" % p["memory"]] == pct(p["hit_rate"]), (p, marks)
assert re.search(r'<svg id="curve".*?<polyline[^>]*points="', dom, re.S), "no memory curve drawn"
one = next(p for p in b["memory_curve"] if p["memory"] == 1)
assert text("curve-check").endswith("estimated there " + pct(one["estimate"])), text("curve-check")
print("rendered: hit %s, %d node rows, budget %s, curve %s" % (
    text("hit"), len(rows), [text("budget-" + k) for k in ("infinite", "ideal", "achieved", "delivered")],
    [marks["%g" % p["memory"]] for p in points]))
PY
mkdir -p "$bin/test-artifacts"
rm -f "$bin/test-artifacts/dashboard.png"
browser --screenshot="$bin/test-artifacts/dashboard.png" "$url" >/dev/null
python3 -c 'import sys; b = open(sys.argv[1], "rb").read(); sys.exit(0 if b[:8] == b"\x89PNG\r\n\x1a\n" and len(b) > 10000 else 1)' \
  "$bin/test-artifacts/dashboard.png" && ok || bad "no screenshot"
summary
