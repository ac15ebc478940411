"""KV-cache event payloads as inference engines encode them, for the tests.

The engines declare their events as msgspec Structs and encode them with
msgspec.msgpack; Debian has no msgspec, so this module rebuilds the same
bytes with python3-msgpack from the same declarations (field order,
defaults, array_like, omit_defaults, tag=True). node/KV_EVENTS.md lists
the releases each style follows. msgspec encodes ints in their smallest
msgpack form, floats as float64, str as str, bytes as bin, and a tagged
Struct as [tag, fields...] (array_like) or {"type": tag, fields...};
omit_defaults drops fields equal to their default (array_like: only the
trailing ones). python3-msgpack with use_bin_type=True does the same.
"""
import msgpack

REQUIRED = object()  # a field without a default: always encoded

# (event fields, batch fields, array_like events, array_like batch, omit_defaults)
# Each field is (name, default).
_V09_STORED = [("block_hashes", REQUIRED), ("parent_block_hash", REQUIRED),
               ("token_ids", REQUIRED), ("block_size", REQUIRED), ("lora_id", REQUIRED)]
_V010_STORED = _V09_STORED + [("medium", REQUIRED)]
_V011_STORED = _V010_STORED + [("lora_name", REQUIRED), ("extra_keys", None),
                               ("group_idx", None)]
_V012_STORED = _V011_STORED + [("kv_cache_spec_kind", None),
                               ("kv_cache_spec_sliding_window", None)]
# Latest vLLM main: event_version (default 1) sits between lora_name and
# extra_keys; locality and ownership trail.
_VLATEST_STORED = (_V010_STORED + [("lora_name", REQUIRED), ("event_version", 1),
                                   ("extra_keys", None), ("group_idx", None),
                                   ("kv_cache_spec_kind", None),
                                   ("kv_cache_spec_sliding_window", None),
                                   ("locality", None), ("ownership", None)])
_SGL_STORED = _V09_STORED + [("medium", None)]

_V09_REMOVED = [("block_hashes", REQUIRED)]
_V010_REMOVED = _V09_REMOVED + [("medium", REQUIRED)]
_V011_REMOVED = _V010_REMOVED + [("group_idx", None)]
_VLATEST_REMOVED = _V011_REMOVED + [("locality", None), ("ownership", None)]
_SGL_REMOVED = _V09_REMOVED + [("medium", None)]

STYLES = {
    # vLLM 0.9 (first release with KV events): everything positional.
    "vllm-0.9": dict(stored=_V09_STORED, removed=_V09_REMOVED, rank=None,
                     array_events=True, array_batch=True, omit=True),
    # vLLM 0.10: + medium, + data_parallel_rank on the batch.
    "vllm-0.10": dict(stored=_V010_STORED, removed=_V010_REMOVED, rank="data_parallel_rank",
                      array_events=True, array_batch=True, omit=True),
    # vLLM 0.11: + lora_name, extra_keys, group_idx; still positional.
    "vllm-0.11": dict(stored=_V011_STORED, removed=_V011_REMOVED, rank="data_parallel_rank",
                      array_events=True, array_batch=True, omit=True),
    # A vLLM main whose EventBatch and events were both keyed maps.
    "vllm-map": dict(stored=_V012_STORED, removed=_V011_REMOVED, rank="data_parallel_rank",
                     array_events=False, array_batch=False, omit=True),
    # Latest vLLM main: positional batch, keyed events.
    "vllm-latest": dict(stored=_VLATEST_STORED, removed=_VLATEST_REMOVED,
                        rank="data_parallel_rank", array_events=False, array_batch=True,
                        omit=True),
    # SGLang before attn_dp_rank and medium: vLLM 0.9's shape, int64 hashes.
    "sglang-old": dict(stored=_V09_STORED, removed=_V09_REMOVED, rank=None,
                       array_events=True, array_batch=True, omit=True),
    # SGLang now: positional, no omit_defaults (every field always sent).
    "sglang": dict(stored=_SGL_STORED, removed=_SGL_REMOVED, rank="attn_dp_rank",
                   array_events=True, array_batch=True, omit=False),
}


def wire_hash(h, kind):
    """A 64-bit block hash h as the engine sends it: 'uint' (vLLM's default),
    'int64' (SGLang: the same bits, signed) or 'bytes' (vLLM with
    VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0: a 32-byte sha256 whose low 64
    bits, big-endian, are h -- what vLLM's integer mode would publish)."""
    h &= (1 << 64) - 1
    if kind == "uint":
        return h
    if kind == "int64":
        return h - (1 << 64) if h >= 1 << 63 else h
    if kind == "bytes":
        head = bytes((h >> (8 * (i % 8)) & 0xFF) ^ (0x5A + i) for i in range(24))
        return head + h.to_bytes(8, "big")
    raise ValueError(kind)


def _struct(tag, fields, values, array_like, omit):
    unknown = set(values) - {n for n, _ in fields}
    if unknown:
        raise ValueError(f"{tag}: fields {sorted(unknown)} not in this style")
    if array_like:
        out = [tag]
        for name, default in fields:
            out.append(values.get(name, None if default is REQUIRED else default))
        if omit:
            while len(out) > 1:
                name, default = fields[len(out) - 2]
                if default is REQUIRED or out[-1] != default:
                    break
                out.pop()
        return out
    out = {"type": tag}
    for name, default in fields:
        value = values.get(name, None if default is REQUIRED else default)
        if omit and default is not REQUIRED and value == default:
            continue
        out[name] = value
    return out


def event_obj(ev, style, hash_kind="uint"):
    """ev: {"type": "BlockStored"|"BlockRemoved"|"AllBlocksCleared"|other,
    fields...} with hashes as ints. Unknown types are encoded with the
    style's shape and the given fields, as a newer engine would."""
    s = STYLES[style]
    vals = {k: v for k, v in ev.items() if k not in ("type", "metadata")}
    for key in ("block_hashes",):
        if key in vals:
            vals[key] = [wire_hash(h, hash_kind) for h in vals[key]]
    if vals.get("parent_block_hash") is not None:
        vals["parent_block_hash"] = wire_hash(vals["parent_block_hash"], hash_kind)
    t = ev["type"]
    if t == "BlockStored":
        fields = s["stored"]
    elif t == "BlockRemoved":
        fields = s["removed"]
    elif t == "AllBlocksCleared":
        fields = []
    else:
        fields = [(k, REQUIRED) for k in vals]
    obj = _struct(t, fields, vals, s["array_events"], s["omit"])
    if "metadata" in ev:  # SGLang BlockStoredWithMetadata: a kw_only field after all others
        if not s["array_events"]:
            raise ValueError("metadata only exists in SGLang's positional events")
        obj.append({"cache_salt": ev["metadata"]})
    return obj


def batch_obj(events, style, ts=1700000000.25, rank=0, hash_kind="uint"):
    s = STYLES[style]
    evs = [event_obj(e, style, hash_kind) for e in events]
    fields = [("ts", REQUIRED), ("events", REQUIRED)]
    if s["rank"]:
        fields.append((s["rank"], None))
    vals = {"ts": ts, "events": evs}
    if s["rank"]:
        vals[s["rank"]] = rank
    obj = _struct("", fields, vals, s["array_batch"], s["omit"])
    if s["array_batch"]:
        return obj[1:]  # a batch is not tagged
    del obj["type"]
    return obj


def encode_batch(events, style, ts=1700000000.25, rank=0, hash_kind="uint"):
    return msgpack.packb(batch_obj(events, style, ts, rank, hash_kind), use_bin_type=True)


def seq_bytes(seq):
    return seq.to_bytes(8, "big")


END_SEQ = b"\xff" * 8  # (-1).to_bytes(8, "big", signed=True)
