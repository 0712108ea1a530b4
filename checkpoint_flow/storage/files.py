"""Local files written so that a crash leaves the old content or the new, never a mix: a temp file
next to the target, fsynced, published by a rename or a link, then the folder fsynced. Both
handlers write local files through these.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from .protocol import Buffer

# In the name of every temp file; listings leave such files out.
TEMP_MARK = ".tmp-"


def remove_stale_temp_files(root: Path, older_than_s: float) -> int:
    """Delete the temp files below ``root`` older than ``older_than_s`` seconds; return how many."""
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if TEMP_MARK not in name:
                continue
            path = Path(dirpath) / name
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
    return removed


def _write_temp(target: Path, chunks: Iterable[Buffer]) -> Path:
    if not target.parent.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        # A new folder is itself an entry of its parent: make that entry durable too.
        _fsync_dir(target.parent.parent)
    temp = target.with_name(f".{target.name}{TEMP_MARK}{uuid.uuid4().hex}")
    try:
        with open(temp, "xb") as f:
            f.writelines(chunks)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def replace_file(target: Path, chunks: Iterable[Buffer]) -> None:
    """Atomically replace ``target``: temp file, fsync, rename, fsync of the folder."""
    temp = _write_temp(target, chunks)
    try:
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def create_file(target: Path, data: Buffer) -> bool:
    """Create ``target`` with complete content only if it does not exist; False if it did."""
    temp = _write_temp(target, [data])
    try:
        # link() fails if the target exists, and publishes complete content in one step.
        os.link(temp, target)
    except FileExistsError:
        return False
    finally:
        temp.unlink(missing_ok=True)
    _fsync_dir(target.parent)
    return True


def link_file(source: Path, target: Path) -> None:
    """Atomically make ``target`` a hard link to ``source``, or a durable copy of it."""
    if not target.parent.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        _fsync_dir(target.parent.parent)
    temp = target.with_name(f".{target.name}{TEMP_MARK}{uuid.uuid4().hex}")
    try:
        try:
            os.link(source, temp)
        except FileNotFoundError:
            raise
        except OSError:
            # Some network and FUSE filesystems have no hard links: copy, and make it durable.
            shutil.copyfile(source, temp)
            with open(temp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename itself lives in the directory entry: without this fsync a power loss can
    # forget a rename that already returned.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
