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


class NodeHostile(unittest.TestCase):
    """Clients that hoard a cache node's resources: namespace slots, the KV
    pool through a stalled WriteKV, pinned pages through a ReadKV nobody
    reads, and leases. Each is bounded and the node recovers on its own."""

    def node(self, *flags):
        import grpc
        d = rmtest.Daemon([ARGS.node, "--listen", "127.0.0.1:0", "--shutdown-delay-ms", "0",
                           "--node-id", "hostile", *flags])
        ch = grpc.insecure_channel(d.addr)
        self.addCleanup(lambda: self.assertEqual(d.stop(), 0))
        self.addCleanup(ch.close)
        return d, pb_grpc.CacheNodeStub(ch)

    @staticmethod
    def stats(stub):
        return stub.Stats(pb.StatsRequest(), timeout=30)

    @staticmethod
    def write_kv(stub, ns, toks, kvb):
        kv = b"\x05" * (len(toks) // 16 * 16 * kvb)
        msgs = [pb.WriteKVChunk(namespace=ns, tokens=toks, kv=kv[:1 << 20])]
        msgs += [pb.WriteKVChunk(kv=kv[o:o + (1 << 20)]) for o in range(1 << 20, len(kv), 1 << 20)]
        return stub.WriteKV(iter(msgs), timeout=120)

    def refused(self, fn):
        """fn()'s gRPC status code, None when it succeeded."""
        import grpc
        try:
            fn()
            return None
        except grpc.RpcError as e:
            return e.code()

    def test_namespace_churn_recovers(self):
        """8 leased Matches on 8 fresh namespaces with short leases, 12
        times over, against --max-namespaces 8: each round gets its slots
        once the last round's leases end (they used to stay full for good);
        refusals are counted and logged once per 10 s, not per request."""
        import grpc
        import time
        d, stub = self.node("--max-namespaces", "8")
        before = rmtest.rss_kib(d.pid)
        start = time.monotonic()
        refusals = 0
        for r in range(12):
            for i in range(8):
                req = pb.MatchRequest(namespace=f"model-{r}-{i}", tokens=[1] * 32, lease=True,
                                      lease_ttl_ms=500)

                def lease():
                    nonlocal refusals
                    code = self.refused(lambda: stub.Match(req, timeout=30))
                    refusals += code == grpc.StatusCode.RESOURCE_EXHAUSTED
                    return code is None
                rmtest.poll(f"a namespace slot for round {r}", lease)
        st = self.stats(stub)
        after = rmtest.rss_kib(d.pid)
        report("node: namespace churn (96 namespaces, 8 slots)", before, after)
        self.assertGreater(refusals, 0)  # each round waited for the last one's leases
        self.assertEqual(st.namespace_refusals_total, refusals)
        self.assertLessEqual(st.namespaces, 8)
        rmtest.poll("the refusal log line", lambda: d.logged("new namespace"))
        lines = sum("new namespace" in line for line in d.log)
        self.assertLessEqual(lines, 1 + (time.monotonic() - start) // 10)

    def test_stalled_write_gives_the_pool_back(self):
        """A WriteKV naming 4,096 tokens reserves the whole pool and then
        sends nothing: the idle bound cancels it and frees the pool."""
        import queue
        import grpc
        d, stub = self.node("--kv-bytes-per-token", "1024", "--pool-tokens", "4096",
                            "--kv-stream-idle-ms", "1000")
        before = rmtest.rss_kib(d.pid)
        q = queue.Queue()
        q.put(pb.WriteKVChunk(namespace="w", tokens=list(range(4096))))
        fut = stub.WriteKV.future(iter(q.get, None), timeout=300)
        try:
            rmtest.poll("the pool reserved", lambda: fut.done() or
                        self.stats(stub).protected_pages == 256)
            # Meanwhile nobody else can write...
            self.assertEqual(self.refused(lambda: self.write_kv(stub, "x", [7] * 64, 1024)),
                             grpc.StatusCode.RESOURCE_EXHAUSTED)
            rmtest.poll("the stalled write cancelled", fut.done, timeout=60)
        finally:
            q.put(None)
        self.assertEqual(fut.exception().code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        st = self.stats(stub)
        self.assertEqual(st.free_pages, st.pool_pages)
        # ...and afterwards the pool serves again.
        self.assertEqual(self.write_kv(stub, "x", [7] * 64, 1024).inserted_tokens, 64)
        report("node: stalled WriteKV holding the whole pool", before, rmtest.rss_kib(d.pid))

    def test_unread_read_unpins_at_lease_expiry(self):
        """A ReadKV of 16 MiB the client never reads, under a 500 ms lease:
        the pages are unpinned when the lease ends (the idle bound is far
        off), not when the client finally goes away."""
        import grpc
        d, stub = self.node("--kv-bytes-per-token", "4096", "--pool-tokens", "4096",
                            "--kv-stream-idle-ms", "600000")
        toks = list(range(4096))
        self.write_kv(stub, "r", toks, 4096)
        before = rmtest.rss_kib(d.pid)
        m = stub.Match(pb.MatchRequest(namespace="r", tokens=toks, lease=True, lease_ttl_ms=500))
        it = stub.ReadKV(pb.ReadKVRequest(lease_id=m.lease_id), timeout=300)
        it.initial_metadata()  # the read holds its pin
        rmtest.poll("the pages unpinned", lambda: self.stats(stub).protected_pages == 0)
        self.assertEqual(self.refused(lambda: [c for c in it]), grpc.StatusCode.DEADLINE_EXCEEDED)
        report("node: unread ReadKV past its lease", before, rmtest.rss_kib(d.pid))

    def test_lease_hoarder_is_capped(self):
        """One caller takes leases until refused: it gets its share (half of
        --max-leases), the refusal names the limit and the caller, the rest
        is left for others, the node keeps serving, and a burst of refused
        requests logs one line, not one per request."""
        import grpc
        import time
        d, stub = self.node("--max-leases", "200")
        before = rmtest.rss_kib(d.pid)
        start = time.monotonic()
        req = pb.MatchRequest(namespace="h", tokens=[3] * 64, lease=True, lease_ttl_ms=600000)
        held = []
        for _ in range(300):
            try:
                held.append(stub.Match(req, timeout=30).lease_id)
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
                self.assertIn("--max-leases-per-peer 100", e.details())
                self.assertIn("127.0.0.1", e.details())
                break
        self.assertEqual(len(held), 100)
        for _ in range(200):
            self.assertEqual(self.refused(lambda: stub.Match(req, timeout=30)),
                             grpc.StatusCode.RESOURCE_EXHAUSTED)
        st = self.stats(stub)
        self.assertEqual((st.active_leases, st.peer_lease_refusals_total), (100, 201))
        # Still serving: unleased Matches, Inserts, and a lease once one is back.
        self.assertEqual(stub.Insert(pb.InsertRequest(namespace="h", tokens=[3] * 64),
                                     timeout=30).inserted_tokens, 64)
        self.assertEqual(stub.Match(pb.MatchRequest(namespace="h", tokens=[3] * 64),
                                    timeout=30).matched_tokens, 64)
        stub.Release(pb.ReleaseRequest(lease_id=held.pop()), timeout=30)
        held.append(stub.Match(req, timeout=30).lease_id)
        rmtest.poll("the refusal log line", lambda: d.logged("over a caller's share"))
        lines = sum("over a caller's share" in line for line in d.log)
        self.assertLessEqual(lines, 1 + (time.monotonic() - start) // 10)
        report("node: one caller hoarding leases", before, rmtest.rss_kib(d.pid))


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
