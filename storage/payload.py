"""A stored entry's tensors as the codec wrote them: views over the blob, no fp32 decode.

The query path hands these straight to the fused dequantize + RoPE kernel, which writes the
working cache; only deviation-based selection asks for the fp32 tensor (`decode`).
"""

from dataclasses import dataclass

import torch

from chunkcache.kernels import CodecLayout, Packing, Scales, dequantize_grouped_reference, unpack_int4
from chunkcache.kernels import layout as codec_layout
from chunkcache.storage import quant


@dataclass(frozen=True)
class Payload:
    """One chunk's stored KV in its codec's layout, for kv [L, 2, H, T, d] (keys before RoPE).

    q: [L, 2, H, T, d] float16/bfloat16/float32 (fp16/bf16/fp32) or int8 (int8), or [L, 2, H, T, ceil(d/2)]
    uint8 with two nibbles a byte (int4). k_scale: [L, H, 1, d] fp16 (per key channel),
    v_scale: [L, H, T, 1] fp16 (per token); None for the float codecs.
    Grouped codecs (kvq*, ans*; `storage/grouped_codec.py`): q codes uint8 [L, 2, H, T, d],
    k_scale [L, H, 2, d] fp16 (step, offset per key channel), v_scale [L, H, T, 2G] fp16
    (st*, `storage/stepped_codec.py`: G = 1, the scales built from the entry's step bytes).
    rotated: keys stored after RoPE at their prompt positions (chain entries) instead of before.
    """

    codec: str
    shape: tuple[int, int, int, int, int]
    q: torch.Tensor
    k_scale: torch.Tensor | None = None
    v_scale: torch.Tensor | None = None
    rotated: bool = False

    @property
    def k(self) -> torch.Tensor:
        """Stored keys [L, H, T, d or ceil(d/2)] (a strided view)."""
        return self.q[:, 0]

    @property
    def v(self) -> torch.Tensor:
        return self.q[:, 1]

    @property
    def layout(self) -> CodecLayout:
        return codec_layout(self.codec)

    @property
    def tokens(self) -> int:
        return self.shape[3]

    @property
    def device(self) -> torch.device:
        return self.q.device

    def to(self, device: torch.device | str) -> "Payload":
        """The same payload on `device` (itself when already there)."""
        device = torch.device(device)
        if self.q.device == device:
            return self

        def move(t):
            return None if t is None else t.to(device, non_blocking=True)

        return Payload(self.codec, self.shape, move(self.q), move(self.k_scale), move(self.v_scale), self.rotated)

    def decode(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """-> kv [L, 2, H, T, d] of `dtype` (the codec's dequantization, on the payload's device)."""
        c = self.layout
        if c.scales is Scales.NONE:
            return self.q.to(dtype)
        if c.scales is Scales.GROUPED:
            out = torch.empty(self.shape, dtype=torch.float32, device=self.q.device)
            out[:, 0] = dequantize_grouped_reference(self.q[:, 0], self.k_scale, "k")
            out[:, 1] = dequantize_grouped_reference(self.q[:, 1], self.v_scale, "v")
            return out.to(dtype)
        d = self.shape[-1]
        q = unpack_int4(self.q, d) if c.packing is Packing.NIBBLES else self.q  # [L, 2, H, T, d] int8
        out = torch.empty(self.shape, dtype=torch.float32, device=self.q.device)
        quant.dequantize_int8(q[:, 0], self.k_scale, out=out[:, 0])
        quant.dequantize_int8(q[:, 1], self.v_scale, out=out[:, 1])
        return out.to(dtype)


def tensor_view(raw: bytearray, dtype: torch.dtype, offset: int, shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor of `shape` over raw[offset:], sharing memory (torch.frombuffer refuses count 0)."""
    count = 1
    for s in shape:
        count *= s
    if count == 0:
        return torch.zeros(shape, dtype=dtype)
    return torch.frombuffer(raw, dtype=dtype, count=count, offset=offset).view(shape)
