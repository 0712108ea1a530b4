"""The quick-start story: a three-step flow whose second step fails, is fixed, and resumes.

``python -m checkpoint_flow demo`` and the tests run this same function.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .flow import CheckpointFlow


def run_demo(
    directory: str | os.PathLike[str] | None = None, *, echo: Callable[[str], Any] = print
) -> dict[str, Any]:
    """Tell the story, writing each line with ``echo``; return the final state.

    ``directory`` must not hold a checkpoint yet; by default a fresh temporary directory is
    made (and kept, so it can be inspected with ``checkpoint-flow ls``).
    Raises FileExistsError if ``directory`` already holds a checkpoint.
    """
    if directory is None:
        directory = tempfile.mkdtemp(prefix="checkpoint-flow-demo-")
    location = Path(directory)
    cp = CheckpointFlow(location)
    if cp.store.record_names():
        raise FileExistsError(
            f"{location} already holds a checkpoint; pass --dir with a new or empty directory"
        )
    echo(f"checkpoints go to {location}")

    @cp.add_step(name="prepare")
    def prepare(state: dict[str, Any], data: dict[str, Any]) -> None:
        echo("  step 1 'prepare': building the numbers (imagine an hour of work)")
        state["numbers"] = list(range(1, 11))

    @cp.add_step(name="fit")
    def fit(state: dict[str, Any], data: dict[str, Any]) -> None:
        echo("  step 2 'fit': computing the mean")
        state["mean"] = sum(state["numbers"]) / state["count"]  # bug: there is no "count"

    @cp.add_step(name="report")
    def report(state: dict[str, Any], data: dict[str, Any]) -> None:
        echo(f"  step 3 'report': mean = {state['mean']}")
        state["report"] = f"mean of {len(state['numbers'])} numbers: {state['mean']}"

    echo("")
    echo("first run:")
    try:
        cp.run()
    except KeyError as exc:
        echo(f"  step 2 failed with KeyError: {exc}")
    echo("")
    echo(str(cp.status()))

    echo("")
    echo("fixing step 2 (redefining 'fit') and running again:")

    @cp.add_step(name="fit")
    def fit_fixed(state: dict[str, Any], data: dict[str, Any]) -> None:
        echo("  step 2 'fit' (fixed): computing the mean")
        state["mean"] = sum(state["numbers"]) / len(state["numbers"])

    state = cp.run()
    echo("  step 1 did not run again: its result came from the checkpoint")
    echo("")
    echo(str(cp.status()))
    echo("")
    echo(f"result: {state['report']}")
    echo(f"inspect it with: checkpoint-flow ls {location}")
    return state
