"""Payloads of the fixed-step codecs (st*): 8-bit codes at a step a key channel and a value token
set by its spread (`stepped.py`), entropy-coded with compact models (`entropy.encode_compact`).

For kv [L, 2, H, T, d] (keys before RoPE):

    offset  size            field
    0       4               preamble b"ST", format 1, 0
    4       2 * L*H*d       koff  fp16  [L, H, d]  key offset a channel
    ...     L*H             kstep uint8 [L, H]     key step a head (index into stepped.STEPS)
    ...     L*H*T           vstep uint8 [L, H, T]  value step a token
    ...                     the entropy stream of L * 2 segments (layer by layer, keys then values,
                            each [H, T, d] in C order); nothing when T * d == 0

Each codec is a step plan: the step of layer l's keys (values) is ratio[l * len(ratio) // L]
times the head's key spread (a token's rms), so a plan applies to a model of any depth. The ratios
are encoder settings only: an entry holds its steps, and decoding needs nothing but the entry.
Side data costs 16 bits a key channel and 8 bits a value token per chunk (8 / T + 4 / d bits a
value: 0.18 on 2WikiMQA's 70-token median passage, against 0.48 for the level codecs' fp16
scales), the header 48 bytes.
"""

from dataclasses import dataclass

import torch

from chunkcache.errors import CorruptEntryError
from chunkcache.storage import entropy, stepped
from chunkcache.storage.payload import Payload, tensor_view as _view

_PREAMBLE = b"ST\x01\x00"


@dataclass(frozen=True)
class StepPlan:
    """Steps as shares of each head's spread, per layer group (equal groups in depth order)."""

    key: tuple[float, ...]
    value: tuple[float, ...]

    def ratios(self, layers: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (key ratios [layers], value ratios [layers]) float32."""
        def expand(r):
            return torch.tensor([r[l * len(r) // layers] for l in range(layers)], dtype=torch.float32)

        return expand(self.key), expand(self.value)


# Chosen with scripts/codec_proxy.py on the default model (README, "Smaller chunk KV"): value
# steps about twice the key steps (0.2 / 0.4 and 0.17 / 0.5 tied at equal bits; keys alone made
# 85% of the first-token KL), one ratio for all layers (steps per layer group weighted by each
# group's measured sensitivity did no better: KL 0.0021 against 0.0017, 24 questions). st4 sits at
# ans20v10's size (~4.1x on 2WikiMQA), st6 at ans8v4's (~6.5x). A plan is on disk in no form, so
# it may be retuned; a stored entry keeps the steps it was written with.
PLANS: dict[str, StepPlan] = {
    "st4": StepPlan(key=(0.21,), value=(0.42,)),
    "st6": StepPlan(key=(0.6,), value=(1.2,)),
}


def side_bytes(shape: tuple[int, ...]) -> int:
    L, _, H, T, d = shape
    return 2 * L * H * d + L * H + L * H * T


def max_payload_size(shape: tuple[int, ...]) -> int:
    """An upper bound of the payload's bytes (a symbol costs at most 24 bits in constriction's
    24-bit probability precision)."""
    L, two, H, T, d = shape
    n = H * T * d
    segment = 2 + 256 + 4 + 4 * (n * 24 // 32 + 2)
    return len(_PREAMBLE) + side_bytes(shape) + (L * two * segment if n else 0)


def encode(kv: torch.Tensor, plan: StepPlan) -> tuple[bytes, list[entropy.SegmentStats]]:
    """kv [L, 2, H, T, d] -> (payload, per-segment stats)."""
    L, two, H, T, d = kv.shape
    codes, kstep, koff, vstep = stepped.quantize(kv, *plan.ratios(L))
    body, stats = b"", []
    if T * d:
        body, stats = entropy.encode_compact(codes.reshape(L * two, H * T * d))
    side = b"".join(t.contiguous().numpy().tobytes() for t in (koff, kstep, vstep))
    return _PREAMBLE + side + body, stats


def parse(raw: bytearray, codec: str, shape: tuple[int, ...], rotated: bool) -> Payload:
    """raw payload (writable) -> Payload(codes uint8 [L, 2, H, T, d], k_scale [L, H, 2, d],
    v_scale [L, H, T, 2] fp16), the scales as the kernels' grouped dequantization reads them."""
    L, two, H, T, d = shape
    body = len(_PREAMBLE) + side_bytes(shape)
    if len(raw) < body or bytes(raw[: len(_PREAMBLE)]) != _PREAMBLE:
        raise CorruptEntryError(f"{codec} payload for shape {list(shape)}: {len(raw)} bytes, preamble "
                                f"{bytes(raw[:4])!r}; expected {_PREAMBLE!r} and at least {body} bytes")
    at = len(_PREAMBLE)
    koff = _view(raw, torch.float16, at, (L, H, d))
    kstep = _view(raw, torch.uint8, at + 2 * L * H * d, (L, H))
    vstep = _view(raw, torch.uint8, at + 2 * L * H * d + L * H, (L, H, T))
    if T * d:
        codes = entropy.decode_compact(memoryview(raw)[body:], L * two, H * T * d).view(L, two, H, T, d)
    elif len(raw) != body:
        raise CorruptEntryError(f"{codec} payload of an empty chunk has {len(raw) - body} bytes after its side data")
    else:
        codes = torch.zeros((L, two, H, T, d), dtype=torch.uint8)
    k_scale, v_scale = stepped.scales(kstep, koff, vstep)
    return Payload(codec, shape, codes, k_scale, v_scale, rotated=rotated)
