"""`LocalHandler`: a checkpoint location that is a directory on a local filesystem."""

from __future__ import annotations

import builtins
import mmap
import os
from pathlib import Path

from .files import TEMP_MARK, create_file, link_file, remove_stale_temp_files, replace_file
from .protocol import Buffer, Chunks, as_chunks, check_name

_MAP_THRESHOLD = 4 * 2**20


class LocalHandler:
    """Files under a local directory, written with temp file, fsync, rename, fsync of the folder."""

    def __init__(self, location: str | os.PathLike[str]) -> None:
        if not isinstance(location, (str, os.PathLike)):
            raise TypeError(
                f"location must be a path or a URL string, got {type(location).__name__}"
            )
        self.root = Path(location).expanduser().absolute()
        self.location = str(self.root)
        _refuse_file_in_the_way(self.root)

    def __repr__(self) -> str:
        return f"LocalHandler({self.location!r})"

    def path(self, name: str) -> Path:
        return self.root.joinpath(*check_name(name).split("/"))

    def read(self, name: str) -> Buffer:
        # Out-of-band buffers (NumPy arrays) are rebuilt on top of what is returned, so it must
        # be writable. Large files are mapped copy-on-write: no zero-filled buffer, no copy, and
        # the page cache is shared until a value is changed. Stored files are never rewritten
        # in place, so the mapping cannot change under the reader.
        with open(self.path(name), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size >= _MAP_THRESHOLD:
                return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
            buf = bytearray(size)
            view = memoryview(buf)
            got = 0
            while got < size:
                n = f.readinto(view[got:])
                if not n:
                    break
                got += n
            return buf if got == size else buf[:got]

    def write(self, name: str, data: Chunks) -> None:
        replace_file(self.path(name), as_chunks(data))

    def create(self, name: str, data: bytes) -> bool:
        return create_file(self.path(name), data)

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        base = self.path(prefix)
        if not base.is_dir():
            return []
        names: builtins.list[str] = []
        for dirpath, _dirs, files in os.walk(base):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            names.extend(f"{rel}/{f}" for f in files if TEMP_MARK not in f)
        return sorted(names)

    def link(self, source: str, target: str) -> None:
        """Make ``target`` hold the bytes of ``source``: a hard link where the filesystem allows
        one, a copy otherwise; ``target`` is replaced atomically. Raises FileNotFoundError."""
        link_file(self.path(source), self.path(target))

    def list_dir(self, prefix: str = "") -> builtins.list[str]:
        """The files directly in folder ``prefix`` ("" for the top level), sorted."""
        base = self.root if prefix == "" else self.path(prefix)
        try:
            entries = list(os.scandir(base))
        except (FileNotFoundError, NotADirectoryError):
            return []
        lead = f"{prefix}/" if prefix else ""
        return sorted(
            lead + e.name for e in entries if e.is_file() and TEMP_MARK not in e.name
        )

    def remove_stale_temps(self, older_than_s: float) -> int:
        """Delete temp files of writes that never finished (a process killed mid-write) once
        they are ``older_than_s`` seconds old; return how many. Younger ones may be a write in
        progress."""
        return remove_stale_temp_files(self.root, older_than_s)


def _refuse_file_in_the_way(root: Path) -> None:
    """Raise ValueError if ``root``, or the nearest of its parents that exists, is a file."""
    for path in (root, *root.parents):
        if path.is_dir():
            return
        if path.exists():
            what = "is an existing file" if path == root else f"is inside {path}, an existing file"
            raise ValueError(
                f"location {root} {what} ({_describe_file(path)}), not a directory: a "
                "checkpoint location is a directory. Keep that file, and pass a path that is a "
                f"directory or does not exist yet, such as {path}.checkpoints"
            )


def _describe_file(path: Path) -> str:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        return f"which cannot be read ({exc})"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"{size} bytes, a pickle: the state file of another checkpoint tool?"
    if head == b"PK\x03\x04":
        return f"{size} bytes, a zip archive: a torch.save file?"
    return f"{size} bytes"

