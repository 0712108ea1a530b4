"""Lock records: who holds a run lock, as written next to the checkpoints, and when that
holder counts as gone (dead on this machine, or expired).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .protocol import StateHandler

# The logger of every run lock module, so that one name configures them all.
LOGGER_NAME = "checkpoint_flow.storage.locks"
RECORD_NAME = "lock.json"
FILE_LOCK_NAME = "lock"
LOCKS_DIR = "locks"
_LOCK_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")
# Tokens of the locks this process holds right now.
HELD_TOKENS: set[str] = set()


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


def lock_names(name: str | None) -> tuple[str, str]:
    """The (OS lock file, holder record) names of the lock called ``name``."""
    if check_lock_name(name) is None:
        return FILE_LOCK_NAME, RECORD_NAME
    return f"{LOCKS_DIR}/{name}.lock", f"{LOCKS_DIR}/{name}.json"


def check_lock_name(name: str | None) -> str | None:
    if name is not None and (not isinstance(name, str) or not _LOCK_NAME.fullmatch(name)):
        raise ValueError(
            f"invalid lock name {name!r}: use 1-100 letters, digits, '_', '-' and '.', not "
            "starting with '.'"
        )
    return name


@dataclass(frozen=True)
class Observed:
    """A lock record as read: its holder if it parses, and what identifies it either way."""

    holder: LockHolder | None
    identity: str  # the token, or a hash of the raw bytes of an unreadable record
    since: float | None
    machine: str | None


def new_holder(expires_at: float | None) -> LockHolder:
    return LockHolder(
        host=socket.gethostname(),
        pid=os.getpid(),
        since=time.time(),
        token=uuid.uuid4().hex,
        expires_at=expires_at,
    )


def encode_holder(holder: LockHolder) -> bytes:
    body: dict[str, Any] = {
        "host": holder.host,
        "pid": holder.pid,
        "since": holder.since,
        "token": holder.token,
        "expires_at": holder.expires_at,
        "machine": machine_id(),
    }
    return json.dumps(body, sort_keys=True).encode()


def read_record(handler: StateHandler, name: str = RECORD_NAME) -> Observed | None:
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
        return Observed(
            holder, holder.token, holder.since, machine if isinstance(machine, str) else None
        )
    except (ValueError, TypeError, KeyError):
        identity = "unreadable-" + hashlib.sha256(raw).hexdigest()[:32]
        return Observed(None, identity, _stored_at(handler, name), None)


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


def is_stale(holder: LockHolder, machine: str | None, now: float) -> bool:
    """True if the record's holder is known to be gone: dead on this machine, or expired.

    A holder on this machine is judged by its process alone: a live one whose heartbeat was
    starved (a long call holding the GIL) is never taken over, however old its record.
    """
    if holder.host == socket.gethostname() and machine is not None and machine == machine_id():
        if holder.pid == os.getpid():
            # This process wrote it but no lock object here holds it any more: a release that
            # failed (storage unreachable) left it behind.
            return holder.token not in HELD_TOKENS
        return not _pid_alive(holder.pid)
    return holder.expires_at is not None and holder.expires_at < now


def machine_id() -> str | None:
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
