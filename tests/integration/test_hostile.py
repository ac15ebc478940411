#!/usr/bin/python3
"""Hostile clients against both daemons, on loopback only: floods that are
never read, connection storms, half-sent requests, oversized and malformed
input, misbehaving workers behind the gateway, lease and namespace hoarding.

Each case is bounded in count and time, checks that the daemon keeps
serving and that its memory stays bounded (RSS before/after is printed).

Usage: test_hostile.py --node PATH --router PATH --proto-dir DIR [unittest args]
"""
import argparse
import os
import sys
import tempfile
import unittest

import rmtest

ARGS = None
pb = pb_grpc = health_pb = health_grpc = None


def report(case, before_kib, after_kib):
    print(f"{case}: RSS {before_kib} KiB -> {after_kib} KiB", file=sys.stderr)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--node", required=True)
    ap.add_argument("--router", required=True)
    ap.add_argument("--proto-dir", required=True)
    ARGS, rest = ap.parse_known_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as out:
        pb, pb_grpc, health_pb, health_grpc = rmtest.grpc_modules(ARGS.proto_dir, out)
        prog = unittest.main(argv=[sys.argv[0], "-v", *rest], exit=False)
        res = prog.result
        failed = len(res.failures) + len(res.errors)
        print(f"{res.testsRun - failed} passed, {failed} failed")
        sys.exit(1 if failed or res.testsRun == 0 else 0)
