"""Where a run starts: the step, the state it receives and the snapshot that state comes from.

``resume.start_point`` decides from the record as plain data; this module feeds it, says in the
log (and in a warning for a restart) what the decision means, and loads the chosen snapshot.
"""

from __future__ import annotations

import logging
import pickle
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from . import resume
from .errors import CheckpointFlowWarning
from .execution import CORRUPT_REMEDY, value_where
from .flow_record import FlowRecord
from .steps import Step
from .storage.codec import encode
from .storage.store import SaveResult, Store

logger = logging.getLogger("checkpoint_flow")

CheckpointRef = int | str


def plan_start(
    store: Store,
    steps: Sequence[Step],
    record: FlowRecord | None,
    initial_state: dict[str, Any],
    checkpoint: CheckpointRef | None,
    forced: int | None,
    *,
    check_code: bool,
) -> tuple[int, dict[str, Any], SaveResult | None]:
    """Where this run starts, with which state, and the snapshot that state came from.

    ``forced`` is the index of the step ``checkpoint`` names, when one is given. Warns
    (CheckpointFlowWarning, pointing at the caller of ``run``) when a restart moves the start
    back.
    """
    names = [s.name for s in steps]
    location = store.location
    if forced is not None:
        name = names[forced]
        received = {n: e.before for n, e in record.steps.items()} if record is not None else {}
        before = received.get(name)
        if before is None:
            ran = [n for n in names if received.get(n) is not None]
            raise ValueError(
                f"checkpoint={checkpoint!r} names step {name!r}, which has never run at "
                f"{location}; steps with a saved snapshot: {', '.join(ran) or 'none'}"
            )
        logger.info("starting at step %r as requested (checkpoint=%r)", name, checkpoint)
        return forced, *load_snapshot(store, before, name)
    if record is None or record.resume is None:
        return 0, initial_state, None
    start = _start_point(store, steps, record, check_code=check_code)
    if start.warning:
        logger.warning(start.warning)
    if start.reason:
        logger.info(start.reason)
    if start.why is not None:
        # A restart reruns work the user may think is done: say so even when logging is
        # not configured. Level 3 points at the caller of run().
        advice = (
            " Pass on_code_change='ignore' to CheckpointFlow to resume regardless."
            if "changed since it ran" in start.why else ""
        )
        warnings.warn(
            f"{start.why}, so this run restarts at {names[start.index]!r} instead of "
            f"resuming at {record.resume!r} ({location}).{advice}",
            CheckpointFlowWarning,
            stacklevel=3,
        )
    index = start.index
    _log_initial_state_difference(store, record, initial_state)
    name = names[index]
    snapshot = None
    if start.snapshot is not None:
        step, which = start.snapshot
        entry = record.steps[step]
        snapshot = entry.before if which == "before" else entry.after
    if snapshot is None:
        logger.info("step %r has no saved input; starting from the beginning", name)
        return 0, initial_state, None
    logger.info(
        "resuming at step %r (%d/%d) with the state saved at %s; initial_state is ignored",
        name, index + 1, len(names), location,
    )
    return index, *load_snapshot(store, snapshot, name)


def load_snapshot(store: Store, ref: Any, step: str) -> tuple[dict[str, Any], SaveResult]:
    """The state saved in snapshot ``ref`` (the one before ``step``), with the snapshot."""
    snapshot = store.snapshot(ref)
    state = store.load_state(snapshot, where=value_where(step), remedy=CORRUPT_REMEDY)
    return state, snapshot


def _start_point(
    store: Store, steps: Sequence[Step], record: FlowRecord, *, check_code: bool
) -> resume.StartPoint:
    """The record as plain data for ``resume.start_point``, which decides."""
    recorded = {
        name: resume.RecordedStep(
            fingerprint=entry.fingerprint, status=entry.status,
            has_before=entry.before is not None, has_after=entry.after is not None,
        )
        for name, entry in record.steps.items()
    }
    return resume.start_point(
        record.order, recorded, [(s.name, s.fingerprint) for s in steps],
        record.resume or "", check_code=check_code, location=store.location,
    )


def _log_initial_state_difference(
    store: Store, record: FlowRecord, initial_state: Mapping[str, Any]
) -> None:
    recorded_ref = record.run.initial
    if recorded_ref is None:
        return
    recorded = {k: e["digest"] for k, e in store.tree_items(recorded_ref)}
    try:
        given = {k: encode(v).digest for k, v in initial_state.items()}
    except (TypeError, AttributeError, pickle.PicklingError):
        # an unpicklable initial value cannot match a recorded one
        given = None
    if given != recorded:
        logger.info(
            "initial_state differs from the one the interrupted run started with; "
            "resuming with the saved state"
        )
