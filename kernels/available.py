"""Whether Triton can run, and the one rule that picks Triton or the torch reference.

Triton is optional: nothing here imports it until a launcher needs to know, and CPU tensors on
`impl="auto"` never import it at all. Triton's interpreter (`TRITON_INTERPRET=1`) is read by
Triton itself when a kernel module is first imported; we only ask Triton whether it is on.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch

from .errors import KernelInputError

Impl = Literal["auto", "reference", "triton"]
IMPLS: tuple[str, ...] = ("auto", "reference", "triton")


@functools.cache
def _triton_import_error() -> str | None:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # a broken install raises more than ImportError
        return f"{type(exc).__name__}: {exc}"
    return None


def triton_available() -> bool:
    """True when `import triton` works in this process (cached after the first call)."""
    return _triton_import_error() is None


def triton_interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (`TRITON_INTERPRET=1`)."""
    if not triton_available():
        return False
    from triton import knobs

    return bool(knobs.runtime.interpret)


def choose_impl(impl: str, device: torch.device) -> Literal["reference", "triton"]:
    """The dispatch rule of every launcher.

    - `"reference"`: the torch reference, on any device.
    - `"auto"`: Triton on CUDA tensors when Triton imports, else the reference.
    - `"triton"`: Triton, forced; CPU tensors then need Triton's interpreter. Raises
      `KernelInputError` when that cannot run here, rather than silently falling back.
    """
    if impl not in IMPLS:
        raise KernelInputError(f"impl={impl!r}: expected one of {IMPLS}")
    if impl == "reference":
        return "reference"
    if impl == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "reference"
    if not triton_available():
        raise KernelInputError(
            f"impl='triton' but triton does not import ({_triton_import_error()}); "
            "install the `triton` extra or use impl='auto'"
        )
    if device.type != "cuda" and not triton_interpreting():
        raise KernelInputError(
            f"impl='triton' on {device.type} tensors needs Triton's interpreter: set "
            "TRITON_INTERPRET=1 before the first kernel module is imported"
        )
    return "triton"
