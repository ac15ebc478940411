#!/usr/bin/python3
"""A fake OpenAI-compatible inference worker for the gateway tests.

It answers /v1/completions and /v1/chat/completions (JSON, or Server-Sent
Events with "stream": true) with the request's "fake_reply" (default "ok"),
/v1/models, and /metrics with vLLM-style prefix-cache counters from a
simulated prefix cache that, like vLLM's, also keeps what was generated;
and records every request. Test hooks:
  GET  /_requests            what it received (path, body, headers, outcome,
                             the client's port: one port per connection)
  GET  /_scrapes             {"scrapes": N}: GET /metrics requests so far
  POST /_control             {"fail_status": 503} fails completions with that
                             status (0 turns it off); {"hold": true} makes each
                             stream stop after its first event until
                             {"release": true}; misbehaviours (false/0 ends them):
                             {"hang": true}            completions are never answered
                                                       (a wedged worker; /metrics answers)
                             {"slow_metrics": S}       /metrics sends its head, then one
                                                       body byte every S seconds
                             {"early_hints": true}     100 Continue and 103 Early Hints
                                                       before each completion's answer
                             {"trailing_garbage": true} a JSON completion is followed, in
                                                       the same write, by the start of
                                                       a response nobody asked for
                             {"busy": {"running": R, "waiting": W, "kv": K}} /metrics also
                                                       reports vLLM's load gauges ({} or
                                                       null: not reported)
Prints "LISTENING 127.0.0.1:PORT" once it serves.
"""
import argparse
import hashlib
import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BLOCK = 64  # characters per simulated cache block


class State:
    def __init__(self, name, chunks):
        self.name = name
        self.chunks = chunks
        self.lock = threading.Lock()
        self.requests = []
        self.fail_status = 0
        self.idle = set()  # connections waiting for their next request
        self.hold = False
        self.release = threading.Event()
        self.hang = False
        self.unhang = threading.Event()
        self.slow_metrics = 0.0
        self.early_hints = False
        self.trailing_garbage = False
        self.busy = None
        self.scrapes = 0
        self.cache = set()
        self.hits = 0
        self.queries = 0

    def prompt_text(self, body):
        if "messages" in body:
            return "".join(
                str(m.get("role", "")) + "\x1f" + str(m.get("content", "")) + "\x1e"
                for m in body["messages"]
            )
        prompt = body.get("prompt", "")
        return prompt if isinstance(prompt, str) else json.dumps(prompt)

    def reply_text(self, body, reply):
        """What the client's next turn resends: the prompt and the reply."""
        if "messages" in body:
            return self.prompt_text(body) + "assistant\x1f" + reply + "\x1e"
        return self.prompt_text(body) + reply

    def remember(self, text):
        """Caches text's full blocks without counting a query (as vLLM
        caches the blocks of the tokens it generates)."""
        with self.lock:
            h = hashlib.sha256()
            for i in range(0, len(text) - len(text) % BLOCK, BLOCK):
                h.update(text[i : i + BLOCK].encode())
                self.cache.add(h.hexdigest())

    def account(self, text):
        """Simulates a block prefix cache; counts in ~4-character tokens."""
        with self.lock:
            h = hashlib.sha256()
            hit = True
            for i in range(0, len(text) - len(text) % BLOCK, BLOCK):
                h.update(text[i : i + BLOCK].encode())
                key = h.hexdigest()
                if hit and key in self.cache:
                    self.hits += BLOCK // 4
                else:
                    hit = False
                    self.cache.add(key)
                self.queries += BLOCK // 4


def make_handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # replies are written in pieces

        def log_message(self, fmt, *args):
            pass

        def send_json(self, status, obj, extra=None, garbage=b""):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            if garbage:  # head, body and garbage in one write, so they arrive together
                self._headers_buffer.append(b"\r\n")
                head = b"".join(self._headers_buffer)
                self._headers_buffer = []
                self.wfile.write(head + data + garbage)
                return
            self.end_headers()
            self.wfile.write(data)

        def send_metrics(self, text):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.flush()
            try:
                for i in range(len(text)):
                    with state.lock:
                        slow = state.slow_metrics
                    if not slow:
                        self.wfile.write(text[i:])
                        return
                    self.wfile.write(text[i:i + 1])
                    self.wfile.flush()
                    threading.Event().wait(slow)  # the misbehaviour itself, not a test wait
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def handle_one_request(self):
            with state.lock:
                state.idle.add(self.connection)
            try:
                super().handle_one_request()
            finally:
                with state.lock:
                    state.idle.discard(self.connection)

        def parse_request(self):
            with state.lock:  # a request arrived: no longer idle
                state.idle.discard(self.connection)
            return super().parse_request()

        def read_body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def do_GET(self):
            if self.path == "/_requests":
                with state.lock:
                    self.send_json(200, state.requests)
            elif self.path == "/_scrapes":
                with state.lock:
                    self.send_json(200, {"scrapes": state.scrapes})
            elif self.path == "/v1/models":
                with state.lock:
                    state.requests.append({"path": self.path, "method": "GET"})
                self.send_json(200, {"object": "list", "data": [{"id": "fake", "owned_by": state.name}]})
            elif self.path == "/metrics":
                with state.lock:
                    state.scrapes += 1
                    text = (
                        "# HELP vllm:prefix_cache_queries_total Prefix cache queries (tokens).\n"
                        "# TYPE vllm:prefix_cache_queries_total counter\n"
                        f'vllm:prefix_cache_queries_total{{engine="0",model_name="fake"}} {float(state.queries)}\n'
                        "# TYPE vllm:prefix_cache_hits_total counter\n"
                        f'vllm:prefix_cache_hits_total{{engine="0",model_name="fake"}} {float(state.hits)}\n'
                    )
                    if state.busy:
                        b = state.busy
                        text += (
                            f'vllm:num_requests_running{{engine="0"}} {float(b.get("running", 0))}\n'
                            f'vllm:num_requests_waiting{{engine="0"}} {float(b.get("waiting", 0))}\n'
                            f'vllm:kv_cache_usage_perc{{engine="0"}} {float(b.get("kv", 0))}\n')
                    text = text.encode()
                self.send_metrics(text)
            else:
                self.send_json(404, {"error": {"message": "no such path " + self.path}})

        def do_POST(self):
            raw = self.read_body()
            if self.path == "/_control":
                ctl = json.loads(raw or b"{}")
                with state.lock:
                    if "fail_status" in ctl:
                        state.fail_status = int(ctl["fail_status"])
                    if ctl.get("close_idle"):  # as a worker's keep-alive timeout would
                        for sock in list(state.idle):
                            try:
                                sock.shutdown(socket.SHUT_RDWR)
                            except OSError:
                                pass
                    if "hold" in ctl:
                        state.hold = bool(ctl["hold"])
                        state.release.clear()
                    if "hang" in ctl:
                        state.hang = bool(ctl["hang"])
                        if state.hang:
                            state.unhang.clear()
                        else:
                            state.unhang.set()
                    if "slow_metrics" in ctl:
                        state.slow_metrics = float(ctl["slow_metrics"])
                    if "early_hints" in ctl:
                        state.early_hints = bool(ctl["early_hints"])
                    if "busy" in ctl:
                        state.busy = ctl["busy"] or None
                    if "trailing_garbage" in ctl:
                        state.trailing_garbage = bool(ctl["trailing_garbage"])
                if ctl.get("release"):
                    state.release.set()
                self.send_json(200, {"ok": True})
                return
            rec = {
                "path": self.path,
                "method": "POST",
                "body": raw.decode("utf-8", "replace"),
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "outcome": "started",
                "port": self.client_address[1],
            }
            with state.lock:
                state.requests.append(rec)
                fail = state.fail_status
                hang, hints, garbage = state.hang, state.early_hints, state.trailing_garbage
            if hang:
                rec["outcome"] = "hung"
                state.unhang.wait(120)  # until {"hang": false}; the gateway gives up first
                self.close_connection = True
                return
            if hints:
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.wfile.flush()
                self.wfile.write(b"HTTP/1.1 103 Early Hints\r\nLink: </hint.css>; rel=preload\r\n\r\n")
                self.wfile.flush()
            if fail:
                rec["outcome"] = "failed %d" % fail
                self.send_json(fail, {"error": {"message": "injected failure"}})
                return
            body = json.loads(raw)
            chat = "messages" in body
            reply = body.get("fake_reply", "ok")
            state.account(state.prompt_text(body))
            state.remember(state.reply_text(body, reply))
            if body.get("fake_bytes"):  # a large streamed body, deterministic bytes
                n = int(body["fake_bytes"])
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                block = bytes(range(256)) * 256  # 64 KiB
                try:
                    for off in range(0, n, len(block)):
                        part = block[: min(len(block), n - off)]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.write(b"0\r\n\r\n")
                    rec["outcome"] = "done"
                except (BrokenPipeError, ConnectionResetError):
                    rec["outcome"] = "cancelled"
                return
            if not body.get("stream"):
                rec["outcome"] = "done"
                choice = ({"index": 0, "message": {"role": "assistant", "content": reply}}
                          if chat else {"index": 0, "text": reply})
                self.send_json(200, {"id": "cmpl-1", "worker": state.name, "choices": [choice],
                                     "object": "chat.completion" if chat else "text_completion"},
                               garbage=b"HTTP/1.1 200 OK\r\nX-Injected: 1\r\nContent-Length: 5\r\n"
                               if garbage else b"")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            sent = b""
            try:
                # The reply in state.chunks pieces, as OpenAI chunks.
                step = -(-len(reply) // state.chunks)
                for i in range(state.chunks):
                    piece = reply[i * step : (i + 1) * step]
                    choice = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
                    event = ("data: " + json.dumps({"worker": state.name, "index": i,
                                                    "choices": [choice]}) + "\n\n").encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                    self.wfile.flush()
                    sent += event
                    if i == 0 and state.hold:
                        state.release.wait(20)
                done = b"data: [DONE]\n\n"
                self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
                self.wfile.flush()
                sent += done
                rec["outcome"] = "done"
            except (BrokenPipeError, ConnectionResetError):
                rec["outcome"] = "cancelled"
                self.close_connection = True
            rec["sent"] = sent.decode()

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--chunks", type=int, default=8)
    args = ap.parse_args()
    state = State(args.name, args.chunks)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    srv.daemon_threads = True
    print("LISTENING 127.0.0.1:%d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
