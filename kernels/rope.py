"""Fused dequantize + RoPE of stored keys at their new positions, and re-rotation of
already-rotated keys. Llama "rotate_half" convention, as Hugging Face transformers:

    angle[t, i] = float32(pos[t]) * inv_freq[i]                 # fp32, i < d/2
    cos, sin    = cos(angle) * s, sin(angle) * s                # s = attention_scaling
    out[:d/2]   = x[:d/2] * cos - x[d/2:] * sin                 # x*cos + rotate_half(x)*sin
    out[d/2:]   = x[d/2:] * cos + x[:d/2] * sin

`inv_freq` is always passed in (the model may use rope scaling: llama3, yarn, linear...).
"""

from __future__ import annotations

import torch

from .available import Impl, choose_impl
from .checks import FLOAT_DTYPES, check_float, check_tensor, check_writable
from .codecs import Packing, Scales, layout
from .errors import KernelInputError
from .quant import dequantize_grouped_reference, dequantize_reference


# ---------------------------------------------------------------- torch reference


def rope_cos_sin(
    positions: torch.Tensor, inv_freq: torch.Tensor, attention_scaling: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """positions: [T] int64, inv_freq: [d/2] fp32 -> (cos, sin), each [T, d/2] fp32, times
    attention_scaling. Only one half: HF's cos/sin repeat it over the two halves."""
    angle = positions.to(torch.float32)[:, None] * inv_freq.to(torch.float32)[None, :]
    return angle.cos() * attention_scaling, angle.sin() * attention_scaling


def apply_rope_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [..., T, d] -> fp32 [..., T, d] rotated; cos, sin: [T, d/2] fp32."""
    x1, x2 = x.to(torch.float32).chunk(2, dim=-1)  # [..., T, d/2] each
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    o1, o2 = out.chunk(2, dim=-1)  # views: written in place, no temporaries
    torch.mul(x1, cos, out=o1).addcmul_(x2, sin, value=-1.0)  # x1 cos - x2 sin
    torch.mul(x2, cos, out=o2).addcmul_(x1, sin)  # x2 cos + x1 sin
    return out


def dequant_rope_reference(
    packed_k: torch.Tensor,
    k_scale: torch.Tensor | None,
    packed_v: torch.Tensor,
    v_scale: torch.Tensor | None,
    positions: torch.Tensor,
    inv_freq: torch.Tensor,
    attention_scaling: float,
    codec: str,
    out_dtype: torch.dtype,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch reference of `dequant_rope` (same arguments, no checks).

    With `out`, the rotation of fp32 keys writes straight into it (no rotated temporary)."""
    c = layout(codec)
    cos, sin = rope_cos_sin(positions, inv_freq, attention_scaling)
    if c.scales is Scales.GROUPED:
        k = apply_rope_reference(dequantize_grouped_reference(packed_k, k_scale, "k"), cos, sin)
        v = dequantize_grouped_reference(packed_v, v_scale, "v")
        if out is None:
            return k.to(out_dtype), v.to(out_dtype)
        out[0].copy_(k)
        out[1].copy_(v)
        return out
    if out is None:
        k = apply_rope_reference(dequantize_reference(packed_k, k_scale, codec), cos, sin)
        v = dequantize_reference(packed_v, v_scale, codec)
        return k.to(out_dtype), v.to(out_dtype)
    k_out, v_out = out
    x = packed_k if packed_k.dtype == torch.float32 else dequantize_reference(packed_k, k_scale, codec)
    if k_out.dtype == torch.float32:
        x1, x2 = x.chunk(2, dim=-1)  # [L, H, T, d/2] each
        o1, o2 = k_out.chunk(2, dim=-1)  # views into the destination
        torch.mul(x1, cos, out=o1).addcmul_(x2, sin, value=-1.0)  # x1 cos - x2 sin
        torch.mul(x2, cos, out=o2).addcmul_(x1, sin)  # x2 cos + x1 sin
    else:
        k_out.copy_(apply_rope_reference(x, cos, sin))
    if c.scales is Scales.SYMMETRIC and c.packing is Packing.NONE and v_out.dtype == torch.float32:
        torch.mul(packed_v, v_scale.to(torch.float32), out=v_out)  # int8: one pass, no temporary
    elif c.scales is Scales.SYMMETRIC:
        v_out.copy_(dequantize_reference(packed_v, v_scale, codec))
    else:
        v_out.copy_(packed_v)
    return k_out, v_out


def rerotate_reference(
    k: torch.Tensor, delta_positions: torch.Tensor, inv_freq: torch.Tensor
) -> torch.Tensor:
    """Torch reference of `rerotate` (same arguments, no checks)."""
    cos, sin = rope_cos_sin(delta_positions, inv_freq, 1.0)
    return apply_rope_reference(k, cos, sin).to(k.dtype)


# ---------------------------------------------------------------- launchers


def dequant_rope(
    packed_k: torch.Tensor,
    k_scale: torch.Tensor | None,
    packed_v: torch.Tensor,
    v_scale: torch.Tensor | None,
    positions: torch.Tensor,
    inv_freq: torch.Tensor,
    attention_scaling: float,
    codec: str,
    out_dtype: torch.dtype,
    *,
    impl: Impl = "auto",
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dequantize one chunk's stored K/V and rotate its keys to their prompt positions.

    packed_k, packed_v: [L, H, T, d] in the codec's dtype (int4: [L, H, T, d/2] uint8); keys
        pre-RoPE. The layer dim may be strided, so `kv[:, 0]`, `kv[:, 1]` of a stored
        `[L, 2, H, T, d]` pass without a copy.
    k_scale: [L, H, 1, d] (per key channel), v_scale: [L, H, T, 1] (per token), float; None
        for the float codecs. Grouped codecs (kvq*, ans*, codes [L, H, T, d] uint8): k_scale
        [L, H, 2, d] (step, offset per key channel), v_scale [L, H, T, 2G] (G steps, G offsets
        per token over d / G channels each); see `quant.py`.
    positions: [T] int64, the target position of each token (= rotation from position 0).
    inv_freq: [d/2] float32, the model's own (with any rope scaling applied).
    attention_scaling: multiplier on cos and sin (1.0 for plain RoPE; yarn != 1).
    codec: the name of one of `codecs.LAYOUTS` (its scales and packing decide the checks).
    out: optional destination (k_out, v_out), each [L, H, T, d] of out_dtype on the inputs'
        device, with equal strides and a unit innermost stride: e.g. the slots
        `cache.k[:, :, a:b]`, `cache.v[:, :, a:b]` of a working cache [L, H, capacity, d].
    Returns (k_rot, v): `out`, or two new contiguous [L, H, T, d] tensors of out_dtype; angles
    and arithmetic in fp32, one rounding to out_dtype at the end.
    """
    c = layout(codec)
    stored = (c.stored,)
    packed_layout = "[L, H, T, d/2]" if c.packing is Packing.NIBBLES else "[L, H, T, d]"
    check_tensor("packed_k", packed_k, layout=packed_layout, shape=(None,) * 4, dtypes=stored)
    L, H, T, last = packed_k.shape
    d = c.head_dim(last)
    if d % 2:
        raise KernelInputError(f"packed_k: head_dim {d} is odd; RoPE needs an even head_dim")
    dev = packed_k.device
    check_tensor("packed_v", packed_v, layout=packed_layout, shape=packed_k.shape,
                 dtypes=stored, device=dev)
    if c.scales is Scales.SYMMETRIC:
        check_tensor("k_scale", k_scale, layout="[L, H, 1, d]", shape=(L, H, 1, d),
                     dtypes=FLOAT_DTYPES, device=dev)
        check_tensor("v_scale", v_scale, layout="[L, H, T, 1]", shape=(L, H, T, 1),
                     dtypes=FLOAT_DTYPES, device=dev)
    elif c.scales is Scales.GROUPED:
        check_tensor("k_scale", k_scale, layout="[L, H, 2, d]", shape=(L, H, 2, d),
                     dtypes=FLOAT_DTYPES, device=dev)
        check_tensor("v_scale", v_scale, layout="[L, H, T, 2G]", shape=(L, H, T, None),
                     dtypes=FLOAT_DTYPES, device=dev)
        groups = v_scale.shape[-1] // 2
        if v_scale.shape[-1] % 2 or groups == 0 or d % groups:
            raise KernelInputError(f"v_scale: last dim {v_scale.shape[-1]} is not 2G with G groups dividing head_dim {d}")
    elif k_scale is not None or v_scale is not None:
        raise KernelInputError(f"codec={codec!r} has no scales; pass k_scale=v_scale=None")
    check_tensor("positions", positions, layout="[T]", shape=(T,), dtypes=(torch.int64,),
                 device=dev)
    check_tensor("inv_freq", inv_freq, layout="[d/2]", shape=(d // 2,),
                 dtypes=(torch.float32,), device=dev)
    scaling = check_float("attention_scaling", attention_scaling)
    if out_dtype not in FLOAT_DTYPES:
        raise KernelInputError(f"out_dtype={out_dtype}: expected one of {FLOAT_DTYPES}")
    if out is not None:
        _check_out(out, (L, H, T, d), out_dtype, dev)

    args = (packed_k, k_scale, packed_v, v_scale, positions, inv_freq, scaling, codec, out_dtype)
    if choose_impl(impl, dev) == "reference" or packed_k.numel() == 0:
        return dequant_rope_reference(*args, out=out)
    if c.scales is Scales.GROUPED:
        from .grouped_triton import launch_grouped_rope

        if out is None:
            out = (torch.empty((L, H, T, d), dtype=out_dtype, device=dev),
                   torch.empty((L, H, T, d), dtype=out_dtype, device=dev))
        launch_grouped_rope(packed_k, k_scale, packed_v, v_scale, positions, inv_freq, scaling, *out)
        return out
    from .rope_triton import launch_rope

    if out is None:
        out = (torch.empty((L, H, T, d), dtype=out_dtype, device=dev),
               torch.empty((L, H, T, d), dtype=out_dtype, device=dev))
    k_out, v_out = out
    launch_rope(packed_k, k_scale, positions, inv_freq, scaling, c, k_out,
                packed_v=packed_v, v_scale=v_scale, v_out=v_out)
    return k_out, v_out


def _check_out(out: object, shape: tuple[int, ...], dtype: torch.dtype, dev: torch.device) -> None:
    if not isinstance(out, tuple) or len(out) != 2:
        raise KernelInputError(f"out: expected a (k_out, v_out) tuple, got {type(out).__name__}")
    k_out, v_out = out
    for name, t in (("out[0]", k_out), ("out[1]", v_out)):
        check_tensor(name, t, layout="[L, H, T, d]", shape=shape, dtypes=(dtype,), device=dev)
        check_writable(name, t)
    if k_out.stride() != v_out.stride():
        raise KernelInputError(f"out: k_out strides {k_out.stride()} differ from v_out strides {v_out.stride()}")


def rerotate(
    k: torch.Tensor,
    delta_positions: torch.Tensor,
    inv_freq: torch.Tensor,
    *,
    impl: Impl = "auto",
) -> torch.Tensor:
    """Move already-rotated keys by a per-token delta: R_new R_old^-1 = R_(new-old).

    k: [L, H, T, d] or [H, T, d], float (outer dims may be strided).
    delta_positions: [T] int64, new - old position per token (may be negative).
    inv_freq: [d/2] float32.
    Returns a new contiguous tensor of k's shape and dtype.

    There is no attention_scaling argument on purpose: a pure rotation composes, while the
    yarn factor is already carried by the keys once; applying it again would scale by s**2.
    """
    ndim = k.dim() if isinstance(k, torch.Tensor) and k.dim() in (3, 4) else 4
    check_tensor("k", k, layout="[L, H, T, d] or [H, T, d]", shape=(None,) * ndim,
                 dtypes=FLOAT_DTYPES)
    squeeze = ndim == 3
    k4 = k.unsqueeze(0) if squeeze else k  # [H, T, d] -> [1, H, T, d]
    L, H, T, d = k4.shape
    if d % 2:
        raise KernelInputError(f"k: head_dim {d} is odd; RoPE needs an even head_dim")
    dev = k4.device
    check_tensor("delta_positions", delta_positions, layout="[T]", shape=(T,),
                 dtypes=(torch.int64,), device=dev)
    check_tensor("inv_freq", inv_freq, layout="[d/2]", shape=(d // 2,),
                 dtypes=(torch.float32,), device=dev)

    if choose_impl(impl, dev) == "reference" or k4.numel() == 0:
        out = rerotate_reference(k4, delta_positions, inv_freq)
    else:
        from .rope_triton import launch_rope

        out = torch.empty((L, H, T, d), dtype=k4.dtype, device=dev)
        launch_rope(k4, None, delta_positions, inv_freq, 1.0, None, out)
    return out.squeeze(0) if squeeze else out
