"""The one error the kernel launchers raise on purpose.

`kernels` imports nothing else of chunkcache (it sits at the bottom of the dependency graph), so
it cannot raise `chunkcache.errors.ConfigError`. `KernelInputError` is a `ValueError`; callers
higher up may catch it and re-raise their own error with more context.
"""


class KernelInputError(ValueError):
    """A launcher got a tensor or option it cannot run on; the message names the tensor and
    carries the offending shape, stride, dtype or value."""
