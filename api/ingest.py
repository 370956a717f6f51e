"""Server-side files for `POST /v1/ingest`, confined to the configured `ingest_root`.

A path is relative to the root, has no `..`, and must resolve (symlinks followed) inside the
root; folders are walked here, not by the loader, so a symlink inside a folder that points out
of the root is refused too. Text files get their root-relative path as id.
"""

import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath

from chunkcache.api.errors import ApiError, invalid

MAX_FILES = 10_000


def resolve_under(root: Path, relative: str) -> Path:
    """root/relative, resolved; 422 if it is absolute, climbs with `..` or escapes through a symlink."""
    if not isinstance(relative, str) or not relative.strip() or "\x00" in relative:
        raise invalid(f"paths must be non-empty relative paths, got {relative!r}")
    posix, windows = PurePosixPath(relative), PureWindowsPath(relative)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or relative.startswith(("/", "\\")):
        raise invalid(f"path {relative!r} is absolute; give paths relative to the ingest root")
    if ".." in posix.parts or ".." in windows.parts:
        raise invalid(f"path {relative!r} contains '..'; give paths inside the ingest root")
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise invalid(f"path {relative!r} leaves the ingest root (through a symlink)")
    if not target.exists():
        raise ApiError(404, "not_found", f"no file or folder {relative!r} under the ingest root")
    return target


def collect_files(root: Path, relatives: list[str], loadable: Callable[[Path], bool]) -> list[tuple[Path, str]]:
    """Every (resolved file, root-relative id) named by `relatives`, folders expanded in sorted
    order (only the files `loadable` accepts: `ChunkCache.loadable`)."""
    root = root.resolve()
    files: list[tuple[Path, str]] = []
    for relative in relatives:
        target = resolve_under(root, relative)
        if target.is_file():
            files.append((target, Path(os.path.normpath(relative)).as_posix()))  # the id is the name given
            continue
        for folder, dirs, names in os.walk(target, followlinks=False):
            dirs.sort()
            for name in sorted(names):
                if not loadable(Path(name)):
                    continue
                path = Path(folder) / name
                resolved = path.resolve()
                if not resolved.is_relative_to(root):
                    raise invalid(f"{path.relative_to(root).as_posix()!r} is a symlink leaving the ingest root")
                if resolved.is_file():
                    files.append((resolved, path.relative_to(root).as_posix()))
            for d in dirs:  # os.walk does not descend into symlinked folders; say so, don't skip silently
                if (Path(folder) / d).is_symlink() and not (Path(folder) / d).resolve().is_relative_to(root):
                    raise invalid(f"{(Path(folder) / d).relative_to(root).as_posix()!r} is a symlink leaving the ingest root")
        if len(files) > MAX_FILES:
            raise invalid(f"more than {MAX_FILES} files under {relative!r}; ingest smaller folders")
    return files
