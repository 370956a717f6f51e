"""Simulated fixed-step codecs for scripts/codec_proxy.py (bits estimated from code entropy).

    fs:k=A:v=B[:kb=beta][:vg=gamma][:lw=w0,w1,...][:kc=0|1]

Keys: x_hat = round((x - c) / s) * s + c with c the channel's mean over the chunk and
s = A * S^(1-beta) * std_channel^beta, S the head's pooled key std (beta 0: one step a head).
Values: s = B * R^(1-gamma) * rms_token^gamma, R the head's value rms, c = 0.
lw: step multipliers per layer group (len(lw) equal groups of layers).
Bits: per (layer, K/V) segment the codes' empirical entropy + 8 bits a symbol of its range for the
model, 16 bits a channel for key centers, 16 bits a (layer, head, part) for steps, 8 bits a channel
(beta > 0) or a token (gamma > 0) for log-coded scales, 48 bytes of header.
"""

import math

import numpy as np
import torch

STATS = {"seg_bits": 0.0, "chan_bits": 0.0, "values": 0, "side": 0.0}


def _entropy(codes: np.ndarray) -> tuple[float, int]:
    """codes int -> (total bits at the empirical distribution, alphabet span)."""
    lo = codes.min()
    counts = np.bincount((codes - lo).ravel())
    p = counts[counts > 0] / codes.size
    return float(-(counts[counts > 0] * np.log2(p)).sum()), len(counts)


def _fs(spec: str):
    opts = dict(f.split("=") for f in spec.split(":")[1:])
    a, b = float(opts["k"]), float(opts["v"])
    beta, gamma = float(opts.get("kb", 0)), float(opts.get("vg", 0))
    lw = [float(x) for x in opts["lw"].split(",")] if "lw" in opts else [1.0]
    kc = int(opts.get("kc", 1))

    def sim(kv):
        L, _, H, T, d = kv.shape
        w = torch.tensor([lw[min(len(lw) - 1, l * len(lw) // L)] for l in range(L)])[:, None, None, None]  # [L,1,1,1]
        k, v = kv[:, 0], kv[:, 1]  # [L, H, T, d]
        c = k.mean(2, keepdim=True) if kc else torch.zeros_like(k[:, :, :1])  # [L, H, 1, d]
        kstd = (k - c).pow(2).mean(2, keepdim=True).sqrt().clamp_min(1e-6)  # [L, H, 1, d]
        S = kstd.pow(2).mean(-1, keepdim=True).sqrt()  # [L, H, 1, 1]
        ks = a * w * S.pow(1 - beta) * kstd.pow(beta)
        kq = torch.round((k - c) / ks)
        R = v.pow(2).mean((2, 3), keepdim=True).sqrt().clamp_min(1e-6)  # [L, H, 1, 1]
        vr = v.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-6)  # [L, H, T, 1]
        vs = b * w * R.pow(1 - gamma) * vr.pow(gamma)
        vq = torch.round(v / vs)
        hat = torch.stack([kq * ks + c, vq * vs], dim=1)
        bits = 48 * 8 + 16 * L * H * 2 + 16 * L * H * d * kc
        bits += 8 * L * H * d * (beta > 0) + 8 * L * H * T * (gamma > 0)
        side = bits
        seg = chan = 0.0
        for q in (kq, vq):
            qn = q.numpy().astype(np.int64)
            for l in range(L):
                e, span = _entropy(qn[l])
                seg += e + 8 * span
                chan += sum(_entropy(qn[l, h, :, j])[0] for h in range(H) for j in range(d))
        STATS["seg_bits"] += seg
        STATS["chan_bits"] += chan
        STATS["values"] += kv.numel()
        STATS["side"] += side
        return hat, bits + seg

    return sim


def get(name: str):
    if name.startswith("fs:"):
        return _fs(name)
    raise KeyError(name)
