"""One run at a time: `run_lock` gives the lock that keeps two runs from writing one location
(`FileRunLock` for local directories, `RecordRunLock` for everything else) and `read_holder` says
who holds it. A second run on a held location fails at once with `CheckpointLockedError` naming
the holder; it never waits, since a run queued behind another would resume from a state the first
run is still changing.
"""

from __future__ import annotations

import time

from ..errors import CheckpointCorruptError
from .local import LocalHandler
from .local_lock import FileRunLock
from .lock_base import RunLock
from .lock_records import (
    FILE_LOCK_NAME,
    LOCKS_DIR,
    RECORD_NAME,
    LockHolder,
    check_lock_name,
    is_stale,
    lock_names,
    machine_id,
    read_record,
)
from .protocol import StateHandler
from .record_lock import TAKEOVER_PREFIX, RecordRunLock

__all__ = [
    "FILE_LOCK_NAME",
    "LOCKS_DIR",
    "RECORD_NAME",
    "TAKEOVER_PREFIX",
    "FileRunLock",
    "LockHolder",
    "RecordRunLock",
    "RunLock",
    "lock_names",
    "read_holder",
    "run_lock",
]

# Also importable under its former private name.
_machine_id = machine_id


def run_lock(handler: StateHandler, *, ttl_s: float = 60.0, name: str | None = None) -> RunLock:
    """The run lock for ``handler``'s location, not yet acquired.

    ``ttl_s`` applies to record locks (every handler but `LocalHandler`): how long a crashed
    holder blocks the location. A live holder renews its record every ``ttl_s / 3`` seconds.
    ``name`` gives several independent locks on one location (each training manager locks its
    own name); without it the location's single lock is used (``lock``, ``lock.json``), with it
    ``locks/<name>.lock`` and ``locks/<name>.json``. Raises ValueError for a non-positive
    ``ttl_s`` or a name other than letters, digits, '_', '-' and '.'.
    """
    if not ttl_s > 0:
        raise ValueError(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")
    check_lock_name(name)
    if isinstance(handler, LocalHandler):
        return FileRunLock(handler, name=name)
    return RecordRunLock(handler, ttl_s=ttl_s, name=name)


def read_holder(handler: StateHandler, *, name: str | None = None) -> LockHolder | None:
    """The holder of the location's run lock, without acquiring it; None if nobody holds it.

    A record known to be stale (expired, or left by a process that is gone from this machine)
    counts as nobody. Raises CheckpointCorruptError if the lock record cannot be read: it is
    being written at this moment, or was torn by a crash.
    """
    record_name = lock_names(name)[1]
    observed = read_record(handler, record_name)
    if observed is None:
        return None
    if observed.holder is None:
        record = f"{handler.location.rstrip('/')}/{record_name}"
        raise CheckpointCorruptError(
            f"the run lock record {record}",
            "cannot be read; it is being written right now or was torn by a crash",
            "Try again; if it stays unreadable and no run is using the location, delete it.",
        )
    if is_stale(observed.holder, observed.machine, time.time()):
        return None
    return observed.holder
