"""Candidate codecs for scripts/codec_proxy.py: name -> fn(kv [L, 2, H, T, d] fp32) -> (kv_hat, bits).

    fp16, int8, ans20v10, ...      a stored codec, encoded and decoded for real (bits: the blob)
    st:K1,..:V1,..                 the st* payload (storage/stepped_codec.py) with these step ratios
    lvl:K:V[:layers=a-b][:part=k|v]  grouped.quantize with K key / V value levels on the given
                                   layers and part only (the rest exact): sensitivity probes
"""

import torch

from chunkcache.names import CODECS


def _real(name):
    from chunkcache.storage import CodecSpec, decode_kv, encode_kv

    def sim(kv):
        blob = encode_kv(kv, CodecSpec(name))
        return decode_kv(blob), 8 * len(blob)

    return sim


def _levels(spec: str):
    from chunkcache.storage import grouped
    from chunkcache.kernels import dequantize_grouped_reference

    fields = spec.split(":")
    kl, vl = int(fields[1]), int(fields[2])
    opts = dict(f.split("=") for f in fields[3:])
    lo, hi = (int(x) for x in opts.get("layers", "0-999").split("-"))
    parts = opts.get("part", "kv")

    def sim(kv):
        L = kv.shape[0]
        sel = slice(lo, min(hi, L - 1) + 1)
        codes, ks, vs = grouped.quantize(kv[sel], kl, vl, 64)
        hat = kv.clone()
        if "k" in parts:
            hat[sel, 0] = dequantize_grouped_reference(codes[:, 0], ks, "k")
        if "v" in parts:
            hat[sel, 1] = dequantize_grouped_reference(codes[:, 1], vs, "v")
        return hat, 16 * kv.numel()

    return sim


def _stepped(spec: str):
    """st:K1,K2,..:V1,V2,..: the st* payload with this step plan, encoded and decoded for real."""
    from chunkcache.storage.stepped_codec import StepPlan, encode, parse

    _, k, v, *rest = spec.split(":")
    only = [x for x in rest if x in ("K", "V")]  # quantize keys or values only (a probe)
    plan = StepPlan(tuple(float(x) for x in k.split(",")), tuple(float(x) for x in v.split(",")))

    def sim(kv):
        raw = encode(kv, plan)[0]
        hat = parse(bytearray(raw), "st4", tuple(kv.shape), False).decode()
        if only:
            hat[:, 1 if only[0] == "K" else 0] = kv[:, 1 if only[0] == "K" else 0]
        return hat, 8 * (len(raw) + 48)

    return sim


def get(name: str):
    if name.startswith("st:"):
        return _stepped(name)
    if name in CODECS:
        return _real(name)
    if name.startswith("lvl:"):
        return _levels(name)
    import codec_schemes

    return codec_schemes.get(name)
