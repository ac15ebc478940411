# shellcheck shell=bash
# Shell functions shared by the deploy/local scripts (sourced, not run).
# The caller sets `set -euo pipefail`; cluster scripts set $dir (the state
# directory) before calling launch.

# Waits (at most SECS s, default 30, or until the process exits) for the
# "WORD host:port" line a daemon prints once it listens; prints host:port.
wait_line() {
  local word=$1 out=$2 pid=$3 end=$((SECONDS + ${4:-30}))
  while ((SECONDS < end)); do
    if grep -q "^$word " "$out" 2>/dev/null; then
      sed -n "s/^$word //p" "$out" | head -1
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    read -r -t 0.05 <> <(:) || true # one poll step
  done
  return 1
}

# Starts "$@" with its output in $dir/NAME.out/.log and its pid appended to
# $dir/pids; prints its WORD address, waiting at most $LAUNCH_WAIT s (30).
launch() {
  local name=$1 word=$2
  shift 2
  # shellcheck disable=SC2154 # $dir: the caller's state directory
  "$@" >"$dir/$name.out" 2>"$dir/$name.log" &
  echo $! >>"$dir/pids"
  wait_line "$word" "$dir/$name.out" $! "${LAUNCH_WAIT:-30}" ||
    { echo "$name did not start:" >&2; cat "$dir/$name.log" >&2; return 1; }
}

# The demos' start: install what is missing, build, then set $root, $bin and
# a fresh $state directory that CLUSTER (a script beside this file) stops
# and removes on exit.
demo_setup() {
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  "$root/scripts/deps.sh"
  echo "building..." >&2
  "$root/scripts/build.sh"
  bin=$root/build
  state=$(mktemp -d)
  # shellcheck disable=SC2064 # expand CLUSTER now
  trap "RADIXMESH_BIN=\"\$bin\" \"\$root/deploy/local/$1\" stop \"\$state\" >/dev/null 2>&1; rm -rf \"\$state\"" EXIT
}

# The demos' end: run from a terminal, keep the cluster up until Enter.
demo_hold() {
  if [[ -t 0 ]]; then
    echo "the cluster keeps running for the dashboard; press Enter to stop it"
    read -r _ || true
  fi
}
