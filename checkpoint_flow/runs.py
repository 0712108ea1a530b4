"""Run history: what each run at a location did, as ``cp.runs()`` and ``checkpoint-flow history``
report it.

A run's summary rides in every record it commits (the record body's ``run``), so the newest
record tells how far the newest run got, and each run keeps the summaries of the runs before it
(at most ``HISTORY_LIMIT``) in one JSON node written once per run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

from .errors import CheckpointCorruptError

HISTORY_LIMIT = 50

Outcome = Literal["running", "failed", "succeeded", "stopped"]

_Summary = TypeVar("_Summary", bound="RunSummary")


@dataclass(frozen=True)
class RunSummary:
    """One run at a location.

    ``outcome`` is ``"running"`` (still running, or the process died), ``"failed"``,
    ``"succeeded"``, or ``"stopped"`` (it ran up to ``until=``). ``first_step`` is where it
    started, ``last_step`` the last step it ran or reused, ``failed_step`` the one that raised.
    ``executed`` counts the steps it ran (a failed one included), ``reused`` those whose
    recorded output it took (``reuse=True``), ``skipped`` those before its start, done in an
    earlier run. ``bytes_written`` counts value blobs and records. ``resumed`` is True when it
    started from a saved state rather than its ``initial_state``.
    """

    id: str
    started_at: float | None = None
    ended_at: float | None = None
    outcome: str | None = None
    first_step: str | None = None
    last_step: str | None = None
    failed_step: str | None = None
    executed: int = 0
    reused: int = 0
    skipped: int = 0
    bytes_written: int = 0
    resumed: bool = False
    host: str | None = None
    pid: int | None = None
    # Keys this version does not know (written by a newer one), kept so a rewrite keeps them.
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls: type[_Summary], run: Mapping[str, Any]) -> _Summary:
        """A summary from a record's ``run`` (fields it lacks take their defaults)."""
        known = _known(cls)
        values = {k: v for k, v in run.items() if k in known and v is not None}
        extra = {k: v for k, v in run.items() if k not in known}
        return cls(**{"id": "", **values}, extra=extra)

    @classmethod
    def from_json(cls: type[_Summary], run: object) -> _Summary:
        """``from_dict`` of a stored run; raises CheckpointCorruptError when it is not a JSON
        object."""
        if not isinstance(run, Mapping):
            raise CheckpointCorruptError("a recorded run", f"is {run!r}, not a JSON object")
        return cls.from_dict(run)

    def to_json(self) -> dict[str, Any]:
        """The run as records store it: every field, None included, in the (sorted) order of
        canonical JSON."""
        own = {name: getattr(self, name) for name in _known(type(self))}
        return dict(sorted({**self.extra, **own}.items()))


def _known(cls: type[RunSummary]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.name != "extra")


SUMMARY_FIELDS = _known(RunSummary)
