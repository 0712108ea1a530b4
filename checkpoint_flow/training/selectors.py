"""Which checkpoint a ``load``/``restore``/``export`` means: selectors, parsed and resolved.

Accepted forms:

- ``"latest"``: the newest save (emergency saves excluded);
- ``"best"``: the best copy, or the best checkpoint by the monitored metric; ``"best:k"`` the
  k-th best;
- ``-k`` (or ``"-k"``): the k-th newest save, ``-1`` being the latest;
- ``epoch=E`` and/or ``step=S`` (keywords, or the strings ``"epoch=E"``, ``"step=S"``,
  ``"epoch=E,step=S"``); a plain ``int >= 0`` is an epoch, as in 0.1;
- a file name ending in ``.ckpt``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import CheckpointNotFoundError
from .naming import SUFFIX
from .records import CheckpointInfo
from .retention import Mode, rank

SelectorKind = Literal["latest", "best", "newest", "progress", "file"]
SelectorArg = str | int
FORMS = (
    "'latest', 'best', 'best:k' (k-th best), -k (k-th newest), epoch=E and/or step=S, or a "
    "file name ending in '.ckpt'"
)
_PROGRESS = re.compile(r"(epoch|step)=(\d+)")


@dataclass(frozen=True)
class Selector:
    """A parsed selector; ``k`` is the rank for "best" and "newest" (1 = first)."""

    kind: SelectorKind
    k: int = 1
    epoch: int | None = None
    step: int | None = None
    file: str | None = None

    def __str__(self) -> str:
        if self.kind == "latest":
            return "latest"
        if self.kind == "best":
            return "best" if self.k == 1 else f"best:{self.k}"
        if self.kind == "newest":
            return str(-self.k)
        if self.kind == "progress":
            parts = [f"{n}={v}" for n, v in (("epoch", self.epoch), ("step", self.step))]
            return ",".join(p for p in parts if not p.endswith("=None"))
        return str(self.file)


def parse(selector: object = "latest", *, epoch: int | None = None, step: int | None = None
          ) -> Selector:
    """Parse a selector. Raises TypeError or ValueError naming the value and the valid forms."""
    if epoch is not None or step is not None:
        if selector not in (None, "latest"):
            raise ValueError(
                f"pass either a selector ({selector!r}) or epoch=/step=, not both"
            )
        return Selector("progress", epoch=_count("epoch", epoch), step=_count("step", step))
    if isinstance(selector, bool) or not isinstance(selector, (str, int)):
        raise TypeError(
            f"checkpoint selector must be {FORMS}; got {type(selector).__name__}: {selector!r}"
        )
    if isinstance(selector, int):
        if selector < 0:
            return Selector("newest", k=-selector)
        return Selector("progress", epoch=selector)
    text = selector.strip()
    if text == "latest":
        return Selector("latest")
    if text == "best":
        return Selector("best")
    if text.startswith("best:") and text[5:].isdigit() and int(text[5:]) >= 1:
        return Selector("best", k=int(text[5:]))
    if re.fullmatch(r"-\d+", text) and int(text) < 0:
        return Selector("newest", k=-int(text))
    parts = [p.strip() for p in text.split(",")]
    matches = [_PROGRESS.fullmatch(p) for p in parts]
    if all(matches) and len({m.group(1) for m in matches if m}) == len(parts) <= 2:
        found = {m.group(1): int(m.group(2)) for m in matches if m}
        return Selector("progress", epoch=found.get("epoch"), step=found.get("step"))
    if text.endswith(SUFFIX) and "/" not in text and "\\" not in text and text != SUFFIX:
        return Selector("file", file=text)
    raise ValueError(f"unknown checkpoint selector {selector!r}; valid choices: {FORMS}")


def _count(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return value


def resolve(
    selector: Selector,
    checkpoints: Sequence[CheckpointInfo],
    *,
    monitor: str | None,
    mode: Mode,
    best_copy: str | None,
    where: str,
    conventional: str | None = None,
) -> str:
    """The file ``selector`` names among one manager's ``checkpoints``.

    ``best_copy`` is the best copy's file when it exists; ``conventional`` the file an
    epoch/step selector would have named, for the message when there is none. Raises
    CheckpointNotFoundError listing what exists, ValueError when "best" has no metric to rank by.
    """
    saves = newest_first(checkpoints)
    if selector.kind == "file":
        assert selector.file is not None
        return selector.file
    if selector.kind == "latest" or selector.kind == "newest":
        if len(saves) >= selector.k:
            return saves[selector.k - 1].file
        raise _not_found(selector, checkpoints, where, f"only {len(saves)} saved")
    if selector.kind == "best":
        if selector.k == 1 and best_copy is not None:
            return best_copy
        if monitor is None:
            # A reader that was not told the metric (the command line) uses the recorded one.
            monitor = recorded_monitor(checkpoints)
            if monitor is None:
                raise ValueError(
                    f"selector {str(selector)!r} needs a metric to rank by; pass monitor= to "
                    f"the manager (no checkpoint in {where} records one)"
                )
            mode = _recorded_mode(checkpoints, monitor) or mode
        ranked = rank(saves, monitor, mode)
        if len(ranked) >= selector.k:
            return ranked[selector.k - 1].file
        raise _not_found(selector, checkpoints, where, f"{len(ranked)} hold {monitor!r}")
    matching = [
        c
        for c in saves
        if (selector.epoch is None or c.epoch == selector.epoch)
        and (selector.step is None or c.step == selector.step)
    ]
    if matching:
        # Several saves of one epoch: the newest is the state at its end.
        return matching[0].file
    why = "no save at that point" + (f", no {conventional!r}" if conventional else "")
    raise _not_found(selector, checkpoints, where, why)


def newest_first(checkpoints: Sequence[CheckpointInfo]) -> list[CheckpointInfo]:
    """The saves a selector can name, newest first: copies and emergency saves excluded."""
    saves = [c for c in checkpoints if c.role in ("rolling", "named")]
    return sorted(saves, key=lambda c: (c.seq, c.timestamp), reverse=True)


def recorded_monitor(checkpoints: Sequence[CheckpointInfo]) -> str | None:
    monitors = {c.monitor for c in checkpoints if c.monitor is not None}
    return monitors.pop() if len(monitors) == 1 else None


def _recorded_mode(checkpoints: Sequence[CheckpointInfo], monitor: str) -> Mode | None:
    modes = {c.mode for c in checkpoints if c.monitor == monitor}
    if len(modes) != 1:
        return None
    mode = modes.pop()
    return "max" if mode == "max" else "min"


def _not_found(
    selector: Selector, checkpoints: Sequence[CheckpointInfo], where: str, why: str
) -> CheckpointNotFoundError:
    available = describe(checkpoints) if newest_first(checkpoints) else ""
    return CheckpointNotFoundError(where, str(selector), why, available)


def describe(checkpoints: Sequence[CheckpointInfo], limit: int = 8) -> str:
    """A short list of what exists, for error messages."""
    saves = newest_first(checkpoints)
    if not saves:
        return "none"
    shown = [f"{c.file} ({_progress(c)})" for c in saves[:limit]]
    more = f" and {len(saves) - limit} older" if len(saves) > limit else ""
    return ", ".join(shown) + more


def _progress(info: CheckpointInfo) -> str:
    parts = [f"{n} {v}" for n, v in (("epoch", info.epoch), ("step", info.step)) if v is not None]
    return ", ".join(parts) or "no progress reported"
