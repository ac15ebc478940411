#!/usr/bin/python3
"""The reference worker's OpenAI-compatible HTTP server (radixmesh-worker
--http) against real cache nodes.

  - streamed and whole completions give the same tokens and text;
  - a 1,536-token prompt computed on worker A, then sent to worker B on the
    same node: B reports >= 1,520 cached tokens in usage and on /metrics,
    A, B and a worker without cache give identical tokens; TTFT through
    HTTP on A and B is printed (the issue's figure);
  - bad input gets an OpenAI-style 400/404/405 naming what was wrong and the
    worker keeps serving;
  - a node SIGKILLed mid-ReadKV (a relay in front of it counts the KV bytes):
    the worker recomputes, the client gets the same answer, 0 cached tokens,
    and the cache error is counted;
  - a client that leaves mid-stream cancels its generation;
  - --max-waiting: with the engine held (its node SIGSTOPped) one request
    runs, one waits, the next gets 503 + Retry-After, and a waiting request
    whose client leaves leaves the queue;
  - TLS and a bearer token towards the node (--cache-tls-ca,
    --cache-token-file), and a missing token: answered, without the cache;
  - SIGTERM drains: the request in progress is answered, then exit 0.

Usage: test_worker_http.py --node PATH --worker PATH [--small] [--slow]
  --small: a small model (2 layers, d_model 64, vocab 512), for sanitizers
  --slow:  the worker runs under valgrind (deadlines x10)
Every process binds 127.0.0.1 on a free port and is stopped by the test;
every wait polls with a deadline.
"""
import argparse
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import rmtest
from rmtest import poll
from test_node_grpc import make_pki  # a CA and a server certificate for 127.0.0.1

ARGS = None
MAX_CONTEXT = 2048
PROMPT_LEN = 1536


def model_flags():
    if ARGS.small:
        return ["--layers", "2", "--d-model", "64", "--heads", "4", "--vocab", "512",
                "--max-context", str(MAX_CONTEXT)]
    return ["--max-context", str(MAX_CONTEXT)]


def vocab():
    return 512 if ARGS.small else 8192


def kv_bytes():
    return 2 * (2 * 64 if ARGS.small else 4 * 256) * 4


def start_node(node_id, *extra):
    return rmtest.Daemon([ARGS.node, "--listen", "127.0.0.1:0", "--node-id", node_id,
                          "--kv-bytes-per-token", str(kv_bytes()), "--page-tokens", "16",
                          "--pool-tokens", "16384", "--shutdown-delay-ms", "0",
                          "--log-level", "warn", *extra])


def start_worker(cache="none", *extra):
    # Under valgrind a cache call takes seconds (the first one most).
    slow = ["--cache-timeout-ms", "60000"] if rmtest.SLOW else []
    return rmtest.Daemon([ARGS.worker, "--http", "127.0.0.1:0", "--cache", cache,
                          "--model-name", "ref", "--log-level", "warn", *model_flags(), *slow,
                          *extra], until="HTTP")


def post(addr, body, timeout=120):
    """(status, headers, parsed JSON) of one POST /v1/completions."""
    status, headers, data = rmtest.http_request(
        addr, "POST", "/v1/completions", body=json.dumps(body),
        headers={"Content-Type": "application/json"}, timeout=rmtest.deadline_s(timeout))
    return status, headers, json.loads(data) if data else None


def stream(addr, body, timeout=120):
    """Events of a streamed completion: (seconds to the first token event,
    [event dicts], saw [DONE])."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=rmtest.deadline_s(timeout))
    t0 = time.monotonic()
    conn.request("POST", "/v1/completions", body=json.dumps(dict(body, stream=True)),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.status
    assert resp.getheader("Content-Type") == "text/event-stream"
    events, ttft, done = [], None, False
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        if line == b"data: [DONE]":
            done = True
            continue
        ev = json.loads(line[6:])
        if ttft is None and ev["choices"]:
            ttft = time.monotonic() - t0
        events.append(ev)
    conn.close()
    return ttft, events, done


def warm_cache(worker, tag):
    """Sends a short prompt until it comes back cached: the worker's cache
    connection is up (a worker under valgrind can take seconds to finish its
    first TLS handshake; a request before that is computed without the
    cache, and the worker skips the cache for its backoff)."""
    body = {"prompt": f"warm-up {tag} " * 8, "max_tokens": 1, "temperature": 0}
    poll(f"{tag}'s cache to answer",
         lambda: post(worker.http, body)[2]["usage"]["prompt_tokens_details"]["cached_tokens"] > 0,
         120)


def metrics(addr):
    """{name{labels}: value} of a worker's /metrics, and {name: sum}."""
    status, _, body = rmtest.http_request(addr, "GET", "/metrics")
    assert status == 200
    sums = {}
    for line in body.decode().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = line.split("{")[0].split(" ")[0]
        sums[name] = sums.get(name, 0.0) + float(line.split()[-1])
    return sums


def prompt_ids(n, seed):
    r = random.Random(seed)
    return [r.randrange(vocab()) for _ in range(n)]


class KillRelay:
    """A TCP relay in front of a node. Once armed with a byte count, it
    SIGKILLs the node as soon as that many bytes have gone from the node to
    the worker, and cuts every connection: a node that dies mid-ReadKV."""

    def __init__(self, target, pid):
        self.target, self.pid = target, pid
        self.lock = threading.Lock()
        self.limit, self.count, self.killed = None, 0, False
        self.socks = []
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.addr = "127.0.0.1:%d" % self.lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, limit):
        with self.lock:
            self.limit, self.count = limit, 0

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                if self.killed:
                    c.close()
                    continue
            host, port = self.target.rsplit(":", 1)
            try:
                n = socket.create_connection((host, int(port)))
            except OSError:
                c.close()
                continue
            with self.lock:
                self.socks += [c, n]
            threading.Thread(target=self._pipe, args=(c, n, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(n, c, True), daemon=True).start()

    def _cut(self):
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _pipe(self, src, dst, from_node):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            if from_node:
                with self.lock:
                    if self.limit is not None and not self.killed:
                        self.count += len(data)
                        if self.count >= self.limit:
                            os.kill(self.pid, signal.SIGKILL)
                            self.killed = True
                            self._cut()
                            return
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self):
        self.lsock.close()
        with self.lock:
            self._cut()
            for s in self.socks:
                s.close()


class WorkerHttpTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = start_node("n1")
        cls.a = start_worker(cls.node.addr)
        cls.b = start_worker(cls.node.addr)
        cls.c = start_worker("none")
        warm_cache(cls.a, "A")
        warm_cache(cls.b, "B")

    @classmethod
    def tearDownClass(cls):
        codes = [w.stop() for w in (cls.a, cls.b, cls.c)]
        cls.node.stop()
        assert codes == [0, 0, 0], codes

    def test_1_stream_and_whole_give_same_tokens(self):
        for prompt in ("The quick brown fox, " * 8, prompt_ids(40, 5)):
            body = {"model": "ref", "prompt": prompt, "max_tokens": 24, "temperature": 0.8,
                    "top_p": 0.95, "seed": 11, "return_token_ids": True}
            status, _, whole = post(self.c.http, body)
            self.assertEqual(status, 200)
            choice = whole["choices"][0]
            self.assertEqual(len(choice["token_ids"]), 24)
            self.assertEqual(choice["finish_reason"], "length")
            _, events, done = stream(self.c.http, dict(body, stream_options={"include_usage": True}))
            self.assertTrue(done)
            usage = events[-1]["usage"]
            token_events = [e for e in events if e["choices"]]
            # One event per token as it comes; the last carries the finish
            # reason (or, if every token went out first, an event without one).
            self.assertIn(len(token_events), (24, 25))
            self.assertTrue(all(len(e["choices"][0]["token_ids"]) == 1 for e in token_events[:24]))
            ids = [t for e in token_events for t in e["choices"][0]["token_ids"]]
            text = "".join(e["choices"][0]["text"] for e in token_events)
            self.assertEqual(ids, choice["token_ids"])
            self.assertEqual(text, choice["text"])
            self.assertEqual(token_events[-1]["choices"][0]["finish_reason"], "length")
            self.assertTrue(all(e["choices"][0]["finish_reason"] is None
                                for e in token_events[:-1]))
            self.assertEqual(usage, whole["usage"])
            self.assertEqual(usage["total_tokens"], usage["prompt_tokens"] + 24)
            if isinstance(prompt, str):
                # Text is answered in printable ASCII: the reply resends as
                # the same tokens.
                self.assertTrue(all(32 <= t < 127 for t in ids))
                self.assertEqual([ord(ch) for ch in text], ids)

    def test_2_prompt_moves_from_a_to_b(self):
        p = prompt_ids(PROMPT_LEN, 1536)
        body = {"model": "ref", "prompt": p, "max_tokens": 8, "temperature": 1.0, "seed": 1234,
                "return_token_ids": True, "stream_options": {"include_usage": True}}
        before_b = metrics(self.b.http)
        ttft_a, ev_a, _ = stream(self.a.http, body)
        ttft_b, ev_b, _ = stream(self.b.http, body)
        _, ev_c, _ = stream(self.c.http, body)
        ids = [[t for e in ev if e["choices"] for t in e["choices"][0]["token_ids"]]
               for ev in (ev_a, ev_b, ev_c)]
        self.assertEqual(ids[0], ids[2])
        self.assertEqual(ids[1], ids[2])
        self.assertEqual(ev_a[-1]["usage"]["prompt_tokens_details"]["cached_tokens"], 0)
        cached_b = ev_b[-1]["usage"]["prompt_tokens_details"]["cached_tokens"]
        self.assertGreaterEqual(cached_b, 1520, "".join(self.b.log[-5:]))
        self.assertEqual(ev_b[-1]["usage"]["prompt_tokens"], PROMPT_LEN)
        after_b = metrics(self.b.http)
        self.assertEqual(after_b["vllm:prefix_cache_hits_total"]
                         - before_b["vllm:prefix_cache_hits_total"], cached_b)
        self.assertEqual(after_b["vllm:prefix_cache_queries_total"]
                         - before_b["vllm:prefix_cache_queries_total"], PROMPT_LEN)
        self.assertGreaterEqual(after_b["radixmesh_worker_kv_read_bytes_total"]
                                - before_b["radixmesh_worker_kv_read_bytes_total"],
                                cached_b * kv_bytes())
        print(f"TTFT through HTTP, {PROMPT_LEN}-token prompt ({'small' if ARGS.small else 'default'}"
              f" model): A (computes) {ttft_a * 1000:.1f} ms, B (cluster KV, {cached_b} cached) "
              f"{ttft_b * 1000:.1f} ms, B/A {ttft_b / ttft_a:.3f}", file=sys.stderr)

    def test_3_bad_input_is_refused_and_the_worker_keeps_serving(self):
        host, port = self.c.http.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=rmtest.deadline_s(60))

        def ask(method, path, body):
            data = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            out = resp.read()
            return resp.status, json.loads(out) if out else None

        cases = [
            ({"prompt": [1] * (MAX_CONTEXT + 1)}, 400, "prompt", "maximum context"),
            ({"prompt": "x" * (MAX_CONTEXT + 1)}, 400, "prompt", "maximum context"),
            ({"prompt": [1, 2, vocab()]}, 400, "prompt", "outside the vocabulary"),
            ({"prompt": [1, -2]}, 400, "prompt", "not a token id"),
            ('{"prompt": [1, 2', 400, None, "malformed JSON"),
            ("", 400, None, "malformed JSON"),
            ({"prompt": "hi", "max_tokens": 0}, 400, "max_tokens", "max_tokens"),
            ({"prompt": "hi", "temperature": -1}, 400, "temperature", "temperature"),
            ({"prompt": "hi", "model": "gpt-4"}, 404, "model", "does not exist"),
            ({"prompt": ["a", "b"]}, 400, "prompt", "batched"),
        ]
        for body, status, param, words in cases:
            got, err = ask("POST", "/v1/completions", body)
            self.assertEqual(got, status, body if len(str(body)) < 80 else str(body)[:80])
            self.assertEqual(err["error"]["param"], param)
            self.assertIn(words, err["error"]["message"])
            self.assertEqual(err["error"]["type"], "invalid_request_error")
        self.assertEqual(ask("GET", "/v1/nothing", None)[0], 404)
        self.assertEqual(ask("GET", "/v1/completions", None)[0], 405)
        self.assertEqual(ask("POST", "/metrics", "{}")[0], 405)
        # Unknown fields are ignored; the same connection still serves.
        status, out = ask("POST", "/v1/completions",
                          {"prompt": "hi", "max_tokens": 2, "logit_bias": {"1": 5},
                           "user": "u", "suffix": None, "frequency_penalty": 0})
        self.assertEqual(status, 200)
        self.assertEqual(out["usage"]["completion_tokens"], 2)
        conn.close()
        self.assertGreaterEqual(metrics(self.c.http)["radixmesh_worker_requests_bad_total"],
                                len(cases))
        # A chunk announced past --max-body-bytes is refused before its
        # bytes come (it used to wait for the request timeout: 408).
        got = rmtest.raw_exchange(self.c.http, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n80000000\r\n")
        self.assertTrue(got.startswith(b"HTTP/1.1 413 "), got[:200])

    def test_4_models_health_and_metrics_names(self):
        status, _, body = rmtest.http_request(self.c.http, "GET", "/v1/models")
        self.assertEqual(status, 200)
        model = json.loads(body)["data"][0]
        self.assertEqual((model["id"], model["max_model_len"]), ("ref", MAX_CONTEXT))
        self.assertEqual(rmtest.http_request(self.c.http, "GET", "/health")[0], 200)
        m = metrics(self.c.http)
        for name in ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
                     "vllm:num_requests_running", "vllm:num_requests_waiting"):
            self.assertIn(name, m)

    def test_4b_head_replies_have_no_body(self):
        """A reply to HEAD carries no body, errors included (RFC 9110
        9.3.2): on a kept-alive connection the next reply starts where its
        head ends (a 405's JSON there was read as the next reply)."""
        for path, status in (("/v1/completions", 405), ("/nowhere", 404), ("/health", 200),
                             ("/v1/models", 200)):
            head, rest = rmtest.head_then_get(self.c.http, path, "/health")
            self.assertTrue(head.startswith(b"HTTP/1.1 %d " % status), head)
            self.assertIn(b"keep-alive", head.lower())
            self.assertTrue(rest.startswith(b"HTTP/1.1 200"), (path, head, rest[:200]))
        # A malformed request after a HEAD is not a HEAD: its 400 has the
        # body its Content-Length says.
        raw = rmtest.raw_exchange(self.c.http, b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"
                                  b"\x01garbage\r\n\r\n")
        second = raw[raw.index(b"HTTP/1.1 400"):]
        head, _, body = second.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        self.assertEqual(len(body), length, second)

    def test_5_client_leaving_mid_stream_cancels(self):
        before = metrics(self.c.http)
        want = MAX_CONTEXT - 8
        host, port = self.c.http.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=rmtest.deadline_s(60))
        conn.request("POST", "/v1/completions",
                     body=json.dumps({"prompt": "cancel!!", "max_tokens": want, "stream": True,
                                      "temperature": 0}))
        resp = conn.getresponse()
        got = 0
        while got < 2:
            if resp.readline().startswith(b"data: "):
                got += 1
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        # It was running when the client left: it ends, cancelled or (the
        # bug) run to its end, and the poll does not outwait the latter.
        poll("the request to end", lambda: metrics(self.c.http)["vllm:num_requests_running"] == 0,
             60)
        after = metrics(self.c.http)
        self.assertEqual(after["radixmesh_worker_requests_cancelled_total"],
                         before["radixmesh_worker_requests_cancelled_total"] + 1)
        generated = (after["vllm:generation_tokens_total"]
                     - before["vllm:generation_tokens_total"])
        print(f"cancelled after {generated:.0f} of {want} tokens", file=sys.stderr)
        self.assertGreaterEqual(generated, 2)
        self.assertLess(generated, want)
        self.assertEqual(after["vllm:num_requests_running"], 0)
        self.assertEqual(post(self.c.http, {"prompt": "still here", "max_tokens": 1})[0], 200)


    def test_6_sighup_is_logged_and_ignored(self):
        # The worker has nothing to reload; a SIGHUP (a terminal closing, a
        # supervisor's reload) once killed it by the default action.
        self.c.proc.send_signal(signal.SIGHUP)
        self.c.wait_log("the SIGHUP to be taken", "SIGHUP ignored")
        self.assertTrue(self.c.alive())
        self.assertEqual(post(self.c.http, {"prompt": "after hup", "max_tokens": 1})[0], 200)


class WorkerCacheFailureTest(unittest.TestCase):
    def test_node_killed_mid_readkv_the_worker_recomputes(self):
        node = start_node("dying")
        relay = KillRelay(node.addr, node.pid)
        # Small ReadKV calls: the kill lands between or inside them.
        w = start_worker(relay.addr, "--read-chunk-tokens", "64")
        ref = start_worker("none")
        try:
            warm_cache(w, "the worker behind the relay")
            body = {"prompt": prompt_ids(PROMPT_LEN, 77), "max_tokens": 6, "temperature": 0.7,
                    "seed": 5, "return_token_ids": True}
            status, _, warm = post(w.http, body)  # computes and writes the KV
            self.assertEqual(status, 200)
            self.assertEqual(warm["usage"]["prompt_tokens_details"]["cached_tokens"], 0)
            errors = metrics(w.http)["radixmesh_worker_cache_errors_total"]
            relay.arm(PROMPT_LEN * kv_bytes() // 3)  # a third of the prefix's KV
            status, _, out = post(w.http, body)
            self.assertEqual(status, 200)
            self.assertTrue(relay.killed)
            self.assertEqual(out["usage"]["prompt_tokens_details"]["cached_tokens"], 0)
            self.assertEqual(out["choices"][0]["token_ids"], warm["choices"][0]["token_ids"])
            _, _, expect = post(ref.http, body)
            self.assertEqual(out["choices"][0]["token_ids"], expect["choices"][0]["token_ids"])
            m = metrics(w.http)
            self.assertEqual(m["radixmesh_worker_cache_errors_total"], errors + 1)
            self.assertGreater(m["radixmesh_worker_kv_read_bytes_total"], 0)
            # Later requests are answered too (the node stays skipped).
            self.assertEqual(post(w.http, dict(body, max_tokens=1))[0], 200)
        finally:
            codes = [w.stop(), ref.stop()]
            relay.close()
            node.kill()  # the relay SIGKILLed it (or, on a failure, it still runs)
        self.assertEqual(codes, [0, 0])


class WorkerQueueTest(unittest.TestCase):
    def test_queue_bound_cancel_while_waiting_and_drain(self):
        node = start_node("held")
        w = start_worker(node.addr, "--max-waiting", "1", "--cache-timeout-ms", "120000",
                         "--log-level", "info")
        held = False
        try:
            self.assertEqual(post(w.http, {"prompt": "warm up", "max_tokens": 1})[0], 200)
            os.kill(node.pid, signal.SIGSTOP)  # the engine waits on its next Match
            held = True
            results = {}

            def ask(key, sock_holder=None):
                results[key] = post(w.http, {"prompt": f"held {key}", "max_tokens": 2},
                                    timeout=300)

            t1 = threading.Thread(target=ask, args=("r1",))
            t1.start()
            poll("r1 running", lambda: metrics(w.http)["vllm:num_requests_running"] == 1)
            # r2 waits on a raw connection the test closes later.
            r2 = rmtest.connect(w.http)
            body = json.dumps({"prompt": "held r2", "max_tokens": 2}).encode()
            r2.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: w\r\nContent-Length: %d\r\n\r\n"
                       % len(body) + body)
            poll("r2 waiting", lambda: metrics(w.http)["vllm:num_requests_waiting"] == 1)
            status, headers, err = post(w.http, {"prompt": "r3", "max_tokens": 1})
            self.assertEqual(status, 503)
            self.assertEqual(headers.get("retry-after"), "1")
            self.assertIn("--max-waiting", err["error"]["message"])
            r2.close()  # its client leaves: r2 leaves the queue
            poll("r2 gone from the queue", lambda: metrics(w.http)["vllm:num_requests_waiting"] == 0)
            # r4 waits; then SIGTERM: r1 and r4 are answered, then the worker exits.
            t4 = threading.Thread(target=ask, args=("r4",))
            t4.start()
            poll("r4 waiting", lambda: metrics(w.http)["vllm:num_requests_waiting"] == 1)
            w.proc.send_signal(signal.SIGTERM)
            w.wait_log("the drain to start", "draining")
            os.kill(node.pid, signal.SIGCONT)
            held = False
            t1.join(rmtest.deadline_s(120))
            t4.join(rmtest.deadline_s(120))
            self.assertEqual(results["r1"][0], 200)
            self.assertEqual(results["r4"][0], 200)
            self.assertEqual(results["r1"][2]["usage"]["completion_tokens"], 2)
            poll("the drained worker to exit", lambda: not w.alive(), 60)
        finally:
            if held:
                os.kill(node.pid, signal.SIGCONT)
            code = w.stop()
            node.stop()
        self.assertEqual(code, 0)
        self.assertTrue(w.logged("drained, exiting"))


class WorkerHeadBoundTest(unittest.TestCase):
    def test_url_past_the_head_bound_is_431_with_or_without_headers(self):
        """--max-header-bytes bounds the URL and the headers together (as the
        gateway's does): a long URL alone passes it too."""
        w = start_worker("none", "--max-header-bytes", "1024")
        try:
            url = b"/" + b"a" * 1100  # under the URL's own bound (414 past 2047)
            for headers in (b"", b"Host: x\r\n"):
                s = rmtest.connect(w.http, timeout=rmtest.deadline_s(30))
                s.sendall(b"GET " + url + b" HTTP/1.0\r\n" + headers + b"\r\n")
                got = b""
                while chunk := s.recv(65536):
                    got += chunk
                s.close()
                self.assertTrue(got.startswith(b"HTTP/1.1 431 "), (headers, got[:100]))
                self.assertIn(b"--max-header-bytes", got)
        finally:
            self.assertEqual(w.stop(), 0)


class WorkerTlsTest(unittest.TestCase):
    def test_tls_and_token_towards_the_node(self):
        with tempfile.TemporaryDirectory() as d:
            make_pki(d)
            with open(f"{d}/token", "w") as f:
                f.write("s3cret-token\n")
            node = start_node("tls", "--tls-cert", f"{d}/server.crt", "--tls-key",
                              f"{d}/server.key", "--auth-token-file", f"{d}/token")
            good = start_worker(node.addr, "--cache-tls-ca", f"{d}/ca.crt",
                                "--cache-token-file", f"{d}/token")
            tokenless = start_worker(node.addr, "--cache-tls-ca", f"{d}/ca.crt")
            try:
                warm_cache(good, "the TLS worker")
                errors = metrics(good.http)["radixmesh_worker_cache_errors_total"]
                body = {"prompt": "TLS " * 40, "max_tokens": 2, "temperature": 0}
                first = post(good.http, body)[2]
                second = post(good.http, body)[2]
                self.assertGreater(second["usage"]["prompt_tokens_details"]["cached_tokens"], 0,
                                   "".join(good.log[-5:]))
                self.assertEqual(second["choices"][0]["text"], first["choices"][0]["text"])
                self.assertEqual(metrics(good.http)["radixmesh_worker_cache_errors_total"], errors)
                status, _, out = post(tokenless.http, body)
                self.assertEqual(status, 200)
                self.assertEqual(out["usage"]["prompt_tokens_details"]["cached_tokens"], 0)
                self.assertEqual(out["choices"][0]["text"], first["choices"][0]["text"])
                self.assertEqual(metrics(tokenless.http)["radixmesh_worker_cache_errors_total"], 1)
            finally:
                codes = [good.stop(), tokenless.stop()]
                node.stop()
            self.assertEqual(codes, [0, 0])

    def test_bad_cache_flags_exit_2(self):
        for flags in (["--cache-tls-ca", "/nonexistent/ca.pem"],
                      ["--cache-token-file", "/nonexistent/token"],
                      ["--cache-tls-cert", "/x.pem"],
                      ["--prompt", "x"]):
            p = subprocess.run([ARGS.worker, "--http", "127.0.0.1:0", *model_flags(), *flags],
                               capture_output=True, text=True, timeout=rmtest.deadline_s(60))
            self.assertEqual(p.returncode, 2, (flags, p.stderr))


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--node", required=True)
    ap.add_argument("--worker", required=True)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--slow", action="store_true", help="the worker runs under valgrind")
    ARGS, rest = ap.parse_known_args()
    if ARGS.slow:
        os.environ["RM_TEST_SLOW"] = "1"
        rmtest.SLOW = True
    sys.exit(rmtest.run_tests(rest))


if __name__ == "__main__":
    main()
