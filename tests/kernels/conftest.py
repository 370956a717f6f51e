"""Kernel tests run the Triton kernels on CPU tensors through Triton's interpreter.

Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when a `chunkcache.kernels.*_triton`
module is first imported, which happens lazily at the first Triton launch. Setting it here,
before any test of this folder runs, is therefore enough even if torch or triton itself was
imported earlier in the same pytest process.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"
