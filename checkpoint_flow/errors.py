"""The exception hierarchy: every error the library raises on its own derives from one base."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any


class CheckpointFlowError(Exception):
    """Base class of the library's own errors.

    Errors with fields build their message from them in one place, and every error pickles
    with its fields, so it crosses process and Dask boundaries intact.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args), dict(self.__dict__))


def _rebuild(cls: type[CheckpointFlowError], args: tuple[Any, ...]) -> CheckpointFlowError:
    error = cls.__new__(cls, *args)
    error.args = args
    return error


def _with_remedy(text: str, remedy: str) -> str:
    remedy = remedy.strip()
    return f"{text.rstrip('.')}. {remedy}" if remedy else text


def _cause_text(cause: BaseException | str) -> str:
    if isinstance(cause, str):
        return cause
    return f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__


class CheckpointCorruptError(CheckpointFlowError):
    """A stored record or blob cannot be read back as it was written.

    Raised for truncated or damaged files, hash mismatches, missing blobs and unknown format
    versions. A damaged checkpoint is never taken for an empty one. ``what`` names the damaged
    thing and where it is, ``problem`` what is wrong with it, ``remedy`` the way out.
    """

    def __init__(self, what: str, problem: str, remedy: str = "") -> None:
        self.what = what
        self.problem = problem
        self.remedy = remedy.strip()
        super().__init__(_with_remedy(f"{what} {problem}", remedy))

    def with_remedy(self, remedy: str) -> CheckpointCorruptError:
        """The same error, of the same kind, with ``remedy`` added to what it says to do."""
        joined = _with_remedy(self.remedy, remedy) if self.remedy else remedy
        return type(self)(self.what, self.problem, joined)


class CheckpointSignatureError(CheckpointCorruptError):
    """A record is unsigned or its signature does not match the configured key."""


class CheckpointLockedError(CheckpointFlowError, TimeoutError):
    """Another run holds the location's run lock, or (``lost``) took it from this run.

    ``holder`` says who holds it ("pid 12 on host gpu-3"), None when that cannot be told;
    ``since`` and ``expires_at`` are epoch seconds where known; ``remedy`` says what to do.
    It is a ``TimeoutError`` too: the lock could not be had now.
    """

    def __init__(
        self,
        location: str,
        holder: str | None = None,
        *,
        since: float | None = None,
        expires_at: float | None = None,
        remedy: str = "",
        lost: bool = False,
    ) -> None:
        self.location = location
        self.holder = holder
        self.since = since
        self.expires_at = expires_at
        self.remedy = remedy
        self.lost = lost
        who = holder or ("another run" if lost else "another process")
        if since is not None:
            who = f"{who} since {_utc(since)}"
        if lost:
            text = (
                f"this run lost its run lock on {location} ({who}); another run may be writing "
                "there now"
            )
        else:
            text = f"checkpoint location {location} is locked by {who}; another run is using it"
        super().__init__(f"{text}. {remedy}".rstrip())


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


WRITE_REMEDY = "The previous checkpoint is intact; fix the storage problem and rerun."
READ_REMEDY = "Nothing was changed; rerun when the storage is reachable."


class CheckpointWriteError(CheckpointFlowError):
    """Writing a checkpoint failed; the previous committed checkpoint is untouched.

    ``what`` names what was being written to ``location``, ``cause`` why it failed (the
    underlying exception is also the ``__cause__``), ``remedy`` what to do.
    """

    def __init__(
        self, location: str, what: str, cause: BaseException | str, remedy: str = WRITE_REMEDY
    ) -> None:
        self.location = location
        self.what = what
        self.cause = _cause_text(cause)
        self.remedy = remedy
        super().__init__(
            _with_remedy(f"could not write {what} to {location}: {self.cause}", remedy)
        )


class CheckpointReadError(CheckpointFlowError):
    """Storage could not be read (network down, permission, I/O error); nothing was changed.

    ``what`` names what was being read and where, ``cause`` why it failed.
    """

    def __init__(self, what: str, cause: BaseException | str, remedy: str = READ_REMEDY) -> None:
        self.what = what
        self.cause = _cause_text(cause)
        self.remedy = remedy
        super().__init__(_with_remedy(f"could not read {what}: {self.cause}", remedy))


class StepNotFoundError(CheckpointFlowError, ValueError):
    """A step name or index names no step of the flow.

    ``step`` is the reference as the caller wrote it (``checkpoint='x'``), ``steps`` the
    flow's steps as listed in the message, ``problem`` what is wrong with the reference.
    """

    def __init__(
        self, step: str, steps: Sequence[str], problem: str = "names no step", remedy: str = ""
    ) -> None:
        self.step = step
        self.steps = tuple(steps)
        self.problem = problem
        self.remedy = remedy
        listing = ", ".join(self.steps) or "none"
        super().__init__(_with_remedy(f"{step} {problem}; steps are: {listing}", remedy))


class UnpicklableStateError(CheckpointFlowError, TypeError):
    """A state value cannot be serialized: ``what`` names it, ``detail`` says why."""

    def __init__(self, what: str, detail: str, remedy: str = "") -> None:
        self.what = what
        self.detail = detail
        self.remedy = remedy
        super().__init__(_with_remedy(f"{what} cannot be pickled: {detail}", remedy))


class CheckpointNotFoundError(CheckpointFlowError, FileNotFoundError):
    """A checkpoint selector (latest, best, an epoch, a file name) names no saved checkpoint.

    ``available`` describes what exists (empty when nothing was saved yet); ``why`` says why
    the selector matched none of it.
    """

    def __init__(self, location: str, selector: str, why: str = "", available: str = "") -> None:
        self.location = location
        self.selector = selector
        self.why = why
        self.available = available
        if not available:
            text = f"no checkpoint saved in {location} yet (selector {selector!r})"
        else:
            reason = f" ({why})" if why else ""
            text = f"no checkpoint {selector!r} in {location}{reason}; available: {available}"
        super().__init__(text)


class CheckpointExistsError(CheckpointFlowError, FileExistsError):
    """A save asked not to replace a checkpoint names one that exists, or one already asked
    for (``waiting``); nothing was saved."""

    def __init__(self, location: str, name: str, *, waiting: bool = False) -> None:
        self.location = location
        self.name = name
        self.waiting = waiting
        if waiting:
            text = (
                f"a save named {name!r} is already waiting for the next boundary of the "
                f"manager at {location}; choose another name (nothing more was asked for)"
            )
        else:
            text = (
                f"a checkpoint named {name!r} exists in {location}; choose another name "
                "(nothing was saved)"
            )
        super().__init__(text)


class FanOutError(CheckpointFlowError):
    """Items of a fan-out step failed; every item that finished is recorded and is not rerun.

    ``failures`` maps the key of each failed item (the item itself, or what ``key=`` returned)
    to the exception it raised on its last attempt, in item order. Of the step's ``total``
    items, ``finished`` are recorded at ``location``; ``not_started`` were never run because
    ``max_failures`` items had failed.
    """

    NAMED = 5  # failed keys the message names

    def __init__(
        self,
        step: str,
        location: str,
        failures: Mapping[Any, BaseException],
        *,
        total: int,
        finished: int,
        max_failures: int | None = None,
    ) -> None:
        self.step = step
        self.location = location
        self.failures: dict[Any, BaseException] = dict(failures)
        self.total = total
        self.finished = finished
        self.max_failures = max_failures
        self.not_started = total - finished - len(self.failures)
        keys = list(self.failures)
        named = ", ".join(map(repr, keys[: self.NAMED]))
        more = f" and {len(keys) - self.NAMED} more" if len(keys) > self.NAMED else ""
        stopped = (
            f"; {self.not_started} were not started (max_failures={max_failures})"
            if self.not_started else ""
        )
        first = next(iter(self.failures.values()), None)
        text = (
            f"map step {step!r}: {len(keys)} of {total} items failed: {named}{more}. {finished} "
            f"finished items are recorded at {location} and will not run again{stopped}"
        )
        if first is not None:
            text += f". First error: {type(first).__name__}: {first}"
        super().__init__(text)


class CheckpointFormatError(CheckpointFlowError):
    """A location was written in a storage format this version does not read.

    Nothing is guessed or converted: the message names the format found (``found``), the one
    this version reads (``readable``) and what to do.
    """

    def __init__(self, where: str, found: str, readable: str, remedy: str) -> None:
        self.where = where
        self.found = found
        self.readable = readable
        self.remedy = remedy
        super().__init__(
            f"{where} was written in storage format {found}; this checkpoint_flow reads format "
            f"{readable} and will not guess. {remedy}"
        )


class UndigestableValueError(UnpicklableStateError):
    """A value has no stable content to identify it by (a lock, an open file, a generator...).

    It cannot be part of a memo key or a fan-out item key. ``what`` names the value for the
    caller (an argument, an item key), ``where`` the path inside it, ``detail`` the reason and
    ``remedy`` the way out.
    """

    def __init__(self, what: str, where: str, detail: str, remedy: str = "") -> None:
        self.what = what
        self.where = where
        self.detail = detail
        self.remedy = remedy.strip()
        at = f" at {where}" if where else ""
        CheckpointFlowError.__init__(
            self, _with_remedy(f"{what} cannot be digested stably{at}: {detail}", remedy)
        )


class CheckpointFlowWarning(UserWarning):
    """Something the user should know although nothing failed (a restart caused by a code
    change, a saver that runs without the data its loader brought in)."""
