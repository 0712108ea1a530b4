"""Memo entries: each result is one self-contained entry ``memo/<hash of key>.entry``.

An entry in the store's ``memo`` namespace holds a sealed header (the readable key, the function
name, its code fingerprint, when it was created) and the result's blob. Removing an entry frees
its space at once and collection never touches entries, so a `gc` beside memoized calls cannot
break them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from ..errors import CheckpointCorruptError
from ..storage.namespaces import Namespace
from ..storage.store import Store

logger = logging.getLogger(__name__)

MEMO = "memo"


@dataclass(frozen=True)
class MemoEntry:
    """One stored call result, as listed by ``entries``."""

    key: str
    name: str
    function: str
    size: int
    created_at: float
    call_site: str | None = None  # "file:line" of the decorated function or apply_checkpoint


def _entries(store: Store) -> Namespace:
    return Namespace(store, MEMO)


def entry_name(key: str) -> str:
    """The entry name of a key: keys may hold any character, storage names may not."""
    return f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.entry"


def lookup(store: Store, key: str) -> tuple[bool, Any]:
    """``(True, value)`` if ``key`` is stored, else ``(False, None)``.

    An entry that exists but cannot be read raises CheckpointCorruptError: a damaged entry is
    never taken for a missing one (which would silently rerun the call).
    """
    name = entry_name(key)
    where = f"memoized result of {key!r} ({MEMO}/{name} at {store.location})"
    remedy = f"remove it with `checkpoint-flow rm {store.location} --prefix {key!r}`"
    try:
        opened = _entries(store).open(name)
    except CheckpointCorruptError as exc:
        raise exc.with_remedy(f"To compute it again, {remedy}.") from exc
    if opened is None:
        return False, None
    if opened.meta.get("key") != key:
        raise CheckpointCorruptError(
            where, f"holds key {opened.meta.get('key')!r} instead", f"To fix it, {remedy}."
        )
    try:
        return True, opened.value()
    except Exception as exc:
        raise CheckpointCorruptError(
            where,
            f"could not be unpickled ({type(exc).__name__}: {exc}); a class or module it needs "
            "may have changed or be missing",
            f"To compute it again, {remedy}.",
        ) from exc


def save(
    store: Store, key: str, value: Any, *, function: str, code: str,
    call_site: str | None = None,
) -> int:
    """Store ``value`` under ``key`` as one self-contained entry; return the bytes written.

    ``call_site`` (``"file:line"``) says where the memoized function was declared.
    """
    written = _entries(store).put(
        entry_name(key),
        value,
        {"kind": "memo", "key": key, "function": function, "fingerprint": code,
         "created_at": time.time(), "call_site": call_site},
        what=f"the result of {function} (memo key {key!r})",
    )
    logger.info("memoized %s under %r (%d bytes written)", function, key, written)
    return written


def entries(store: Store) -> list[MemoEntry]:
    """Every memo entry at the store's location, sorted by key."""
    found = []
    namespace = _entries(store)
    for name in namespace.names():
        opened = namespace.open(name)
        if opened is None:  # removed since it was listed
            continue
        meta = opened.meta
        found.append(
            MemoEntry(
                key=str(meta.get("key")),
                name=f"{MEMO}/{name}",
                function=str(meta.get("function")),
                size=opened.size,
                created_at=float(meta.get("created_at", 0.0)),
                call_site=meta.get("call_site") if isinstance(meta.get("call_site"), str) else None,
            )
        )
    return sorted(found, key=lambda e: e.key)


def remove(store: Store, prefix: str) -> list[MemoEntry]:
    """Delete the entries whose key starts with ``prefix``; return them (their space is freed
    at once)."""
    removed = [e for e in entries(store) if e.key.startswith(prefix)]
    for e in removed:
        store.handler.delete(e.name)
    logger.info("removed %d memo entries starting with %r at %s", len(removed), prefix,
                store.location)
    return removed


