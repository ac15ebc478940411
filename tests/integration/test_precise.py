#!/usr/bin/python3
"""Precise mirroring through the gateway (issue 17): two fake vLLM engines
(tests/integration/fake_vllm.py: a byte-level tokenizer served by
/tokenize, a prefix cache of their own with LRU eviction, every change
published as KV events), each paired with a real cache node that follows
its events (--worker-kv-events, --worker-kv-replay), and a router whose
gateway routes on the engines' token ids (--gateway-tokenize worker).

The nodes' predicted hit rate must equal the engines' own counters: every
request's Match is counted before its engine sees it, against a mirror
that holds exactly what the engine holds -- across LRU evictions, a batch
lost on the wire (replayed) and an engine restart (the mirror emptied).

The mirror follows the engine's events asynchronously (the node applies
a batch within a millisecond or so of its publication; kv_lag_ms). The
test, like a client between turns, waits until each node has applied
every batch its engine published before sending the next request, so
the figures it compares are exact, not a race.

Usage: test_precise.py --node PATH --router PATH --proto-dir DIR [--slow]
"""
import argparse
import http.client
import json
import os
import re
import statistics
import sys
import tempfile
import time
import unittest

import grpc

import rmtest
from rmtest import poll

ARGS = None
pb = pb_grpc = None
HERE = os.path.dirname(os.path.abspath(__file__))
BLOCKS = 160  # each engine's cache: 2,560 tokens, far less than the workload
SYSTEM = "You are a careful assistant of the claims desk. " * 10


def http_json(addr, method, path, body=None):
    status, _, data = rmtest.http_request(addr, method, path,
                                          body=json.dumps(body) if body is not None else None,
                                          timeout=rmtest.deadline_s(30))
    return status, json.loads(data) if data else None


def chat(conv, turn):
    """Turn `turn` of a conversation; the engine is told to give the answer
    the next turn resends, as a real client would."""
    msgs = [{"role": "system", "content": SYSTEM}]
    for t in range(turn):
        msgs.append({"role": "user", "content": f"claim {conv} question {t}: " + "why " * 12})
        if t + 1 < turn:
            msgs.append({"role": "assistant", "content": answer(conv, t)})
    return {"model": "fake-model", "messages": msgs, "fake_reply": answer(conv, turn - 1)}


def answer(conv, t):
    return f"answer {t} to claim {conv}: " + "because " * 8


class Pair:
    """A fake engine and the node that mirrors it."""

    def __init__(self, i):
        self.engine = rmtest.Daemon(
            [sys.executable, os.path.join(HERE, "fake_vllm.py"), "--num-gpu-blocks", str(BLOCKS)],
            until="KV_REPLAY")
        self.node = rmtest.Daemon(
            [ARGS.node, "--listen", "127.0.0.1:0", "--node-id", f"p{i}", "--log-level", "info",
             "--shutdown-delay-ms", "0", "--pool-tokens", "64",
             "--worker-url", "http://" + self.engine.addr,
             "--worker-kv-events", self.engine.addrs["KV_EVENTS"],
             "--worker-kv-replay", self.engine.addrs["KV_REPLAY"],
             "--worker-probe-interval-ms", "200"])
        self.channel = grpc.insecure_channel(self.node.addr)
        self.stub = pb_grpc.CacheNodeStub(self.channel)

    def stats(self):
        return self.stub.Stats(pb.StatsRequest(), timeout=rmtest.deadline_s(30))

    def state(self):
        return http_json(self.engine.addr, "GET", "/_state")[1]

    def control(self, body):
        status, out = http_json(self.engine.addr, "POST", "/_control", body)
        assert status == 200, out
        return out

    def synced(self):
        """The node has applied every batch its engine published."""
        seq = self.state()["next_seq"]
        st = self.stats()
        return seq == 0 or (st.kv_has_seq and st.kv_last_seq == seq - 1)

    def stop(self):
        self.channel.close()
        codes = (self.node.stop(), self.engine.stop())
        return codes


class Counts:
    """Predicted (nodes) and real (engines) hit and query tokens, summed;
    an engine restart resets its own, so they are kept across it."""

    def __init__(self, pairs):
        self.pairs = pairs
        self.engine_base = [0, 0]
        self.snap = self.now()

    def now(self):
        node = [0, 0]
        eng = list(self.engine_base)
        for p in self.pairs:
            st, es = p.stats(), p.state()
            node[0] += st.hit_tokens_total
            node[1] += st.query_tokens_total
            eng[0] += es["hits"]
            eng[1] += es["queries"]
        return node, eng

    def before_restart(self, pair):
        es = pair.state()
        self.engine_base[0] += es["hits"]
        self.engine_base[1] += es["queries"]

    def since(self, snap=None):
        (nh, nq), (eh, eq) = self.now()
        (bnh, bnq), (beh, beq) = snap or self.snap
        return (nh - bnh) / max(nq - bnq, 1), (eh - beh) / max(eq - beq, 1), nq - bnq, eq - beq


class PreciseMirror(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pairs = [Pair(i) for i in range(2)]
        cls.router = rmtest.Daemon(
            [ARGS.router, "--listen", "127.0.0.1:0",
             "--nodes", ",".join(f"p{i}={p.node.addr}" for i, p in enumerate(cls.pairs)),
             "--http", "127.0.0.1:0", "--gateway", "127.0.0.1:0", "--log-level", "info",
             "--gateway-tokenize", "worker", "--stats-interval", "200",
             "--health-interval-ms", "200", "--worker-scrape-interval-ms", "200",
             "--shutdown-delay-ms", "0", "--load-half-life-ms", "100",
             *(["--call-timeout-ms", "10000"] if ARGS.slow else [])],
            until="GATEWAY")
        cls.gw = http.client.HTTPConnection(cls.router.gateway, timeout=rmtest.deadline_s(30))
        poll("both nodes mirroring precisely, their workers up", lambda: all(
            n.get("mirror") == "precise" and n.get("worker_healthy") and
            n.get("kv_namespace") == "fake-model" for n in cls.cluster()["nodes"]) and
            len(cls.cluster()["nodes"]) == 2, timeout=30)
        cls.counts = Counts(cls.pairs)

    @classmethod
    def tearDownClass(cls):
        cls.gw.close()
        codes = [cls.router.stop()] + [c for p in cls.pairs for c in p.stop()]
        if codes != [0] * len(codes):
            raise AssertionError(f"daemons exited with {codes}, not all 0")

    @classmethod
    def cluster(cls):
        return http_json(cls.router.http, "GET", "/api/cluster")[1]

    def send(self, body, path="/v1/chat/completions"):
        self.gw.request("POST", path, body=json.dumps(body),
                        headers={"Content-Type": "application/json"})
        resp = self.gw.getresponse()
        data = resp.read()
        self.assertEqual(resp.status, 200, data)
        poll("the nodes caught up with their engines' events",
             lambda: all(p.synced() for p in self.pairs))
        return resp.getheader("x-radixmesh-node")

    def conversations(self, first, n, turns):
        for turn in range(1, turns + 1):
            for conv in range(first, first + n):
                self.send(chat(conv, turn))

    def assert_equal_rates(self, what, snap=None):
        pred, real, nq, eq = self.counts.since(snap)
        print(f"{what}: predicted hit rate {pred:.4f}, engines' own {real:.4f} "
              f"({nq} query tokens on the nodes, {eq} on the engines)", file=sys.stderr)
        self.assertEqual(nq, eq, "the nodes counted other queries than the engines")
        self.assertLess(abs(pred - real), 0.005)
        return pred, real

    def test_1_predicted_equals_engines_own(self):
        """Twelve conversations of four turns sharing a system prompt, on
        engines far smaller than the workload: evictions happen (BlockRemoved
        events) and the predicted rate still equals the engines' own --
        prompts of whole blocks sent twice included."""
        self.conversations(0, 12, 4)
        # A prompt of whole blocks sent again: the engine computes its last
        # token anyway (a hit of 48 of its 64 tokens, not 64).
        for i in range(4):
            prompt = f"repeat {i:02d} " + "x" * (63 - len(f"repeat {i:02d} "))  # + BOS: 64
            body = {"model": "fake-model", "prompt": prompt}
            self.send(body, "/v1/completions")
            (nh, _), (eh, _) = self.counts.now()
            self.send(body, "/v1/completions")
            (nh2, _), (eh2, _) = self.counts.now()
            self.assertEqual((nh2 - nh, eh2 - eh), (48, 48))
        evicted = sum(p.state()["evicted"] for p in self.pairs)
        self.assertGreater(evicted, 0, "the engines never evicted: no BlockRemoved was tested")
        pred, real = self.assert_equal_rates(f"56 requests, {evicted} blocks evicted")
        self.assertGreater(real, 0.3)
        for p in self.pairs:
            st = p.stats()
            self.assertEqual(st.evicted_tokens_total, 0, "the node evicted on its own")
            self.assertEqual(st.worker_cache_tokens, BLOCKS * 16)
            self.assertGreaterEqual(st.pool_pages, BLOCKS)  # grown from --pool-tokens 64
            self.assertEqual(st.kv_blocks, p.state()["blocks"])
            self.assertEqual(st.kv_resyncs_total, 0)
            self.assertGreater(st.insert_requests_total, 0)
        # Routed on the engines' tokens: /tokenize was asked once a request.
        self.assertEqual(sum(p.state()["tokenize_requests"] for p in self.pairs), 56)
        poll("the tokenized requests in the router's published metrics", lambda: rmtest.metric(
            self.router.http, "radixmesh_gateway_tokenized_total") >= 56)
        self.assertEqual(rmtest.metric(self.router.http, "radixmesh_gateway_tokenized_total"), 56)
        self.assertEqual(rmtest.metric(self.router.http,
                                       "radixmesh_gateway_tokenize_fallbacks_total"), 0)

    def test_2_lost_batch_is_replayed(self):
        """The next batch of either engine is lost on the wire (only its
        replay buffer has it): the node finds it by polling the replay
        socket, and the predicted rate stays equal."""
        snap = self.counts.now()
        before = [p.stats() for p in self.pairs]
        for p in self.pairs:
            p.control({"drop_next": 1})
        node = self.send(chat(100, 1))
        lost = next(p for p in self.pairs if p.state()["dropped"] == 1)
        self.assertEqual(node, "p%d" % self.pairs.index(lost))
        for p in self.pairs:
            p.control({"drop_next": 0})
        self.conversations(100, 4, 3)
        i = self.pairs.index(lost)
        st = lost.stats()
        self.assertEqual(st.kv_gaps_total - before[i].kv_gaps_total, 1)
        self.assertGreaterEqual(st.kv_replayed_total - before[i].kv_replayed_total, 1)
        self.assertEqual(st.kv_resyncs_total, before[i].kv_resyncs_total)
        self.assert_equal_rates("after a lost batch", snap)

    def test_3_engine_restart_empties_the_mirror(self):
        """An engine restarts (a new process: empty cache, sequence numbers
        from 0, its sockets bound again): the node sees it in the engine's
        /metrics and empties the mirror before the next request, and the
        predicted rate stays equal."""
        self.conversations(200, 4, 2)
        snap = self.counts.now()
        victim = self.pairs[0]
        before = victim.stats()
        self.assertGreater(before.kv_blocks, 0)
        self.counts.before_restart(victim)
        victim.control({"restart": True, "rebind": True})
        poll("the node to empty its mirror", lambda: victim.stats().kv_resyncs_total >
             before.kv_resyncs_total)
        st = victim.stats()
        self.assertEqual(st.kv_blocks, 0)
        self.conversations(200, 4, 4)  # the same conversations, their history gone
        st = victim.stats()
        self.assertGreater(st.kv_batches_total, before.kv_batches_total)
        self.assertEqual(st.kv_blocks, victim.state()["blocks"])
        self.assert_equal_rates("after an engine restart", snap)
        victim.node.wait_log("the restart logged", "the worker restarted")

    def test_3b_cluster_view_carries_the_mirror_figures(self):
        """/api/cluster shows each node's mirror figures under their
        NodeStats names with the node's own values (after the restart, so
        kv_worker_restarts_total is 1 on p0): every kv_* field of the
        proto's descriptor but four that are shown in another form or are
        not the mirror's, so a field added to NodeStats and left out of the
        view fails here."""
        shown_otherwise = {"kv_events": "mirror", "kv_has_seq": "kv_last_seq: null",
                           "kv_namespace": "kv_namespace",
                           "kv_bytes_per_token": "the pool's, not the mirror's"}
        names = [f.name for f in pb.NodeStats.DESCRIPTOR.fields
                 if f.name.startswith("kv_") and f.name not in shown_otherwise]
        names.append("worker_cache_tokens")
        self.assertIn("kv_worker_restarts_total", names)
        self.assertIn("kv_lag_ms", names)
        # The node polls the replay socket when the stream is quiet, so this
        # one grows while nothing is sent: the view, an earlier poll's, may
        # be behind, never ahead.
        growing = {"kv_replays_total"}

        def differences():
            nodes = {n["id"]: n for n in self.cluster()["nodes"]}
            out = []
            for i, p in enumerate(self.pairs):
                st, view = p.stats(), nodes.get(f"p{i}", {})
                for k in names:
                    v = view.get(k, "missing")
                    if v == "missing" or (v > getattr(st, k) if k in growing
                                          else v != getattr(st, k)):
                        out.append((f"p{i}", k, v, getattr(st, k)))
                if view.get("kv_last_seq") != (st.kv_last_seq if st.kv_has_seq else None):
                    out.append((f"p{i}", "kv_last_seq", view.get("kv_last_seq"), st.kv_last_seq))
            return out
        # The router's view is its last Stats poll, published every 500 ms.
        try:
            poll("the router's view to show the nodes' figures", lambda: not differences(),
                 timeout=30)
        except AssertionError:
            self.fail(f"(node, field, in /api/cluster, in Stats): {differences()}")
        self.assertEqual(self.pairs[0].stats().kv_worker_restarts_total, 1)

    def test_4_whole_run(self):
        self.assert_equal_rates("the whole run")
        doc = self.cluster()
        print(f"/api/cluster: hit rate {doc['hit_rate']:.4f}, workers' "
              f"{doc['worker_hit_rate']:.4f} (their counters since their last restart)",
              file=sys.stderr)

    def test_5_dashboard_shows_precise(self):
        dom = rmtest.dashboard_dom(self.router.http)
        if dom is None:
            print("dashboard check skipped: no chromium", file=sys.stderr)
            return
        cells = re.findall(r'class="mirror"[^>]*>([^<]*)<', dom)
        self.assertEqual(cells, ["precise", "precise"], dom[-2000:])

    def test_6_tokenize_fallback(self):
        """/tokenize fails on every worker: requests still go, on
        pseudo-tokens (counted, logged once)."""
        fallbacks = rmtest.metric(self.router.http, "radixmesh_gateway_tokenize_fallbacks_total")
        for p in self.pairs:
            p.control({"tokenize_status": 503})
        try:
            for i in range(3):
                self.send(chat(300 + i, 1))
        finally:
            for p in self.pairs:
                p.control({"tokenize_status": 0})
        poll("the fallbacks counted", lambda: rmtest.metric(
            self.router.http, "radixmesh_gateway_tokenize_fallbacks_total") == fallbacks + 3)
        self.router.wait_log("the fallback logged", "routing text prompts on pseudo-tokens")
        self.assertEqual(sum("pseudo-tokens" in line for line in self.router.log), 1)

    def test_7_tokenize_latency(self):
        """What asking /tokenize adds to a request: the same requests through
        this gateway and through one that routes on pseudo-tokens (a second
        router over the same nodes), alternating, sequential."""
        plain = rmtest.Daemon(
            [ARGS.router, "--listen", "127.0.0.1:0",
             "--nodes", ",".join(f"p{i}={p.node.addr}" for i, p in enumerate(self.pairs)),
             "--gateway", "127.0.0.1:0", "--log-level", "warn", "--stats-interval", "200",
             "--health-interval-ms", "200", "--worker-scrape-interval-ms", "200",
             "--shutdown-delay-ms", "0"], until="GATEWAY")
        self.addCleanup(lambda: self.assertEqual(plain.stop(), 0))
        conns = {"tokenize": self.gw,
                 "pseudo": http.client.HTTPConnection(plain.gateway, timeout=30)}
        self.addCleanup(conns["pseudo"].close)
        poll("the second router's workers", lambda: self.plain_ready(conns["pseudo"]))
        lat = {k: [] for k in conns}
        for i in range(60 if not ARGS.slow else 10):
            for name, conn in conns.items():
                body = {"model": "fake-model", "prompt": f"latency {i} " + "words " * 40}
                t0 = time.perf_counter()
                conn.request("POST", "/v1/completions", body=json.dumps(body),
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                lat[name].append(time.perf_counter() - t0)
                self.assertEqual(resp.status, 200)
        t, p = statistics.median(lat["tokenize"]), statistics.median(lat["pseudo"])
        n = rmtest.metric(self.router.http, "radixmesh_gateway_tokenized_total")
        spent = rmtest.metric(self.router.http, "radixmesh_gateway_tokenize_seconds_total")
        print(f"tokenize latency: p50 {t * 1e3:.2f} ms with /tokenize vs {p * 1e3:.2f} ms on "
              f"pseudo-tokens (x{t / p:.2f}, +{(t - p) * 1e3:.2f} ms); the gateway's own mean "
              f"/tokenize exchange {spent / max(n, 1) * 1e3:.2f} ms", file=sys.stderr)

    @staticmethod
    def plain_ready(conn):
        conn.request("POST", "/v1/completions",
                     body=json.dumps({"model": "fake-model", "prompt": "warm up"}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200


def main():
    global ARGS, pb, pb_grpc
    ap = argparse.ArgumentParser()
    ap.add_argument("--node", required=True)
    ap.add_argument("--router", required=True)
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--slow", action="store_true", default=rmtest.SLOW,
                    help="daemons run under valgrind (default: RM_TEST_SLOW=1)")
    ARGS, rest = ap.parse_known_args()
    with tempfile.TemporaryDirectory() as out:
        pb, pb_grpc, _, _ = rmtest.grpc_modules(ARGS.proto_dir, out)
        sys.exit(rmtest.run_tests(rest))


if __name__ == "__main__":
    main()
