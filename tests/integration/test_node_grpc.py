#!/usr/bin/python3
"""Wire-contract test: a Python grpcio client, generated from proto/ at test
time, talks to a real radixmesh-node. It proves that clients in other
languages can use the node with nothing but the .proto file.

Usage: test_node_grpc.py --node PATH/TO/radixmesh-node --proto-dir PROTO_DIR
"""
import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import signal
import threading
import unittest

import grpc

import rmtest
from rmtest import grpc_modules, poll

ARGS = None
pb = pb_grpc = health_pb = health_grpc = None


class Node:
    """A radixmesh-node (or, with binary=, another daemon) on a free
    loopback port, stopped on exit."""

    def __init__(self, *extra, binary=None, node_id="py1"):
        args = [binary or ARGS.node, "--listen", "127.0.0.1:0", "--shutdown-delay-ms", "0",
                "--log-level", "warn", *extra]
        if not binary:
            args += ["--node-id", node_id]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # blocks until the port is known
        if not line.startswith("LISTENING "):
            self.proc.kill()
            raise RuntimeError(f"node did not start: {line!r}")
        self.addr = line.split()[1]
        self.channel = grpc.insecure_channel(self.addr)
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.stub = pb_grpc.CacheNodeStub(self.channel)
        self.router = pb_grpc.RouterStub(self.channel)

    def close(self):
        self.channel.close()
        self.proc.stdout.close()
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None


def tokens(seed, n):
    return [(seed * 7919 + i * 31) % 128000 for i in range(n)]


class NodeCase(unittest.TestCase):
    """Tests sharing one node started with FLAGS for the whole class."""
    FLAGS = ()

    @classmethod
    def setUpClass(cls):
        cls.node = Node(*cls.FLAGS)
        cls.stub = cls.node.stub

    @classmethod
    def tearDownClass(cls):
        assert cls.node.close() == 0


class MetadataNodeTest(NodeCase):
    FLAGS = ("--max-request-tokens", "5000")

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


class KVNodeTest(NodeCase):
    KVB = 256
    FLAGS = ("--kv-bytes-per-token", str(KVB), "--pool-tokens", "65536")

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

    def test_empty_write_caches_nothing(self):
        """A WriteKV naming no tokens (or less than a page) is a write of
        nothing: OK, nothing cached (it used to be UB in the node)."""
        for toks in ([], [1, 2, 3]):
            rep = self.stub.WriteKV(iter([pb.WriteKVChunk(namespace="empty", tokens=toks)]))
            self.assertEqual((rep.cached_tokens, rep.inserted_tokens, rep.dropped_tokens), (0, 0, 0))
        st = self.stub.Stats(pb.StatsRequest())
        self.assertEqual(st.free_pages + st.evictable_pages + st.protected_pages, st.pool_pages)
        self.assertEqual(st.protected_pages, 0)


class OversizedTest(unittest.TestCase):
    """A sequence larger than the node's pool (256 tokens here), under a
    lease that ends up pinning every page: Insert and WriteKV answer OK,
    keep what fits, report the rest in dropped_tokens (they used to fail
    with RESOURCE_EXHAUSTED), and the pool's accounting holds."""

    def reply_is(self, rep, cached, inserted, dropped):
        self.assertEqual((rep.cached_tokens, rep.inserted_tokens, rep.dropped_tokens),
                         (cached, inserted, dropped))

    def check_pool(self, node, protected):
        st = stats(node.stub)
        self.assertEqual(st.free_pages + st.evictable_pages + st.protected_pages, st.pool_pages)
        self.assertEqual(st.protected_pages, protected)

    def release_unpins(self, node, lease_id):
        """The lease pins the whole pool (16 pages) until it is released."""
        self.check_pool(node, 16)
        node.stub.Release(pb.ReleaseRequest(lease_id=lease_id))
        self.check_pool(node, 0)

    def test_insert_larger_than_pool(self):
        node = Node("--pool-tokens", "256", node_id="big")
        try:
            toks = tokens(40, 1000)
            m = node.stub.Match(pb.MatchRequest(namespace="o", tokens=toks[:600], lease=True))
            rep = node.stub.Insert(pb.InsertRequest(namespace="o", tokens=toks[:600],
                                                    lease_id=m.lease_id))
            self.reply_is(rep, 0, 256, 336)
            self.check_pool(node, 16)
            rep = node.stub.Insert(pb.InsertRequest(namespace="o", tokens=toks,
                                                    lease_id=m.lease_id))
            self.reply_is(rep, 256, 0, 736)
            self.release_unpins(node, m.lease_id)
        finally:
            self.assertEqual(node.close(), 0)

    def test_drops_reach_the_router_views(self):
        """The tokens a node dropped, as a router shows them: /api/cluster
        and /metrics carry the node's own count."""
        node = Node("--pool-tokens", "256", node_id="drops")
        rtr = rmtest.Daemon([ARGS.router, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                             "--nodes", "drops=" + node.addr, "--stats-interval", "100",
                             "--shutdown-delay-ms", "0", "--log-level", "warn"], until="HTTP")
        try:
            toks = tokens(41, 600)
            m = node.stub.Match(pb.MatchRequest(namespace="d", tokens=toks, lease=True))
            rep = node.stub.Insert(pb.InsertRequest(namespace="d", tokens=toks,
                                                    lease_id=m.lease_id))
            self.reply_is(rep, 0, 256, 336)
            self.assertEqual(stats(node.stub).dropped_tokens_total, 336)

            def shown():
                st, _, body = rmtest.http_request(rtr.http, "GET", "/api/cluster")
                nodes = json.loads(body)["nodes"] if st == 200 else []
                return (len(nodes) == 1 and nodes[0]["dropped_tokens_total"] == 336 and
                        rmtest.metric(rtr.http, "radixmesh_node_dropped_tokens_total",
                                      label='node="drops"') == 336)
            poll("the router's /api/cluster and /metrics to show 336 dropped tokens", shown)
            node.stub.Release(pb.ReleaseRequest(lease_id=m.lease_id))
        finally:
            self.assertEqual(rtr.stop(), 0)
            self.assertEqual(node.close(), 0)

    def test_write_kv_larger_than_pool(self):
        kvb = 16
        node = Node("--kv-bytes-per-token", str(kvb), "--pool-tokens", "256", node_id="bigkv")
        try:
            toks = tokens(41, 800)
            kv = bytes((toks[i] + b) & 0xFF for i in range(len(toks)) for b in range(kvb))
            m = node.stub.Match(pb.MatchRequest(namespace="o", tokens=toks[:480], lease=True))
            rep = node.stub.WriteKV(iter([pb.WriteKVChunk(namespace="o", tokens=toks[:480],
                                                          lease_id=m.lease_id,
                                                          kv=kv[:480 * kvb])]))
            self.reply_is(rep, 0, 256, 224)
            got = b"".join(c.kv for c in node.stub.ReadKV(pb.ReadKVRequest(lease_id=m.lease_id)))
            self.assertEqual(got, kv[:256 * kvb])  # the bytes that fit were kept
            rep = node.stub.WriteKV(iter([pb.WriteKVChunk(namespace="o", tokens=toks,
                                                          kv_start_token=256,
                                                          lease_id=m.lease_id,
                                                          kv=kv[256 * kvb:])]))
            self.reply_is(rep, 256, 0, 544)
            self.release_unpins(node, m.lease_id)
        finally:
            self.assertEqual(node.close(), 0)


class EvictionFlagTest(unittest.TestCase):
    """--eviction reaches the cache: under lfu-da a sequence only ever
    re-inserted (no Match: no hit) goes before one matched once, though it
    was used last; under lru the matched one goes."""

    def evicted(self, policy):
        node = Node("--eviction", policy, "--pool-tokens", "64", node_id="ev")
        try:
            a, b, c = tokens(50, 32), tokens(51, 32), tokens(52, 32)
            node.stub.Insert(pb.InsertRequest(namespace="e", tokens=a))
            node.stub.Insert(pb.InsertRequest(namespace="e", tokens=b))
            self.assertEqual(node.stub.Match(pb.MatchRequest(namespace="e", tokens=b))
                             .matched_tokens, 32)
            for _ in range(3):
                node.stub.Insert(pb.InsertRequest(namespace="e", tokens=a))
            self.assertEqual(node.stub.Insert(pb.InsertRequest(namespace="e", tokens=c))
                             .inserted_tokens, 32)
            gone = [name for name, t in (("a", a), ("b", b)) if node.stub.Match(
                pb.MatchRequest(namespace="e", tokens=t, peek=True)).matched_tokens == 0]
        finally:
            self.assertEqual(node.close(), 0)
        return gone

    def test_policies(self):
        self.assertEqual(self.evicted("lfu-da"), ["a"])
        self.assertEqual(self.evicted("gdsf"), ["a"])
        self.assertEqual(self.evicted("lru"), ["b"])


class TtlFlagTest(unittest.TestCase):
    def test_ttl_past_its_range_exits_2(self):
        """--ttl-seconds is kept in milliseconds: a value whose milliseconds
        overflow 64 bits wrapped to a TTL of 384 ms; now it is refused."""
        for ttl in ("18446744073709552", "4294967296"):
            out = subprocess.run([ARGS.node, "--listen", "127.0.0.1:0", "--ttl-seconds", ttl],
                                 capture_output=True, text=True, timeout=30)
            self.assertEqual(out.returncode, 2, out.stderr)
            self.assertIn(f"--ttl-seconds: {ttl} is out of range [0, 4294967295]", out.stderr)
            self.assertNotIn("LISTENING", out.stdout)


class AuthTest(unittest.TestCase):
    """--auth-token-file: every RPC but health needs the bearer token; a
    router presents its own token to nodes."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        cls.node_token = os.path.join(cls.dir.name, "node.token")
        cls.router_token = os.path.join(cls.dir.name, "router.token")
        with open(cls.node_token, "w") as f:
            f.write("s3cret-node-token\n")
        with open(cls.router_token, "w") as f:
            f.write("  router-token  \n")
        cls.node = Node("--auth-token-file", cls.node_token, node_id="auth1")
        cls.rtr = Node("--nodes", "auth1=" + cls.node.addr, "--auth-token-file", cls.router_token,
                       "--node-token-file", cls.node_token, "--health-interval-ms", "100",
                       binary=ARGS.router)

    @classmethod
    def tearDownClass(cls):
        assert cls.rtr.close() == 0
        assert cls.node.close() == 0
        cls.dir.cleanup()

    def test_node_requires_the_token(self):
        req = pb.MatchRequest(namespace="a", tokens=tokens(5, 64))
        for md in (None, [("authorization", "Bearer wrong")], [("authorization", "s3cret-node-token")]):
            with self.assertRaises(grpc.RpcError) as e:
                self.node.stub.Match(req, metadata=md)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            self.assertNotIn("s3cret", e.exception.details())
        ok = self.node.stub.Match(req, metadata=[("authorization", "Bearer s3cret-node-token")])
        self.assertEqual(ok.matched_tokens, 0)
        # Kubernetes' grpc probes cannot send metadata: health stays open.
        h = health_grpc.HealthStub(self.node.channel)
        self.assertEqual(h.Check(health_pb.HealthCheckRequest()).status,
                         health_pb.HealthCheckResponse.SERVING)

    def test_router_requires_its_token_and_presents_the_nodes(self):
        md = [("authorization", "Bearer router-token")]
        poll("the router's checks to put the node on its ring", lambda: self.rtr.router.ClusterStats(
            pb.ClusterStatsRequest(), metadata=md).healthy_nodes == 1)
        toks = tokens(6, 128)
        with self.assertRaises(grpc.RpcError) as e:
            self.rtr.router.Match(pb.MatchRequest(namespace="a", tokens=toks))
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        m = self.rtr.router.Match(pb.MatchRequest(namespace="a", tokens=toks, lease=True), metadata=md)
        self.assertEqual(m.node_id, "auth1")
        self.rtr.router.Insert(pb.InsertRequest(namespace="a", tokens=toks, lease_id=m.lease_id,
                                                node_id=m.node_id), metadata=md)
        self.rtr.router.Release(pb.ReleaseRequest(lease_id=m.lease_id, node_id=m.node_id), metadata=md)
        # The CLI sends the token from a file too.
        cli = os.path.join(os.path.dirname(ARGS.node), "radixmesh")
        out = subprocess.run([cli, "stats", "--router", self.rtr.addr, "--auth-token-file",
                              self.router_token], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("1/1 nodes healthy", out.stdout)
        out = subprocess.run([cli, "stats", "--router", self.rtr.addr], capture_output=True, text=True)
        self.assertNotEqual(out.returncode, 0)

    def test_scheme_in_any_case(self):
        req = pb.MatchRequest(namespace="a", tokens=tokens(5, 64))
        for scheme in ("bearer", "BEARER", "Bearer  "):
            md = [("authorization", f"{scheme} s3cret-node-token")]
            self.assertEqual(self.node.stub.Match(req, metadata=md).matched_tokens, 0)

    def test_long_token_is_read_whole(self):
        """A 3,000-byte token (a JWT) works end to end: not cut at 1,023
        bytes when read, nor when the router presents it to a node."""
        jwt = "eyJ" + "".join("abcdefghijklmnopqrstuvwxyz0123456789_-."[i % 39] for i in range(3000))
        path = os.path.join(self.dir.name, "jwt.token")
        with open(path, "w") as f:
            f.write(jwt + "\n")
        node = Node("--auth-token-file", path, node_id="jwt1")
        rtr = Node("--nodes", "jwt1=" + node.addr, "--node-token-file", path,
                   "--health-interval-ms", "100", binary=ARGS.router)
        try:
            req = pb.MatchRequest(namespace="j", tokens=tokens(8, 64))
            with self.assertRaises(grpc.RpcError) as e:
                node.stub.Match(req, metadata=[("authorization", "Bearer " + jwt[:1023])])
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            self.assertEqual(node.stub.Match(req, metadata=[("authorization", "Bearer " + jwt)])
                             .node_id, "jwt1")
            poll("the router's token accepted by the node", lambda: rtr.router.ClusterStats(
                pb.ClusterStatsRequest(), timeout=10).healthy_nodes == 1)
            self.assertEqual(rtr.router.Match(req, timeout=10).node_id, "jwt1")
        finally:
            self.assertEqual(rtr.close(), 0)
            self.assertEqual(node.close(), 0)

    def test_http_auth(self):
        """--http-auth: the HTTP endpoints but /healthz and /readyz, and the
        router's gateway, need the bearer token; 401 names the scheme."""
        node = rmtest.Daemon([ARGS.node, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                              "--node-id", "ha1", "--auth-token-file", self.node_token,
                              "--http-auth", "--shutdown-delay-ms", "0"], until="HTTP")
        rtr = rmtest.Daemon([ARGS.router, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                             "--gateway", "127.0.0.1:0", "--nodes", "ha1=" + node.addr,
                             "--auth-token-file", self.router_token, "--node-token-file",
                             self.node_token, "--http-auth", "--shutdown-delay-ms", "0"],
                            until="GATEWAY")
        try:
            get = lambda addr, path, tok=None: rmtest.http_request(
                addr, "GET", path, headers={"Authorization": tok} if tok else None)
            for path in ("/metrics", "/nope"):
                st, hdrs, _ = get(node.http, path)
                self.assertEqual(st, 401)
                self.assertTrue(hdrs["www-authenticate"].startswith("Bearer"))
                self.assertEqual(get(node.http, path, "Bearer router-token")[0], 401)
            self.assertEqual(get(node.http, "/metrics", "bearer s3cret-node-token")[0], 200)
            self.assertEqual(get(node.http, "/nope", "Bearer s3cret-node-token")[0], 404)
            for path in ("/healthz", "/readyz"):
                self.assertEqual(get(node.http, path)[0], 200)
            for path in ("/metrics", "/api/cluster", "/"):
                self.assertEqual(get(rtr.http, path)[0], 401)
                self.assertEqual(get(rtr.http, path, "Bearer router-token")[0], 200)
            self.assertEqual(get(rtr.http, "/healthz")[0], 200)
            self.assertIn(get(rtr.http, "/readyz")[0], (200, 503))
            body = b'{"model": "m", "prompt": [1, 2, 3]}'
            post = lambda tok=None: rmtest.http_request(
                rtr.gateway, "POST", "/v1/completions", body=body,
                headers={"Content-Type": "application/json", **({"Authorization": tok} if tok else {})})
            st, hdrs, _ = post()
            self.assertEqual(st, 401)
            self.assertTrue(hdrs["www-authenticate"].startswith("Bearer"))
            self.assertEqual(post("Bearer s3cret-node-token")[0], 401)
            # Past the check: no worker is paired with the node.
            self.assertNotEqual(post("BEARER router-token")[0], 401)
            poll("the 401s counted", lambda: rmtest.metric(
                node.http, "radixmesh_http_unauthorized_total",
                headers={"Authorization": "Bearer s3cret-node-token"}) == 4)
            # The gateway's own answers to HEAD have no body (RFC 9110
            # 9.3.2): the 401, and past it the error of a gateway with no
            # worker. The next reply on the connection follows the head.
            for auth, status in ((b"", b"401"), (b"Authorization: Bearer router-token\r\n", b"5")):
                head, rest = rmtest.head_then_get(rtr.gateway, "/v1/models", "/v1/models", auth)
                self.assertTrue(head.startswith(b"HTTP/1.1 " + status), head)
                self.assertIn(b"keep-alive", head.lower())
                self.assertTrue(rest.startswith(b"HTTP/1.1 " + status), (head, rest[:200]))
        finally:
            self.assertEqual(rtr.stop(), 0)
            self.assertEqual(node.stop(), 0)
        out = subprocess.run([ARGS.node, "--http", "127.0.0.1:0", "--http-auth"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 2)
        self.assertIn("--http-auth needs --auth-token-file", out.stderr)


def stats(stub):
    return stub.Stats(pb.StatsRequest(), timeout=10)


def write_kv(stub, ns, toks, kvb, timeout=60):
    """Caches toks with KV bytes (every byte 7)."""
    aligned = len(toks) // 16 * 16
    kv = b"\x07" * (aligned * kvb)
    step = 1 << 20

    def chunks():
        yield pb.WriteKVChunk(namespace=ns, tokens=toks, kv=kv[:step])
        for off in range(step, len(kv), step):
            yield pb.WriteKVChunk(kv=kv[off:off + step])
    return stub.WriteKV(chunks(), timeout=timeout)


def stalled_write(stub, ns, toks):
    """A WriteKV whose first message names toks, then sends nothing: returns
    (future, queue); put None on the queue to end the request stream."""
    q = queue.Queue()
    q.put(pb.WriteKVChunk(namespace=ns, tokens=toks))
    return stub.WriteKV.future(iter(q.get, None), timeout=120), q


class StreamBoundTest(unittest.TestCase):
    """--kv-stream-idle-ms and leases bound how long a KV stream holds pages:
    a WriteKV that stops sending and a ReadKV nobody reads are cancelled,
    and their pages come back."""

    def test_stalled_write_returns_the_pool(self):
        node = Node("--kv-bytes-per-token", "64", "--pool-tokens", "4096",
                    "--kv-stream-idle-ms", "300", node_id="idle")
        try:
            fut, q = stalled_write(node.stub, "w", tokens(30, 4096))
            try:
                # The whole pool is reserved, then handed back by the bound.
                poll("the reservation", lambda: fut.done() or
                     stats(node.stub).protected_pages == 256)
                with self.assertRaises(grpc.RpcError) as e:
                    fut.result(timeout=60)
            finally:
                q.put(None)
            self.assertEqual(e.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
            self.assertIn("--kv-stream-idle-ms", e.exception.details())
            self.assertIn("256 reserved pages returned", e.exception.details())
            st = stats(node.stub)
            self.assertEqual(st.free_pages, st.pool_pages)
            self.assertEqual(write_kv(node.stub, "w", tokens(30, 4096), 64).inserted_tokens, 4096)
        finally:
            node.close()

    def check_unread_read(self, idle_ms, ttl_ms, release, reason):
        """A 16 MiB ReadKV nobody reads (its send blocks, its pin stays)
        under a lease of ttl_ms, released at once if asked: the node must
        unpin the pages by itself, and the read ends DEADLINE_EXCEEDED with
        reason in its message."""
        node = Node("--kv-bytes-per-token", "4096", "--pool-tokens", "4096",
                    "--kv-stream-idle-ms", str(idle_ms), node_id="unread")
        try:
            toks = tokens(31, 4096)
            write_kv(node.stub, "r", toks, 4096)
            m = node.stub.Match(pb.MatchRequest(namespace="r", tokens=toks, lease=True,
                                                lease_ttl_ms=ttl_ms))
            it = node.stub.ReadKV(pb.ReadKVRequest(lease_id=m.lease_id), timeout=120)
            it.initial_metadata()  # sent with the first chunk: the read has its pin
            if release:
                node.stub.Release(pb.ReleaseRequest(lease_id=m.lease_id))
            poll("the pages unpinned", lambda: stats(node.stub).protected_pages == 0)
            with self.assertRaises(grpc.RpcError) as e:
                for _ in it:
                    pass
            self.assertEqual(e.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
            self.assertIn(reason, e.exception.details())
        finally:
            node.close()

    def test_unread_read_ends_with_its_lease(self):
        # The idle bound is far off: only the lease's end can unpin (it used
        # to take the client going away).
        self.check_unread_read(600000, 1000, release=False, reason="lease ended")

    def test_unread_read_is_cancelled_when_idle(self):
        # Released at once with its TTL far off: only the read's pin holds
        # the pages, and the idle bound lets them go.
        self.check_unread_read(300, 600000, release=True, reason="took no data")

class PeerShareTest(unittest.TestCase):
    """A caller (here: the address 127.0.0.1) holds at most its share of
    the leases, half of --max-leases by default, and is told so."""

    def test_share(self):
        node = Node("--max-leases", "6", node_id="share")
        try:
            req = pb.MatchRequest(namespace="s", tokens=tokens(33, 64), lease=True)
            ids = [node.stub.Match(req).lease_id for _ in range(3)]
            with self.assertRaises(grpc.RpcError) as e:
                node.stub.Match(req)
            self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertIn("--max-leases-per-peer 3", e.exception.details())
            self.assertIn("127.0.0.1", e.exception.details())
            self.assertEqual(stats(node.stub).peer_lease_refusals_total, 1)
            # Served without a lease, and again with one once it gave one back.
            self.assertEqual(node.stub.Match(pb.MatchRequest(namespace="s")).matched_tokens, 0)
            node.stub.Release(pb.ReleaseRequest(lease_id=ids[0]))
            self.assertNotEqual(node.stub.Match(req).lease_id, 0)
        finally:
            node.close()


def make_pki(d):
    """A throwaway CA, a server certificate for 127.0.0.1 and a client
    certificate, made with the openssl CLI."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{d}/ca.key",
        "-out", f"{d}/ca.crt", "-days", "2", "-subj", "/CN=radixmesh-test-ca")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                      ("client", "extendedKeyUsage=clientAuth"),
                      ("client2", "extendedKeyUsage=clientAuth")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{d}/{name}.key",
            "-out", f"{d}/{name}.csr", "-subj", f"/CN={name}")
        with open(f"{d}/{name}.ext", "w") as f:
            f.write(ext + "\nbasicConstraints=CA:FALSE\n")
        run("x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/ca.crt", "-CAkey",
            f"{d}/ca.key", "-CAcreateserial", "-out", f"{d}/{name}.crt", "-days", "2",
            "-extfile", f"{d}/{name}.ext")
    def read(n):
        with open(f"{d}/{n}", "rb") as f:
            return f.read()
    return read("ca.crt"), read("client.key"), read("client.crt")


def make_other_ca_client(d):
    """A client certificate from a CA the daemons do not know."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{d}/other-ca.key",
        "-out", f"{d}/other-ca.crt", "-days", "2", "-subj", "/CN=some-other-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{d}/other.key",
        "-out", f"{d}/other.csr", "-subj", "/CN=stranger")
    run("x509", "-req", "-in", f"{d}/other.csr", "-CA", f"{d}/other-ca.crt", "-CAkey",
        f"{d}/other-ca.key", "-CAcreateserial", "-out", f"{d}/other.crt", "-days", "2",
        "-extfile", f"{d}/client.ext")
    with open(f"{d}/other.key", "rb") as k, open(f"{d}/other.crt", "rb") as c:
        return k.read(), c.read()


class TlsTest(unittest.TestCase):
    """--tls-cert/--tls-key/--tls-ca/--require-client-cert on a node, and a
    router talking mTLS to it while serving TLS itself."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        d = cls.dir.name
        cls.ca, cls.ckey, cls.ccrt = make_pki(d)
        tls = ["--tls-cert", f"{d}/server.crt", "--tls-key", f"{d}/server.key", "--tls-ca", f"{d}/ca.crt"]
        cls.node = TlsDaemon([ARGS.node, "--node-id", "tls1", *tls, "--require-client-cert"])
        # The router serves TLS (no client cert required) and shows its
        # certificate to the node (server.crt is signed by the same CA).
        cls.rtr = TlsDaemon([ARGS.router, "--nodes", "tls1=" + cls.node.addr, *tls,
                             "--health-interval-ms", "100"])

    @classmethod
    def tearDownClass(cls):
        assert cls.rtr.close() == 0
        assert cls.node.close() == 0
        cls.dir.cleanup()

    def call(self, addr, creds, router=False):
        ch = grpc.secure_channel(addr, creds) if creds else grpc.insecure_channel(addr)
        try:
            stub = pb_grpc.RouterStub(ch) if router else pb_grpc.CacheNodeStub(ch)
            return stub.Match(pb.MatchRequest(namespace="t", tokens=tokens(7, 64)), timeout=5)
        finally:
            ch.close()

    def test_node_mtls(self):
        with self.assertRaises(grpc.RpcError):  # plaintext is refused
            self.call(self.node.addr, None)
        with self.assertRaises(grpc.RpcError):  # TLS without a client certificate
            self.call(self.node.addr, grpc.ssl_channel_credentials(root_certificates=self.ca))
        m = self.call(self.node.addr, grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.ckey, certificate_chain=self.ccrt))
        self.assertEqual(m.node_id, "tls1")

    def test_presented_client_cert_must_chain_to_the_ca(self):
        """--tls-ca without --require-client-cert: no certificate is fine,
        one from another CA is refused, one from --tls-ca accepted."""
        d = self.dir.name
        okey, ocrt = make_other_ca_client(d)
        node = TlsDaemon([ARGS.node, "--node-id", "tls2", "--tls-cert", f"{d}/server.crt",
                          "--tls-key", f"{d}/server.key", "--tls-ca", f"{d}/ca.crt"])
        try:
            creds = lambda key=None, crt=None: grpc.ssl_channel_credentials(
                root_certificates=self.ca, private_key=key, certificate_chain=crt)
            self.assertEqual(self.call(node.addr, creds()).node_id, "tls2")
            with self.assertRaises(grpc.RpcError) as e:
                self.call(node.addr, creds(okey, ocrt))
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertEqual(self.call(node.addr, creds(self.ckey, self.ccrt)).node_id, "tls2")
        finally:
            self.assertEqual(node.close(), 0)

    def test_bad_cert_or_key_is_named_at_start(self):
        d = self.dir.name
        with open(f"{d}/garbage.pem", "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
        cases = [  # (cert, key, ca, what stderr names)
            (f"{d}/server.key", f"{d}/server.key", None, f"--tls-cert {d}/server.key"),
            (f"{d}/garbage.pem", f"{d}/server.key", None, f"--tls-cert {d}/garbage.pem"),
            (f"{d}/server.crt", f"{d}/server.crt", None, f"--tls-key {d}/server.crt"),
            (f"{d}/server.crt", f"{d}/client.key", None, "does not belong to the certificate"),
            (f"{d}/server.crt", f"{d}/server.key", f"{d}/garbage.pem", f"--tls-ca {d}/garbage.pem"),
        ]
        for binary in (ARGS.node, ARGS.router):
            for cert, key, ca, named in cases:
                args = [binary, "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key]
                args += ["--tls-ca", ca] if ca else []
                args += ["--nodes", "n=127.0.0.1:1"] if binary == ARGS.router else []
                out = subprocess.run(args, capture_output=True, text=True, timeout=30)
                self.assertEqual(out.returncode, 2, (args, out.stderr))
                self.assertIn(named, out.stderr)
                self.assertNotIn("LISTENING", out.stdout)

    def test_router_tls_to_mtls_node(self):
        creds = grpc.ssl_channel_credentials(root_certificates=self.ca)
        def routed():
            try:
                return self.call(self.rtr.addr, creds, router=True)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                return None
        m = poll("the node on the router's ring", routed)
        self.assertEqual(m.node_id, "tls1")
        with self.assertRaises(grpc.RpcError):
            self.call(self.rtr.addr, None, router=True)

    def test_cli_over_tls(self):
        d = self.dir.name
        cli = os.path.join(os.path.dirname(ARGS.node), "radixmesh")
        run = lambda *a: subprocess.run([cli, "stats", *a], capture_output=True, text=True,
                                        timeout=30)
        # mTLS to the node, TLS to the router.
        out = run("--node", self.node.addr, "--tls-ca", f"{d}/ca.crt", "--tls-cert",
                  f"{d}/client.crt", "--tls-key", f"{d}/client.key")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("tls1", out.stdout)
        out = run("--router", self.rtr.addr, "--tls-ca", f"{d}/ca.crt")
        self.assertEqual(out.returncode, 0, out.stderr)
        # Refused: plaintext, and TLS without the client certificate.
        self.assertNotEqual(run("--router", self.rtr.addr).returncode, 0)
        self.assertNotEqual(run("--node", self.node.addr, "--tls-ca", f"{d}/ca.crt").returncode, 0)
        # Bad TLS flags are usage errors.
        self.assertEqual(run("--node", self.node.addr, "--tls-cert", f"{d}/client.crt").returncode, 2)
        self.assertEqual(run("--node", self.node.addr, "--tls-ca", f"{d}/nope.pem").returncode, 2)
        out = subprocess.run([cli, "replay", "--router", self.rtr.addr, "--trace", "builtin",
                              "--limit", "50", "--tls-ca", f"{d}/ca.crt"],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("replayed 50 requests", out.stdout)


class LeaseOwnerTest(unittest.TestCase):
    """Under mTLS a lease belongs to the client identity that took it: any
    other identity naming it gets NOT_FOUND, as for an id never issued; and
    the lease share counts per identity, not per address."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        d = cls.dir.name
        ca, _, _ = make_pki(d)
        tls = ["--tls-cert", f"{d}/server.crt", "--tls-key", f"{d}/server.key", "--tls-ca",
               f"{d}/ca.crt", "--require-client-cert"]
        cls.kv = TlsDaemon([ARGS.node, "--node-id", "own-kv", *tls, "--kv-bytes-per-token", "16",
                            "--max-leases", "4"])
        cls.meta = TlsDaemon([ARGS.node, "--node-id", "own-meta", *tls])
        def read(name):
            with open(f"{d}/{name}", "rb") as f:
                return f.read()
        cls.creds = {who: grpc.ssl_channel_credentials(root_certificates=ca,
                                                       private_key=read(f"{who}.key"),
                                                       certificate_chain=read(f"{who}.crt"))
                     for who in ("client", "client2")}
        cls.channels = []

    @classmethod
    def tearDownClass(cls):
        for ch in cls.channels:
            ch.close()
        assert cls.kv.close() == 0
        assert cls.meta.close() == 0
        cls.dir.cleanup()

    def stub(self, node, who):
        ch = grpc.secure_channel(node.addr, self.creds[who],
                                 options=[("grpc.use_local_subchannel_pool", 1)])
        self.channels.append(ch)
        return pb_grpc.CacheNodeStub(ch)

    def assertUnknownLease(self, fn):
        with self.assertRaises(grpc.RpcError) as e:
            fn()
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn("unknown lease", e.exception.details())

    def test_lease_belongs_to_its_identity(self):
        alice, bob = self.stub(self.kv, "client"), self.stub(self.kv, "client2")
        toks = tokens(34, 64)
        write_kv(alice, "o", toks, 16)
        lid = alice.Match(pb.MatchRequest(namespace="o", tokens=toks, lease=True)).lease_id
        self.assertUnknownLease(lambda: bob.Release(pb.ReleaseRequest(lease_id=lid)))
        self.assertUnknownLease(lambda: list(bob.ReadKV(pb.ReadKVRequest(lease_id=lid))))
        more = toks + tokens(35, 16)
        self.assertUnknownLease(lambda: bob.WriteKV(iter([pb.WriteKVChunk(
            namespace="o", tokens=more, kv_start_token=64, lease_id=lid, kv=b"\x01" * 256)])))
        # The owner can do all of it.
        self.assertEqual(len(b"".join(c.kv for c in alice.ReadKV(pb.ReadKVRequest(lease_id=lid)))),
                         64 * 16)
        rep = alice.WriteKV(iter([pb.WriteKVChunk(namespace="o", tokens=more, kv_start_token=64,
                                                  lease_id=lid, kv=b"\x01" * 256)]))
        self.assertEqual(rep.inserted_tokens, 16)
        alice.Release(pb.ReleaseRequest(lease_id=lid))
        meta_a, meta_b = self.stub(self.meta, "client"), self.stub(self.meta, "client2")
        lid = meta_a.Match(pb.MatchRequest(namespace="o", tokens=toks, lease=True)).lease_id
        self.assertUnknownLease(lambda: meta_b.Insert(pb.InsertRequest(
            namespace="o", tokens=toks, lease_id=lid)))
        self.assertEqual(meta_a.Insert(pb.InsertRequest(namespace="o", tokens=toks,
                                                        lease_id=lid)).inserted_tokens, 64)
        meta_a.Release(pb.ReleaseRequest(lease_id=lid))

    def test_share_counts_per_identity(self):
        alice, bob = self.stub(self.kv, "client"), self.stub(self.kv, "client2")
        req = pb.MatchRequest(namespace="share", tokens=tokens(36, 32), lease=True)
        held = [(alice, alice.Match(req).lease_id) for _ in range(2)]
        with self.assertRaises(grpc.RpcError) as e:
            alice.Match(req)
        self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("client identity 'client'", e.exception.details())
        # Another identity from the same address has a share of its own.
        held += [(bob, bob.Match(req).lease_id) for _ in range(2)]
        for stub, lid in held:
            stub.Release(pb.ReleaseRequest(lease_id=lid))


class LoggedDaemon(Node):
    """A daemon whose stderr (its log) is collected, to see reloads."""

    def __init__(self, args):
        self.log = []
        self.proc = subprocess.Popen([*args, "--listen", "127.0.0.1:0", "--shutdown-delay-ms", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("LISTENING "):
            self.proc.kill()
            raise RuntimeError(f"daemon did not start: {line!r}")
        self.reader = threading.Thread(
            target=lambda: [self.log.append(l) for l in self.proc.stderr], daemon=True)
        self.reader.start()
        self.addr = line.split()[1]
        self.channel = grpc.insecure_channel(self.addr)
        self.stub = pb_grpc.CacheNodeStub(self.channel)
        self.router = pb_grpc.RouterStub(self.channel)

    def close(self):
        rc = super().close()
        self.reader.join(timeout=10)  # the log ends with the process
        self.proc.stderr.close()
        return rc

    def hup_until(self, what, text):
        """Sends SIGHUP and waits for a new log line containing text."""
        seen = len(self.log)
        self.proc.send_signal(signal.SIGHUP)
        poll(what, lambda: any(text in l for l in self.log[seen:]))


class StreamLimitTest(unittest.TestCase):
    """--max-concurrent-streams 1: a second call on the same connection waits
    for the first (here: past its deadline), other connections are served,
    and the connection serves again once the first call ends."""

    def test_limit(self):
        node = Node("--max-concurrent-streams", "1", "--kv-bytes-per-token", "8",
                    node_id="streams")
        try:
            import queue
            q = queue.Queue()
            reqs = iter(q.get, None)  # the stream stays open until None
            fut = node.stub.WriteKV.future(reqs, timeout=30)
            # The open stream is established once the node has seen it.
            poll("the stream to be open", lambda: fut.running())
            with self.assertRaises(grpc.RpcError) as e:
                node.stub.Stats(pb.StatsRequest(), timeout=1.0)
            self.assertEqual(e.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
            other = grpc.insecure_channel(node.addr, options=[("grpc.use_local_subchannel_pool", 1)])
            try:
                st = pb_grpc.CacheNodeStub(other).Stats(pb.StatsRequest(), timeout=10)
                self.assertEqual(st.node_id, "streams")
            finally:
                other.close()
            q.put(None)  # ends the stream: an empty WriteKV is refused
            with self.assertRaises(grpc.RpcError):
                fut.result(timeout=10)
            self.assertEqual(node.stub.Stats(pb.StatsRequest(), timeout=10).node_id, "streams")
        finally:
            node.close()


def write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


class ReloadTest(unittest.TestCase):
    """--config FILE and SIGHUP: runtime-changeable settings follow the file,
    an invalid file is rejected and the old settings stay, the command line
    keeps winning."""

    def test_node_reload(self):
        with tempfile.TemporaryDirectory() as d:
            conf = os.path.join(d, "node.conf")
            write_text(conf, "# limits\nmax-request-tokens = 1000\nmax-leases = 50\n")
            # One client takes both leases: its share must allow that.
            node = LoggedDaemon([ARGS.node, "--node-id", "rl1", "--config", conf,
                                 "--max-leases", "2", "--max-leases-per-peer", "2"])
            try:
                def match(n, lease=False):
                    return node.stub.Match(pb.MatchRequest(namespace="r", tokens=tokens(9, n),
                                                           lease=lease), timeout=10)
                with self.assertRaises(grpc.RpcError) as e:
                    match(1500)
                self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                self.assertEqual(match(150).matched_tokens, 0)
                # The command line's --max-leases 2 beats the file's 50.
                match(10, True), match(10, True)
                with self.assertRaises(grpc.RpcError) as e:
                    match(10, True)
                self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
                write_text(conf, "max-request-tokens = 100\nlog-level = info\npage-tokens = 32\n")
                node.hup_until("the reload", "config reloaded")
                with self.assertRaises(grpc.RpcError) as e:
                    match(150)  # lowered while serving
                self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                poll("the restart warning", lambda: any(
                    "applied only at restart: --page-tokens" in l for l in node.log))
                write_text(conf, "max-request-tokens = lots\n")
                node.hup_until("the rejection", "reload rejected")
                write_text(conf, "lease-ttl-ms = 5000\nmax-lease-ttl-ms = 10\n")
                node.hup_until("the rejection", "reload rejected")
                # The last good settings stand, and the node serves.
                self.assertEqual(match(100).matched_tokens, 0)
                with self.assertRaises(grpc.RpcError) as e:
                    match(150)
                self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            finally:
                self.assertEqual(node.close(), 0)

    def test_raise_past_the_message_limit_needs_a_restart(self):
        """gRPC's message limit is set at start from --max-request-tokens:
        a reload raising it past the start's value is rejected, saying so,
        and the running limit stays (it used to be logged as applied while
        such requests failed with RESOURCE_EXHAUSTED). Lowering it, and
        raising it back, apply. Both daemons; the router's gateway keeps its
        prompt limit and says that too."""
        with tempfile.TemporaryDirectory() as d:
            conf = os.path.join(d, "c.conf")
            for args in ([ARGS.node, "--node-id", "rl5"],
                         [ARGS.router, "--nodes", "n=127.0.0.1:1", "--gateway", "127.0.0.1:0"]):
                write_text(conf, "max-request-tokens = 1000\n")
                daemon = LoggedDaemon([*args, "--config", conf])
                try:
                    write_text(conf, "max-request-tokens = 4000000\n")
                    daemon.hup_until("the rejection", "reload rejected")
                    line = next(l for l in daemon.log if "reload rejected" in l)
                    self.assertIn("--max-request-tokens 4000000: gRPC's message limit, set at "
                                  "start, holds requests of 1000 tokens at most", line)
                    self.assertIn("a higher limit needs a restart", line)
                    # The running limit stays: 1001 tokens are refused.
                    with self.assertRaises(grpc.RpcError) as e:
                        req = pb.MatchRequest(namespace="r", tokens=tokens(9, 1001))
                        (daemon.stub.Match if args[0] == ARGS.node else daemon.router.Match)(
                            req, timeout=10)
                    self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                    # Lowered, then raised back to the start's value: both apply.
                    write_text(conf, "max-request-tokens = 500\n")
                    daemon.hup_until("the reload", "config reloaded")
                    if args[0] == ARGS.router:
                        self.assertTrue(any("the gateway's prompts stay limited to 1000 tokens"
                                            in l for l in daemon.log), daemon.log[-5:])
                    write_text(conf, "max-request-tokens = 1000\n")
                    daemon.hup_until("the reload", "config reloaded")
                finally:
                    self.assertEqual(daemon.close(), 0)

    def test_line_taken_out_returns_to_its_default(self):
        """A reload parses as a start would: a line taken out of the file
        gives its flag back its default (it used to keep the value the old
        file gave it, so the node ran on settings its file no longer said
        and a restart would change them)."""
        with tempfile.TemporaryDirectory() as d:
            conf = os.path.join(d, "c.conf")
            write_text(conf, "max-leases = 1\n")
            node = LoggedDaemon([ARGS.node, "--node-id", "rl6", "--config", conf,
                                 "--max-leases-per-peer", "4"])
            try:
                lease = lambda: node.stub.Match(
                    pb.MatchRequest(namespace="r", tokens=tokens(9, 16), lease=True), timeout=10)
                lease()
                with self.assertRaises(grpc.RpcError) as e:
                    lease()
                self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
                write_text(conf, "log-level = info\n")
                node.hup_until("the reload", "config reloaded")
                self.assertTrue(any("65536 leases" in l for l in node.log), node.log[-3:])
                lease()  # the default's room again
                # Its adopt step (the restart warnings) follows the reload's
                # log line: a second reload's line comes after both.
                node.hup_until("a second reload", "config reloaded")
                self.assertFalse(any("applied only at restart" in l for l in node.log))
            finally:
                self.assertEqual(node.close(), 0)

    def test_four_reloads_without_log_level(self):
        """A file that does not set log-level reloads every time (the level
        the last reload kept is not lost), on both daemons."""
        with tempfile.TemporaryDirectory() as d:
            conf = os.path.join(d, "c.conf")
            write_text(conf, "max-request-tokens = 1000\n")
            for args in ([ARGS.node, "--node-id", "rl4"], [ARGS.router, "--nodes", "n=127.0.0.1:1"]):
                daemon = LoggedDaemon([*args, "--config", conf])
                try:
                    for i in range(4):
                        daemon.hup_until(f"reload {i + 1}", "config reloaded")
                    self.assertFalse(any("reload rejected" in l for l in daemon.log))
                finally:
                    self.assertEqual(daemon.close(), 0)

    def test_router_reload_adopts_what_it_applied(self):
        """The flags a reload applies (numbers of each width) become the
        running ones; a changed flag that needs a restart is named alone."""
        with tempfile.TemporaryDirectory() as d:
            conf = os.path.join(d, "r.conf")
            write_text(conf, "call-timeout-ms = 500\n")
            rtr = LoggedDaemon([ARGS.router, "--nodes", "n=127.0.0.1:1", "--config", conf])
            try:
                write_text(conf, "call-timeout-ms = 700\nload-factor = 1.5\n"
                           "max-request-tokens = 9\nvnodes = 64\n")
                rtr.hup_until("the reload", "config reloaded")
                restart = lambda: [l for l in rtr.log if "applied only at restart" in l]
                poll("the restart warning", restart)
                self.assertTrue(restart()[-1].rstrip().endswith(": --vnodes"), restart())
            finally:
                self.assertEqual(rtr.close(), 0)

    def test_router_reload_changes_membership(self):
        a = Node(node_id="ra")
        b = Node(node_id="rb")
        with tempfile.TemporaryDirectory() as d:
            conf = os.path.join(d, "router.conf")
            write_text(conf, f"nodes = ra={a.addr}\nhealth-interval-ms = 100\n")
            rtr = LoggedDaemon([ARGS.router, "--config", conf, "--stats-interval", "100"])
            try:
                def healthy():
                    cs = rtr.router.ClusterStats(pb.ClusterStatsRequest(), timeout=10)
                    return sorted(n.node_id for n in cs.nodes if n.healthy)
                poll("ra on the ring", lambda: healthy() == ["ra"])
                write_text(conf, f"nodes = ra={a.addr},rb={b.addr}\nhealth-interval-ms = 100\n")
                rtr.hup_until("the reload", "config reloaded")
                poll("rb on the ring", lambda: healthy() == ["ra", "rb"])
                write_text(conf, "nodes = ra\n")
                rtr.hup_until("the rejection", "reload rejected")
                write_text(conf, f"nodes = rb={b.addr}\nload-factor = 0.5\n")
                rtr.hup_until("the rejection", "reload rejected")
                self.assertEqual(healthy(), ["ra", "rb"])
                write_text(conf, f"nodes = rb={b.addr}\n")
                rtr.hup_until("the reload", "config reloaded")
                poll("ra gone", lambda: healthy() == ["rb"])
                # A config that no longer names the members (a start would
                # refuse it) is rejected; the membership stays.
                write_text(conf, "health-interval-ms = 100\n")
                rtr.hup_until("the rejection", "the config no longer names the members")
                self.assertEqual(healthy(), ["rb"])
            finally:
                self.assertEqual(rtr.close(), 0)
                a.close()
                b.close()


class TlsDaemon(Node):
    """A daemon serving TLS: readiness is its LISTENING line, not a
    plaintext channel."""

    def __init__(self, args):
        self.proc = subprocess.Popen([*args, "--listen", "127.0.0.1:0", "--shutdown-delay-ms", "0",
                                      "--log-level", "warn"], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("LISTENING "):
            self.proc.kill()
            raise RuntimeError(f"daemon did not start: {line!r}")
        self.addr = line.split()[1]
        self.channel = grpc.insecure_channel(self.addr)  # closed by Node.close


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--node", required=True)
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--router", required=True)
    ARGS, rest = ap.parse_known_args()
    with tempfile.TemporaryDirectory() as out:
        pb, pb_grpc, health_pb, health_grpc = grpc_modules(ARGS.proto_dir, out)
        sys.exit(rmtest.run_tests(rest))
