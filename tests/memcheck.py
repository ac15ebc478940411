#!/usr/bin/env python3
"""Runs every ctest test with a label (default "unit") under a checker such
as valgrind, as ctest would run it: the same command line, environment and
working directory. The list is ctest's own (--show-only=json-v1), so a unit
test added to CMakeLists.txt is checked without touching tests/run.sh.

A test whose ctest environment sets RM_MEMCHECK_ARGS runs with those
arguments instead of its own (rm_add_test's MEMCHECK_ARGS: fewer iterations
under a checker tens of times slower).

Prints every failure with its full output (the checker's report is there)
and a summary line; exits 1 if a test failed, or if none was found.

Usage: memcheck.py BUILD_DIR [--label unit] [-j N] -- CHECKER [ARG...]
"""
import argparse
import concurrent.futures
import json
import os
import shlex
import subprocess
import sys
import time

# Past this a test is taken as hung (under memcheck a unit test takes
# seconds to a few minutes).
TIMEOUT_S = 1200


def tests_of(build, label):
    out = subprocess.run(["ctest", "-L", label, "--show-only=json-v1"], cwd=build, check=True,
                         capture_output=True, text=True).stdout
    for t in json.loads(out)["tests"]:
        props = {p["name"]: p["value"] for p in t.get("properties", [])}
        env = dict(os.environ)
        env.update(kv.split("=", 1) for kv in props.get("ENVIRONMENT", []))
        cmd = list(t["command"])
        if "RM_MEMCHECK_ARGS" in env:
            cmd = cmd[:1] + shlex.split(env.pop("RM_MEMCHECK_ARGS"))
        yield t["name"], cmd, env, props.get("WORKING_DIRECTORY", build)


def run(checker, name, cmd, env, cwd):
    t0 = time.monotonic()
    try:
        p = subprocess.run([*checker, *cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, errors="replace",
                           timeout=TIMEOUT_S)
        rc, out = p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        out = e.stdout or ""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        rc, out = "timeout", out + f"\n(killed after {TIMEOUT_S} s)\n"
    return name, cmd, rc, out, time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build")
    ap.add_argument("--label", default="unit")
    ap.add_argument("-j", type=int, default=os.cpu_count() or 1)
    argv = sys.argv[1:]
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        ap.error("no checker command after --")
    cut = argv.index("--")
    a, checker = ap.parse_args(argv[:cut]), argv[cut + 1:]
    tests = list(tests_of(a.build, a.label))
    if not tests:
        print(f"memcheck: no test labelled {a.label!r} in {a.build}")
        return 1
    failed = []
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=a.j) as pool:
        futs = [pool.submit(run, checker, *t) for t in tests]
        for f in concurrent.futures.as_completed(futs):
            name, cmd, rc, out, secs = f.result()
            if rc != 0:
                failed.append(name)
                print(f"--- {name} FAILED under {checker[0]} (exit {rc}, {secs:.1f} s): "
                      f"{shlex.join(cmd)}\n{out.rstrip()}\n--- end of {name}", flush=True)
            else:
                print(f"{name}: ok ({secs:.1f} s)", flush=True)
    print(f"memcheck: {len(tests)} tests labelled {a.label!r} under {checker[0]}, "
          f"{len(tests) - len(failed)} passed, {len(failed)} failed "
          f"({time.monotonic() - t0:.0f} s){': ' + ' '.join(sorted(failed)) if failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
