"""Launcher checks shared by every kernel: type, shape, dtype, device, strides.

The stride rule of every kernel here: the innermost dim must have stride 1 (rows are read
and written as contiguous vectors), every outer stride is passed to the kernel. So views such
as `kv[:, 0]` of a `[L, 2, H, T, d]` tensor or `cache[:, a:b]` run without a copy, while a
transposed or `[..., ::2]` view is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import KernelInputError

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _fmt_shape(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


def check_tensor(
    name: str,
    t: object,
    *,
    layout: str,
    shape: Sequence[int | None],
    dtypes: Sequence[torch.dtype],
    device: torch.device | None = None,
) -> torch.Tensor:
    """Return `t` if it is a tensor of `shape` (None = any size), one of `dtypes`, on
    `device`, with a unit innermost stride; else raise `KernelInputError` naming `name`.
    `layout` is the symbolic shape for the message, e.g. "[L, H, T, d]"."""
    if not isinstance(t, torch.Tensor):
        raise KernelInputError(f"{name}: expected a tensor {layout}, got {type(t).__name__}")
    got = tuple(t.shape)
    if len(got) != len(shape) or any(e is not None and e != g for e, g in zip(shape, got)):
        raise KernelInputError(
            f"{name}: expected shape {layout} = {_fmt_shape(shape)}, got {got}"
        )
    if t.dtype not in dtypes:
        allowed = ", ".join(str(d) for d in dtypes)
        raise KernelInputError(f"{name}: dtype {t.dtype}, expected one of {allowed}")
    if device is not None and t.device != device:
        raise KernelInputError(f"{name} is on {t.device}, the other inputs on {device}")
    if t.dim() > 0 and got[-1] > 1 and t.stride(-1) != 1:
        raise KernelInputError(
            f"{name}: shape {got} with strides {t.stride()}: the last dim must have "
            "stride 1 (pass .contiguous())"
        )
    return t


def check_writable(name: str, t: torch.Tensor) -> None:
    """An output written in place must not alias itself (an expanded, stride-0 view)."""
    for size, stride in zip(t.shape, t.stride()):
        if size > 1 and stride == 0:
            raise KernelInputError(
                f"{name}: shape {tuple(t.shape)} with strides {t.stride()} overlaps itself; "
                "it cannot be written in place"
            )


def check_float(name: str, value: object) -> float:
    """A finite Python scalar (not a tensor: it would force a device sync per launch)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise KernelInputError(f"{name}: expected a float, got {type(value).__name__}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise KernelInputError(f"{name}: expected a finite float, got {value}")
    return value
