"""Saves asked for from outside the loop (another thread, the HTTP endpoint, a signal), served
at the next boundary.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass

from ..errors import CheckpointExistsError


@dataclass(frozen=True)
class Request:
    """One save asked for: ``file`` (None: the periodic name), whether it may ``replace`` a
    checkpoint of that name, and the Future the requester waits on."""

    file: str | None
    future: Future[str]
    replace: bool = True


class SaveRequests:
    """A thread-safe queue of requests."""

    def __init__(self, location: str) -> None:
        self.location = location  # named in errors
        self._lock = threading.Lock()
        self._queue: list[Request] = []

    def add(self, file: str | None, *, replace: bool = True) -> Future[str]:
        """Queue a request. Without ``replace``, raises CheckpointExistsError if a request for
        the same file is already waiting (two clicks on one name save once)."""
        future: Future[str] = Future()
        with self._lock:
            if not replace and any(r.file == file for r in self._queue):
                raise CheckpointExistsError(self.location, str(file), waiting=True)
            self._queue.append(Request(file, future, replace))
        return future

    def take(self, *, signalled: bool) -> list[Request]:
        """Every request queued so far (plus an unnamed one when ``signalled``), each marked as
        running; requests whose requester cancelled them are dropped."""
        with self._lock:
            requests, self._queue = self._queue, []
        if signalled:
            requests.append(Request(None, Future()))
        return [r for r in requests if r.future.set_running_or_notify_cancel()]


def chain(source: Future[str], target: Future[str]) -> None:
    """Resolve ``target`` like ``source`` once it is done."""

    def copy(done: Future[str]) -> None:
        exc = done.exception()
        if exc is not None:
            target.set_exception(exc)
        else:
            target.set_result(done.result())

    source.add_done_callback(copy)
