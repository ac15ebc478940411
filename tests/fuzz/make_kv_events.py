#!/usr/bin/python3
"""Writes the KV-event test vectors: the fuzz seed corpus tests/fuzz/corpus/
kv_events/, one file a payload, which test_kv_events.c also decodes (it
reads the files tests/unit/kv_vectors.h names: name a new one there).
Committed; rerun only to change them (needs python3-msgpack).

Every payload is built as an engine builds it (tests/integration/kv_wire.py
mirrors the engines' msgspec structs). The "basic" scenario is encoded in
every style and hash type; test_kv_events.c checks each against the same
expectation, so these constants must match it:
  BlockStored  hashes [H1, H2], parent none, tokens 0..31, block_size 16
  BlockStored  hashes [H3], parent H2, tokens 1000..1015, lora 7 "sql-lora"
               where the style has lora_name
  BlockRemoved hashes [H1], medium GPU where the style has medium
  AllBlocksCleared
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import kv_wire  # noqa: E402

H1 = 0x0123456789ABCDEF
H2 = 0xFEDCBA9876543210  # above 2**63: negative as SGLang's int64
H3 = 42
TS = 1700000000.25


def basic(style):
    has_medium = style not in ("vllm-0.9", "sglang-old")
    has_name = any(name == "lora_name" for name, _ in kv_wire.STYLES[style]["stored"])
    s1 = {"type": "BlockStored", "block_hashes": [H1, H2], "parent_block_hash": None,
          "token_ids": list(range(32)), "block_size": 16, "lora_id": None}
    s2 = {"type": "BlockStored", "block_hashes": [H3], "parent_block_hash": H2,
          "token_ids": list(range(1000, 1016)), "block_size": 16, "lora_id": 7}
    r = {"type": "BlockRemoved", "block_hashes": [H1]}
    if has_medium:
        s1["medium"] = s2["medium"] = r["medium"] = "GPU"
    if has_name:
        s1["lora_name"] = None
        s2["lora_name"] = "sql-lora"
    return [s1, s2, r, {"type": "AllBlocksCleared"}]


def vectors():
    out = []
    for style in kv_wire.STYLES:
        kinds = ["int64"] if style.startswith("sglang") else ["uint", "bytes"]
        for kind in kinds:
            out.append((f"basic_{style}_{kind}".replace("-", "_").replace(".", "_"),
                        kv_wire.encode_batch(basic(style), style, TS, 3, kind)))
    stored = {"type": "BlockStored", "block_hashes": [5], "parent_block_hash": None,
              "token_ids": list(range(16)), "block_size": 16, "lora_id": None}
    # An event type this decoder does not know, before a known one, both shapes.
    out.append(("unknown_type_map", kv_wire.encode_batch(
        [{"type": "BlockMoved", "block_hashes": [9], "to": "CPU"},
         dict(stored, medium="GPU", lora_name=None)], "vllm-latest")))
    out.append(("unknown_type_array", kv_wire.encode_batch(
        [{"type": "BlockMoved", "block_hashes": [9], "to": "CPU"}, stored], "vllm-0.9")))
    # SGLang DSv4: token ids as (token, next_token) pairs -- unusable, skipped.
    out.append(("token_pairs_sglang", kv_wire.encode_batch(
        [dict(stored, token_ids=[[i, i + 1] for i in range(16)], medium="GPU"), stored],
        "sglang", hash_kind="int64")))
    # A sliding-window group (group_idx 1) and an offload to CPU without tokens.
    out.append(("group1_and_cpu_map", kv_wire.encode_batch(
        [dict(stored, medium="GPU", lora_name=None, group_idx=1,
              kv_cache_spec_kind="sliding_window", kv_cache_spec_sliding_window=128),
         dict(stored, medium="CPU", lora_name=None, token_ids=[]),
         {"type": "BlockRemoved", "block_hashes": [5], "medium": "CPU", "group_idx": 0}],
        "vllm-latest")))
    out.append(("group1_array", kv_wire.encode_batch(
        [dict(stored, medium="GPU", lora_name=None, group_idx=1),
         {"type": "BlockRemoved", "block_hashes": [5], "medium": "GPU", "group_idx": 1}],
        "vllm-0.11")))
    # Blocks hashed with more than their tokens: vLLM extra_keys, SGLang cache_salt.
    out.append(("extra_keys_map", kv_wire.encode_batch(
        [dict(stored, medium="GPU", lora_name=None,
              extra_keys=[[{"type": "cache_salt", "salt": "s1"}]])], "vllm-latest")))
    out.append(("salted_sglang", kv_wire.encode_batch(
        [dict(stored, medium="GPU", metadata="tenant-a")], "sglang", hash_kind="int64")))
    # The map envelope with an unknown field, fields in an unusual order.
    out.append(("map_envelope_extra", kv_wire.msgpack.packb(
        {"future": [1, {"x": None}], "events": [
            {"block_size": 16, "token_ids": list(range(16)), "parent_block_hash": 77,
             "block_hashes": [6], "type": "BlockStored", "lora_id": None, "medium": None,
             "lora_name": None, "event_version": 2}],
         "data_parallel_rank": 1, "ts": 12.5}, use_bin_type=True)))
    # Hash extremes: 0, 2**64-1 as uint and as int64 -1, a 16-byte xxh3-128 hash.
    out.append(("hash_extremes", kv_wire.msgpack.packb(
        [1.0, [["BlockRemoved", [0, (1 << 64) - 1, -1, -(1 << 63),
                                 bytes(range(16)), b"\x07"], "GPU"]], 0], use_bin_type=True)))
    # An empty batch, as an idle engine never sends but may.
    out.append(("empty", kv_wire.encode_batch([], "vllm-latest")))
    return out


def main():
    vecs = vectors()
    corpus = os.path.join(HERE, "corpus", "kv_events")
    os.makedirs(corpus, exist_ok=True)
    for name, data in vecs:
        with open(os.path.join(corpus, name), "wb") as f:
            f.write(data)
    with open(os.path.join(HERE, "..", "unit", "kv_vectors.h")) as f:
        listed = f.read()
    for name, _ in vecs:
        if f'"{name}"' not in listed:
            print(f"{name}: not named in tests/unit/kv_vectors.h, test_kv_events skips it")
    print(f"{len(vecs)} vectors")


if __name__ == "__main__":
    main()
