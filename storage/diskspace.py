"""Telling "no space left on device" apart from other write failures.

LMDB reports a short write on a full filesystem as EIO ("Input/output error"), which hides
the cause. After a failed write we look at the filesystem: if less than the write needed
(plus a little slack) is free, the cause is a full disk and the error says so, carrying
OSError(ENOSPC) as its __cause__ so `chunkcache.errors.is_no_space` tells without parsing messages.
"""

import errno
import os

SLACK_BYTES = 1 << 20  # LMDB writes whole pages plus metadata; "almost full" counts as full


def free_bytes(path: str) -> int | None:
    """Bytes an unprivileged writer may still use on path's filesystem, or None if unknown."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def no_space(path: str, need_bytes: int = 0, error: BaseException | None = None) -> OSError | None:
    """OSError(ENOSPC) if `error` is one or the filesystem of `path` lacks room for need_bytes."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return error
    free = free_bytes(path)
    if free is not None and free < need_bytes + SLACK_BYTES:
        return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({free} bytes free, the write needed about {need_bytes})")
    return None
