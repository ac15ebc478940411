#!/usr/bin/python3
"""Wire-contract test: a Python grpcio client, generated from proto/ at test
time, talks to a real radixmesh-node. It proves that clients in other
languages can use the node with nothing but the .proto file.

Usage: test_node_grpc.py --node PATH/TO/radixmesh-node --proto-dir PROTO_DIR
"""
import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import time
import unittest

import grpc
from grpc_tools import protoc

ARGS = None
pb = pb_grpc = health_pb = health_grpc = None


def generate(proto_dir, out_dir):
    # The health proto is compiled from a flat copy: a generated package
    # named grpc.health.v1 would shadow the installed grpc module. Wire
    # names come from the proto's package line, so they are unchanged.
    health_dir = os.path.join(out_dir, "health_src")
    os.makedirs(health_dir)
    with open(os.path.join(proto_dir, "grpc/health/v1/health.proto")) as src, \
            open(os.path.join(health_dir, "health.proto"), "w") as dst:
        dst.write(src.read())
    for inc, rel in ((proto_dir, "radixmesh.proto"), (health_dir, "health.proto")):
        rc = protoc.main(["protoc", f"-I{inc}", f"--python_out={out_dir}",
                          f"--grpc_python_out={out_dir}", os.path.join(inc, rel)])
        if rc != 0:
            raise RuntimeError(f"protoc failed on {rel}")
    sys.path.insert(0, out_dir)
    global pb, pb_grpc, health_pb, health_grpc
    pb = importlib.import_module("radixmesh_pb2")
    pb_grpc = importlib.import_module("radixmesh_pb2_grpc")
    health_pb = importlib.import_module("health_pb2")
    health_grpc = importlib.import_module("health_pb2_grpc")


class Node:
    """A radixmesh-node on a free loopback port, stopped on exit."""

    def __init__(self, *extra):
        self.proc = subprocess.Popen(
            [ARGS.node, "--listen", "127.0.0.1:0", "--node-id", "py1",
             "--shutdown-delay-ms", "0", "--log-level", "warn", *extra],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # blocks until the port is known
        if not line.startswith("LISTENING "):
            self.proc.kill()
            raise RuntimeError(f"node did not start: {line!r}")
        self.addr = line.split()[1]
        self.channel = grpc.insecure_channel(self.addr)
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.stub = pb_grpc.CacheNodeStub(self.channel)

    def close(self):
        self.channel.close()
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None


def tokens(seed, n):
    return [(seed * 7919 + i * 31) % 128000 for i in range(n)]


class MetadataNodeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = Node("--max-request-tokens", "5000")
        cls.stub = cls.node.stub

    @classmethod
    def tearDownClass(cls):
        assert cls.node.close() == 0

    def test_cycle_and_stats(self):
        toks = tokens(1, 612)
        m = self.stub.Match(pb.MatchRequest(namespace="py", tokens=toks, lease=True))
        self.assertEqual(m.matched_tokens, 0)
        self.assertNotEqual(m.lease_id, 0)
        self.assertEqual(m.node_id, "py1")
        ins = self.stub.Insert(pb.InsertRequest(namespace="py", tokens=toks, lease_id=m.lease_id))
        self.assertEqual((ins.cached_tokens, ins.inserted_tokens), (0, 608))
        self.stub.Release(pb.ReleaseRequest(lease_id=m.lease_id))
        m2 = self.stub.Match(pb.MatchRequest(namespace="py", tokens=toks))
        self.assertEqual(m2.matched_tokens, 608)
        before = self.stub.Stats(pb.StatsRequest())
        peek = self.stub.Match(pb.MatchRequest(namespace="py", tokens=toks, peek=True))
        self.assertEqual(peek.matched_tokens, 608)
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.Match(pb.MatchRequest(namespace="py", tokens=toks, peek=True, lease=True))
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        st = self.stub.Stats(pb.StatsRequest())
        self.assertEqual(st.match_requests_total, before.match_requests_total)  # peeks don't count
        self.assertEqual(st.node_id, "py1")
        self.assertEqual(st.page_tokens, 16)
        self.assertGreaterEqual(st.match_requests_total, 2)
        self.assertEqual(st.free_pages + st.evictable_pages + st.protected_pages, st.pool_pages)
        self.assertEqual(st.kv_bytes_per_token, 0)

    def test_errors_have_codes_and_messages(self):
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.Release(pb.ReleaseRequest(lease_id=987654321))
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn("unknown lease", e.exception.details())
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.Match(pb.MatchRequest(namespace="py", tokens=tokens(2, 5001)))
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("5000 tokens", e.exception.details())
        raw = self.node.channel.unary_unary("/radixmesh.v1.CacheNode/Match")
        with self.assertRaises(grpc.RpcError) as e:
            raw(b"\x12\xff\xff\x03garbage")
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        nope = self.node.channel.unary_unary("/radixmesh.v1.CacheNode/Nope")
        with self.assertRaises(grpc.RpcError) as e:
            nope(b"")
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        # The node keeps serving.
        self.assertEqual(self.stub.Match(pb.MatchRequest(tokens=[])).matched_tokens, 0)

    def test_health(self):
        h = health_grpc.HealthStub(self.node.channel)
        r = h.Check(health_pb.HealthCheckRequest())
        self.assertEqual(r.status, health_pb.HealthCheckResponse.SERVING)
        r = h.Check(health_pb.HealthCheckRequest(service="radixmesh.v1.CacheNode"))
        self.assertEqual(r.status, health_pb.HealthCheckResponse.SERVING)
        with self.assertRaises(grpc.RpcError) as e:
            h.Check(health_pb.HealthCheckRequest(service="other"))
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)


class KVNodeTest(unittest.TestCase):
    KVB = 256

    @classmethod
    def setUpClass(cls):
        cls.node = Node("--kv-bytes-per-token", str(cls.KVB), "--pool-tokens", "65536")
        cls.stub = cls.node.stub

    @classmethod
    def tearDownClass(cls):
        assert cls.node.close() == 0

    def test_write_then_read(self):
        toks = tokens(3, 5000)
        aligned = len(toks) // 16 * 16
        kv = b"".join(bytes([(toks[i] + b) & 0xFF for b in range(self.KVB)])
                      for i in range(aligned))

        def chunks():
            step = 300_000
            yield pb.WriteKVChunk(namespace="kv", tokens=toks, kv_start_token=0, kv=kv[:step])
            for off in range(step, len(kv), step):
                yield pb.WriteKVChunk(kv=kv[off:off + step])

        rep = self.stub.WriteKV(chunks())
        self.assertEqual(rep.inserted_tokens, aligned)
        m = self.stub.Match(pb.MatchRequest(namespace="kv", tokens=toks, lease=True))
        self.assertEqual(m.matched_tokens, aligned)
        got = bytearray()
        expect_offset = 0
        for c in self.stub.ReadKV(pb.ReadKVRequest(lease_id=m.lease_id)):
            self.assertEqual(c.token_offset, expect_offset)
            self.assertEqual(len(c.kv), c.token_count * self.KVB)
            expect_offset += c.token_count
            got += c.kv
        self.assertEqual(bytes(got), kv)
        self.stub.Release(pb.ReleaseRequest(lease_id=m.lease_id))

    def test_short_write_is_refused(self):
        toks = tokens(4, 64)

        def chunks():
            yield pb.WriteKVChunk(namespace="kv", tokens=toks, kv=b"\x01" * 100)

        with self.assertRaises(grpc.RpcError) as e:
            self.stub.WriteKV(chunks())
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        m = self.stub.Match(pb.MatchRequest(namespace="kv", tokens=toks))
        self.assertEqual(m.matched_tokens, 0)
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.Insert(pb.InsertRequest(namespace="kv", tokens=toks))
        self.assertEqual(e.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--node", required=True)
    ap.add_argument("--proto-dir", required=True)
    ARGS, rest = ap.parse_known_args()
    with tempfile.TemporaryDirectory() as out:
        generate(ARGS.proto_dir, out)
        prog = unittest.main(argv=[sys.argv[0], "-v", *rest], exit=False)
        res = prog.result
        failed = len(res.failures) + len(res.errors)
        print(f"{res.testsRun - failed} passed, {failed} failed")
        sys.exit(1 if failed or res.testsRun == 0 else 0)
