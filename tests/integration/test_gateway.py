#!/usr/bin/python3
"""The router's OpenAI-compatible HTTP gateway against three fake workers
(tests/integration/fake_worker.py), each paired with a real cache node.

Usage: test_gateway.py --node PATH --router PATH [--load-seconds N]

Every wait polls with a deadline; every process binds 127.0.0.1 on a free
port and is stopped at the end.
"""
import argparse
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import unittest

from rmtest import dashboard_dom, head_then_get, poll, raw_exchange, run_tests

ARGS = None
HERE = os.path.dirname(os.path.abspath(__file__))
PROCS = []


def start(args, tag):
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    PROCS.append(proc)
    lines = {}
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{args[0]} exited before printing {tag}")
        word, _, rest = line.strip().partition(" ")
        lines[word] = rest
        if word == tag:
            return proc, lines


class Cluster:
    def __init__(self, gateway_flags=()):
        self.workers, self.worker_addr, self.nodes = [], {}, {}
        for i in range(3):
            proc, out = start(
                [sys.executable, os.path.join(HERE, "fake_worker.py"), "--name", f"w{i}"],
                "LISTENING")
            self.workers.append(proc)
            self.worker_addr[f"n{i}"] = out["LISTENING"]
        node_list = []
        for i in range(3):
            proc, out = start([ARGS.node, "--listen", "127.0.0.1:0", "--node-id", f"n{i}",
                               "--log-level", "warn", "--hot-half-life-ms", "60000",
                               "--worker-url", "http://" + self.worker_addr[f"n{i}"]],
                              "LISTENING")
            self.nodes[f"n{i}"] = proc
            node_list.append(f"n{i}={out['LISTENING']}")
        self.node_list = ",".join(node_list)
        self.router, out = start(
            [ARGS.router, "--listen", "127.0.0.1:0", "--nodes", ",".join(node_list),
             "--http", "127.0.0.1:0", "--gateway", "127.0.0.1:0", "--log-level", "warn",
             "--stats-interval", "200", "--health-interval-ms", "200",
             "--worker-scrape-interval-ms", "200", "--shutdown-delay-ms", "0",
             # Under valgrind a node answers slowly; a peek that times out
             # would place a conversation turn without its history.
             *(["--call-timeout-ms", "10000"] if ARGS.slow else []),
             *gateway_flags],
            "GATEWAY")
        self.http = out["HTTP"]
        self.gateway = out["GATEWAY"]
        poll("3 paired workers", lambda: sum(
            1 for n in self.cluster()["nodes"] if n.get("worker_healthy") and n["healthy"]) == 3)

    def cluster(self):
        conn = http.client.HTTPConnection(self.http, timeout=10)
        conn.request("GET", "/api/cluster")
        doc = json.loads(conn.getresponse().read())
        conn.close()
        return doc

    def fresh_metric(self, name, requests_at_least):
        """name once /metrics (published twice a second) has seen at least
        requests_at_least gateway requests."""
        poll("metrics to catch up", lambda: self.metric(
            "radixmesh_gateway_requests_total") >= requests_at_least)
        return self.metric(name)

    def metrics_text(self):
        conn = http.client.HTTPConnection(self.http, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        return text

    def metric(self, name, label=""):
        """Sum of the samples of name (with label, e.g. 'code="2xx"', among
        their labels)."""
        return sample_sum(self.metrics_text(), name, label)

    def settled_metrics(self):
        """/metrics as first taken after this call, so counting everything
        that happened before it (the router publishes its figures every
        500 ms, each snapshot stamped with the time it was taken)."""
        since = time.time()
        return poll("a metrics snapshot taken after the call", lambda: (
            lambda text: text if sample_sum(
                text, "radixmesh_snapshot_timestamp_seconds") > since else None)(
                    self.metrics_text()))

    def worker(self, node, method, path, body=None):
        conn = http.client.HTTPConnection(self.worker_addr[node], timeout=10)
        conn.request(method, path, body=json.dumps(body) if body is not None else None)
        data = json.loads(conn.getresponse().read())
        conn.close()
        return data

    def requests_of(self, node):
        return self.worker(node, "GET", "/_requests")

    def close(self):
        """Stops everything; returns the daemons' exit codes (SIGTERM drains
        them to 0; sanitizers and valgrind make leaks and errors nonzero)."""
        daemons = [self.router, *self.nodes.values()]
        for proc in [*daemons, *self.workers]:
            if proc.poll() is None:
                proc.terminate()
        codes = []
        for proc in [*daemons, *self.workers]:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            if proc in daemons:
                codes.append(proc.returncode)
        return codes


SYSTEM = ("You are a meticulous assistant for a large insurance company. " * 40).strip()


def answer(conv, t):
    return f"answer {t} for {conv}: " + "consider this " * 12


def chat_body(conv, turns, stream=False):
    """Turn `turns` of a conversation; the fake worker is told to give the
    answer that the next turn resends, as a real client would."""
    messages = [{"role": "system", "content": SYSTEM}]
    for t in range(turns):
        messages.append({"role": "user", "content": f"conversation {conv} question {t}: "
                         + "details " * 30})
        if t + 1 < turns:
            messages.append({"role": "assistant", "content": answer(conv, t)})
    return {"model": "fake-model", "messages": messages, "stream": stream,
            "fake_reply": answer(conv, turns - 1)}


def sample_sum(text, name, label=""):
    """Sum of the samples of name in Prometheus text (with label, e.g.
    'code="2xx"', among their labels)."""
    return sum(float(l.split()[-1]) for l in text.splitlines()
               if (l.startswith(name + "{") or l.startswith(name + " ")) and label in l)


def post(conn, path, body, headers=None):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    conn.request("POST", path, body=data,
                 headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), resp.read()


class GatewayTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # The test sends requests back to back, ~100/s, far above what an
        # LLM worker serves; with the default 1 s half-life that rate alone
        # would count as load and spill conversations. 100 ms keeps load
        # meaning "busy now" at this pace.
        cls.c = Cluster(["--gateway-max-body-bytes", "262144", "--gateway-max-header-bytes",
                         "8192", "--load-half-life-ms", "100"])
        cls.gw = http.client.HTTPConnection(cls.c.gateway, timeout=30)

    @classmethod
    def tearDownClass(cls):
        cls.gw.close()
        codes = cls.c.close()
        if codes != [0] * len(codes):
            raise AssertionError(f"daemons exited with {codes} (router first), not all 0")

    def test_1_affinity_and_spread(self):
        # Warm up: the shared system prompt becomes cluster-hot, so keys
        # extend past it.
        # (Few requests: new conversations even out the requests each node
        # has served, so a long warm-up would keep them off its node.)
        for i in range(4):
            status, _, _ = post(self.gw, "/v1/chat/completions", chat_body(1000 + i, 1))
            self.assertEqual(status, 200)
        poll("the system prompt to become hot", lambda: self.c.cluster()["hot_prefixes"] > 0)
        placement = {}
        for turn in (1, 2, 3):
            for conv in range(24):
                status, headers, body = post(self.gw, "/v1/chat/completions",
                                             chat_body(conv, turn))
                self.assertEqual(status, 200, body)
                node = headers["x-radixmesh-node"]
                self.assertEqual(json.loads(body)["worker"], "w" + node[1:])
                placement.setdefault(conv, set()).add(node)
        split = [c for c, nodes in placement.items() if len(nodes) > 1]
        self.assertEqual(split, [], "conversations split across workers")
        per_node = {}
        for nodes in placement.values():
            n = next(iter(nodes))
            per_node[n] = per_node.get(n, 0) + 1
        print(f"conversations per worker: {per_node}", file=sys.stderr)
        self.assertEqual(len(per_node), 3, "the shared prompt pinned conversations")
        self.assertLessEqual(max(per_node.values()), 14)
        # The nodes mirrored the prompts: predicted hits exist, and the
        # workers' own counters are shown beside them.
        def settled():
            d = self.c.cluster()
            recorded = sum(n["match_requests_total"] for n in d["nodes"])
            if recorded >= 4 + 72 and d["worker_hit_rate"] is not None and \
                    abs(d["hit_rate"] - d["worker_hit_rate"]) < 0.05:
                return d
            return None
        doc = poll("every prompt recorded and the workers scraped after it", settled)
        print(f"predicted hit rate {doc['hit_rate']:.3f}, workers' own "
              f"{doc['worker_hit_rate']:.3f}", file=sys.stderr)
        self.assertGreater(doc["hit_rate"], 0.5)
        # The hit budget: delivered is the workers' own rate, and the router
        # fed its estimators exactly the prompts the nodes recorded (76
        # short prompts at the default pools' 1/32 sampling are too few
        # pages for the estimates themselves to mean much).
        b = doc["hit_budget"]
        print(f"hit budget: {b}", file=sys.stderr)
        self.assertEqual(b["delivered"], doc["worker_hit_rate"])
        self.assertEqual(b["achieved"], doc["hit_rate"])
        self.assertEqual(b["query_tokens"], doc["query_tokens_total"])
        self.assertIsNotNone(b["infinite"])
        self.check_dashboard()

    def test_1b_generated_text_is_recorded(self):
        """The node mirrors prompt + reply, so the next turn, which resends
        the reply, hits on all of it -- for a JSON and a streamed reply."""
        def node_stats(node):
            return next(n for n in self.c.cluster()["nodes"] if n["id"] == node)

        def render(messages):
            return "".join(m["role"] + "\x1f" + m["content"] + "\x1e" for m in messages)

        for stream in (False, True):
            conv = 500 + stream
            reply = f"Here is a carefully considered answer for {conv}. " * 12
            # A prompt of its own: sharing SYSTEM, the two conversations
            # would make it hot in a run of this test alone, and re-key.
            msgs = [{"role": "system", "content": f"Desk {conv}. " + SYSTEM},
                    {"role": "user", "content": f"conversation {conv}: " + "tell me " * 20}]
            before = {n["id"]: n for n in self.c.cluster()["nodes"]}
            status, headers, body = post(self.gw, "/v1/chat/completions",
                                         {"model": "fake-model", "messages": msgs,
                                          "stream": stream, "fake_reply": reply})
            self.assertEqual(status, 200, body)
            node = headers["x-radixmesh-node"]
            b = before[node]
            # Recorded: its Match counted, then its Insert took pages.
            poll("turn 1 recorded", lambda: node_stats(node)["match_requests_total"] ==
                 b["match_requests_total"] + 1 and node_stats(node)["free_pages"] < b["free_pages"])
            mid = node_stats(node)
            msgs2 = msgs + [{"role": "assistant", "content": reply},
                            {"role": "user", "content": "and then? " * 10}]
            status, headers, body = post(self.gw, "/v1/chat/completions",
                                         {"model": "fake-model", "messages": msgs2,
                                          "stream": stream, "fake_reply": "fine"})
            self.assertEqual(status, 200, body)
            self.assertEqual(headers["x-radixmesh-node"], node, f"stream={stream}")
            after = poll("turn 2 recorded", lambda: (lambda s: s if s["match_requests_total"] ==
                         mid["match_requests_total"] + 1 else None)(node_stats(node)))
            hit = after["hit_tokens_total"] - mid["hit_tokens_total"]
            # Pseudo-tokens are 4-byte chunks and the node caches whole
            # 16-token pages: turn 1 + reply, as bytes, fixes the hit.
            with_reply = len((render(msgs) + "assistant\x1f" + reply + "\x1e").encode())
            prompt_only = len(render(msgs).encode())
            self.assertEqual(hit, with_reply // 4 // 16 * 16,
                             f"stream={stream}: prompt alone would give {prompt_only // 4 // 16 * 16}")

    def check_dashboard(self):
        """Headless Chromium renders the dashboard: its predicted and real
        hit rates equal /api/cluster's. Skipped without chromium."""
        dom = dashboard_dom(self.c.http)
        if dom is None:
            print("dashboard check skipped: no chromium", file=sys.stderr)
            return
        doc = self.c.cluster()
        pct = lambda x: "%.1f%%" % (100 * x)
        text = lambda id_: re.search(r'id="%s"[^>]*>([^<]*)<' % id_, dom).group(1)
        self.assertEqual(text("hit"), pct(doc["hit_rate"]))
        self.assertEqual(text("worker"), pct(doc["worker_hit_rate"]))
        cells = re.findall(r'class=" worker">([^<]*)<', dom)
        self.assertEqual(len(cells), 3, dom[-2000:])
        self.assertTrue(all(c.endswith("%") for c in cells), cells)

    def test_2_stream_is_incremental_and_identical(self):
        self.c.worker("n0", "POST", "/_control", {"hold": True})
        self.c.worker("n1", "POST", "/_control", {"hold": True})
        self.c.worker("n2", "POST", "/_control", {"hold": True})
        try:
            host, port = self.c.gateway.rsplit(":", 1)
            body = json.dumps(chat_body(77, 1, stream=True)).encode()
            s = socket.create_connection((host, int(port)), timeout=20)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                      % (len(body), body))
            got = b""
            while b"\r\n\r\n" not in got or b"data: " not in got.split(b"\r\n\r\n", 1)[1]:
                chunk = s.recv(65536)
                self.assertTrue(chunk, "connection closed early")
                got += chunk
            # The worker is holding the rest: this first event came through
            # before the upstream response finished.
            head = got.split(b"\r\n\r\n", 1)[0].decode().lower()
            self.assertIn("transfer-encoding: chunked", head)
            self.assertIn("x-radixmesh-node:", head)
            node = [l.split(":", 1)[1].strip() for l in head.split("\r\n")
                    if l.startswith("x-radixmesh-node:")][0]
            self.assertNotIn(b"[DONE]", got)
            self.c.worker(node, "POST", "/_control", {"release": True})
            while not got.endswith(b"0\r\n\r\n"):
                chunk = s.recv(65536)
                self.assertTrue(chunk, "connection closed before the last chunk")
                got += chunk
            s.close()
        finally:
            for n in ("n0", "n1", "n2"):
                self.c.worker(n, "POST", "/_control", {"hold": False, "release": True})
        # De-chunk what the client got and compare with what the worker sent.
        rest = got.split(b"\r\n\r\n", 1)[1]
        body_out = b""
        while True:
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line, 16)
            if size == 0:
                break
            body_out += rest[:size]
            rest = rest[size + 2:]
        rec = poll("the worker's record", lambda: [r for r in self.c.requests_of(node)
                                                   if r.get("sent") and "conversation 77" in r["body"]])
        self.assertEqual(body_out.decode(), rec[-1]["sent"])
        self.assertTrue(body_out.endswith(b"data: [DONE]\n\n"))

    def test_3_client_disconnect_cancels_upstream(self):
        for n in ("n0", "n1", "n2"):
            self.c.worker(n, "POST", "/_control", {"hold": True})
        try:
            host, port = self.c.gateway.rsplit(":", 1)
            body = json.dumps(chat_body(88, 1, stream=True)).encode()
            s = socket.create_connection((host, int(port)), timeout=20)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d"
                      b"\r\n\r\n%s" % (len(body), body))
            got = b""
            while b"data: " not in got:
                chunk = s.recv(65536)
                self.assertTrue(chunk)
                got += chunk
            head = got.split(b"\r\n\r\n", 1)[0].decode().lower()
            node = [l.split(":", 1)[1].strip() for l in head.split("\r\n")
                    if l.startswith("x-radixmesh-node:")][0]
            s.close()  # the client leaves mid-stream
            poll("the gateway to see the client leave",
                 lambda: self.c.metric("radixmesh_gateway_client_disconnects_total") >= 1)
            self.c.worker(node, "POST", "/_control", {"release": True})
            rec = poll("the worker to see the cancellation", lambda: [
                r for r in self.c.requests_of(node)
                if "conversation 88" in r.get("body", "") and r.get("outcome") == "cancelled"])
            self.assertTrue(rec)
        finally:
            for n in ("n0", "n1", "n2"):
                self.c.worker(n, "POST", "/_control", {"hold": False, "release": True})
        poll("no request left in flight",
             lambda: self.c.metric("radixmesh_gateway_active_requests") == 0)

    def test_3b_slow_client_backpressure(self):
        """A client that does not read pauses the worker's stream (bounded
        memory in the gateway); once it reads, every byte arrives intact."""
        n = 24 << 20
        host, port = self.c.gateway.rsplit(":", 1)
        body = json.dumps({"model": "m", "prompt": "big", "fake_bytes": n}).encode()
        s = socket.create_connection((host, int(port)), timeout=30)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        paused = self.c.metric("radixmesh_gateway_backpressure_pauses_total")
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        # Nothing is read until the gateway has paused the worker.
        poll("the gateway to pause the worker",
             lambda: self.c.metric("radixmesh_gateway_backpressure_pauses_total") > paused, 30)
        got = bytearray()
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += chunk
        s.close()
        head, _, rest = bytes(got).partition(b"\r\n\r\n")
        self.assertIn(b"200", head.split(b"\r\n")[0])
        out, pos = bytearray(), 0
        while True:  # de-chunk
            eol = rest.index(b"\r\n", pos)
            size = int(rest[pos:eol], 16)
            if size == 0:
                break
            out += rest[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2
        self.assertEqual(len(out), n)
        block = bytes(range(256)) * 256
        self.assertEqual(bytes(out[:len(block)]), block)
        self.assertEqual(hashlib.sha256(out).hexdigest(),
                         hashlib.sha256((block * (n // len(block) + 1))[:n]).hexdigest())

    def test_3c_worker_connections_kept_alive(self):
        """Requests reuse kept-alive worker connections; when workers close
        them while idle, the gateway drops them and opens new ones."""
        text = self.c.settled_metrics()
        seen = sample_sum(text, "radixmesh_gateway_requests_total")
        connects = sample_sum(text, "radixmesh_gateway_upstream_connects_total")
        for turn in range(20):
            status, _, _ = post(self.gw, "/v1/chat/completions", chat_body(4242, 1))
            self.assertEqual(status, 200)
        more = self.c.fresh_metric("radixmesh_gateway_upstream_connects_total", seen + 20) - connects
        self.assertLessEqual(more, 2, "20 requests to one worker should reuse its connection")
        self.assertGreater(self.c.metric("radixmesh_gateway_idle_upstream_connections"), 0)
        for n in ("n0", "n1", "n2"):
            self.c.worker(n, "POST", "/_control", {"close_idle": True})
        poll("the gateway to drop the closed connections",
             lambda: self.c.metric("radixmesh_gateway_idle_upstream_connections") == 0)
        for turn in range(5):
            status, _, _ = post(self.gw, "/v1/chat/completions", chat_body(4243, 1))
            self.assertEqual(status, 200)

    def test_3d_client_timeouts(self):
        """A second router with a short --gateway-client-timeout-ms: a request
        that stalls mid-head gets 408 and the connection closes; an idle
        keep-alive connection is closed too. The router itself exits 0."""
        proc, out = start([ARGS.router, "--listen", "127.0.0.1:0", "--nodes", self.c.node_list,
                           "--gateway", "127.0.0.1:0", "--gateway-client-timeout-ms", "300",
                           "--log-level", "warn", "--shutdown-delay-ms", "0"], "GATEWAY")
        try:
            host, port = out["GATEWAY"].rsplit(":", 1)
            s = socket.create_connection((host, int(port)), timeout=20)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
            got = b""
            while True:  # the gateway answers, then closes
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            s.close()
            self.assertTrue(got.startswith(b"HTTP/1.1 408"), got[:100])
            self.assertIn(b"did not arrive in time", got)
            s = socket.create_connection((host, int(port)), timeout=20)
            self.assertEqual(s.recv(1), b"")  # idle: closed without a word
            s.close()
        finally:
            proc.terminate()
            self.assertEqual(proc.wait(timeout=30), 0)
            proc.stdout.close()

    def test_4_bad_requests(self):
        status, headers, body = post(self.gw, "/v1/completions", "{not json")
        self.assertEqual(status, 400)
        err = json.loads(body)["error"]
        self.assertEqual(err["type"], "invalid_request_error")
        self.assertIn("not valid JSON", err["message"])
        status, _, body = post(self.gw, "/v1/completions", {"model": "m", "prompt": [1, -2]})
        self.assertEqual(status, 400)
        self.assertIn("prompt[1]", json.loads(body)["error"]["message"])
        status, _, body = post(self.gw, "/v1/chat/completions", {"model": "m"})
        self.assertEqual(status, 400)
        self.assertIn("messages", json.loads(body)["error"]["message"])
        # The connection survived all three; token-id prompts route too.
        status, headers, _ = post(self.gw, "/v1/completions",
                                  {"model": "m", "prompt": list(range(300))})
        self.assertEqual(status, 200)
        self.assertIn("x-radixmesh-node", headers)
        # Body and header limits.
        big = json.dumps({"model": "m", "prompt": "x" * 300000})
        conn = http.client.HTTPConnection(self.c.gateway, timeout=10)
        status, _, body = post(conn, "/v1/completions", big)
        conn.close()
        self.assertEqual(status, 413)
        self.assertIn("max-body", json.loads(body)["error"]["message"])
        conn = http.client.HTTPConnection(self.c.gateway, timeout=10)
        status, _, _ = post(conn, "/v1/completions", {"model": "m", "prompt": "hi"},
                            headers={"X-Padding": "p" * 10000})
        conn.close()
        self.assertEqual(status, 431)
        # A chunked request body is read whole and forwarded with a length.
        payload = json.dumps({"model": "m", "prompt": "chunked body test"}).encode()
        raw = raw_exchange(self.c.gateway,
                           b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                           b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                           b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload))
        self.assertTrue(raw.startswith(b"HTTP/1.1 200"), raw[:200])
        # A chunk announced past the bound is refused before its bytes
        # come (it used to wait for --gateway-client-timeout-ms: 408).
        raw = raw_exchange(self.c.gateway, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n80000000\r\n")
        self.assertTrue(raw.startswith(b"HTTP/1.1 413 "), raw[:200])
        self.assertIn(b"max-body", raw)

    def test_4b_expect(self):
        payload = json.dumps({"model": "m", "prompt": "expect test"}).encode()
        head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n" % len(payload))
        # Expect: 100-continue: the interim answer, then the reply.
        got = raw_exchange(self.c.gateway, head + b"Expect: 100-Continue\r\n\r\n" + payload)
        self.assertTrue(got.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"), got[:200])
        # An HTTP/1.0 client knows no interim answers: its 100-continue is
        # ignored (RFC 9110 10.1.1) and the reply comes alone.
        got = raw_exchange(self.c.gateway, head.replace(b"HTTP/1.1", b"HTTP/1.0") +
                           b"Expect: 100-continue\r\n\r\n" + payload)
        self.assertTrue(got.startswith(b"HTTP/1.1 200 OK"), got[:200])
        # Any other expectation is refused (RFC 9110 10.1.1), as the worker
        # does, not ignored.
        got = raw_exchange(self.c.gateway, head + b"Expect: 200-ok\r\n\r\n" + payload)
        reply_head, _, body = got.partition(b"\r\n\r\n")
        self.assertTrue(reply_head.startswith(b"HTTP/1.1 417 Expectation Failed\r\n"), got[:200])
        self.assertIn(b"Connection: close", reply_head)
        err = json.loads(body)["error"]
        self.assertEqual(err["type"], "invalid_request_error")
        self.assertIn("Expect: 100-continue", err["message"])
        status, _, _ = post(self.gw, "/v1/completions", {"model": "m", "prompt": "after 417"})
        self.assertEqual(status, 200)

    def test_4c_head_replies_have_no_body(self):
        """A reply to HEAD carries no body, the gateway's own errors and the
        workers' included: on a kept-alive connection the next reply starts
        where its head ends (a body there was read as the next reply)."""
        for path in ("/v1/completions", "/v1/chat/completions", "/v1/models"):
            head, rest = head_then_get(self.c.gateway, path, "/v1/models")
            self.assertTrue(head.startswith(b"HTTP/1.1 "), head)
            self.assertIn(b"keep-alive", head.lower())
            self.assertTrue(rest.startswith(b"HTTP/1.1 200"), (path, head, rest[:200]))

    def test_5_pipelined_requests_answer_in_order(self):
        reqs = b""
        for i in range(3):
            body = json.dumps({"model": "m", "prompt": f"pipelined {i}"}).encode()
            reqs += (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        reqs += b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        raw = raw_exchange(self.c.gateway, reqs)
        self.assertEqual(raw.count(b"HTTP/1.1 200"), 4, raw[:400])
        self.assertLess(raw.index(b"text_completion"), raw.index(b'"object": "list"'))

    def test_5b_requests_never_counted_leave_no_charge(self):
        """Requests the nodes never count -- with no prompt (GET
        /v1/models), or failed by every worker -- leave no charge in the
        router's view of their node: only an answered prompt's Match
        confirms one, and the others used to stay charged for good."""
        before = self.c.cluster()["gateway_requests_total"]
        for _ in range(10):
            self.gw.request("GET", "/v1/models")
            resp = self.gw.getresponse()
            resp.read()
            self.assertEqual(resp.status, 200)
        for node in self.c.worker_addr:
            self.c.worker(node, "POST", "/_control", {"fail_status": 503})
        try:
            status, _, body = post(self.gw, "/v1/chat/completions", chat_body(900, 1))
            self.assertNotEqual(status, 200, body)
        finally:
            for node in self.c.worker_addr:
                self.c.worker(node, "POST", "/_control", {"fail_status": 0})
        # /api/cluster is a snapshot, republished twice a second: one with
        # these requests in it (10 GETs and the chat's first attempt, at
        # least), and no charge left.
        poll("a view with these requests and no charge left unconfirmed", lambda: (
            lambda c: c["gateway_requests_total"] >= before + 11 and all(
                n["unconfirmed_requests"] < 1e-6 for n in c["nodes"]))(self.c.cluster()))

    def test_6_retry_on_5xx_before_any_byte(self):
        # A second turn normally goes back to its first turn's worker, but
        # work-balanced placement may send it elsewhere (the bound, a key
        # that changed as prefixes turned hot); then nothing was retried
        # and the next conversation tries again.
        for conv in range(500, 505):
            status, headers, _ = post(self.gw, "/v1/chat/completions", chat_body(conv, 1))
            self.assertEqual(status, 200)
            home = headers["x-radixmesh-node"]
            retries = sample_sum(self.c.settled_metrics(), "radixmesh_gateway_retries_total")
            self.c.worker(home, "POST", "/_control", {"fail_status": 503})
            try:
                status, headers, body = post(self.gw, "/v1/chat/completions", chat_body(conv, 2))
                self.assertEqual(status, 200, body)
                if not [r for r in self.c.requests_of(home) if r.get("outcome") == "failed 503"
                        and f"conversation {conv}" in r["body"]]:
                    continue  # it went elsewhere first: no retry to check
                self.assertNotEqual(headers["x-radixmesh-node"], home)
                # /metrics is published twice a second and the retry is counted
                # while the request is in flight: wait until the published
                # counter moved and nothing is in flight, then it must be +1.
                poll("the retry in the published metrics", lambda: self.c.metric(
                    "radixmesh_gateway_retries_total") > retries and self.c.metric(
                    "radixmesh_gateway_active_requests") == 0)
                self.assertEqual(self.c.metric("radixmesh_gateway_retries_total"), retries + 1)
                return
            finally:
                self.c.worker(home, "POST", "/_control", {"fail_status": 0})
        self.fail("no second turn of five conversations went to its first turn's worker")

    def test_6b_busy_worker_takes_no_new_conversation(self):
        """A worker that reports on its /metrics (vLLM's names) requests
        running and waiting with its KV cache full gets no new conversation
        while the others can take them (its backlog counts as load, and it
        is saturated); once it reports nothing of the kind it gets some."""
        busy = "n0"
        scrapes = self.c.worker(busy, "GET", "/_scrapes")["scrapes"]
        self.c.worker(busy, "POST", "/_control",
                      {"busy": {"running": 8, "waiting": 5, "kv": 0.99}})
        try:
            # Two scrapes after the change: the router has read it.
            poll("two scrapes of the saturated worker", lambda: self.c.worker(
                busy, "GET", "/_scrapes")["scrapes"] >= scrapes + 2)
            homes = {}
            for conv in range(900, 924):
                status, headers, body = post(self.gw, "/v1/chat/completions", chat_body(conv, 1))
                self.assertEqual(status, 200, body)
                homes[conv] = headers["x-radixmesh-node"]
            print(f"new conversations with {busy} busy: "
                  f"{sorted(set(homes.values()))}", file=sys.stderr)
            self.assertNotIn(busy, homes.values())
        finally:
            self.c.worker(busy, "POST", "/_control", {"busy": None})
        scrapes = self.c.worker(busy, "GET", "/_scrapes")["scrapes"]
        poll("two scrapes after", lambda: self.c.worker(
            busy, "GET", "/_scrapes")["scrapes"] >= scrapes + 2)
        seen = set()
        for conv in range(950, 974):
            status, headers, body = post(self.gw, "/v1/chat/completions", chat_body(conv, 1))
            self.assertEqual(status, 200, body)
            seen.add(headers["x-radixmesh-node"])
        self.assertIn(busy, seen)

    def test_7_load_added_latency(self):
        """Bounded load: concurrent clients through the gateway vs straight
        to the workers (client k to worker k % 3, the same spread). Every
        request through the gateway is counted once, reaches exactly one
        worker once (no loss, no retry), comes back from the worker its
        x-radixmesh-node names, and the workers share the load; prints the
        added latency."""
        seconds = ARGS.load_seconds

        def run(addrs, results, stop_at, n):
            conn = http.client.HTTPConnection(addrs[n % len(addrs)], timeout=30)
            i = 0
            while time.monotonic() < stop_at:
                body = {"model": "m", "prompt": f"load {n} {i} " + "words " * 50}
                t0 = time.perf_counter()
                status, headers, data = post(conn, "/v1/completions", body)
                worker = json.loads(data).get("worker") if status == 200 else None
                results.append((time.perf_counter() - t0, status,
                                headers.get("x-radixmesh-node"), worker))
                i += 1
            conn.close()

        def load_requests():
            """Load requests each worker has received, by node."""
            return {n: sum(1 for r in self.c.requests_of(n) if '"load ' in r.get("body", ""))
                    for n in ("n0", "n1", "n2")}

        # A snapshot taken after every earlier request has started counts
        # each of them (a request is counted when it starts); one with none
        # in flight also holds their answers and retries.
        text = poll("no gateway request in flight", lambda: (
            lambda t: t if sample_sum(t, "radixmesh_gateway_active_requests") == 0 else None)(
                self.c.settled_metrics()))
        counted = sample_sum(text, "radixmesh_gateway_requests_total")
        ok_before = sample_sum(text, "radixmesh_gateway_responses_total", 'code="2xx"')
        retries = sample_sum(text, "radixmesh_gateway_retries_total")
        figures = {}
        workers = [self.c.worker_addr[n] for n in ("n0", "n1", "n2")]
        for name, addr in (("direct", workers), ("gateway", [self.c.gateway])):
            results = []
            received = load_requests()
            stop_at = time.monotonic() + seconds
            threads = [threading.Thread(target=run, args=(addr, results, stop_at, k))
                       for k in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            after = load_requests()
            lat = sorted(r[0] for r in results)
            errors = sum(1 for r in results if r[1] != 200)
            figures[name] = (statistics.median(lat), lat[int(len(lat) * 0.99) - 1], len(lat),
                             errors, {n: after[n] - received[n] for n in after}, results)
        d, g = figures["direct"], figures["gateway"]
        print(f"load ({seconds:g} s, 8 clients): direct p50 {d[0]*1e3:.2f} ms p99 "
              f"{d[1]*1e3:.2f} ms ({d[2]} requests); gateway p50 {g[0]*1e3:.2f} ms p99 "
              f"{g[1]*1e3:.2f} ms ({g[2]} requests, {g[3]} errors, per worker {g[4]}); added "
              f"p50 {(g[0]-d[0])*1e3:.2f} ms p99 {(g[1]-d[1])*1e3:.2f} ms", file=sys.stderr)
        self.assertEqual(d[3], 0)
        self.assertEqual(g[3], 0)
        sent = g[2]
        # Each request reached exactly one worker, once, and came back from
        # the worker its header names.
        self.assertEqual(sum(g[4].values()), sent, g[4])
        self.assertEqual([r for r in g[5] if r[3] != "w" + r[2][1:]], [])
        # The gateway counted every request and answered each 2xx ...
        poll("the load counted", lambda: self.c.metric("radixmesh_gateway_requests_total")
             >= counted + sent and self.c.metric("radixmesh_gateway_active_requests") == 0)
        self.assertEqual(self.c.metric("radixmesh_gateway_requests_total"), counted + sent)
        self.assertEqual(self.c.metric("radixmesh_gateway_responses_total", 'code="2xx"'),
                         ok_before + sent)
        self.assertEqual(self.c.metric("radixmesh_gateway_retries_total"), retries)
        # ... and spread distinct prompts over every worker: none gets less
        # than half its even share (bounded load, two choices).
        for n, k in g[4].items():
            self.assertGreaterEqual(k, sent / 3 / 2, f"{n} got {k} of {sent}: {g[4]}")

    def test_8_worker_killed_mid_run(self):
        victim = "n2"
        self.c.workers[2].kill()
        self.c.workers[2].wait()
        errors, used = 0, {}
        for conv in range(30):
            status, headers, _ = post(self.gw, "/v1/chat/completions", chat_body(900 + conv, 1))
            if status != 200:
                errors += 1
            else:
                n = headers["x-radixmesh-node"]
                used[n] = used.get(n, 0) + 1
        self.assertEqual(errors, 0)
        self.assertNotIn(victim, used)
        doc = poll("the dead worker marked down", lambda: (lambda d: d if not [
            n for n in d["nodes"] if n["id"] == victim][0]["worker_healthy"] else None)(
                self.c.cluster()))
        self.assertTrue(doc)
        # Cluster stats still come from every node, and later requests avoid
        # the dead worker without even trying it.
        text = self.c.settled_metrics()
        seen = sample_sum(text, "radixmesh_gateway_requests_total")
        retries = sample_sum(text, "radixmesh_gateway_retries_total")
        for conv in range(10):
            status, headers, _ = post(self.gw, "/v1/chat/completions", chat_body(950 + conv, 1))
            self.assertEqual(status, 200)
            self.assertNotEqual(headers["x-radixmesh-node"], victim)
        self.assertEqual(
            self.c.fresh_metric("radixmesh_gateway_retries_total", seen + 10), retries)


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--node", required=True)
    ap.add_argument("--router", required=True)
    ap.add_argument("--load-seconds", type=float, default=5.0)
    ap.add_argument("--slow", action="store_true", help="daemons run under valgrind")
    ARGS, rest = ap.parse_known_args()
    try:
        code = run_tests(rest)
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
    sys.exit(code)


if __name__ == "__main__":
    main()
