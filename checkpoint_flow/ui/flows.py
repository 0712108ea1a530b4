"""What the dashboard shows of a flow, and the flow actions it offers.

Everything is read through ``CheckpointFlow``'s public API and the store's manifests, which
hold each saved value's key, type and size without unpickling it. A value's repr needs
unpickling: it is shown only when the location is signed and verified (a key is configured) or
when the dashboard was started with ``--unpickle``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .. import memo
from ..errors import StepNotFoundError
from ..flow import CheckpointFlow
from ..flow_record import FlowRecord
from ..httpguard import HttpError
from .locations import Site

# Values larger than this are not unpickled for their repr, even when unpickling is allowed.
REPR_MAX_BYTES = 1 << 20
REPR_CHARS = 300
WHEN = ("before", "after")


def view(site: Site) -> dict[str, Any] | None:
    """Steps, resume point, run history and memoized calls; None if the location holds none."""
    with site.lock:
        flow = site.flow
        record = flow.record()
        status = flow.status()
        entries = _memo_entries(site)
    if record is None and not entries:
        return None
    steps = [
        {**dataclasses.asdict(s),
         "has_after": record is not None and record.step(s.name).after is not None}
        for s in status.steps
    ]
    runs = record.runs() if record is not None else []
    return {
        "resume_at": status.resume_at,
        "last_run": dict(status.last_run or {}) or None,
        "running": bool(runs) and runs[-1].outcome == "running",
        "steps": steps,
        "runs": [r.to_json() for r in runs],
        "memo": [dataclasses.asdict(e) for e in entries],
    }


def state(site: Site, step: str, when: str, *, unpickle: bool) -> dict[str, Any]:
    """The saved state before or after ``step``: each key's type, size and (when allowed and
    small enough) a truncated repr. Raises HttpError(400/404) naming the valid choices."""
    if when not in WHEN:
        raise HttpError(400, f"when={when!r} is not valid; choose 'before' or 'after'")
    with site.lock:
        record = _record_with(site, step)
        entry = record.step(step)
        ref = entry.before if when == "before" else entry.after
        if ref is None:
            raise HttpError(404, f"step {step!r} has no saved state {when} it: it has not "
                            f"{'run' if when == 'before' else 'finished'} yet")
        manifest = site.flow.store.manifest(ref)
        allowed = unpickle or site.flow.store.signer.enabled
        keys = [_row(site, step, when, key, entry, allowed) for key, entry in manifest.items()]
    note = None if allowed else (
        "values are not unpickled: the location is not signed, and unpickling runs code from "
        "it; start the dashboard with --key (signed locations) or --unpickle to see them"
    )
    return {"step": step, "when": when, "keys": keys, "repr_note": note}


def _record_with(site: Site, step: str, consequence: str = "") -> FlowRecord:
    """The newest record, which must have run ``step``; raises HttpError(404) otherwise."""
    record = site.flow.record()
    if record is None:
        raise HttpError(404, f"no flow run recorded at {site.location}{consequence}")
    if step not in record.order:
        raise HttpError(
            404, f"no step {step!r} at {site.location}; steps: {', '.join(record.order)}"
        )
    return record


def rewind(site: Site, step: object) -> dict[str, Any]:
    if not isinstance(step, str) or not step:
        raise HttpError(400, f'"step" must be a step name, got {step!r}')
    with site.lock:
        record = _record_with(site, step, "; nothing to rewind")
        try:
            site.flow.rewind(step)
        except (StepNotFoundError, ValueError) as exc:
            raise HttpError(409, str(exc)) from None
    return {"resume_at": step, "position": record.order.index(step), "steps": len(record.order)}


def reset(site: Site) -> dict[str, Any]:
    with site.lock:
        record = site.flow.record()
        if record is None:
            raise HttpError(404, f"no flow run recorded at {site.location}; nothing to reset")
        site.flow.reset()
    return {"resume_at": None, "was_resume_at": record.resume}


def gc(site: Site) -> dict[str, Any]:
    with site.lock:
        records, blobs = site.flow.gc()
    return {"records_deleted": records, "blobs_deleted": blobs}


def verify(site: Site) -> list[str]:
    """The problems ``checkpoint-flow verify`` would report (a fresh flow, so nothing cached
    is trusted)."""
    return CheckpointFlow(site.flow.handler, key=site.key).verify()


def _memo_entries(site: Site) -> list[memo.MemoEntry]:
    names = tuple(site.flow.store.handler.list(memo.MEMO))
    cached = site.cache.get("memo")
    if cached is not None and cached[0] == names:
        return list(cached[1])
    entries = memo.entries(site.flow.store)
    site.cache["memo"] = (names, entries)
    return entries


def _row(
    site: Site, step: str, when: str, key: str, entry: Mapping[str, Any], allowed: bool
) -> dict[str, Any]:
    size = entry.get("size")
    row: dict[str, Any] = {"key": key, "type": entry.get("type"), "size": size, "repr": None}
    if not allowed:
        return row
    if isinstance(size, int) and size > REPR_MAX_BYTES:
        row["repr_skipped"] = f"not loaded: {size} bytes is more than {REPR_MAX_BYTES}"
        return row
    where = f"value {key!r} of the state {when} step {step!r} at {site.location}"
    try:
        text = repr(site.flow.store.get_value(entry, where=where))
    except Exception as exc:  # noqa: BLE001 - shown in the table, as the CLI's show would fail
        row["repr_skipped"] = f"cannot be loaded: {exc}"
        return row
    row["repr"] = text if len(text) <= REPR_CHARS else f"{text[:REPR_CHARS]}..."
    return row
