#!/usr/bin/python3
"""The worker demo's pieces, bounded: deploy/local/worker_cluster.sh (two
reference workers with their KV nodes and sidecars behind a gateway
router; a small model) and radixmesh-chat replaying a chat workload (text
prompts behind one shared system prompt) through the gateway.

Asserts: every request succeeds; the second turn of every conversation
reports cached tokens > 0 (the workers' usage); the router's /api/cluster
carries the workers' scraped hit rate (> 0) beside its predicted one
(> 0); and the same workload against one worker without any cache gives
identical replies, turn by turn (fixed seeds).

Usage: test_worker_demo.py BIN_DIR
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import rmtest

BIN = None
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = "--layers 2 --d-model 64 --heads 4 --vocab 512 --max-context 4096"
CHAT = ["--conversations", "4", "--turns", "3", "--concurrency", "2", "--system-bytes", "512",
        "--user-bytes", "48", "--max-tokens", "8", "--seed", "3", "--json"]


def chat(url, *extra):
    """Per-request records and the summary of one radixmesh-chat run."""
    p = subprocess.run([os.path.join(BIN, "radixmesh-chat"), "--url", url, *CHAT, *extra],
                       capture_output=True, text=True, timeout=rmtest.deadline_s(300))
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    records = [x for x in lines if "summary" not in x]
    summary = [x["summary"] for x in lines if "summary" in x]
    assert summary, f"radixmesh-chat printed no summary (exit {p.returncode}): {p.stderr}"
    return p.returncode, records, summary[0]


class WorkerDemoTest(unittest.TestCase):
    def test_chat_through_the_gateway(self):
        script = os.path.join(ROOT, "deploy", "local", "worker_cluster.sh")
        env = dict(os.environ, RADIXMESH_BIN=BIN, WORKER_FLAGS=MODEL)
        with tempfile.TemporaryDirectory() as state:
            try:
                gw = subprocess.run([script, "start", state, "2"], env=env, check=True,
                                    capture_output=True, text=True,
                                    timeout=rmtest.deadline_s(120)).stdout.strip()
                with open(os.path.join(state, "router_http.addr")) as f:
                    rhttp = f.read().strip()
                rc, records, summary = chat(gw, "--router-http", rhttp, "--wait-workers", "2")
            finally:
                subprocess.run([script, "stop", state], env=env, timeout=rmtest.deadline_s(120))
        self.assertEqual(rc, 0)
        self.assertEqual((summary["requests"], summary["failed"], summary["skipped"]), (12, 0, 0))
        self.assertTrue(all(r["status"] == 200 for r in records))
        for conv in range(4):
            second = [r for r in records if r["conversation"] == conv and r["turn"] == 2]
            self.assertEqual(len(second), 1)
            self.assertGreater(second[0]["cached_tokens"], 0, second[0])
        cluster = summary["cluster"]
        self.assertIsNotNone(cluster["worker_hit_rate"])
        self.assertGreater(cluster["worker_hit_rate"], 0)
        self.assertGreater(cluster["hit_rate"], 0)
        self.assertGreaterEqual(cluster["worker_query_tokens_total"], summary["prompt_tokens"])
        print(f"demo (small model): the workers' hit rate {summary['hit_rate']:.3f} from usage, "
              f"{cluster['worker_hit_rate']:.3f} scraped; predicted {cluster['hit_rate']:.3f}",
              file=sys.stderr)

        # The same workload on a worker without a cache: the same replies.
        ref = rmtest.Daemon([os.path.join(BIN, "radixmesh-worker"), "--http", "127.0.0.1:0",
                             "--cache", "none", "--log-level", "warn", *MODEL.split()],
                            until="HTTP")
        try:
            rc, plain, _ = chat(ref.http)
        finally:
            code = ref.stop()
        self.assertEqual((rc, code), (0, 0))
        key = lambda r: (r["conversation"], r["turn"])
        self.assertEqual([(key(r), r["text"]) for r in sorted(plain, key=key)],
                         [(key(r), r["text"]) for r in sorted(records, key=key)])
        self.assertEqual(sum(r["cached_tokens"] for r in plain), 0)


if __name__ == "__main__":
    BIN = os.path.abspath(sys.argv.pop(1))
    sys.exit(rmtest.run_tests(sys.argv[1:]))
