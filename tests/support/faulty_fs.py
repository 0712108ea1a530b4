"""An in-memory fsspec filesystem that fails on command: write errors, partial writes, a full
disk, read errors."""

from __future__ import annotations

import errno
from collections.abc import Callable

from fsspec.implementations.memory import MemoryFileSystem


class FaultyFileSystem(MemoryFileSystem):
    """Memory filesystem with fault rules; each instance has its own store."""

    protocol = ("faultymem",)
    cachable = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.store = {}
        self.pseudo_dirs = [""]
        self.write_fault: Callable[[str], OSError | None] = lambda path: None
        self.partial_writes = False
        self.read_fault: Callable[[str], OSError | None] = lambda path: None
        self.writes: list[str] = []

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        error = self.write_fault(path)
        if error is not None:
            if self.partial_writes:
                super().pipe_file(path, bytes(value)[: len(value) // 2], **kwargs)
            raise error
        self.writes.append(path)
        return super().pipe_file(path, value, mode=mode, **kwargs)

    def cat_file(self, path, start=None, end=None, **kwargs):
        error = self.read_fault(path)
        if error is not None:
            raise error
        return super().cat_file(path, start=start, end=end, **kwargs)


def disk_full(path: str) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", path)
