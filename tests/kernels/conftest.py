"""Kernel tests run the Triton kernels twice over: on CPU tensors through Triton's interpreter
(every machine), and for real on a CUDA GPU when one exists.

Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when a `chunkcache.kernels.*_triton`
module is first imported, which happens lazily at the first Triton launch. Setting it here,
before any test of this folder runs, is therefore enough even if torch or triton itself was
imported earlier in the same pytest process. One process cannot hold both kinds of kernel, so
the real GPU run is a second pytest process over the `cuda` cases (`test_kernel_cuda.py`,
which sets CHUNKCACHE_KERNEL_RUN=cuda and TRITON_INTERPRET=0).
"""

import os

import pytest
import torch

from kernel_factories import CUDA_RUN, NO_GPU

os.environ["TRITON_INTERPRET"] = "0" if CUDA_RUN else "1"


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: a kernel case on a CUDA device (real Triton kernels)")


@pytest.fixture(params=[pytest.param("cpu", id="interpreter"), pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)])
def device(request) -> torch.device:
    """Where a Triton case runs: "cpu" through the interpreter, "cuda" on the GPU for real."""
    if request.param == "cuda":
        if not torch.cuda.is_available():
            pytest.skip(NO_GPU)
        if not CUDA_RUN:
            pytest.skip("this process interprets Triton; the real-GPU run of this case is test_kernel_cuda.py's subprocess")
    elif CUDA_RUN:
        pytest.skip("the CUDA run: Triton's interpreter is off in this process")
    return torch.device(request.param)
