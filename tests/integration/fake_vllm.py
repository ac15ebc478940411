#!/usr/bin/python3
"""A fake vLLM engine for the KV-event tests: a prefix cache of its own
whose every change is published as vLLM publishes it.

ZeroMQ (python3-zmq), as vLLM's ZmqEventPublisher:
  PUB     frames [topic, seq as 8-byte big-endian, msgpack EventBatch];
  ROUTER  replay: a request [b"", start_seq] gets every buffered batch with
          seq >= start_seq, then the end marker (eight 0xff bytes). Frames
          as the chosen encoding's release sends them (kv_wire.py): the
          topic frame precedes the seq from vllm-latest on.
The payloads are built by tests/integration/kv_wire.py, in any of its
styles (--encoding: vllm-0.9 ... vllm-latest, sglang-old, sglang) and hash
types (--hash: uint, int64, bytes).

HTTP (the engine's OpenAI server, enough of it for the gateway):
  POST /v1/completions, /v1/chat/completions   runs the prompt through the
      prefix cache (hits counted as vLLM counts them), caches the prompt's
      and reply's full blocks (evicting least recently used blocks, leaves
      first), publishes the step's events as one batch; "fake_reply" sets
      the reply (default "ok"), "stream": true answers with SSE chunks;
  POST /tokenize   {"prompt": ...} or {"messages": [...],
      "add_generation_prompt": true} -> {"tokens", "count", "max_model_len"};
      the tokenizer is byte-level (token = byte + 3; 1 = BOS), the chat
      template "<|role|>content\\n" per message (+ "<|assistant|>");
  GET  /metrics    vllm:cache_config_info (block_size, num_gpu_blocks...),
      vllm:prefix_cache_queries_total / _hits_total (tokens), kv usage,
      process_start_time_seconds (a restart sets it anew);
  GET  /v1/models, /health.
Test hooks:
  POST /_control   {"encoding": STYLE} {"hash": KIND}
                   {"drop_next": N}   the next N batches get their seq and
                                      enter the replay buffer but are not sent
                   {"hold_next": N}   the next N batches get their seq and
                                      enter the replay buffer; their live send
                                      waits for {"release_held": true}
                   {"restart": true}  seq back to 0, replay buffer, cache and
                                      counters emptied, as a new process
                                      (+ "rebind": true: sockets closed and
                                      bound again on the same ports)
                   {"publish": [EVENT...]}  one batch of raw events (hashes as
                                      ints, kv_wire's event dicts); -> {"seq"}
                   {"flood": {"batches": N, "blocks": K}}  N synthetic batches of
                                      K stored blocks (outside the cache) -> {"seq"}
                   {"tokenize_status": N}  /tokenize answers N (0: as normal)
                   {"malformed": KIND}  "msgpack" (payload 0xc1), "schema" (a
                                      msgpack string), "unknown_event" (an unknown
                                      event type beside a valid one): each takes a
                                      seq; "frames" (two frames), "seq" (a 7-byte
                                      seq frame): no seq
  GET  /_state     {"next_seq", "published", "dropped", "blocks", "queries",
                    "hits", "replay_requests", "evicted", "tokenize_requests"}
Prints "LISTENING 127.0.0.1:PORT", "KV_EVENTS tcp://..." and (unless
--no-replay) "KV_REPLAY tcp://..." once it serves.
"""
import argparse
import collections
import hashlib
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kv_wire  # noqa: E402

BOS = 1
TOKEN_OFFSET = 3


def tokenize_text(text, bos):
    return ([BOS] if bos else []) + [b + TOKEN_OFFSET for b in text.encode("utf-8")]


def chat_text(messages, add_generation_prompt):
    text = "".join(f"<|{m.get('role', '')}|>{m.get('content', '')}\n" for m in messages)
    return text + ("<|assistant|>" if add_generation_prompt else "")


class Engine:
    """The prefix cache and the event publisher. One lock: HTTP threads
    publish, the replay thread reads the buffer."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.RLock()
        self.ctx = zmq.Context.instance()
        self.encoding = args.encoding
        self.hash_kind = args.hash
        self.topic = args.topic.encode()
        self.pub = self._bind_one(zmq.PUB, "tcp://127.0.0.1:*")
        self.pub_ep = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.router = self.replay_ep = None
        if not args.no_replay:
            self.router = self._bind_one(zmq.ROUTER, "tcp://127.0.0.1:*")
            self.replay_ep = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.rebind_req, self.rebind_done = threading.Event(), threading.Event()
        self._reset_state()
        self.replay_requests = 0
        self.tokenize_requests = 0
        self.tokenize_status = 0
        self.running = True
        self.replay_thread = threading.Thread(target=self._serve_replay, daemon=True)
        self.replay_thread.start()

    def _bind_one(self, kind, ep):
        deadline = time.monotonic() + 5
        while True:  # a port just closed can be busy for a moment
            sock = self.ctx.socket(kind)
            sock.setsockopt(zmq.LINGER, 0)
            if kind == zmq.PUB:
                sock.set_hwm(100_000)  # vLLM's default hwm
            try:
                sock.bind(ep)
                return sock
            except zmq.ZMQError:
                sock.close(0)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # retrying a bind, bounded by the deadline

    def _reset_state(self):
        self.seq = 0
        self.buffer = collections.deque(maxlen=self.args.buffer_steps)
        self.drop_next = 0
        self.hold_next = 0
        self.held = []  # frames whose live send waits for release_held()
        self.published = 0
        self.dropped = 0
        self.cache = collections.OrderedDict()  # hash -> parent hash; LRU first
        self.queries = 0
        self.hits = 0
        self.evicted = 0
        self.start_time = time.time()
        self.flood_hash = 1 << 40

    # ---- publishing ----------------------------------------------------------

    def _frames(self, seq, payload, replay=False):
        if replay and self.encoding == "vllm-latest":
            return [b"", self.topic, kv_wire.seq_bytes(seq), payload]
        if replay:
            return [b"", kv_wire.seq_bytes(seq), payload]
        return [self.topic, kv_wire.seq_bytes(seq), payload]

    def publish_payload(self, payload):
        with self.lock:
            seq = self.seq
            self.seq += 1
            self.buffer.append((seq, payload))
            if self.drop_next:
                self.drop_next -= 1
                self.dropped += 1
            elif self.hold_next:
                self.hold_next -= 1
                self.held.append(self._frames(seq, payload))
            else:
                self.pub.send_multipart(self._frames(seq, payload))
                self.published += 1
            return seq

    def release_held(self):
        """Sends the held batches live, late: a subscriber may have had
        them from the replay socket meanwhile."""
        with self.lock:
            for frames in self.held:
                self.pub.send_multipart(frames)
                self.published += 1
            self.held = []

    def publish(self, events):
        with self.lock:
            payload = kv_wire.encode_batch(events, self.encoding, time.time(), 0, self.hash_kind)
            return self.publish_payload(payload)

    def _serve_replay(self):
        """The replay ROUTER belongs to this thread alone (a ZeroMQ socket is
        not for two threads); a rebind is asked of it through rebind_req."""
        poller = zmq.Poller()
        while self.running:
            if self.rebind_req.is_set():
                ep = self.replay_ep
                self.router.close(0)
                self.router = self._bind_one(zmq.ROUTER, ep)
                self.rebind_req.clear()
                self.rebind_done.set()
            if self.router is None:
                return
            poller.register(self.router, zmq.POLLIN)
            ready = dict(poller.poll(50))
            poller.unregister(self.router)
            if self.router not in ready:
                continue
            frames = self.router.recv_multipart()
            if len(frames) != 3:
                continue  # vLLM logs and ignores it
            client, _, start = frames
            start = int.from_bytes(start, "big")
            with self.lock:
                self.replay_requests += 1
                todo = [(q, p) for q, p in self.buffer if q >= start]
                replies = [[client] + self._frames(q, p, True) for q, p in todo]
                end = [client, b"", b"", kv_wire.END_SEQ, b""] \
                    if self.encoding == "vllm-latest" else [client, b"", kv_wire.END_SEQ, b""]
            for r in replies:
                self.router.send_multipart(r)
            self.router.send_multipart(end)

    def restart(self, rebind):
        with self.lock:
            if rebind:
                self.pub.close(0)
                self.pub = self._bind_one(zmq.PUB, self.pub_ep)
                if self.router is not None:
                    self.rebind_done.clear()
                    self.rebind_req.set()
            self._reset_state()
        if rebind and self.router is not None:
            self.rebind_done.wait(10)

    # ---- the prefix cache ------------------------------------------------------

    def block_hash(self, parent, tokens):
        h = hashlib.sha256((parent or 0).to_bytes(8, "big") + b"".join(
            t.to_bytes(4, "big") for t in tokens)).digest()
        return int.from_bytes(h, "big") & ((1 << 64) - 1)  # vLLM's integer mode

    def run(self, prompt, reply):
        """One request: count the prompt's cache hits, cache every full block
        of prompt + reply, publish what changed as one batch."""
        bs = self.args.block_size
        with self.lock:
            hashes, parent = [], None
            full = prompt + reply
            for i in range(0, len(full) - len(full) % bs, bs):
                parent = self.block_hash(parent, full[i:i + bs])
                hashes.append(parent)
            # vLLM never serves the prompt's last token from cache.
            hit_blocks = 0
            for i, h in enumerate(hashes):
                if (i + 1) * bs > len(prompt) - 1 or h not in self.cache:
                    break
                hit_blocks += 1
            self.queries += len(prompt)
            self.hits += hit_blocks * bs
            first_new = next((i for i, h in enumerate(hashes) if h not in self.cache), len(hashes))
            new = hashes[first_new:][: self.args.num_gpu_blocks]
            events = []
            keep = set(hashes[:first_new])
            while len(self.cache) + len(new) > self.args.num_gpu_blocks:
                victim = next((h for h in self.cache if h not in keep), None)
                if victim is None:
                    break
                del self.cache[victim]
                self.evicted += 1
                events.append({"type": "BlockRemoved", "block_hashes": [victim],
                               "medium": "GPU"})
            new = new[: self.args.num_gpu_blocks - len(self.cache)]
            if new:
                stored = {"type": "BlockStored", "block_hashes": new,
                          "parent_block_hash": hashes[first_new - 1] if first_new else None,
                          "token_ids": full[first_new * bs:(first_new + len(new)) * bs],
                          "block_size": bs, "lora_id": None}
                events.append(stored)
            for h in new:
                self.cache[h] = True
            # Most recently used last; a request's root last of all, so that
            # eviction takes leaves before the prefixes they extend.
            for h in reversed(hashes[: first_new + len(new)]):
                if h in self.cache:
                    self.cache.move_to_end(h)
            events = [self._styled(e) for e in events]  # the removals; stored is styled
            if events:
                self.publish(events)
            return hit_blocks * bs

    def _styled(self, ev):
        """Fills the fields the current encoding's release has."""
        if ev["type"] not in ("BlockStored", "BlockRemoved"):
            return ev
        fields = {n for n, _ in kv_wire.STYLES[self.encoding]["stored" if ev["type"] ==
                                                              "BlockStored" else "removed"]}
        ev = {k: v for k, v in ev.items() if k == "type" or k in fields}
        if "medium" in fields:
            ev.setdefault("medium", "GPU")
        if "lora_name" in fields:
            ev.setdefault("lora_name", None)
        if "lora_id" in fields:
            ev.setdefault("lora_id", None)
        return ev

    def flood(self, batches, blocks):
        seq = -1
        for _ in range(batches):
            with self.lock:
                hashes = list(range(self.flood_hash, self.flood_hash + blocks))
                self.flood_hash += blocks
                ev = self._styled({"type": "BlockStored", "block_hashes": hashes,
                                   "parent_block_hash": None,
                                   "token_ids": [7] * (blocks * self.args.block_size),
                                   "block_size": self.args.block_size, "lora_id": None})
                seq = self.publish([ev])
        return seq

    def malformed(self, kind):
        with self.lock:
            if kind == "msgpack":
                return self.publish_payload(b"\xc1")
            if kind == "schema":
                return self.publish_payload(kv_wire.msgpack.packb("hello"))
            if kind == "unknown_event":
                ev = {"type": "BlockMoved", "block_hashes": [3], "to": "CPU"}
                ok = {"type": "AllBlocksCleared"}
                return self.publish([ev, ok])
            if kind == "frames":
                self.pub.send_multipart([self.topic, b"\x00" * 8])
            elif kind == "seq":
                self.pub.send_multipart([self.topic, b"\x00" * 7, b"\x90"])
            else:
                raise ValueError(kind)
            return None

    def metrics(self):
        a = self.args
        with self.lock:
            used = len(self.cache) / a.num_gpu_blocks
            return (
                "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n"
                "# TYPE vllm:cache_config_info gauge\n"
                f'vllm:cache_config_info{{block_size="{a.block_size}",cache_dtype="auto",'
                f'enable_prefix_caching="True",gpu_memory_utilization="0.9",'
                f'num_cpu_blocks="0",num_gpu_blocks="{a.num_gpu_blocks}",'
                f'prefix_caching_hash_algo="sha256"}} 1.0\n'
                "# TYPE vllm:kv_cache_usage_perc gauge\n"
                f'vllm:kv_cache_usage_perc{{engine="0",model_name="{a.model}"}} {used}\n'
                "# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of "
                "number of queried tokens.\n"
                "# TYPE vllm:prefix_cache_queries_total counter\n"
                f'vllm:prefix_cache_queries_total{{engine="0",model_name="{a.model}"}} '
                f"{float(self.queries)}\n"
                "# TYPE vllm:prefix_cache_hits_total counter\n"
                f'vllm:prefix_cache_hits_total{{engine="0",model_name="{a.model}"}} '
                f"{float(self.hits)}\n"
                "# TYPE process_start_time_seconds gauge\n"
                f"process_start_time_seconds {self.start_time:.3f}\n"
            ).encode()

    def state(self):
        with self.lock:
            return {"next_seq": self.seq, "published": self.published, "dropped": self.dropped,
                    "blocks": len(self.cache), "queries": self.queries, "hits": self.hits,
                    "replay_requests": self.replay_requests, "evicted": self.evicted,
                    "tokenize_requests": self.tokenize_requests}


def make_handler(engine):
    args = engine.args

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            pass

        def send_json(self, status, obj):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            try:
                return json.loads(self.rfile.read(n) or b"{}")
            except ValueError:
                return None

        def do_GET(self):
            if self.path == "/metrics":
                text = engine.metrics()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)
            elif self.path == "/health":
                self.send_json(200, {})
            elif self.path == "/v1/models":
                self.send_json(200, {"object": "list", "data": [
                    {"id": args.model, "object": "model", "max_model_len": args.max_model_len}]})
            elif self.path == "/_state":
                self.send_json(200, engine.state())
            else:
                self.send_json(404, {"error": {"message": "no such path " + self.path}})

        def prompt_tokens(self, body):
            if "messages" in body:
                text = chat_text(body["messages"], body.get("add_generation_prompt", True))
                return tokenize_text(text, body.get("add_special_tokens", False))
            prompt = body.get("prompt", "")
            if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
                return list(prompt)
            return tokenize_text(str(prompt), body.get("add_special_tokens", True))

        def do_POST(self):
            body = self.body()
            if body is None:
                self.send_json(400, {"error": {"message": "body is not JSON"}})
                return
            if self.path == "/_control":
                self.control(body)
            elif self.path == "/tokenize":
                with engine.lock:
                    engine.tokenize_requests += 1
                    status = engine.tokenize_status
                if status:
                    self.send_json(status, {"error": {"message": "tokenizer unavailable"}})
                    return
                toks = self.prompt_tokens(body)
                self.send_json(200, {"tokens": toks, "count": len(toks),
                                     "max_model_len": args.max_model_len, "token_strs": None})
            elif self.path in ("/v1/completions", "/v1/chat/completions"):
                self.complete(body, self.path.endswith("chat/completions"))
            else:
                self.send_json(404, {"error": {"message": "no such path " + self.path}})

        def control(self, c):
            out = {"ok": True}
            try:
                if "encoding" in c:
                    if c["encoding"] not in kv_wire.STYLES:
                        raise ValueError("encoding")
                    engine.encoding = c["encoding"]
                if "hash" in c:
                    engine.hash_kind = c["hash"]
                if "tokenize_status" in c:
                    with engine.lock:
                        engine.tokenize_status = int(c["tokenize_status"])
                if "drop_next" in c:
                    with engine.lock:
                        engine.drop_next = int(c["drop_next"])
                if "hold_next" in c:
                    with engine.lock:
                        engine.hold_next = int(c["hold_next"])
                if c.get("release_held"):
                    engine.release_held()
                if c.get("restart"):
                    engine.restart(bool(c.get("rebind")))
                if "publish" in c:
                    out["seq"] = engine.publish([engine._styled(e) if e["type"] in (
                        "BlockStored", "BlockRemoved") else e for e in c["publish"]])
                if "flood" in c:
                    out["seq"] = engine.flood(int(c["flood"]["batches"]),
                                              int(c["flood"].get("blocks", 1)))
                if "malformed" in c:
                    out["seq"] = engine.malformed(c["malformed"])
            except (ValueError, KeyError, TypeError) as e:
                self.send_json(400, {"error": {"message": "bad control: %r" % e}})
                return
            self.send_json(200, out)

        def complete(self, body, chat):
            reply_text = str(body.get("fake_reply", "ok"))
            prompt = self.prompt_tokens(body)
            reply = tokenize_text(reply_text, False)
            engine.run(prompt, reply)
            if not body.get("stream"):
                choice = ({"index": 0, "message": {"role": "assistant", "content": reply_text},
                           "finish_reason": "stop"} if chat else
                          {"index": 0, "text": reply_text, "finish_reason": "stop"})
                self.send_json(200, {"id": "cmpl-fake", "model": args.model, "choices": [choice],
                                     "object": "chat.completion" if chat else "text_completion",
                                     "usage": {"prompt_tokens": len(prompt),
                                               "completion_tokens": len(reply),
                                               "total_tokens": len(prompt) + len(reply)}})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            pieces = [reply_text[i:i + 4] for i in range(0, len(reply_text), 4)] or [""]
            for piece in pieces:
                choice = {"index": 0, "delta": {"content": piece}} if chat else \
                    {"index": 0, "text": piece}
                ev = ("data: " + json.dumps({"choices": [choice]}) + "\n\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
            done = b"data: [DONE]\n\n"
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--num-gpu-blocks", type=int, default=1024)
    ap.add_argument("--encoding", default="vllm-latest", choices=sorted(kv_wire.STYLES))
    ap.add_argument("--hash", default="uint", choices=["uint", "int64", "bytes"])
    ap.add_argument("--topic", default="")
    ap.add_argument("--no-replay", action="store_true")
    ap.add_argument("--buffer-steps", type=int, default=10_000)
    ap.add_argument("--model", default="fake-model")
    ap.add_argument("--max-model-len", type=int, default=4096)
    args = ap.parse_args()
    host, port = args.listen.rsplit(":", 1)
    if host not in ("127.0.0.1", "localhost"):
        ap.error("--listen: the fake engine serves on 127.0.0.1 only")
    engine = Engine(args)
    # Stopped by the tests with SIGTERM: exit 0, as a clean shutdown.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    srv = ThreadingHTTPServer(("127.0.0.1", int(port)), make_handler(engine))
    srv.daemon_threads = True
    print("LISTENING 127.0.0.1:%d" % srv.server_address[1], flush=True)
    print("KV_EVENTS " + engine.pub_ep, flush=True)
    if engine.replay_ep:
        print("KV_REPLAY " + engine.replay_ep, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    engine.running = False
    sys.exit(0)


if __name__ == "__main__":
    main()
