"""The saving side of a manager: which boundary saves (its trigger, an improvement, requests),
saves asked for from outside the loop (by name, from another thread, by a signal), the
emergency save and the exit after SIGTERM. :class:`Saver` captures jobs with a
:class:`~.capture.JobMaker` and hands them to the :class:`~.writer.Writer`; it is told what
happened in the loop and never asks the manager anything.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from ..errors import CheckpointExistsError
from .capture import JobMaker
from .catalogue import Catalogue
from .commit import SaveJob
from .metrics import Position
from .naming import NameKind
from .options import Options
from .requests import Request, SaveRequests, chain
from .signals import SignalWatch
from .triggers import Boundary, BoundaryKind
from .writer import Writer

# The manager's messages keep its logger, which users configure by name.
logger = logging.getLogger("checkpoint_flow.training.manager")


class Saver:
    """Saves of the manager ``options`` describe; ``who`` (its repr) and ``location`` name it in
    messages. A read-only saver, or one that is closed, refuses to save. With
    ``options.handle_signals`` it installs the signal handlers (from the main thread only)."""

    def __init__(
        self,
        writer: Writer[SaveJob],
        jobs: JobMaker,
        catalogue: Catalogue,
        options: Options,
        *,
        who: str,
        location: str,
    ) -> None:
        self._writer = writer
        self._jobs = jobs
        self._progress = jobs.progress
        self._naming = jobs.naming
        self._catalogue = catalogue
        self._trigger = options.trigger
        self._requests = SaveRequests(location)
        self._read_only = options.read_only
        self._who = who
        self._location = location
        self._closed = False
        self._last_periodic: float | None = None
        self.last_saved_at: Position | None = None
        self._signals = SignalWatch() if options.handle_signals else None

    def check_writable(self) -> None:
        if self._read_only:
            raise RuntimeError(
                f"{self._who} was opened with read_only=True; open one without it to save"
            )
        if self._closed:
            raise RuntimeError(f"{self._who} is closed; open a new manager to save again")

    def begin(self) -> None:
        """What every saving call checks first: that saving is allowed, and that no background
        save failed since the last call (its error is raised here)."""
        self.check_writable()
        self._writer.raise_error()

    def close(self) -> None:
        """Put back the signal handlers; saving raises from now on."""
        if self._signals is not None:
            self._signals.restore()
        self._closed = True

    def wait(self) -> None:
        self._writer.drain(raise_errors=True)

    # ----------------------------------------------------------------- what the hooks save

    def save(
        self,
        file: str | None,
        kind: NameKind,
        objects: Mapping[str, Any],
        *,
        best: bool,
        info: Mapping[str, Any],
    ) -> Future[str]:
        """Save now as ``file`` (kept until deleted), or under the rolling name of ``kind``."""
        primary = (file, "named") if file else (self._rolling_name(kind), "rolling")
        return self._submit("manual", objects, primary, best=best, info=info)

    def boundary(
        self,
        kind: BoundaryKind,
        objects: Mapping[str, Any],
        *,
        improved: bool,
        best: bool,
        now: float,
    ) -> Future[str] | None:
        """Save at this boundary if the trigger fires, a request waits or ``best`` (the metric
        improved and best saves are on); then serve the requests, and end the process if
        SIGTERM asked for it."""
        progress = self._progress
        boundary = Boundary(
            kind=kind,
            epoch=progress.epoch,
            step=progress.step,
            metrics=progress.metrics,
            improved=improved,
            now=now,
            last_save=self._last_periodic,
            steps_reported=progress.steps_reported,
        )
        periodic = self._trigger(boundary)
        requests = self._take_requests()
        unnamed = any(r.file is None for r in requests)
        future = None
        if periodic or unnamed or best:
            reason = "periodic" if periodic else ("requested" if unnamed else "improved")
            future = self._submit(reason, objects, (self._rolling_name(kind), "rolling"), best=best)
            if periodic:
                self._last_periodic = now
        self._settle(requests, future, objects, "requested")
        if self._signals is not None and self._signals.terminate:
            self._exit_after_sigterm()
        return future

    def train_end(
        self, objects: Mapping[str, Any], *, improved: bool, best: bool
    ) -> Future[str] | None:
        """Save the final state unless it is saved already, and serve the requests."""
        requests = self._take_requests()
        future = None
        if improved or requests or self.last_saved_at != self._progress.position:
            future = self._submit(
                "end", objects, (self._rolling_name("epoch"), "rolling"), best=best
            )
        self._settle(requests, future, objects, "end")
        return future

    def emergency(self, exc: BaseException, objects: Mapping[str, Any]) -> str | None:
        """Write an emergency checkpoint on this thread and add a note naming it to ``exc``.
        Returns its file, or None if saving is not allowed or failed (the failure is logged)."""
        if self._read_only or self._closed:
            return None
        progress = self._progress
        file = self._naming.emergency(progress.epoch, progress.step)
        try:
            self._writer.drain(raise_errors=False)
            job = self._jobs.make(
                "emergency", objects, (file, "emergency"), best=False, info={}, copy=False
            )
            self._writer.run_now(job)
        except Exception:
            logger.exception("emergency checkpoint %s in %s failed", file, self._location)
            return None
        latest = self._catalogue.latest()
        message = (
            f"checkpoint_flow: emergency state saved to {file} in {self._location}; "
            f"the last clean checkpoint is {latest.file if latest else 'none'}"
        )
        logger.error(message)
        if hasattr(exc, "add_note"):
            exc.add_note(message)
        return file

    # ----------------------------------------------------------------- saves asked from outside

    def request(self, name: str | None, *, replace: bool = True) -> Future[str]:
        """Queue a save for the next boundary (see ``CheckpointManager.request_save``)."""
        self.check_writable()
        file = self._naming.named(name) if name is not None else None
        if file is not None and not replace:
            self._refuse_existing(file)
        future = self._requests.add(file, replace=replace)
        logger.info("save requested (%s) for the next boundary", file or "periodic name")
        return future

    def _take_requests(self) -> list[Request]:
        signalled = self._signals is not None and self._signals.take_save_request()
        return self._requests.take(signalled=signalled)

    def _settle(
        self,
        requests: list[Request],
        future: Future[str] | None,
        objects: Mapping[str, Any],
        reason: str,
    ) -> None:
        for request in requests:
            file = request.file
            if file is None:
                if future is None:  # on_train_end found nothing new: the latest file is the answer
                    request.future.set_result(self._latest() or "")
                else:
                    chain(future, request.future)
                continue
            try:
                if not request.replace:
                    # A save of that name may have been committed since it was asked for.
                    self._writer.drain(raise_errors=True)
                    self._refuse_existing(file)
                submitted = self._submit(reason, objects, (file, "named"), best=False)
            except CheckpointExistsError as exc:  # this request fails alone; the loop goes on
                request.future.set_exception(exc)
                continue
            except BaseException as exc:
                request.future.set_exception(exc)
                raise
            chain(submitted, request.future)

    def _refuse_existing(self, file: str) -> None:
        if self._catalogue.get(file) is not None:
            raise CheckpointExistsError(self._location, file)

    # ----------------------------------------------------------------- internals

    def _rolling_name(self, kind: NameKind) -> str:
        return self._naming.rolling(kind, self._progress.epoch, self._progress.step)

    def _latest(self) -> str | None:
        self._writer.drain(raise_errors=False)
        latest = self._catalogue.latest()
        return None if latest is None else latest.file

    def _submit(
        self,
        reason: str,
        objects: Mapping[str, Any],
        primary: tuple[str, str],
        *,
        best: bool,
        info: Mapping[str, Any] | None = None,
    ) -> Future[str]:
        # One write in flight at most: waiting here bounds memory to one extra copy of the state
        # and lets the staging buffers be reused.
        self._writer.drain(raise_errors=True)
        job = self._jobs.make(
            reason, objects, primary, best=best, info=info or {}, copy=self._writer.background
        )
        if primary[1] == "rolling":
            self.last_saved_at = self._progress.position
        return self._writer.submit(job)

    def _exit_after_sigterm(self) -> None:
        self.wait()
        logger.warning("SIGTERM: saved %s in %s; exiting", self._latest(), self._location)
        if self._signals is not None:
            self._signals.restore()
        raise SystemExit(128 + signal.SIGTERM)
