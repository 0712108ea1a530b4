"""Which commit records a flow keeps: the retention rules ``CheckpointFlow(retention=...)`` takes.

A rule receives a :class:`RecordSummary` of every record at the location, oldest first (read
from the file names, so choosing costs no reads), and returns the seqs of the records to keep.
A rule must keep the newest record (collection refuses one that does not); collection then
keeps every record a kept one reaches. Rules compose: ``KeepLatestRun() | KeepLastRecords(5)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import checks
from .policy import FromFunction, KeepBoth, KeepEither, Policy, kept_set, refuse_other_family
from .storage.store import RecordName

__all__ = [
    "FlowRetention",
    "KeepLastRecords",
    "KeepLatestRun",
    "RecordSummary",
    "as_flow_retention",
]


@dataclass(frozen=True)
class RecordSummary:
    """One commit record as a retention rule sees it: its number, file name and run."""

    seq: int
    name: str
    run_id: str

    # The 0.1 form, a dict (``r["seq"]``, ``r.get("run")["id"]``), kept so rules written
    # against it still run.

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "name": self.name, "run": {"id": self.run_id}}

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.as_dict()

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_dict().get(key, default)

    def keys(self) -> Iterable[str]:
        return self.as_dict().keys()


Records = Sequence[RecordSummary]


class FlowRetention(Policy[Records, set[int]]):
    """Base class of flow retention rules: ``__call__(records)`` returns the seqs to keep;
    ``|`` keeps what either rule keeps, ``&`` what both keep."""

    @classmethod
    def coerce(cls, value: Any) -> FlowRetention:
        return as_flow_retention(value)

    @classmethod
    def either(cls, *parts: Policy[Records, set[int]]) -> FlowRetention:
        return KeepAnyRecords(*parts)

    @classmethod
    def both(cls, *parts: Policy[Records, set[int]]) -> FlowRetention:
        return KeepCommonRecords(*parts)


class KeepAnyRecords(KeepEither[Records, int], FlowRetention):
    """Keeps every record that any of its rules keeps."""


class KeepCommonRecords(KeepBoth[Records, int], FlowRetention):
    """Keeps the records that every one of its rules keeps."""


class FunctionRetention(FromFunction[Records, set[int]], FlowRetention):
    """A plain function ``(records) -> seqs to keep`` used as a rule."""

    def check(self, answer: Any) -> set[int]:
        return kept_set(self.fn, answer, int)


RetentionArg = FlowRetention | Callable[[Records], Iterable[int]]


def as_flow_retention(value: RetentionArg) -> FlowRetention:
    """A rule from a rule or a plain callable ``(records) -> seqs``. Raises TypeError."""
    if isinstance(value, FlowRetention):
        return value
    refuse_other_family(value, FlowRetention, "retention")
    if not callable(value):
        raise TypeError(
            f"retention must be callable as rule(records) -> seqs to keep (such as "
            f"KeepLatestRun() or KeepLastRecords(5)), got {value!r}"
        )
    return FunctionRetention(value)


@dataclass(frozen=True, repr=False)
class KeepLatestRun(FlowRetention):
    """Keep the newest record and the last record of the run before it, so
    on_corrupt='previous' always has an earlier run's snapshot to fall back to.

    The newest record names every step's snapshots, so ``checkpoint=``, ``state_before`` and
    ``rewind`` keep working for every step; the records holding those snapshots stay.
    """

    def __call__(self, records: Records) -> set[int]:
        if not records:
            return set()
        latest_run = records[-1].run_id
        keep = {records[-1].seq}
        earlier = [r for r in records if r.run_id != latest_run]
        if earlier:
            keep.add(earlier[-1].seq)
        return keep

    def __repr__(self) -> str:
        return "KeepLatestRun()"


@dataclass(frozen=True, repr=False)
class KeepLastRecords(FlowRetention):
    """Keep the newest ``n`` records, whatever run wrote them."""

    n: int

    def __post_init__(self) -> None:
        checks.count("KeepLastRecords n", self.n, minimum=1)

    def __call__(self, records: Records) -> set[int]:
        return {r.seq for r in records[-self.n :]}

    def __repr__(self) -> str:
        return f"KeepLastRecords({self.n})"


def over_record_names(rule: FlowRetention) -> Callable[[Sequence[RecordName]], set[int]]:
    """The rule as the store applies it: over the records' parsed file names."""
    return lambda names: rule([RecordSummary(n.seq, n.name, n.tag) for n in names])
