#!/usr/bin/env bash
# The radixmesh CLI against hand-computed expectations: analyze on a tiny
# batch, bad input and flags, replay of a small Mooncake trace through a
# live local cluster with exact hit counts, its --json schema, and stats.
# Usage: test_cli.sh BIN_DIR
set -uo pipefail
bin=$1
source "$(dirname "$0")/lib.sh"
make_tmp

# --- analyze: 3 requests at page 16 -----------------------------------------
# [1..32], [1..16]+[100..115], [1..32]+[200..215]: 112 tokens, unique 32+16+16.
python3 - >"$tmp/tiny.jsonl" <<'PY'
import json
print(json.dumps([*range(1, 33)]))
print(json.dumps({"tokens": [*range(1, 17)] + [*range(100, 116)]}))
print(json.dumps([*range(1, 33)] + [*range(200, 216)]))
PY
out=$("$bin/radixmesh" analyze "$tmp/tiny.jsonl" --page-tokens 16 --layers 1 --kv-heads 1 \
      --head-dim 1 --dtype-bytes 1 --svg "$tmp/mem.svg")
expect "$out" "3 requests, 112 prompt tokens, 64 unique (page 16)"
expect "$out" "dedup ratio (shareable / total tokens): 0.4286"
expect "$out" "without sharing 224 B, with sharing 128 B (42.9% saved)"
expect "$out" "3 requests share a 16-token prefix"
expect "$out" "2 requests share a 32-token prefix"
expect "$out" "[16 tokens: 1 2 3 ...] x3 requests"
if python3 -c "import sys, xml.dom.minidom as m; m.parse(sys.argv[1])" "$tmp/mem.svg"; then ok; else bad "svg is not well-formed"; fi
expect "$(cat "$tmp/mem.svg")" "with sharing"
out=$("$bin/radixmesh" analyze "$tmp/tiny.jsonl" --model qwen2.5-7b)
expect "$out" "28 layers x 4 KV heads x 128 dims x 2 B, K+V = 57344 B/token"

# --- bad input: the line is named, exit 2 -------------------------------------
printf '[1,2,3]\n{"hash_ids": "x", "input_length": 3}\n' >"$tmp/bad.jsonl"
err=$("$bin/radixmesh" analyze "$tmp/bad.jsonl" 2>&1 >/dev/null); rc=$?
[[ $rc -eq 2 ]] && ok || bad "bad trace exit $rc"
expect "$err" "bad.jsonl:2:"
printf 'not json\n' >"$tmp/bad2.jsonl"
err=$("$bin/radixmesh" analyze "$tmp/bad2.jsonl" 2>&1 >/dev/null); rc=$?
[[ $rc -eq 2 ]] && ok || bad "invalid JSON exit $rc"
expect "$err" "bad2.jsonl:1: invalid JSON"
# A negative timestamp is refused; a file that cannot be read is an error,
# not an empty trace; a chart that cannot be written is an error (exit 1).
printf '{"timestamp": -5, "input_length": 3, "hash_ids": [1]}\n' >"$tmp/neg.jsonl"
err=$("$bin/radixmesh" analyze "$tmp/neg.jsonl" 2>&1 >/dev/null); rc=$?
[[ $rc -eq 2 ]] && ok || bad "negative timestamp exit $rc"
expect "$err" "neg.jsonl:1: \"timestamp\" must be a non-negative integer"
err=$("$bin/radixmesh" analyze "$tmp" 2>&1 >/dev/null); rc=$?
[[ $rc -eq 2 ]] && ok || bad "analyze of a directory exit $rc"
expect "$err" "cannot read: Is a directory"
for svg in "$tmp/no/such/dir.svg" /dev/full; do
  out=$("$bin/radixmesh" analyze "$tmp/tiny.jsonl" --svg "$svg" 2>"$tmp/svg.err"); rc=$?
  [[ $rc -eq 1 ]] && ok || bad "analyze --svg $svg exit $rc (want 1)"
  [[ $out != *"chart written"* ]] && ok || bad "analyze --svg $svg said the chart was written"
  [[ -s $tmp/svg.err ]] && ok || bad "analyze --svg $svg: no error on stderr"
done
for args in "analyze" "replay --trace x" "analyze f --model gpt-9" "stats" "bogus" "replay --nope" \
            "replay --router 127.0.0.1:1 --trace chat --seed x"; do
  "$bin/radixmesh" $args >/dev/null 2>&1; rc=$?
  [[ $rc -eq 2 ]] && ok || bad "'radixmesh $args' exit $rc (want 2)"
done

# --- workload: generated traces as JSONL, the same for the same seed ----------
for w in agentic chat builtin; do
  "$bin/radixmesh" workload $w --seed 3 --requests 40 >"$tmp/$w.a" 2>"$tmp/$w.log"; rc=$?
  "$bin/radixmesh" workload $w --seed 3 --requests 40 --out "$tmp/$w.b" 2>/dev/null
  [[ $rc -eq 0 && $(wc -l <"$tmp/$w.a") -eq 40 ]] && ok || bad "workload $w: exit $rc, $(wc -l <"$tmp/$w.a") lines"
  cmp -s "$tmp/$w.a" "$tmp/$w.b" && ok || bad "workload $w --seed 3 differs between runs"
  expect "$(cat "$tmp/$w.log")" "$w, seed 3: 40 requests"
done
expect "$(head -1 "$tmp/agentic.a")" '"output_length": '
expect "$(head -1 "$tmp/agentic.a")" '"session": 1, "hash_ids": [0, 1, 2,'
expect "$(cat "$tmp/agentic.log")" "have a request larger than a node's pool"
"$bin/radixmesh" workload chat --seed 4 --requests 40 | cmp -s - "$tmp/chat.a" && bad "seeds 3 and 4 gave the same chat trace" || ok
for args in "workload" "workload bogus" "workload chat --requests x" "workload chat extra args"; do
  "$bin/radixmesh" $args >/dev/null 2>&1; rc=$?
  [[ $rc -eq 2 ]] && ok || bad "'radixmesh $args' exit $rc (want 2)"
done

# --- replay through a live cluster: exact hit counts -----------------------------
# Blocks of 64 tokens, page 16. Hits: 0, 128 (blocks 1-2), 0, 192 (1-3),
# 64 (block 4; the 23-token tail of block 6 is partial). Query: 727 tokens.
# Replies scale like prompts (x 64/512): 10, 20, 1, 30, 5 tokens.
# Placement (2 nodes, 2 choices): requests 1, 2, 4 share blocks and a node A;
# request 3 is new and goes to the node that served fewer (B), 5 follows it.
# Work = uncached prompt + reply: A 128+10 + 64+20 + 64+30 = 316,
# B 64+1 + 23+5 = 93; total 409, max/mean 316 / 204.5 = 632/409.
cat >"$tmp/trace.jsonl" <<'JSON'
{"timestamp": 0, "input_length": 1024, "output_length": 80, "hash_ids": [1, 2]}
{"timestamp": 5, "input_length": 1536, "output_length": 160, "hash_ids": [1, 2, 3]}
{"timestamp": 9, "input_length": 512, "output_length": 8, "hash_ids": [4]}
{"timestamp": 12, "input_length": 2048, "output_length": 240, "hash_ids": [1, 2, 3, 5]}
{"timestamp": 20, "input_length": 700, "output_length": 40, "hash_ids": [4, 6]}
JSON
local_cluster "$tmp/cluster" 2 || fatal "cluster did not start"
both_up() { "$bin/radixmesh" stats --router "$router" 2>/dev/null | grep -q '2/2 nodes healthy'; }
poll 30 both_up || bad "the router did not put both nodes on its ring"
out=$("$bin/radixmesh" replay --router "$router" --trace "$tmp/trace.jsonl" --block-tokens 64 \
      --speed 10 --ttft-model 5000 --json 2>/dev/null); rc=$?
[[ $rc -eq 0 ]] && ok || bad "replay exit $rc"
expect "$out" "token hit rate 0.5282: 384 of 727 prompt tokens came from cache"
expect "$out" "cluster's own count: 384 hit / 727 query tokens -> equal to the client's"
expect "$out" "requests per node (max/mean 1.200, spills 0)"
expect "$out" "work per node, uncached prompt + reply tokens (max/mean 1.545, total 409)"
if tail -1 <<<"$out" | python3 -c '
import json, sys
o = json.loads(sys.stdin.read())
for k in ("requests", "token_hit_rate", "load_max_mean", "per_node", "errors", "work_tokens",
          "work_max_mean", "per_node_work"):
    assert k in o, k
assert o["requests"] == 5 and o["errors"] == 0
assert o["hit_tokens"] == 384 and o["query_tokens"] == 727
assert o["cluster_hit_tokens"] == 384 and o["cluster_query_tokens"] == 727
assert sorted(o["per_node"].values()) == [2, 3], o["per_node"]
assert abs(o["load_max_mean"] - 1.2) < 1e-9, o["load_max_mean"]
assert sorted(o["per_node_work"].values()) == [93, 316], o["per_node_work"]
assert o["work_tokens"] == 409
assert abs(o["work_max_mean"] - 632 / 409) < 1e-9, o["work_max_mean"]
# The node that served three requests is the one that did 316 of the work.
busy = max(o["per_node"], key=o["per_node"].get)
assert o["per_node_work"][busy] == 316
assert abs(o["ttft_saved_seconds"] - 384 / 5000) < 1e-9
# The hit budget over the run: nothing is evicted, so one unbounded cache
# and one of the summed pools hit exactly what the cluster hit (offline).
b = o["hit_budget"]
assert b["exact"] and b["ideal_pool_pages"] == 2 * 65536, b
assert b["infinite"] == b["ideal"] == b["achieved"] == 384 / 727, b
assert b["delivered"] is None
assert [p["memory"] for p in b["memory_curve"]] == [0.25, 0.5, 1, 2, 4]
assert b["memory_curve"][2]["hit_rate"] == b["achieved"]
assert all(p["hit_rate"] is None or 0 <= p["hit_rate"] <= 1 for p in b["memory_curve"])
'; then ok; else bad "--json schema/values"; fi
expect "$out" "hit budget over this replay: infinite 52.8% -> ideal 52.8% -> achieved 52.8% -> delivered -"
expect "$out" "infinite and ideal exact (offline: one cache of 131072 pages"
# A trace on an epoch clock (ms since 1970) is paced from its first
# request, not from 0 (it used to wait ~54 years at --speed 1).
printf '{"timestamp": 1700000000000, "input_length": 100, "hash_ids": [7]}\n{"timestamp": 1700000000050, "input_length": 100, "hash_ids": [7]}\n' >"$tmp/epoch.jsonl"
out=$(timeout 120 "$bin/radixmesh" replay --router "$router" --trace "$tmp/epoch.jsonl" \
      --namespace epoch --speed 1 --json 2>"$tmp/epoch.err"); rc=$?
[[ $rc -eq 0 ]] && ok || bad "replay of an epoch-clock trace at --speed 1: exit $rc"
expect "$(tail -1 <<<"$out")" '"requests":2,'
expect "$(cat "$tmp/epoch.err")" "the trace spans 50 ms; at --speed 1 the replay takes 50 ms or more"
# One whose lines mix the two clocks would wait decades: refused up front.
printf '{"timestamp": 0, "input_length": 100, "hash_ids": [7]}\n{"timestamp": 1700000000000, "input_length": 100, "hash_ids": [7]}\n' >"$tmp/mixed.jsonl"
timeout 120 "$bin/radixmesh" replay --router "$router" --trace "$tmp/mixed.jsonl" \
  --namespace mixed --speed 1 >/dev/null 2>"$tmp/mixed.err"; rc=$?
[[ $rc -eq 2 ]] && ok || bad "replay of a mixed-clock trace at --speed 1: exit $rc, not 2"
expect "$(cat "$tmp/mixed.err")" "the trace spans 53.9 years (timestamps 0 to 1700000000000 ms): at --speed 1 pacing it would take 53.9 years; are timestamps from 0 mixed"
# A speed too small for any trace is named as the cause instead.
"$bin/radixmesh" replay --router "$router" --trace "$tmp/epoch.jsonl" --speed 1e-300 \
  >/dev/null 2>"$tmp/slow.err"; rc=$?
[[ $rc -eq 2 ]] && ok || bad "replay at --speed 1e-300: exit $rc, not 2"
expect "$(cat "$tmp/slow.err")" "pacing it would take 1.58e+291 years; is --speed meant to be that small?"
# The same trace with 4 clients: per-conversation order keeps the counts.
out=$("$bin/radixmesh" replay --router "$router" --trace "$tmp/trace.jsonl" --block-tokens 64 \
      --namespace other --concurrency 4 2>/dev/null)
expect "$out" "384 of 727 prompt tokens"
# A generated workload replays as its written trace does: same requests,
# same prompt tokens (placement may differ with the hot prefixes it builds).
gen=$("$bin/radixmesh" replay --router "$router" --trace chat --seed 3 --limit 40 \
      --block-tokens 64 --namespace gen --json 2>/dev/null | tail -1)
file=$("$bin/radixmesh" replay --router "$router" --trace "$tmp/chat.a" --block-tokens 64 \
       --namespace file --json 2>/dev/null | tail -1)
if python3 -c '
import json, sys
g, f = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert g["requests"] == f["requests"] == 40 and g["errors"] == f["errors"] == 0
assert g["query_tokens"] == f["query_tokens"] > 0
assert g["work_tokens"] >= g["query_tokens"] - g["hit_tokens"]
' "$gen" "$file"; then ok; else bad "replay --trace chat vs its JSONL: $gen / $file"; fi
out=$("$bin/radixmesh" stats --router "$router")
expect "$out" "2/2 nodes healthy"
expect "$out" "hit budget (since start): infinite "
expect "$out" "memory curve: 0.25x "
# 1x is the achieved rate; the estimators' own 1x figure stands beside it
# ("-" when there is none: a sampled estimate past 100% is no estimate).
if grep -qE ' 1x [0-9.]+% \(estimate ([0-9.]+%|-)\) 2x ' <<<"$out"; then ok
else bad "stats: no 1x estimate beside the achieved 1x point: $(grep 'memory curve' <<<"$out")"; fi
expect "$out" "node-0"
expect "$out" "node-1"
expect "$out" "DROPPED TOK"
out=$("$bin/radixmesh" stats --node "$(sed -n 's/^LISTENING //p' "$tmp/cluster/node-0.out")")
expect "$out" "hit_budget_sampling_rate 0.03125"
expect "$out" "hit_rate_at_memory_2 "
expect "$out" "dropped_tokens_total 0"
summary
