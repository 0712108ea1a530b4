"""`RecordRunLock`: the run lock where no OS lock exists (object stores, ``file://``,
``memory://``). The lock is a record, created exclusively and kept alive by a heartbeat; a crashed
holder's record expires after ``ttl_s`` and the next run takes it over.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone

from ..errors import CheckpointLockedError
from .lock_base import RunLock
from .lock_records import (
    HELD_TOKENS,
    LOGGER_NAME,
    LockHolder,
    Observed,
    encode_holder,
    is_stale,
    new_holder,
    read_record,
)
from .protocol import StateHandler

logger = logging.getLogger(LOGGER_NAME)

TAKEOVER_PREFIX = "lock-takeover"


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
        mine = new_holder(expires_at=now + self.ttl_s)
        # Registered before the record exists, so another thread of this process never takes
        # a record it is about to see for one this process abandoned.
        HELD_TOKENS.add(mine.token)
        try:
            self._create_or_take_over(mine)
        except BaseException:
            HELD_TOKENS.discard(mine.token)
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
        current = read_record(self.handler, self.record_name)
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
        self.handler.write(self.record_name, encode_holder(renewed))
        self.holder = renewed
        return True

    def _create_or_take_over(self, mine: LockHolder) -> None:
        if self.handler.create(self.record_name, encode_holder(mine)):
            return
        observed = read_record(self.handler, self.record_name)
        if observed is None:
            # Released between our create and our read: one more try, no loop.
            if not self.handler.create(self.record_name, encode_holder(mine)):
                raise self._locked_error(read_record(self.handler, self.record_name))
        else:
            self._take_over(observed, mine)

    def _take_over(self, observed: Observed, mine: LockHolder) -> None:
        """Replace a stale record with ours, or raise CheckpointLockedError."""
        if not self._is_stale_record(observed):
            raise self._locked_error(observed)
        # Two contenders may both find the record stale; only the one that creates the
        # takeover marker for it may replace it, or both would end up holding the lock.
        markers = self._claim_takeover(observed.identity, mine)
        if markers is None:
            raise self._locked_error(observed)
        try:
            current = read_record(self.handler, self.record_name)
            if current is not None and current.identity != observed.identity:
                # Replaced (by a faster contender) or renewed since we read it.
                raise self._locked_error(current)
            logger.warning(
                "taking over the run lock on %s: %s",
                self.handler.location,
                _describe_stale(observed),
            )
            self.handler.delete(self.record_name)
            if not self.handler.create(self.record_name, encode_holder(mine)):
                raise self._locked_error(read_record(self.handler, self.record_name))
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
            if self.handler.create(name, encode_holder(mine)):
                claimed.append(name)
                return claimed
            marker = read_record(self.handler, name)
            if marker is None:
                continue  # deleted by its winner just now; try to create it again
            if not self._is_stale_record(marker):
                return None
            claimed.append(name)
            identity = marker.identity
        return None

    def _is_stale_record(self, observed: Observed) -> bool:
        now = time.time()
        if observed.holder is not None:
            return is_stale(observed.holder, observed.machine, now)
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
        current = read_record(self.handler, self.record_name)
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

    def _locked_error(self, observed: Observed | None) -> CheckpointLockedError:
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


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe(observed: Observed) -> str:
    holder = observed.holder
    if holder is None:
        return "an unreadable lock record"
    return f"held by pid {holder.pid} on host {holder.host} (token {holder.token})"


def _describe_stale(observed: Observed) -> str:
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
