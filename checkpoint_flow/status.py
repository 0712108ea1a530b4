"""What ``CheckpointFlow.status()`` reports, as text for a terminal and as a table in Jupyter.

Built from the newest record alone: every step's last outcome, what the last run did with it
(ran, resumed at it, reused its recorded output, skipped it as done earlier) and where the next
run starts.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .flow_record import FlowRecord, StepEntry
from .reuse import when

InLastRun = Literal["ran", "resumed", "reused", "skipped"]

_STATUS_COLOURS = {
    "done": "#2e7d32",
    "failed": "#c62828",
    "running": "#ef6c00",
    "pending": "#757575",
}
_MARK_COLOURS = {"ran": "#2e7d32", "resumed": "#6a1b9a", "reused": "#1565c0", "skipped": "#757575"}
_ERROR_LIMIT = 120


@dataclass(frozen=True)
class StepStatus:
    """One step's last outcome. ``in_last_run`` says what the last run did with the step (None:
    the last run did not reach it); ``attempts`` is how many attempts its last execution took."""

    name: str
    position: int
    status: Literal["done", "failed", "pending", "running"]
    duration_s: float | None
    bytes_written: int | None
    ran_at: float | None
    error: str | None
    has_snapshot: bool
    in_last_run: InLastRun | None = None
    attempts: int | None = None


@dataclass(frozen=True)
class FlowStatus:
    """What ``CheckpointFlow.status()`` reports; ``print()`` it, or show it in Jupyter."""

    location: str
    steps: tuple[StepStatus, ...]
    resume_at: str | None
    last_run: Mapping[str, Any] | None

    def __str__(self) -> str:
        width = max([4, *(len(s.name) for s in self.steps)])
        lines = [f"checkpoint flow at {self.location}"]
        if self.steps:
            lines.append(f"     #  {'step':<{width}}  status   last took    written")
        for s in self.steps:
            mark = "->" if s.name == self.resume_at else "  "
            took = f"{s.duration_s:.2f}s" if s.duration_s is not None else "-"
            lines.append(
                f"{mark} {s.position:>3}  {s.name:<{width}}  {s.status:<7}  {took:>9}  "
                f"{format_size(s.bytes_written):>9}"
            )
        lines.append(
            f"next run starts at: {self.resume_at}" if self.resume_at else
            "next run starts at the beginning"
        )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(
            f"<th style='text-align:left'>{h}</th>"
            for h in ("", "#", "step", "status", "last run", "took", "written", "ran at", "error")
        )
        rows = [_html_row(s, s.name == self.resume_at) for s in self.steps]
        nxt = (
            f"next run starts at <b>{html.escape(self.resume_at)}</b>" if self.resume_at
            else "next run starts at the beginning"
        )
        return (
            f"<div><p>checkpoint flow at <code>{html.escape(self.location)}</code></p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f"<p>{nxt}</p></div>"
        )


def flow_status(location: str, names: Sequence[str], record: FlowRecord | None) -> FlowStatus:
    """The status of the steps ``names`` (the recorded order when empty) from ``record``."""
    names = list(names) or (record.order if record is not None else [])
    marks = _marks(names, record)
    steps = []
    for i, name in enumerate(names):
        entry = record.step(name) if record is not None else StepEntry()
        steps.append(
            StepStatus(
                name=name,
                position=i,
                status=entry.status or "pending",
                duration_s=entry.duration_s,
                bytes_written=entry.bytes_written,
                ran_at=entry.ran_at,
                error=entry.error,
                has_snapshot=entry.before is not None,
                in_last_run=marks[i],
                attempts=entry.attempts,
            )
        )
    return FlowStatus(
        location, tuple(steps), record.resume if record is not None else None,
        record.run.to_json() if record is not None else None,
    )


def _marks(names: Sequence[str], record: FlowRecord | None) -> list[InLastRun | None]:
    """What the run that wrote ``record`` did with each of the steps ``names`` (None: it did not
    reach the step)."""
    if record is None:
        return [None] * len(names)
    run = record.run
    first, last = run.first_step, run.last_step
    start = names.index(first) if first in names else None
    reached = names.index(last) if last in names else None
    marks: list[InLastRun | None] = []
    for i, name in enumerate(names):
        entry = record.step(name)
        mark: InLastRun | None = None
        if run.id and entry.run == run.id:
            mark = "resumed" if name == first and run.resumed else "ran"
        elif start is not None and i < start:
            mark = "skipped"
        elif (start is not None and reached is not None and start <= i <= reached
              and entry.status == "done"):
            mark = "reused"
        marks.append(mark)
    return marks


def _html_row(s: StepStatus, resumes_here: bool) -> str:
    colour = _STATUS_COLOURS.get(s.status, "inherit")
    mark = ""
    if s.in_last_run is not None:
        mark = f"<span style='color:{_MARK_COLOURS[s.in_last_run]}'>{s.in_last_run}</span>"
    if s.attempts is not None and s.attempts > 1:
        mark += f" ({s.attempts} attempts)"
    error = s.error or ""
    short = error if len(error) <= _ERROR_LIMIT else error[:_ERROR_LIMIT] + "..."
    cells = [
        "&#9654;" if resumes_here else "",
        str(s.position),
        f"<code>{html.escape(s.name)}</code>",
        f"<span style='color:{colour};font-weight:bold'>{s.status}</span>",
        mark,
        "-" if s.duration_s is None else f"{s.duration_s:.2f} s",
        format_size(s.bytes_written),
        "-" if s.ran_at is None else when(s.ran_at),
        f"<span title='{html.escape(error, quote=True)}'>{html.escape(short)}</span>",
    ]
    style = " style='font-weight:bold'" if resumes_here else ""
    tds = "".join(f"<td style='text-align:left'>{c}</td>" for c in cells)
    return f"<tr{style}>{tds}</tr>"


def format_size(n: int | None) -> str:
    """A byte count for people: ``812 B``, ``4.2 kB``, ``1.1 GB``; ``-`` when unknown."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
