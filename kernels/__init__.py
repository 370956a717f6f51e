"""chunkcache.kernels: the KV hot path, each Triton kernel beside its torch reference.

- `dequant_rope`: stored chunk K/V (int8 / int4 / grouped kvq, ans / fp16 / bf16 / fp32) -> keys rotated to their
  prompt positions, values dequantized. `rerotate`: move already-rotated keys by a delta.
- `scatter_rows`: recomputed K/V rows into the assembled cache, in place.
- `token_deviation`: per-token squared deviation, fresh vs cached, for CacheBlend's selection.
- `codecs.LAYOUTS`: every stored codec's layout (id, dtype, scales, packing), shared with storage.

Every launcher checks its inputs (shape, dtype, device, unit innermost stride) and raises
`KernelInputError` (a ValueError) naming the tensor and its shape or stride, then dispatches:
Triton on CUDA tensors when Triton imports, the torch reference otherwise (`impl=` forces
either; see `available.choose_impl`). Triton is optional and imported only when used.
This package imports nothing else of chunkcache.
"""

from .available import IMPLS, Impl, choose_impl, triton_available
from .codecs import BY_ID, BY_NAME, LAYOUTS, CodecLayout, Packing, Scales, layout, lossless_codec
from .deviation import token_deviation, token_deviation_reference
from .errors import KernelInputError
from .quant import CODEC_DTYPES, GROUPED_CODECS, dequantize_grouped_reference, dequantize_reference, unpack_int4
from .rope import (
    apply_rope_reference,
    dequant_rope,
    dequant_rope_reference,
    rerotate,
    rerotate_reference,
    rope_cos_sin,
)
from .scatter import scatter_rows, scatter_rows_reference

__all__ = [
    "BY_ID",
    "BY_NAME",
    "CODEC_DTYPES",
    "GROUPED_CODECS",
    "IMPLS",
    "LAYOUTS",
    "CodecLayout",
    "Impl",
    "KernelInputError",
    "Packing",
    "Scales",
    "apply_rope_reference",
    "choose_impl",
    "dequant_rope",
    "dequant_rope_reference",
    "dequantize_grouped_reference",
    "dequantize_reference",
    "layout",
    "lossless_codec",
    "rerotate",
    "rerotate_reference",
    "rope_cos_sin",
    "scatter_rows",
    "scatter_rows_reference",
    "token_deviation",
    "token_deviation_reference",
    "triton_available",
    "unpack_int4",
]
