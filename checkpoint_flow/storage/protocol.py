"""The `StateHandler` protocol and the byte types handlers read and write: opaque byte strings
under relative names such as ``records/000042.rec``, never interpreted by the handler (laying out
snapshots is the store's job, unpickling is the codec's).
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

# What handlers read and write: bytes-like objects, or a mapped file (mapped copy-on-write).
Buffer = bytes | bytearray | memoryview | mmap.mmap
Chunks = Buffer | Sequence[Buffer]


@runtime_checkable
class StateHandler(Protocol):
    """The narrow storage interface the library writes through.

    Names are relative POSIX paths ("a/b/c") without empty, "." or ".." parts.

    - ``read(name)`` returns the whole content; raises ``FileNotFoundError`` if absent.
    - ``write(name, data)`` replaces the content atomically: a reader sees the old content or the
      new one, never a mix. ``data`` is a bytes-like object or a sequence of them (written in order,
      so large buffers need not be joined in memory).
    - ``create(name, data)`` writes only if ``name`` does not exist yet; returns False if it did.
    - ``exists(name)``, ``delete(name)`` (a missing name is not an error), and
      ``list(prefix)``: every name below the folder ``prefix``, recursively, sorted.

    Optional, used when present (the library falls back without them):

    - ``link(source, target)``: make ``target`` hold the bytes of ``source``, replacing it
      atomically, without sending them again (a hard link, a server-side copy).
    - ``list_dir(prefix="")``: the files directly in folder ``prefix`` ("" for the top level),
      not recursing, sorted.
    """

    location: str

    def read(self, name: str) -> Buffer: ...

    def write(self, name: str, data: Chunks) -> None: ...

    def create(self, name: str, data: bytes) -> bool: ...

    def exists(self, name: str) -> bool: ...

    def delete(self, name: str) -> None: ...

    def list(self, prefix: str) -> list[str]: ...


def check_name(name: str) -> str:
    """Validate a relative storage name; return it unchanged. Raises ValueError."""
    if not isinstance(name, str):
        raise TypeError(f"storage name must be a str, got {type(name).__name__}: {name!r}")
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise ValueError(
            f"invalid storage name {name!r}: use a relative path of non-empty parts "
            "without '.', '..', backslashes or NUL"
        )
    return name


def as_chunks(data: Chunks) -> list[Buffer]:
    if isinstance(data, (bytes, bytearray, memoryview, mmap.mmap)):
        return [data]
    return list(data)
