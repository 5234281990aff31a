"""Resolving `image_path` / `mask_path` values, which must stay inside their Parquet file's folder.

A pool is often shared between people and machines; a path that leaves the
folder (absolute, with a `..` part, or through a symlink pointing elsewhere) could
make scoring read any file the process can read, so it is refused rather than
followed.
"""
from __future__ import annotations

import os
from pathlib import PurePosixPath, PureWindowsPath

from .errors import PathRefused


def resolve_inside(base_dir: str, relative: str) -> str:
    """The real path of `relative` under `base_dir`; PathRefused with the reason otherwise."""
    if not relative:
        raise PathRefused("empty path")
    if "\0" in relative:  # no file system takes it; os.path raises ValueError on it
        raise PathRefused(f"{relative!r} contains a NUL character")
    windows = PureWindowsPath(relative)
    if PurePosixPath(relative).is_absolute() or windows.is_absolute() or windows.drive:
        raise PathRefused(f"{relative!r} is absolute; paths must be relative to the Parquet file's folder")
    if ".." in PurePosixPath(relative.replace("\\", "/")).parts:
        raise PathRefused(f"{relative!r} contains '..'; paths must stay inside the Parquet file's folder")
    base = os.path.realpath(base_dir)
    target = os.path.realpath(os.path.join(base, relative))
    if os.path.commonpath([base, target]) != base:
        raise PathRefused(f"{relative!r} resolves to {target!r}, outside the Parquet file's folder (a symlink?)")
    if not os.path.isfile(target):
        what = "is not a file" if os.path.exists(target) else "does not exist"
        raise PathRefused(f"{relative!r} {what} (looked for {target!r})")
    return target
