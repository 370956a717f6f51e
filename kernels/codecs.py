"""The stored codecs' layouts: one table that storage (encode, decode, the header's codec id) and
the kernels (dequantize, dequantize + RoPE) read, so neither matches codec names as strings.

For kv [L, 2, H, T, d] (keys before RoPE), what storage hands the kernels per part (K or V):

    scales     stored K / V            k_scale        v_scale         x
    NONE       [L, H, T, d] float      -              -               as stored
    SYMMETRIC  [L, H, T, d] int8, or   [L, H, 1, d]   [L, H, T, 1]    q * scale
               [L, H, T, d/2] uint8    (per channel)  (per token)
               NIBBLES
    GROUPED    [L, H, T, d] uint8      [L, H, 2, d]   [L, H, T, 2G]   code * step + offset
               codes                   (step, offset  (G steps, G offsets
                                        a channel)     a token)

The names and their order are also `chunkcache.names.CODECS` (the vocabulary the CLI and the API
offer without importing torch; tests/core/test_names.py pins the two equal). This package imports
nothing else of chunkcache, so the table lives here, below storage.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from .errors import KernelInputError


class Scales(enum.Enum):
    """How a codec's scales are laid out (see the module table)."""

    NONE = "none"  # a float codec: the tensor as is
    SYMMETRIC = "symmetric"  # int8 / int4: q in [-qmax, qmax], x = q * scale, scale = absmax / qmax
    GROUPED = "grouped"  # kvq* / ans*: codes in [0, levels), x = code * step + offset


class Packing(enum.Enum):
    """How the codes sit in the stored payload."""

    NONE = "none"  # one stored element a value
    NIBBLES = "nibbles"  # two 4-bit codes a byte: element 2i in the low nibble, each q + 8
    BITS = "bits"  # codes packed at ceil(log2(levels)) bits; storage unpacks them to uint8 codes
    ENTROPY = "entropy"  # codes ANS-coded; storage decodes them to uint8 codes
    STEPPED = "stepped"  # 8-bit codes, a step a key channel / value token, ANS-coded; storage decodes them to uint8 codes


@dataclass(frozen=True)
class CodecLayout:
    """One codec: its on-disk id, what the kernels receive and how values are recovered.

    key_levels / value_levels: the codes a key / value part takes (0 for a float codec): 255 for
    int8 (q in [-127, 127]), 15 for int4 ([-7, 7]), the grouped codecs' own levels."""

    name: str
    id: int  # header byte 6 (storage/header.py): on disk, so never renumbered or reused
    stored: torch.dtype  # dtype of the stored K / V tensors as the kernels take them
    scales: Scales
    packing: Packing = Packing.NONE
    key_levels: int = 0
    value_levels: int = 0

    @property
    def levels(self) -> tuple[int, int]:
        return self.key_levels, self.value_levels

    @property
    def bits(self) -> tuple[int, int]:
        """Bits a packed key / value code takes (ceil(log2(levels)))."""
        return tuple(max(1, (n - 1).bit_length()) for n in self.levels)

    @property
    def qmax(self) -> int:
        """A symmetric codec's largest |q| (127 int8, 7 int4)."""
        return (self.key_levels - 1) // 2

    def lossless_for(self, dtype: torch.dtype) -> bool:
        """Whether KV of `dtype` comes back bit for bit (a float codec of that very dtype)."""
        return self.scales is Scales.NONE and self.stored == dtype

    def stored_width(self, head_dim: int) -> int:
        """Last dim of the stored K / V for `head_dim` channels (int4: two a byte)."""
        return (head_dim + 1) // 2 if self.packing is Packing.NIBBLES else head_dim

    def head_dim(self, stored_width: int) -> int:
        """The channels an even head_dim's stored K / V of last dim `stored_width` holds."""
        return 2 * stored_width if self.packing is Packing.NIBBLES else stored_width


_G, _S, _N = Scales.GROUPED, Scales.SYMMETRIC, Scales.NONE
LAYOUTS: tuple[CodecLayout, ...] = (
    CodecLayout("fp16", 1, torch.float16, _N),
    CodecLayout("bf16", 2, torch.bfloat16, _N),
    CodecLayout("int8", 3, torch.int8, _S, Packing.NONE, 255, 255),
    CodecLayout("int4", 4, torch.uint8, _S, Packing.NIBBLES, 15, 15),
    CodecLayout("fp32", 5, torch.float32, _N),
    CodecLayout("kvq4", 6, torch.uint8, _G, Packing.BITS, 16, 16),
    CodecLayout("kvq3", 7, torch.uint8, _G, Packing.BITS, 8, 8),
    CodecLayout("ans20v10", 8, torch.uint8, _G, Packing.ENTROPY, 20, 10),
    CodecLayout("ans16", 9, torch.uint8, _G, Packing.ENTROPY, 16, 16),
    CodecLayout("ans8v4", 10, torch.uint8, _G, Packing.ENTROPY, 8, 4),
    CodecLayout("st4", 11, torch.uint8, _G, Packing.STEPPED, 256, 256),
    CodecLayout("st6", 12, torch.uint8, _G, Packing.STEPPED, 256, 256),
)
BY_NAME = {c.name: c for c in LAYOUTS}
BY_ID = {c.id: c for c in LAYOUTS}


def layout(name: str) -> CodecLayout:
    """The layout of codec `name`; KernelInputError naming the known codecs otherwise."""
    try:
        return BY_NAME[name]
    except (KeyError, TypeError):
        raise KernelInputError(f"codec={name!r}: expected one of {tuple(BY_NAME)}") from None


def lossless_codec(dtype: torch.dtype) -> CodecLayout:
    """The codec that stores KV of float `dtype` bit for bit (chain entries keep exact KV)."""
    for c in LAYOUTS:
        if c.lossless_for(dtype):
            return c
    raise KernelInputError(f"no lossless codec for {dtype}; expected one of "
                           f"{[str(c.stored) for c in LAYOUTS if c.scales is Scales.NONE]}")
