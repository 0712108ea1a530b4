"""The tutorial notebook is executed so it can never go stale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "tutorial.ipynb"


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
        elif out.get("output_type") == "error":
            parts.append(f"{out['ename']}: {out['evalue']}")
    return "".join(parts)


@pytest.fixture(scope="module")
def executed_cells(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """The tutorial's code cells after one execution in a fresh directory."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    workdir = tmp_path_factory.mktemp("tutorial")
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    client.execute()
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.mark.slow
def test_tutorial_notebook_tells_the_story(executed_cells: list[Any]) -> None:
    cells = executed_cells
    texts = [_text(c) for c in cells]
    failing = next(
        i for i, c in enumerate(cells) if "raises-exception" in c.metadata.get("tags", [])
    )
    assert "KeyError: 'rate'" in texts[failing]
    assert "the next run resumes at 'convert'" in texts[failing]
    rerun = texts[failing + 3]
    assert "loading orders" not in rerun
    assert "5 orders, 138.00 EUR" in rerun
    assert "['extract', 'convert', 'report']" in texts[failing + 4]
    assert "'revenue': 150" in texts[failing + 5]
    assert texts[failing + 6].count("loading orders") == 1
    # load_policy: "first" loads only at the first step, "always" at every step with a loader
    assert "loading saved orders" not in texts[failing + 6]
    assert texts[failing + 7].count("loading orders") == 1
    assert "loading saved orders" in texts[failing + 7]
    assert "loading" not in texts[failing + 8] and "5 orders, 138.00 EUR" in texts[failing + 8]


def test_the_committed_tutorial_shows_its_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in cells), "commit the notebook executed"
    texts = [_text(c) for c in cells]
    assert "KeyError: 'rate'" in "".join(texts)
    first_iterating = next(
        i for i, c in enumerate(cells) if c.source.startswith("it = CheckpointFlow(")
    )
    assert "5 orders, 138.00 EUR" in texts[first_iterating - 1]


@pytest.mark.slow
def test_tutorial_iterating_section_reruns_only_what_changed(executed_cells: list[Any]) -> None:
    cells = executed_cells
    first = next(i for i, c in enumerate(cells) if c.source.startswith("it = CheckpointFlow("))
    texts = [_text(c) for c in cells[first:]]
    assert "downloading (slow)" in texts[0] and "86 rows, total 4315" in texts[0]
    assert texts[1].count(" reused (unchanged since ") == 4
    assert "downloading" not in texts[1]
    edited = texts[2]  # clean edited: download reused, the rest runs
    assert "step 'download' reused" in edited and "downloading" not in edited
    assert "step 'clean' ran" in edited and "step 'report' ran" in edited
    assert "78 rows, total 3897" in edited
    cutoff = texts[3]  # same output from new code: the steps after clean are reused
    assert "step 'clean' ran" in cutoff
    assert "step 'summarize' reused" in cutoff and "step 'report' reused" in cutoff
    assert "stopped after step 'clean'" in texts[4] and "step 'summarize' ran" not in texts[4]
    assert texts[5].strip().endswith("3897")  # try_step's total
    assert "step 'summarize' ran" in texts[6] and "78 rows, total 3897" in texts[6]
    html = cells[first + 7].outputs[0]["data"]["text/html"]
    assert ">resumed<" in html and ">skipped<" in html
    assert "('stopped', 2, 0, 0)" in texts[8] and "('succeeded', 0, 4, 0)" in texts[8]
