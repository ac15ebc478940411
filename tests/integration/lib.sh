# lib.sh -- shared by the shell integration tests (source it).
#
#   ok / bad MSG        count a passed / failed check (bad prints MSG)
#   expect TEXT NEEDLE  ok if TEXT contains NEEDLE, else bad
#   poll SECS CMD...    runs CMD until it succeeds; returns 1 once SECS have
#                       passed (x10 when RM_TEST_SLOW=1: daemons under
#                       valgrind). Waits are always conditions with a
#                       deadline, never fixed sleeps.
#   summary             prints "N passed, M failed"; its status is the verdict
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
expect() { if grep -qF -- "$2" <<<"$1"; then ok; else bad "missing '$2'"; fi; }
summary() {
  echo "$pass passed, $fail failed"
  [[ $fail -eq 0 ]]
}

poll() {
  local secs=$1
  shift
  [[ "${RM_TEST_SLOW:-}" == 1 ]] && secs=$((secs * 10))
  local end=$((SECONDS + secs))
  until "$@"; do
    ((SECONDS >= end)) && return 1
    read -r -t 0.05 <> <(:) || true # one poll step, bounded by the deadline
  done
}
