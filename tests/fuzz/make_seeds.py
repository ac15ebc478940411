#!/usr/bin/python3
"""Writes the seed corpora in tests/fuzz/corpus/ (committed; rerun only to
change them). Protobuf messages are encoded by hand: a few helpers suffice
for the request shapes the daemons decode."""
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def packed(num, values):
    return field(num, 2, b"".join(varint(v) for v in values))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def main():
    rng = random.Random(7)
    toks = [rng.randrange(0, 1 << 32) for _ in range(40)] + [0, 1, 127, 128, 16383, 16384]
    requests = {
        "match": bytes([0]) + field(1, 2, b"llama") + packed(2, toks) + field(3, 0, 1)
                 + field(4, 0, 30000),
        "match_peek": bytes([0]) + packed(2, range(64)) + field(5, 0, 1),
        "insert": bytes([1]) + field(1, 2, b"qwen") + packed(2, toks) + field(3, 0, 12345)
                  + field(4, 2, b"node-1"),
        "release": bytes([2]) + field(1, 0, 99) + field(2, 2, b"node-0"),
        "readkv": bytes([3]) + field(1, 0, 7) + field(2, 0, 16) + field(3, 0, 64),
        "writekv": bytes([4]) + field(1, 2, b"m") + packed(2, range(32)) + field(5, 0, 16)
                   + field(6, 2, bytes(range(64))),
        "route": bytes([5]) + field(1, 2, b"ns") + packed(2, toks),
        "stats": bytes([6]),
        "cluster": bytes([7]),
        "health": bytes([8]) + field(1, 2, b"radixmesh.v1.CacheNode"),
        "unpacked_tokens": bytes([0]) + b"".join(field(2, 0, t) for t in toks[:8]),
    }
    for name, data in requests.items():
        write("requests", name, data)
    # First byte: page size, pool, KV mode, failing allocator; bit 6 gives
    # the three namespaces one slot (two with bit 7 too).
    for i, first in enumerate([0x00, 0x05, 0x16, 0x2a, 0x3b, 0x21, 0x52, 0xd6]):
        write("cache", f"ops{i}", bytes([first]) + bytes(rng.randrange(256) for _ in range(1500)))
    write("flags", "basic", "listen = 127.0.0.1:7000\npage-tokens 16\n--prefault\n")
    write("flags", "comments", "# a comment\n\n  load-factor=1.5  \nnode-id = n1\npool-tokens=0\n")
    write("flags", "bad_value", "page-tokens = lots\n")
    write("flags", "positional", "listen=0.0.0.0:1\nprefault = no\n")
    write("flags", "widths", "max-leases = 4294967295\nmax-body-bytes=1073741824\n")
    gw = {
        "prompt_text": {"model": "llama", "prompt": "Once upon a time, " * 20},
        "prompt_ids": {"model": "llama", "prompt": list(range(200))},
        "prompt_batch": {"model": "m", "prompt": [[1, 2, 3], [4]]},
        "chat": {"model": "m", "stream": True, "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hi"},
                                          {"type": "image_url", "image_url": {"url": "x"}}]},
            {"role": "assistant", "content": None}]},
    }
    for name, doc in gw.items():
        write("gateway", name, json.dumps(doc))
    write("gateway", "reply_chat", json.dumps(
        {"messages": [{"role": "user", "content": "hi"}],
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}}]}))
    write("gateway", "reply_stream",
          'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
          ': ping\r\n\r\ndata:{"choices":[{"index":0,"delta":{"content":"Hel"},"text":"x"}]}\n\n'
          'data: [DONE]\n\n')
    write("gateway", "vllm_metrics",
          "# TYPE vllm:prefix_cache_queries_total counter\n"
          'vllm:prefix_cache_queries_total{engine="0",model_name="a b}"} 1000.0\n'
          'vllm:prefix_cache_hits_total{engine="0"} 250 1700000000\n')
    write("gateway", "sglang_metrics", 'sglang:cache_hit_rate{model_name="q"} 0.5\n')
    # The HTTP request reader: the first byte is where the input is cut in
    # two reads.
    body = b'{"model": "m", "prompt": "hi"}'
    http = {
        "get": b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n",
        "post": b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b"\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n%s" % (len(body), body),
        "chunked": b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"%x\r\n%s\r\n0\r\nX-Trailer: 1\r\nAuthorization: Bearer t\r\n\r\n"
                   % (len(body), body),
        "expect": b"POST /v1/chat/completions HTTP/1.1\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 2\r\n\r\n{}",
        "http10_pipelined": b"HEAD /health HTTP/1.0\r\nTE: trailers\r\nUpgrade: h2c\r\n\r\n"
                            b"GET /metrics HTTP/1.1\r\nX-Long: " + b"v" * 300 + b"\r\n\r\n",
        "te_gzip": b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    }
    for name, req in http.items():
        write("http_req", name, bytes([len(req) // 3 % 256]) + req)


if __name__ == "__main__":
    main()
