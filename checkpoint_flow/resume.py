"""Where a resumed run starts: a pure decision from what the last run recorded and the steps now.

The state a step receives is only valid if every step before it is the same step, in the same
place, unchanged since it ran. ``start_point`` walks the steps up to the recorded resume point
and stops at the first one for which that does not hold:

- a step that is new (never ran) runs first;
- a step at another position than when it ran (the steps before the resume point were
  reordered, or one was removed) restarts there, as its input was built in another order;
- with ``check_code``, a step whose fingerprint changed, or that did not finish, restarts there.

When the resume point's step is gone but a step that never ran sits at its position after
the same steps, it is taken for the step renamed. When new steps were added after the recorded ones
while the resume step is still registered, a notebook rename that left the old step registered
is likely, and the decision carries a warning naming ``remove_step``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .errors import StepNotFoundError

Snapshot = tuple[str, Literal["before", "after"]]


@dataclass(frozen=True)
class RecordedStep:
    """What the last record says about one step."""

    fingerprint: str | None = None
    status: str | None = None
    has_before: bool = False
    has_after: bool = False


@dataclass(frozen=True)
class StartPoint:
    """Where to start and why.

    ``snapshot`` names the recorded step and which of its snapshots (``"before"`` or
    ``"after"``) holds the state the start step receives; None when nothing saved fits.
    ``reason`` (an INFO line) says why the start is not the recorded resume point, ``warning``
    points at a step that is probably stale.
    """

    index: int
    snapshot: Snapshot | None
    reason: str | None = None
    warning: str | None = None
    # Set when the start moved back before the resume point: why (a step changed, is new...).
    why: str | None = None


def start_point(
    order: Sequence[str],
    recorded: Mapping[str, RecordedStep],
    current: Sequence[tuple[str, str]],
    resume: str,
    *,
    check_code: bool,
    location: str,
) -> StartPoint:
    """Decide where a run resumes.

    Args:
        order: the step names in the order the last run recorded them.
        recorded: what the last record holds per step name.
        current: ``(name, fingerprint)`` of each registered step, in order.
        resume: the step the last run stopped at.
        check_code: restart at a changed or unfinished step before the resume point.
        location: names the checkpoint in messages.

    Raises StepNotFoundError when the resume step is gone and nothing took its place.
    """
    names = [name for name, _ in current]
    expected = list(order)
    reason = None
    if resume in names:
        target = names.index(resume)
    else:
        renamed = _renamed_position(order, recorded, names, resume)
        if renamed is None:
            raise StepNotFoundError(
                f"step {resume!r}, where the last run at {location} stopped,",
                names,
                f"is one this flow no longer has (recorded steps: {', '.join(order)})",
                "Pass checkpoint=<step> to choose where to start, or call cp.reset() to start "
                "from the beginning.",
            )
        target = renamed
        expected[target] = names[target]
        reason = (
            f"the last run stopped at step {resume!r}, which this flow no longer has; step "
            f"{names[target]!r} at the same position ({target + 1}) looks like its rename, so "
            f"the run resumes there with the state {resume!r} received. If it is not a "
            "rename, pass checkpoint=<step> or call cp.reset()"
        )
    for i in range(target + 1):
        name = names[i]
        why = None
        if i < target and name not in recorded:
            why = f"step {name!r} is new"
        elif i >= len(expected) or expected[i] != name:
            why = _moved(order, names, i)
        elif i < target and check_code:
            info = recorded[name]
            if info.fingerprint != current[i][1]:
                why = f"step {name!r} changed since it ran"
            elif info.status != "done":
                why = f"step {name!r} did not finish when it last ran"
        if why is not None:
            reason = f"{why}; restarting there instead of at step {resume!r}"
            return StartPoint(i, _snapshot(expected, recorded, names, i, order), reason, why=why)
    return StartPoint(
        target, _snapshot(expected, recorded, names, target, order, resume), reason,
        _stale_warning(order, names, resume),
    )


def _renamed_position(
    order: Sequence[str], recorded: Mapping[str, RecordedStep], names: Sequence[str],
    resume: str,
) -> int | None:
    if resume not in order:
        return None
    position = list(order).index(resume)
    if position >= len(names) or list(names[:position]) != list(order[:position]):
        return None
    candidate = names[position]
    if recorded.get(candidate, RecordedStep()).status is not None:
        return None  # it ran: a step that moved, not a new name
    if candidate not in order:
        return position
    # Recorded further down (a renamed notebook function is appended to the flow it joins):
    # a rename only if the steps after it are the recorded ones without it. Directly after the
    # resume step it is the next step, and the resume step was removed, not renamed.
    rest = [n for n in order[position + 1:] if n != candidate]
    later = list(order).index(candidate) > position + 1
    return position if later and list(names[position + 1:]) == rest else None


def _moved(order: Sequence[str], names: Sequence[str], i: int) -> str:
    name = names[i]
    if i < len(order) and order[i] not in names:
        return (
            f"step {order[i]!r}, which ran at position {i + 1} before, is no longer registered, "
            f"so step {name!r} would receive a state built by other steps"
        )
    if name in order:
        return (
            f"the steps were reordered: step {name!r} ran at position "
            f"{list(order).index(name) + 1} and is now at {i + 1}, so the state saved for it "
            "was built in another order"
        )
    return f"step {name!r} is at a position where another step ran"


def _snapshot(
    expected: Sequence[str], recorded: Mapping[str, RecordedStep], names: Sequence[str],
    index: int, order: Sequence[str], resume: str | None = None,
) -> Snapshot | None:
    # Every step before ``index`` is where it ran and unchanged, so the state after the step
    # before it, or the input the step at ``index`` had when it ran there, is the right state.
    own = resume if resume is not None and resume not in names else names[index]
    if index < len(expected) and expected[index] == names[index]:
        info = recorded.get(own)
        if info is not None and info.has_before:
            return (own, "before")
    if index > 0:
        info = recorded.get(names[index - 1])
        return (names[index - 1], "after") if info is not None and info.has_after else None
    first = recorded.get(order[0]) if order else None
    return (order[0], "before") if first is not None and first.has_before else None


def _stale_warning(order: Sequence[str], names: Sequence[str], resume: str) -> str | None:
    added = [n for n in names[len(order):] if n not in order]
    if not added or list(names[: len(order)]) != list(order):
        return None
    return (
        f"the run resumes at step {resume!r}, and step(s) {', '.join(map(repr, added))} were "
        "added after the steps of the last run. If one of them is a renamed step (renaming a "
        "function in a notebook and running its cell again leaves the old step registered), "
        "the old one runs now: register the steps again in their order (run the notebook "
        "again from the cell creating the CheckpointFlow), or remove the old step with "
        f"cp.remove_step({resume!r})"
    )
