"""`FileRunLock`: the run lock of a local directory, an OS file lock (``filelock``) that the kernel
releases when the holder dies, even by SIGKILL, with a small record next to it naming the holder.
"""

from __future__ import annotations

import logging
import time

from filelock import FileLock, Timeout

from ..errors import CheckpointLockedError
from .local import LocalHandler
from .lock_base import RunLock
from .lock_records import (
    HELD_TOKENS,
    LOGGER_NAME,
    LockHolder,
    encode_holder,
    is_stale,
    new_holder,
    read_record,
)

logger = logging.getLogger(LOGGER_NAME)

_HOLDER_RECORD_WAIT_S = 1.0


class FileRunLock(RunLock):
    """An OS file lock under a local directory, plus a record naming the holder."""

    handler: LocalHandler

    def __init__(self, handler: LocalHandler, *, name: str | None = None) -> None:
        super().__init__(handler, name=name)
        self._lock_path = handler.path(self.lock_file_name)
        self._file_lock = FileLock(str(self._lock_path), timeout=0)

    def _acquire(self) -> None:
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._file_lock.acquire()
        except Timeout:
            raise self._locked_error() from None
        holder = new_holder(expires_at=None)
        HELD_TOKENS.add(holder.token)
        try:
            # A record left by a holder that was killed is simply replaced: the file lock, not
            # the record, decides who holds the location.
            self.handler.write(self.record_name, encode_holder(holder))
        except BaseException:
            HELD_TOKENS.discard(holder.token)
            self._file_lock.release()
            raise
        self.holder = holder
        logger.debug("run lock on %s acquired (pid %d)", self.handler.location, holder.pid)

    def _release(self) -> None:
        try:
            # The record goes first, so that it never names a process that no longer holds it.
            self.handler.delete(self.record_name)
        finally:
            self._file_lock.release()
        logger.debug("run lock on %s released", self.handler.location)

    def _locked_error(self) -> CheckpointLockedError:
        location = self.handler.location
        lock_path = self._lock_path
        holder = self._wait_for_holder_record()
        self.holder = holder
        return CheckpointLockedError(
            location,
            "another process (it has not recorded itself yet)" if holder is None
            else f"pid {holder.pid} on host {holder.host}",
            since=None if holder is None else holder.since,
            remedy="Wait for it to finish, or if that process is gone, end any process it "
            f"started that may still have the lock file {lock_path} open (the operating "
            "system releases the lock when the last of them exits).",
        )

    def _wait_for_holder_record(self) -> LockHolder | None:
        # A holder that has just taken the file lock writes its record a moment later; wait
        # that moment so the error can name it.
        deadline = time.monotonic() + _HOLDER_RECORD_WAIT_S
        while True:
            observed = read_record(self.handler, self.record_name)
            holder = observed.holder if observed is not None else None
            if observed is not None and holder is not None and not is_stale(
                holder, observed.machine, 0
            ):
                return holder
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)
