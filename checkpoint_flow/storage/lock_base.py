"""`RunLock`: what every run lock does, whichever way it is held: acquire, check, release,
and use as a context manager.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TYPE_CHECKING

from ..errors import CheckpointLockedError, CheckpointWriteError
from .lock_records import HELD_TOKENS, LOGGER_NAME, LockHolder, lock_names
from .protocol import StateHandler

if TYPE_CHECKING:
    from typing_extensions import Self

logger = logging.getLogger(LOGGER_NAME)


class RunLock:
    """A run lock on one location; use it as a context manager.

    ``holder`` is our own record while we hold the lock, the other run's after a failed
    `acquire` (when it could be read), and None before the first attempt and after `release`.
    """

    holder: LockHolder | None

    def __init__(self, handler: StateHandler, *, name: str | None = None) -> None:
        self.handler = handler
        self.name = name
        self.lock_file_name, self.record_name = lock_names(name)
        self.holder = None
        self._held = False

    def __repr__(self) -> str:
        state = "held" if self._held else "free"
        return f"{type(self).__name__}({self.handler.location!r}, {state})"

    @property
    def held(self) -> bool:
        """True between a successful `acquire` and `release`."""
        return self._held

    def check(self) -> None:
        """Raise CheckpointLockedError unless this object still holds the lock.

        Called before every commit, so a run that lost its lock stops before writing again.
        """
        if not self._held:
            raise CheckpointLockedError(
                self.handler.location, "it was released", lost=True,
                remedy="Rerun to take it again.",
            )
        self._check()

    def _check(self) -> None:
        """What `check` adds for one kind of lock; the OS file lock cannot be lost."""

    def acquire(self) -> None:
        """Take the lock now. Raises CheckpointLockedError at once if another run holds it,
        CheckpointWriteError if the location cannot be written (permissions, credentials, a
        missing bucket)."""
        if self._held:
            raise RuntimeError(f"{self!r} is already held by this object; release it first")
        try:
            self._acquire()
        except CheckpointLockedError:
            raise  # also a TimeoutError, so an OSError: not a storage failure
        except OSError as exc:
            raise CheckpointWriteError(
                self.handler.location,
                "the run lock",
                _reason(exc),
                "Nothing was changed; a run writes to its location, so make it writable or "
                "choose another one.",
            ) from exc
        self._held = True

    def release(self) -> None:
        """Give the lock up; calling it again, or without holding the lock, does nothing."""
        if not self._held:
            return
        self._held = False
        if self.holder is not None:
            HELD_TOKENS.discard(self.holder.token)
        try:
            self._release()
        finally:
            self.holder = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.release()
            return
        # The run's own error says what happened; a failure to release (storage gone, say)
        # must not replace it. A record lock left behind expires after its ttl.
        try:
            self.release()
        except Exception as release_error:  # noqa: BLE001
            logger.error(
                "could not release the run lock on %s: %s", self.handler.location, release_error
            )

    def _acquire(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError


def _reason(exc: OSError) -> str:
    # A local OSError's str() is "[Errno 13] Permission denied: '/path'"; the strerror alone
    # reads better once the location is named.
    if exc.strerror and exc.filename:
        return f"{exc.strerror} ({exc.filename})"
    return str(exc)
