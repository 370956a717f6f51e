"""The `cuda` kernel cases, for real: a second pytest process with Triton compiling for the GPU
(this process interprets Triton, see conftest.py). Skips only when there is no GPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kernel_factories import CUDA_RUN, NO_GPU, needs_triton


@needs_triton
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)
@pytest.mark.skipif(CUDA_RUN, reason="already the CUDA run")
def test_kernel_cases_run_on_the_gpu():
    env = {**os.environ, "CHUNKCACHE_KERNEL_RUN": "cuda", "TRITON_INTERPRET": "0"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "cuda", "-p", "no:cacheprovider", str(Path(__file__).parent)],
        env=env, capture_output=True, text=True, timeout=3600,
    )
    tail = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, tail
    assert " passed" in run.stdout and "skipped" not in run.stdout, tail
