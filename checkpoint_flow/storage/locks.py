"""One run at a time: the run lock that keeps two runs from writing the same location.

A second run on a held location fails at once with `CheckpointLockedError`, naming the holder
(host, pid, since) and what to do about it. There is no waiting: a run that silently queued
behind another would resume from a state the first run is still changing.

Two implementations, chosen by `run_lock` from the handler:

- `FileRunLock` for local directories: an OS file lock (``filelock``), which the kernel
  releases when the holder dies, even by SIGKILL. A small record (``lock.json``) next to it
  names the holder for the error message of the next run.
- `RecordRunLock` for everything else (object stores, ``file://``, ``memory://``), where no OS
  lock exists: the lock *is* the record, created exclusively and kept alive by a heartbeat.
  A crashed holder's record expires after ``ttl_s`` and the next run takes it over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from ..errors import CheckpointCorruptError, CheckpointLockedError, CheckpointWriteError
from .local import LocalHandler
from .protocol import StateHandler

if TYPE_CHECKING:
    from typing_extensions import Self

logger = logging.getLogger(__name__)

RECORD_NAME = "lock.json"
FILE_LOCK_NAME = "lock"
TAKEOVER_PREFIX = "lock-takeover"
LOCKS_DIR = "locks"
_LOCK_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")
_HOLDER_RECORD_WAIT_S = 1.0
# Tokens of the locks this process holds right now.
_HELD_TOKENS: set[str] = set()


@dataclass(frozen=True)
class LockHolder:
    """Who holds a run lock.

    ``since`` and ``expires_at`` are epoch seconds; ``expires_at`` is None for local locks,
    which the operating system releases when the holder dies.
    """

    host: str
    pid: int
    since: float
    token: str
    expires_at: float | None = None


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
    _check_lock_name(name)
    if isinstance(handler, LocalHandler):
        return FileRunLock(handler, name=name)
    return RecordRunLock(handler, ttl_s=ttl_s, name=name)


def lock_names(name: str | None) -> tuple[str, str]:
    """The (OS lock file, holder record) names of the lock called ``name``."""
    if _check_lock_name(name) is None:
        return FILE_LOCK_NAME, RECORD_NAME
    return f"{LOCKS_DIR}/{name}.lock", f"{LOCKS_DIR}/{name}.json"


def _check_lock_name(name: str | None) -> str | None:
    if name is not None and (not isinstance(name, str) or not _LOCK_NAME.fullmatch(name)):
        raise ValueError(
            f"invalid lock name {name!r}: use 1-100 letters, digits, '_', '-' and '.', not "
            "starting with '.'"
        )
    return name


def read_holder(handler: StateHandler, *, name: str | None = None) -> LockHolder | None:
    """The holder of the location's run lock, without acquiring it; None if nobody holds it.

    A record known to be stale (expired, or left by a process that is gone from this machine)
    counts as nobody. Raises CheckpointCorruptError if the lock record cannot be read: it is
    being written at this moment, or was torn by a crash.
    """
    record_name = lock_names(name)[1]
    observed = _read_record(handler, record_name)
    if observed is None:
        return None
    if observed.holder is None:
        record = f"{handler.location.rstrip('/')}/{record_name}"
        raise CheckpointCorruptError(
            f"the run lock record {record} cannot be read; it is being written right now or was "
            "torn by a crash. Try again; if it stays unreadable and no run is using the "
            "location, delete it."
        )
    if _is_stale(observed.holder, observed.machine, time.time()):
        return None
    return observed.holder


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
                f"cannot take the run lock at {self.handler.location}: {_reason(exc)}. Nothing "
                "was changed; a run writes to its location, so make it writable or choose "
                "another one."
            ) from exc
        self._held = True

    def release(self) -> None:
        """Give the lock up; calling it again, or without holding the lock, does nothing."""
        if not self._held:
            return
        self._held = False
        if self.holder is not None:
            _HELD_TOKENS.discard(self.holder.token)
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
        holder = _new_holder(expires_at=None)
        _HELD_TOKENS.add(holder.token)
        try:
            # A record left by a holder that was killed is simply replaced: the file lock, not
            # the record, decides who holds the location.
            self.handler.write(self.record_name, _encode(holder))
        except BaseException:
            _HELD_TOKENS.discard(holder.token)
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
            observed = _read_record(self.handler, self.record_name)
            holder = observed.holder if observed is not None else None
            if observed is not None and holder is not None and not _is_stale(
                holder, observed.machine, 0
            ):
                return holder
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)


class RecordRunLock(RunLock):
    """A lock that is a record: created exclusively, renewed by a heartbeat, expiring if not.

    Clocks of the machines sharing a location are assumed to agree to well within ``ttl_s``.
    A holder paused for longer than ``ttl_s`` (a suspended laptop) can lose its lock to a
    takeover; its heartbeat then logs an error instead of overwriting the new holder's record.
    """

    def __init__(self, handler: StateHandler, *, ttl_s: float, name: str | None = None) -> None:
        super().__init__(handler, name=name)
        self.ttl_s = ttl_s
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._lost: str | None = None

    def _acquire(self) -> None:
        now = time.time()
        mine = _new_holder(expires_at=now + self.ttl_s)
        # Registered before the record exists, so another thread of this process never takes
        # a record it is about to see for one this process abandoned.
        _HELD_TOKENS.add(mine.token)
        try:
            self._create_or_take_over(mine)
        except BaseException:
            _HELD_TOKENS.discard(mine.token)
            raise
        self.holder = mine
        self._stop.clear()
        self._heartbeat = threading.Thread(
            target=self._beat,
            args=(mine,),
            name=f"checkpoint_flow run lock heartbeat {self.handler.location}",
            daemon=True,
        )
        self._heartbeat.start()
        logger.debug(
            "run lock on %s acquired (token %s, ttl %.1fs)",
            self.handler.location,
            mine.token,
            self.ttl_s,
        )

    def _check(self) -> None:
        if self._lost is None and self.holder is not None and self.holder.expires_at is not None:
            # A heartbeat that fell behind (a long call holding the GIL) may have let the record
            # expire and another run take it over: ask the store before writing again.
            if time.time() > self.holder.expires_at - self.ttl_s / 3:
                self._renew(self.holder)
        if self._lost is not None:
            raise CheckpointLockedError(
                self.handler.location, self._lost, lost=True,
                remedy="Nothing more was written by this run; check the other run, then rerun.",
            )

    def _renew(self, mine: LockHolder) -> bool:
        """Renew our record; False (and ``_lost`` set) if it is no longer ours."""
        # Read before write: after a takeover the record is someone else's, and overwriting it
        # would give the location two holders.
        current = _read_record(self.handler, self.record_name)
        if current is None or current.identity != mine.token:
            self._lost = "record deleted" if current is None else _describe(current)
            logger.error(
                "lost the run lock on %s (%s): another run may now write the same checkpoints; "
                "this run stops before its next commit",
                self.handler.location,
                self._lost,
            )
            return False
        renewed = replace(mine, expires_at=time.time() + self.ttl_s)
        self.handler.write(self.record_name, _encode(renewed))
        self.holder = renewed
        return True

    def _create_or_take_over(self, mine: LockHolder) -> None:
        if self.handler.create(self.record_name, _encode(mine)):
            return
        observed = _read_record(self.handler, self.record_name)
        if observed is None:
            # Released between our create and our read: one more try, no loop.
            if not self.handler.create(self.record_name, _encode(mine)):
                raise self._locked_error(_read_record(self.handler, self.record_name))
        else:
            self._take_over(observed, mine)

    def _take_over(self, observed: _Observed, mine: LockHolder) -> None:
        """Replace a stale record with ours, or raise CheckpointLockedError."""
        if not self._is_stale_record(observed):
            raise self._locked_error(observed)
        # Two contenders may both find the record stale; only the one that creates the
        # takeover marker for it may replace it, or both would end up holding the lock.
        markers = self._claim_takeover(observed.identity, mine)
        if markers is None:
            raise self._locked_error(observed)
        try:
            current = _read_record(self.handler, self.record_name)
            if current is not None and current.identity != observed.identity:
                # Replaced (by a faster contender) or renewed since we read it.
                raise self._locked_error(current)
            logger.warning(
                "taking over the run lock on %s: %s",
                self.handler.location,
                _describe_stale(observed),
            )
            self.handler.delete(self.record_name)
            if not self.handler.create(self.record_name, _encode(mine)):
                raise self._locked_error(_read_record(self.handler, self.record_name))
        finally:
            for marker in markers:
                self.handler.delete(marker)

    def _claim_takeover(self, identity: str, mine: LockHolder) -> list[str] | None:
        """Create the takeover marker for a stale record; the marker names to delete, or None.

        A marker left by a contender that crashed mid-takeover would block the location for
        good, so a stale marker is itself claimed the same way, by a marker of its own.
        """
        # Stale markers found on the way are deleted only by the winner, after the takeover:
        # deleting one earlier would let a newcomer claim the same record a second time.
        claimed: list[str] = []
        for _ in range(8):
            name = f"{TAKEOVER_PREFIX}/{identity}"
            if self.handler.create(name, _encode(mine)):
                claimed.append(name)
                return claimed
            marker = _read_record(self.handler, name)
            if marker is None:
                continue  # deleted by its winner just now; try to create it again
            if not self._is_stale_record(marker):
                return None
            claimed.append(name)
            identity = marker.identity
        return None

    def _is_stale_record(self, observed: _Observed) -> bool:
        now = time.time()
        if observed.holder is not None:
            return _is_stale(observed.holder, observed.machine, now)
        # Unreadable: being written right now, or torn by a crash. Judge by the age the store
        # gives it, and never take over one of unknown age.
        born = observed.since
        return born is not None and born + self.ttl_s < now

    def _release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        self._heartbeat = None
        token = self.holder.token if self.holder is not None else None
        current = _read_record(self.handler, self.record_name)
        if current is None or current.identity != token:
            logger.error(
                "run lock on %s was no longer ours when released (%s); leaving the record alone",
                self.handler.location,
                "record gone" if current is None else _describe(current),
            )
            return
        self.handler.delete(self.record_name)
        logger.debug("run lock on %s released", self.handler.location)

    def _beat(self, mine: LockHolder) -> None:
        interval = self.ttl_s / 3
        while not self._stop.wait(interval):
            try:
                if not self._renew(self.holder or mine):
                    return
            except Exception:
                # A transient storage error must not kill the heartbeat: the next beat may
                # still renew the record before it expires.
                logger.warning(
                    "could not renew the run lock on %s; retrying in %.1fs",
                    self.handler.location,
                    interval,
                    exc_info=True,
                )

    def _locked_error(self, observed: _Observed | None) -> CheckpointLockedError:
        location = self.handler.location
        record = f"{location.rstrip('/')}/{self.record_name}"
        holder = observed.holder if observed is not None else None
        self.holder = holder
        expires_at: float | None
        if holder is None:
            who = "another run (its lock record is being written or cannot be read)"
            expires_at = (
                observed.since + self.ttl_s
                if observed is not None and observed.since is not None else None
            )
            expiry = (
                f"it counts as expired at {_utc(expires_at)}" if expires_at is not None
                else "its age is unknown, so it never expires by itself"
            )
        else:
            who = f"pid {holder.pid} on host {holder.host}"
            expires_at = holder.expires_at
            expiry = (
                f"a crashed holder's lock expires at {_utc(expires_at)}"
                if expires_at is not None
                else "its lock never expires (it was taken without a heartbeat)"
            )
        return CheckpointLockedError(
            location, who, since=None if holder is None else holder.since,
            expires_at=expires_at,
            remedy=f"Wait for it to finish; {expiry} and the next run then takes it over. If "
            f"you are sure no run is using the location, delete {record} to free it now.",
        )


@dataclass(frozen=True)
class _Observed:
    """A lock record as read: its holder if it parses, and what identifies it either way."""

    holder: LockHolder | None
    identity: str  # the token, or a hash of the raw bytes of an unreadable record
    since: float | None
    machine: str | None


def _new_holder(expires_at: float | None) -> LockHolder:
    return LockHolder(
        host=socket.gethostname(),
        pid=os.getpid(),
        since=time.time(),
        token=uuid.uuid4().hex,
        expires_at=expires_at,
    )


def _encode(holder: LockHolder) -> bytes:
    body: dict[str, Any] = {
        "host": holder.host,
        "pid": holder.pid,
        "since": holder.since,
        "token": holder.token,
        "expires_at": holder.expires_at,
        "machine": _machine_id(),
    }
    return json.dumps(body, sort_keys=True).encode()


def _read_record(handler: StateHandler, name: str = RECORD_NAME) -> _Observed | None:
    try:
        raw = bytes(handler.read(name))
    except FileNotFoundError:
        return None
    try:
        body = json.loads(raw)
        holder = LockHolder(
            host=_typed(body["host"], str),
            pid=_typed(body["pid"], int),
            since=float(_typed(body["since"], (int, float))),
            token=_typed(body["token"], str),
            expires_at=(
                None
                if body.get("expires_at") is None
                else float(_typed(body["expires_at"], (int, float)))
            ),
        )
        machine = body.get("machine")
        return _Observed(
            holder, holder.token, holder.since, machine if isinstance(machine, str) else None
        )
    except (ValueError, TypeError, KeyError):
        identity = "unreadable-" + hashlib.sha256(raw).hexdigest()[:32]
        return _Observed(None, identity, _stored_at(handler, name), None)


def _typed(value: Any, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"unexpected value {value!r} in lock record")
    return value


def _stored_at(handler: StateHandler, name: str) -> float | None:
    """When the store last wrote ``name``, where the handler can tell; else None."""
    fs = getattr(handler, "fs", None)
    path = getattr(handler, "path", None)
    if fs is None or path is None:
        return None
    try:
        modified = fs.modified(path(name))
    except (NotImplementedError, FileNotFoundError, OSError, AttributeError):
        return None
    if not isinstance(modified, datetime):
        return None
    if modified.tzinfo is None:
        modified = modified.replace(tzinfo=timezone.utc)
    return modified.timestamp()


def _is_stale(holder: LockHolder, machine: str | None, now: float) -> bool:
    """True if the record's holder is known to be gone: dead on this machine, or expired.

    A holder on this machine is judged by its process alone: a live one whose heartbeat was
    starved (a long call holding the GIL) is never taken over, however old its record.
    """
    if holder.host == socket.gethostname() and machine is not None and machine == _machine_id():
        if holder.pid == os.getpid():
            # This process wrote it but no lock object here holds it any more: a release that
            # failed (storage unreachable) left it behind.
            return holder.token not in _HELD_TOKENS
        return not _pid_alive(holder.pid)
    return holder.expires_at is not None and holder.expires_at < now


def _machine_id() -> str | None:
    """This boot of this machine, in this pid namespace; None where that cannot be told.

    A hostname alone is not enough to trust a pid: containers sharing a volume may share a
    hostname while their pids live in different namespaces.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot}/{pid_ns}"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a real pid: never conclude that its holder is gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    except OSError:
        return True
    return True


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe(observed: _Observed) -> str:
    holder = observed.holder
    if holder is None:
        return "an unreadable lock record"
    return f"held by pid {holder.pid} on host {holder.host} (token {holder.token})"


def _describe_stale(observed: _Observed) -> str:
    holder = observed.holder
    if holder is None:
        return (
            "its lock record is unreadable and older than the ttl, so the run that wrote it is "
            f"taken to have crashed ({observed.identity})"
        )
    if holder.expires_at is not None and holder.expires_at < time.time():
        why = (
            f"its lock expired at {_utc(holder.expires_at)} without being renewed, so that run "
            "is taken to have crashed"
        )
    else:
        why = "that process no longer exists on this machine"
    return f"pid {holder.pid} on host {holder.host} held it since {_utc(holder.since)}; {why}"
