#!/usr/bin/python3
"""Hostile clients against both daemons, on loopback only: floods that are
never read, connection storms, half-sent requests, oversized and malformed
input, misbehaving workers behind the gateway, lease and namespace hoarding.

Each case is bounded in count and time, checks that the daemon keeps
serving and that its memory stays bounded (RSS before/after is printed).

Usage: test_hostile.py --node PATH --router PATH --proto-dir DIR [unittest args]
"""
import argparse
import gzip
import http.client
import json
import os
import select
import socket
import sys
import tempfile
import time
import unittest

import rmtest

ARGS = None
pb = pb_grpc = health_pb = health_grpc = None


def report(case, before_kib, after_kib):
    print(f"{case}: RSS {before_kib} KiB -> {after_kib} KiB", file=sys.stderr)


HERE = os.path.dirname(os.path.abspath(__file__))


def asan_env():
    """The environment for a daemon whose RSS is checked: under ASan, freed
    memory waits in a quarantine (256 MiB by default) and would count as
    live; a small one keeps RSS about what is held. Other builds ignore it."""
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=8").lstrip(":")
    return env


def raw(addr, payload, timeout=20):
    """Everything the server sends back on one connection after payload,
    until it closes (or a reset ends it)."""
    s = rmtest.connect(addr, timeout=rmtest.deadline_s(timeout))
    got = b""
    try:
        s.sendall(payload)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except ConnectionResetError:
        pass
    finally:
        s.close()
    return got


def post(conn, path, obj):
    """(status, lower-cased headers, body) of a JSON POST on conn."""
    conn.request("POST", path, body=json.dumps(obj), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


class GatewayHostile(unittest.TestCase):
    """The gateway against hostile clients and workers that misbehave
    behind it: two cache nodes, each paired with a fake worker
    (fake_worker.py, told how to misbehave through /_control). Each case
    starts a router of its own with the flags it needs."""

    @classmethod
    def setUpClass(cls):
        cls.workers = [rmtest.Daemon([sys.executable, os.path.join(HERE, "fake_worker.py"),
                                      "--name", f"w{i}"]) for i in range(2)]
        cls.nodes = [rmtest.Daemon([ARGS.node, "--listen", "127.0.0.1:0", "--node-id", f"n{i}",
                                    "--log-level", "warn", "--worker-url",
                                    "http://" + cls.workers[i].addr]) for i in range(2)]
        cls.node_list = ",".join(f"n{i}={n.addr}" for i, n in enumerate(cls.nodes))

    @classmethod
    def tearDownClass(cls):
        codes = [d.stop() for d in cls.nodes]
        for w in cls.workers:
            w.stop()
        if codes != [0, 0]:
            raise AssertionError(f"nodes exited with {codes}")

    def router(self, *flags):
        """A router with a gateway in front of both workers, once both are
        paired; stopped (and its exit code checked) when the case ends."""
        r = rmtest.Daemon([ARGS.router, "--listen", "127.0.0.1:0", "--nodes", self.node_list,
                           "--http", "127.0.0.1:0", "--gateway", "127.0.0.1:0",
                           "--log-level", "info", "--stats-interval", "200",
                           "--health-interval-ms", "200", "--worker-scrape-interval-ms", "200",
                           "--shutdown-delay-ms", "0", *flags], until="GATEWAY", env=asan_env())

        def stop():
            code = r.stop()
            self.assertEqual(code, 0, "".join(r.log)[-3000:])
        self.addCleanup(stop)
        rmtest.poll("both workers paired", lambda: self.breakers(r) == ["closed", "closed"])
        return r

    def cluster(self, r):
        status, _, body = rmtest.http_request(r.http, "GET", "/api/cluster")
        self.assertEqual(status, 200)
        return json.loads(body)

    def breakers(self, r):
        """Each worker's breaker state (by node id); "down" while it is not
        paired, its node off the ring, or its /metrics unreachable."""
        out = []
        for n in sorted(self.cluster(r)["nodes"], key=lambda n: n["id"]):
            b = n.get("worker_breaker", "down")
            if b == "closed" and not (n["healthy"] and n.get("worker_healthy")):
                b = "down"
            out.append(b)
        return out

    def control(self, i, **ctl):
        status, _, _ = rmtest.http_request(self.workers[i].addr, "POST", "/_control",
                                           body=json.dumps(ctl))
        self.assertEqual(status, 200)

    def received(self, i, marker):
        """What worker i received with marker in its body."""
        _, _, body = rmtest.http_request(self.workers[i].addr, "GET", "/_requests")
        return [r for r in json.loads(body) if marker in r.get("body", "")]

    def scrapes(self, i):
        _, _, body = rmtest.http_request(self.workers[i].addr, "GET", "/_scrapes")
        return json.loads(body)["scrapes"]

    def test_pipelined_invalid_json_never_read(self):
        """40 MiB of pipelined invalid JSON from a client that never reads
        its 400s: the gateway stops reading it while the replies queue up."""
        r = self.router()
        before = rmtest.rss_kib(r.pid)
        one = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{not json"
        block = one * ((1 << 20) // len(one))
        s = rmtest.connect(r.gateway)
        s.settimeout(rmtest.deadline_s(3))  # a send blocked this long: the gateway stopped reading
        sent = 0
        try:
            while sent < 40 << 20:
                s.sendall(block)
                sent += len(block)
        except socket.timeout:
            pass
        after = rmtest.rss_kib(r.pid)
        s.close()
        report(f"gateway: {sent >> 20} MiB of pipelined invalid JSON, never read", before, after)
        self.assertLess(sent, 40 << 20, "the gateway read the whole flood")
        # Read whole, it took 400 MiB; stopped, ~2 MiB (~50 MiB under ASan,
        # whose allocator keeps what it once handed out).
        self.assertLess(after - before, 96 << 10)
        status, _, _ = rmtest.http_request(r.gateway, "GET", "/v1/models")
        self.assertEqual(status, 200)

    def test_unfinished_bodies_against_the_budget(self):
        """60 connections each sending a 15 MiB body they never finish:
        past --gateway-max-buffered-bytes they get 503 with Retry-After."""
        r = self.router("--gateway-max-buffered-bytes", str(32 << 20))
        before = rmtest.rss_kib(r.pid)
        head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % (15 << 20))
        socks = [rmtest.connect(r.gateway) for _ in range(60)]
        for s in socks:
            s.sendall(head)
        chunk = b"x" * (1 << 20)
        for _ in range(6):  # 6 of the 15 MiB each, round-robin: 360 MiB offered in all
            for s in socks:
                try:
                    s.sendall(chunk)
                except OSError:
                    pass  # refused and closed
        after = rmtest.rss_kib(r.pid)
        rmtest.poll("a refusal", lambda: rmtest.metric(r.http, "radixmesh_gateway_over_budget_total"))
        refused = 0
        for s in socks:
            if select.select([s], [], [], 0)[0]:
                try:
                    reply = s.recv(65536)
                except ConnectionResetError:
                    continue
                self.assertTrue(reply.startswith(b"HTTP/1.1 503"), reply[:200])
                self.assertIn(b"Retry-After: ", reply)
                refused += 1
            s.close()
        report(f"gateway: 60 unfinished 15 MiB bodies, {refused} refused", before, after)
        self.assertGreater(refused, 0)
        self.assertLess(after - before, 128 << 10)
        rmtest.poll("the bodies' bytes given back", lambda: rmtest.metric(
            r.http, "radixmesh_gateway_buffered_request_bytes") == 0)
        status, _, _ = rmtest.http_request(r.gateway, "POST", "/v1/completions",
                                           body=json.dumps({"model": "m", "prompt": "after"}))
        self.assertEqual(status, 200)

    def test_large_body_is_parsed_off_the_loop(self):
        """A 16 MiB token array (most of a second to parse) does not stall
        other connections: a small request is answered while it parses."""
        r = self.router()
        before = rmtest.rss_kib(r.pid)
        body = b'{"model": "m", "prompt": [' + b"1," * ((16 << 20) // 2 - 64) + b"-2]}"
        small = http.client.HTTPConnection(r.gateway, timeout=rmtest.deadline_s(20))
        small.request("GET", "/v1/models")  # accepted and idle before the large one ends
        small.getresponse().read()
        big = rmtest.connect(r.gateway, timeout=rmtest.deadline_s(60))
        big.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                    % len(body) + body[:-1])
        rmtest.poll("the gateway to hold all but the last byte", lambda: rmtest.metric(
            r.http, "radixmesh_gateway_buffered_request_bytes") >= len(body) - 1, 60)
        big.sendall(body[-1:])
        small.request("POST", "/v1/completions", body="{not json")
        resp = small.getresponse()
        resp.read()
        self.assertEqual(resp.status, 400)
        self.assertEqual(select.select([big], [], [], 0)[0], [],
                         "the small request waited for the large body's parse")
        reply = b""
        while b"prompt[" not in reply:
            chunk = big.recv(65536)
            self.assertTrue(chunk, reply[:300])
            reply += chunk
        self.assertTrue(reply.startswith(b"HTTP/1.1 400"), reply[:200])
        big.close()
        small.close()
        report("gateway: a 16 MiB token array parsed beside a small request", before,
               rmtest.rss_kib(r.pid))

    def answers_while(self, r, misbehaviour, marker):
        """Four requests on one client connection while both workers
        misbehave: each must get its own answer. Returns their headers."""
        for i in (0, 1):
            self.control(i, **{misbehaviour: True})
        try:
            conn = http.client.HTTPConnection(r.gateway, timeout=rmtest.deadline_s(20))
            seen = []
            for k in range(4):
                status, headers, body = post(conn, "/v1/completions", {
                    "model": "m", "prompt": f"{marker} {k}", "fake_reply": f"reply {k}"})
                self.assertEqual(status, 200, body)
                self.assertEqual(json.loads(body)["choices"][0]["text"], f"reply {k}")
                seen.append(headers)
            conn.close()
            return seen
        finally:
            for i in (0, 1):
                self.control(i, **{misbehaviour: False})

    def test_worker_interim_responses(self):
        """100 Continue and 103 Early Hints from a worker are not its
        answer: the client gets the 200, and the next request its own."""
        r = self.router()
        before = rmtest.rss_kib(r.pid)
        self.answers_while(r, "early_hints", "hints")
        report("gateway: worker sends 1xx before each answer", before, rmtest.rss_kib(r.pid))

    def test_worker_bytes_after_its_response(self):
        """A worker that sends bytes after its response: they never reach
        another client, and that connection is not reused."""
        r = self.router()
        before = rmtest.rss_kib(r.pid)
        for headers in self.answers_while(r, "trailing_garbage", "garbage"):
            self.assertNotIn("x-injected", headers)
        for i in (0, 1):  # one worker connection per request
            ports = [x["port"] for x in self.received(i, "garbage ")]
            self.assertEqual(len(ports), len(set(ports)), f"w{i} got requests on a reused connection")
        report("gateway: worker sends bytes after each answer", before, rmtest.rss_kib(r.pid))

    def wedged(self, failures, cooldown_ms):
        """A router with a 500 ms first-byte timeout and the given breaker,
        worker 0 hanging every completion (until the case ends); the router,
        its RSS now, and a client connection to its gateway."""
        r = self.router("--gateway-first-byte-timeout-ms", "500", "--gateway-breaker-failures",
                        str(failures), "--gateway-breaker-cooldown-ms", str(cooldown_ms))
        self.control(0, hang=True)
        self.addCleanup(self.control, 0, hang=False)
        return r, rmtest.rss_kib(r.pid), http.client.HTTPConnection(
            r.gateway, timeout=rmtest.deadline_s(20))

    def test_wedged_worker_circuit_breaks(self):
        """A worker whose completions hang while its /metrics answers: after
        --gateway-breaker-failures timeouts it gets no more requests, and
        successful scrapes do not bring it back."""
        r, before, conn = self.wedged(2, 600000)
        for k in range(40):
            status, headers, body = post(conn, "/v1/completions",
                                         {"model": "m", "prompt": f"wedge {k} " + "w " * 40})
            self.assertEqual(status, 200, body)  # a timed-out try went once more, to w1
            self.assertEqual(headers["x-radixmesh-node"], "n1")
            if len(self.received(0, "wedge ")) >= 2:
                break
        self.assertEqual(len(self.received(0, "wedge ")), 2)
        rmtest.poll("the breaker open", lambda: self.breakers(r)[0] == "open")
        seen = self.scrapes(0)
        rmtest.poll("the wedged worker scraped", lambda: self.scrapes(0) >= seen + 3)
        self.assertEqual(self.breakers(r)[0], "open", "a scrape closed the breaker")
        for k in range(20):
            status, headers, _ = post(conn, "/v1/completions",
                                      {"model": "m", "prompt": f"wedge after {k} " + "w " * 40})
            self.assertEqual(status, 200)
            self.assertEqual(headers["x-radixmesh-node"], "n1")
        self.assertEqual(len(self.received(0, "wedge ")), 2)
        self.assertTrue(r.logged("circuit open"))
        conn.close()
        report("gateway: a wedged worker", before, rmtest.rss_kib(r.pid))

    def test_wedged_worker_back_after_a_trial(self):
        """Once the cooldown has passed, one trial request goes to the worker;
        answered, it closes the breaker."""
        r, before, conn = self.wedged(1, 300)
        k = 0
        while not self.received(0, "trial "):
            self.assertLess(k, 40)
            status, _, _ = post(conn, "/v1/completions", {"model": "m", "prompt": f"trial {k}"})
            self.assertEqual(status, 200)
            k += 1
        rmtest.poll("the breaker open", lambda: self.breakers(r)[0] in ("open", "half-open"))
        self.control(0, hang=False)

        def closed_again():
            status, _, _ = post(conn, "/v1/completions", {"model": "m", "prompt": "trial again"})
            self.assertEqual(status, 200)
            return self.breakers(r)[0] == "closed"
        rmtest.poll("a trial request to close the breaker", closed_again)
        self.assertTrue(r.logged("circuit closed"))
        conn.close()
        report("gateway: a worker back after a trial", before, rmtest.rss_kib(r.pid))

    def test_slow_metrics_scraped_alone(self):
        """A worker whose /metrics drips a byte every 2 s does not stop the
        scrapes of the others, and stays routable (it answered)."""
        r = self.router()
        before = rmtest.rss_kib(r.pid)
        self.control(0, slow_metrics=2.0)
        try:
            slow, other = self.scrapes(0), self.scrapes(1)
            rmtest.poll("the other worker scraped meanwhile", lambda: self.scrapes(1) >= other + 10)
            # Its deadline ended the slow scrape and the next one started.
            rmtest.poll("the slow worker scraped again", lambda: self.scrapes(0) >= slow + 2, 30)
            self.assertEqual(self.breakers(r), ["closed", "closed"])
        finally:
            self.control(0, slow_metrics=0)
        report("gateway: a worker's /metrics one byte every 2 s", before, rmtest.rss_kib(r.pid))

    def test_paused_stream_does_not_time_out(self):
        """A client that does not read pauses the worker's stream; the
        worker's idle timeout (--gateway-upstream-timeout-ms) does not run
        meanwhile, and every byte arrives once the client reads."""
        r = self.router("--gateway-upstream-timeout-ms", "300")
        before = rmtest.rss_kib(r.pid)
        n = 24 << 20
        body = json.dumps({"model": "m", "prompt": "big", "fake_bytes": n}).encode()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        host, port = r.gateway.rsplit(":", 1)
        s.settimeout(rmtest.deadline_s(30))
        s.connect((host, int(port)))
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        rmtest.poll("the stream paused", lambda: rmtest.metric(
            r.http, "radixmesh_gateway_backpressure_pauses_total") > 0, 30)
        # The stream stays paused for several idle timeouts: this wait is
        # the condition under test, not a guess at how long something takes.
        paused_at = time.monotonic()
        rmtest.poll("3 idle timeouts to pass", lambda: time.monotonic() - paused_at > 0.9)
        got = 0
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        s.close()
        self.assertGreater(got, n, "the stream was cut")
        self.assertEqual(rmtest.metric(r.http, "radixmesh_gateway_upstream_timeouts_total"), 0)
        report("gateway: a 24 MiB stream to a client that paused", before, rmtest.rss_kib(r.pid))

    def test_connection_cap_answers_503(self):
        """Past --gateway-max-connections a client gets 503 (Connection:
        close, Retry-After), not a reset."""
        r = self.router("--gateway-max-connections", "4")
        before = rmtest.rss_kib(r.pid)
        held = []
        for _ in range(4):
            c = http.client.HTTPConnection(r.gateway, timeout=rmtest.deadline_s(20))
            c.request("GET", "/v1/models")
            c.getresponse().read()  # accepted, and kept open
            held.append(c)
        reply = raw(r.gateway, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(reply.startswith(b"HTTP/1.1 503"), reply[:200])
        self.assertIn(b"Connection: close\r\n", reply)
        self.assertIn(b"Retry-After: ", reply)
        self.assertIn(b"max-connections", reply)
        held.pop().close()
        rmtest.poll("a free slot", lambda: raw(
            r.gateway, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ).startswith(b"HTTP/1.1 200"))
        for c in held:
            c.close()
        report("gateway: connections past the cap", before, rmtest.rss_kib(r.pid))

    def test_transfer_coding_other_than_chunked(self):
        """Transfer-Encoding: gzip, chunked is 501 Not Implemented (the body
        would reach the worker compressed, as if plain)."""
        r = self.router()
        before = rmtest.rss_kib(r.pid)
        data = gzip.compress(json.dumps({"model": "m", "prompt": "zipped"}).encode())
        reply = raw(r.gateway, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                    b"Transfer-Encoding: gzip, chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
                    % (len(data), data))
        self.assertTrue(reply.startswith(b"HTTP/1.1 501"), reply[:200])
        self.assertIn(b"only chunked", reply)
        report("gateway: gzip, chunked request", before, rmtest.rss_kib(r.pid))

    def test_oversized_heads_are_431(self):
        """100 KB of headers is 431, as one header or as many small ones
        (past http-parser's own 80 KiB bound)."""
        r = self.router()
        before = rmtest.rss_kib(r.pid)
        one = b"X-Big: " + b"b" * 100000 + b"\r\n"
        many = b"".join(b"A%d: b\r\n" % i for i in range(12000))
        for name, hdrs in (("one header", one), ("many headers", many)):
            self.assertGreater(len(hdrs), 100000)
            reply = raw(r.gateway, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + hdrs + b"\r\n")
            self.assertTrue(reply.startswith(b"HTTP/1.1 431"), f"{name}: {reply[:200]}")
        report("gateway: 100 KB request heads", before, rmtest.rss_kib(r.pid))


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
