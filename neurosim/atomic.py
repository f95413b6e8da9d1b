"""Atomic file writes that a crash, a concurrent reader or a planted link cannot spoil.

``atomic_write(path)`` yields a binary file object on a fresh temporary file in ``path``'s
directory, created exclusively (``O_EXCL``) and never through a symbolic link
(``O_NOFOLLOW``), so a file or link planted under the temporary name is never written
through. On success the data is flushed, fsynced and renamed over ``path`` (atomic on POSIX:
a reader sees the old file or the new one, never half of one; a link at ``path`` itself is
replaced, its target untouched). On failure the temporary file is removed and ``path`` is
left as it was.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "exclusive_temporary"]


def exclusive_temporary(directory: Path, prefix: str) -> tuple[Path, int]:
    """A new file ``{prefix}.{pid}.{random}.tmp`` in ``directory``, opened for writing: its
    path and descriptor. The process id in the name lets a cleaner tell a live writer's
    file from one a killed writer left."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    while True:
        path = directory / f"{prefix}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
        try:
            return path, os.open(path, flags, 0o644)
        except FileExistsError:  # astronomically unlikely; try another name
            continue


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Write ``path`` atomically (see the module docstring)."""
    final = Path(path)
    tmp, fd = exclusive_temporary(final.parent, f".{final.name}")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
