# lib.sh -- shared by the shell integration tests (source it).
#
# Checks
#   ok / bad MSG        count a passed / failed check (bad prints MSG)
#   expect TEXT NEEDLE  ok if TEXT contains NEEDLE, else bad
#   summary             prints "N passed, M failed"; its status is the verdict
#   fatal MSG           bad MSG, summary, exit 1: for a precondition the rest
#                       of the test needs
#   skip MSG            prints "SKIP: MSG" and "0 passed, 0 failed", exit 0
# Waiting
#   poll SECS CMD...    runs CMD until it succeeds; returns 1 once SECS have
#                       passed (x10 when RM_TEST_SLOW=1: daemons under
#                       valgrind). Waits are always conditions with a
#                       deadline, never fixed sleeps.
# Cleaning up (whatever way the test ends)
#   at_exit CMD         runs CMD (a string, eval'd) on exit; the last added
#                       runs first
#   make_tmp            sets $tmp to a new directory, removed on exit
# Daemons (their output in $tmp: call make_tmp first)
#   spawn NAME CMD...   runs CMD in the background, stdout in $tmp/NAME.out,
#                       stderr in $tmp/NAME.log, SIGKILLed on exit unless
#                       reaped before; its pid in ${spawned[NAME]}
#   reap NAME           waits for NAME to exit; returns its exit status
#   announced NAME WORD [SECS]
#                       prints the value of the "WORD value" line NAME
#                       printed (LISTENING, HTTP, GATEWAY: their host:port),
#                       waiting for it up to SECS (30); fails without it
#   local_cluster DIR N [-- FLAGS...]
#                       deploy/local/cluster.sh start DIR N with the daemons
#                       of $bin, stopped on exit; sets $router (host:port)
pass=0 fail=0
rm_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
expect() { if grep -qF -- "$2" <<<"$1"; then ok; else bad "missing '$2'"; fi; }
summary() {
  echo "$pass passed, $fail failed"
  [[ $fail -eq 0 ]]
}
fatal() {
  bad "$@"
  summary
  exit 1
}
skip() {
  echo "SKIP: $*"
  echo "0 passed, 0 failed"
  exit 0
}

poll() {
  local secs=$1
  shift
  [[ "${RM_TEST_SLOW:-}" == 1 ]] && secs=$((secs * 10))
  local end=$((SECONDS + secs))
  until "$@"; do
    ((SECONDS >= end)) && return 1
    sleep 0.05 # one poll step, bounded by the deadline
  done
}

rm_exit_cmds=()
rm_run_exit_cmds() {
  local c
  for c in "${rm_exit_cmds[@]}"; do eval "$c"; done
}
at_exit() {
  rm_exit_cmds=("$1" "${rm_exit_cmds[@]}")
  trap rm_run_exit_cmds EXIT
}
make_tmp() {
  tmp=$(mktemp -d)
  at_exit 'rm -rf "$tmp"'
}

declare -A spawned=()
spawn() {
  local name=$1
  shift
  "$@" >"$tmp/$name.out" 2>"$tmp/$name.log" &
  spawned[$name]=$!
  at_exit "rm_kill_spawned $name"
}
reap() { # the exit status; the pid is not ours to kill after this
  local pid=${spawned[$1]}
  unset "spawned[$1]"
  wait "$pid"
}
rm_kill_spawned() {
  [[ -n "${spawned[$1]:-}" ]] || return 0
  kill -9 "${spawned[$1]}" 2>/dev/null
  wait "${spawned[$1]}" 2>/dev/null
}
announced() {
  local out=$tmp/$1.out word=$2
  poll "${3:-30}" grep -q "^$word " "$out" || return 1
  sed -n "s/^$word //p" "$out" | head -1
}

local_cluster() {
  local dir=$1
  at_exit "RADIXMESH_BIN='$bin' '$rm_root/deploy/local/cluster.sh' stop '$dir' >/dev/null 2>&1"
  router=$(RADIXMESH_BIN=$bin "$rm_root/deploy/local/cluster.sh" start "$@")
}
