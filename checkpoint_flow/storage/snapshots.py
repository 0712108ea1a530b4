"""State snapshots: saving a state as a change of the last snapshot, writing only what changed."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import tree
from .layout import Entry, Manifest
from .nodes import Nodes
from .values import ValueBlobs


@dataclass(frozen=True)
class SaveResult:
    """A saved state: its tree, its entries by key and what saving it wrote."""

    ref: Any
    entries: Manifest
    bytes_written: int
    next_pos: int = -1  # the position a new key gets; -1: not known yet


def save_state(
    values: ValueBlobs,
    nodes: Nodes,
    state: Mapping[str, Any],
    base: SaveResult | None,
    *,
    what: Callable[[str], str],
    keys: Iterable[str] | None,
    remedy: str,
    fresh: bool,
    appended: Iterable[str],
) -> SaveResult:
    """Save ``state`` as a change of ``base``, its values through ``values`` and its tree's nodes
    through ``nodes``; the other arguments are those of `Store.save_state`."""
    old = base.entries if base is not None else {}
    # Only the keys looked at change; with ``keys`` the base's entries are updated in place
    # (the caller moves on from the base), so a step costs what it changed, not the state.
    entries = dict(old) if keys is None else old
    changes: dict[str, Entry | None] = {}
    written = 0
    look_at = list(state) if keys is None else list(keys)
    next_pos = base.next_pos if base is not None and base.next_pos >= 0 else _next_pos(old)
    new_pos: dict[str, int] = {}
    for key in appended:
        new_pos[key] = next_pos
        next_pos += 1
    for key in look_at:
        if key not in state:
            if key in entries:
                del entries[key]
                changes[key] = None
            continue
        if not isinstance(key, str):
            raise TypeError(f"{what(key)}: state keys must be str, got {type(key).__name__}")
        value = state[key]
        encoded = values.encode(value, what(key), remedy)
        before = entries.get(key)
        pos = new_pos.get(key)
        if before is not None and before["digest"] == encoded.digest:
            if pos is None or pos == before["pos"]:
                continue
            entry, size = dict(before, pos=pos), 0
        else:
            entry, size = values.entry_of(encoded, value, what=what(key))
            if pos is not None:
                entry["pos"] = pos
            elif before is not None:
                entry["pos"] = before["pos"]
            else:
                entry["pos"] = next_pos
                next_pos += 1
        written += size
        entries[key] = entry
        changes[key] = entry
    if keys is None:
        for key in [k for k in old if k not in state]:
            del entries[key]
            changes[key] = None
    changes.update(_reorder(entries, list(state)) if keys is None else {})
    for key, changed in changes.items():
        if changed is not None:
            entries[key] = changed
    if fresh:
        ref = tree.build(nodes, entries)
    else:
        ref = tree.update(nodes, base.ref if base is not None else None, changes, tree.LEAF_MAX)
    if ref is None:
        # An empty state is still a snapshot: a step that received one has a `before`.
        ref = nodes.add({"e": {}})
    return SaveResult(ref, entries, written, next_pos)


def _next_pos(entries: Mapping[str, Entry]) -> int:
    return max((e.get("pos", 0) for e in entries.values()), default=-1) + 1


def _reorder(entries: Manifest, order: list[str]) -> dict[str, Entry]:
    """Entries whose position changes so that positions follow ``order`` (usually none)."""
    current = sorted((k for k in order if k in entries), key=lambda k: entries[k].get("pos", 0))
    if current == [k for k in order if k in entries]:
        return {}
    return {
        key: dict(entries[key], pos=pos)
        for pos, key in enumerate(k for k in order if k in entries)
    }
