#!/usr/bin/env bash
# Long fuzzing sessions: builds the libFuzzer targets (clang, ASan+UBSan) and
# runs each for a fixed number of executions (default 10 M), two at a time,
# starting from the seed corpus in tests/fuzz/corpus (copied: the tree is not
# modified; new inputs land in build-fuzz/corpus/TARGET). Prints executions,
# time and crashes per target; crash inputs are kept as
# build-fuzz/crash-TARGET-*. Exits non-zero on any crash.
#   scripts/fuzz.sh [RUNS] [TARGET...]
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-10000000}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(requests cache flags gateway kv_events http_req)
"$root/scripts/deps.sh" --test || exit 1
CC=clang "$root/scripts/build.sh" "$root/build-fuzz" -DRM_FUZZ=ON >/dev/null || exit 1
out=$root/build-fuzz
one() {
  local t=$1 start=$SECONDS
  mkdir -p "$out/corpus/$t"
  cp -n "$root/tests/fuzz/corpus/$t"/* "$out/corpus/$t/" 2>/dev/null
  "$out/fuzz_$t" -runs="$runs" -print_final_stats=1 -artifact_prefix="$out/crash-$t-" \
    "$out/corpus/$t" >"$out/fuzz_$t.log" 2>&1
  local rc=$?
  local execs
  execs=$(awk '/stat::number_of_executed_units/ {print $NF}' "$out/fuzz_$t.log")
  local crashes
  crashes=$(find "$out" -maxdepth 1 -name "crash-$t-*" | wc -l)
  printf '%-9s %12s execs in %5d s, exit %d, crashes %d\n' "$t" "${execs:-?}" $((SECONDS - start)) \
    "$rc" "$crashes"
  [[ $rc -eq 0 && $crashes -eq 0 ]]
}
fail=0
pids=()
for t in "${targets[@]}"; do
  one "$t" &
  pids+=($!)
  if ((${#pids[@]} == 2)); then
    wait "${pids[0]}" || fail=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || fail=1; done
exit $fail
