"""What a flow's commit record holds (FORMAT.md, *Records*), typed, and the one place its JSON
is read and written: the run that wrote it (``RunInfo``), each step's entry in the step table
(``StepEntry``) and the run history (``runs.RunSummary``), each with ``from_json`` and a
``to_json`` that gives back the JSON records hold, key for key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from .errors import CheckpointCorruptError
from .runs import SUMMARY_FIELDS, RunSummary
from .storage.store import Store
from .storage.tree import Ref

StepOutcome = Literal["done", "failed"]


@dataclass(frozen=True)
class StepEntry:
    """What the step table holds of one step: what its last execution left.

    ``before`` is the snapshot the step receives (what it last ran on, or what the step before
    it has left since), ``after`` what its last finished execution left and ``input`` what that
    execution ran on. A field the entry lacks is None: a step that never ran has ``before``
    alone, one that never finished has no ``input`` or ``after``, and entries written before
    ``run``, ``attempts`` and ``input`` existed lack them. ``error`` belongs to an execution:
    every entry with a ``status`` has one, None when the execution finished.
    """

    fingerprint: str | None = None
    status: StepOutcome | None = None
    duration_s: float | None = None
    bytes_written: int | None = None
    ran_at: float | None = None
    error: str | None = None
    run: str | None = None
    attempts: int | None = None
    before: Ref | None = None
    after: Ref | None = None
    input: Ref | None = None
    # Keys this version does not know (written by a newer one), kept so a rewrite keeps them.
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, entry: object, step: str | None = None) -> StepEntry:
        """An entry of the step table (of ``step``) as stored; keys it does not know are left
        out. Raises CheckpointCorruptError when it is not a JSON object."""
        if not isinstance(entry, Mapping):
            what = "a step table entry" if step is None else f"the step table entry of {step!r}"
            raise CheckpointCorruptError(what, f"is {entry!r}, not a JSON object")
        extra = {k: v for k, v in entry.items() if k not in _STEP_FIELDS}
        return cls(**{name: entry.get(name) for name in _STEP_FIELDS}, extra=extra)

    def to_json(self) -> dict[str, Any]:
        """The entry as the step table stores it."""
        own = {
            name: value
            for name in _STEP_FIELDS
            if (value := getattr(self, name)) is not None
            or (name == "error" and self.status is not None)
        }
        return dict(sorted({**self.extra, **own}.items()))


_STEP_FIELDS = tuple(sorted(f.name for f in fields(StepEntry) if f.name != "extra"))
_NO_ENTRY = StepEntry()


@dataclass(frozen=True)
class RunInfo(RunSummary):
    """The run that wrote a record: its summary, and ``initial``, the snapshot of the
    ``initial_state`` it (or the interrupted run it resumed) started from; None when unknown."""

    initial: Ref | None = None

    def summary(self) -> RunSummary:
        """The run as run history keeps it: without ``initial``."""
        return RunSummary(
            **{name: getattr(self, name) for name in SUMMARY_FIELDS}, extra=self.extra
        )


def history_from_json(history: object) -> list[RunSummary]:
    """A record's run history as stored; raises CheckpointCorruptError if it is not a list."""
    if not isinstance(history, list):
        raise CheckpointCorruptError("the record's run history", f"is {history!r}, not a list")
    return [RunSummary.from_json(run) for run in history]


@dataclass(frozen=True)
class FlowRecord:
    """A flow commit record with its run, step table, step order and run history loaded."""

    body: Mapping[str, Any]
    run: RunInfo
    steps: Mapping[str, StepEntry]
    order: list[str]
    history: list[RunSummary]

    @classmethod
    def read(cls, store: Store, body: Mapping[str, Any] | None) -> FlowRecord | None:
        """Type a record body (None stays None); raises CheckpointCorruptError if damaged."""
        if body is None:
            return None
        return cls(
            body=body,
            run=RunInfo.from_json(body.get("run") or {}),
            steps={
                name: StepEntry.from_json(entry, name)
                for name, entry in store.tree_items(body.get("steps"))
            },
            order=list(store.get_json(body.get("order"), [])),
            history=history_from_json(store.get_json(body.get("history"), [])),
        )

    @property
    def seq(self) -> int:
        return int(self.body["seq"])

    @property
    def resume(self) -> str | None:
        return self.body.get("resume")

    @property
    def state(self) -> Any:
        return self.body.get("state")

    def step(self, name: str) -> StepEntry:
        """The entry of step ``name``; an empty one (every field None) if it has none."""
        return self.steps.get(name, _NO_ENTRY)

    def runs(self) -> list[RunSummary]:
        """Every run kept in the history, oldest first, ending with the one that wrote this."""
        return [*self.history, self.run.summary()]

