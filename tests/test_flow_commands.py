"""The command line's flow commands, called in this process: the quick check that every one of
them still works on a real location (tests/test_cli.py runs them as subprocesses)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from checkpoint_flow import CheckpointFlow
from checkpoint_flow.cli import main


def _flow(location: Path) -> CheckpointFlow:
    cp = CheckpointFlow(location)

    @cp.add_step(name="prepare")
    def prepare(state: dict[str, Any], data: dict[str, Any]) -> None:
        state["rows"] = [1, 2, 3]

    @cp.add_step(name="fit")
    def fit(state: dict[str, Any], data: dict[str, Any]) -> None:
        state["total"] = sum(state["rows"])

    @cp.cached
    def square(x: int) -> int:
        return x * x

    square(4)
    return cp


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_every_flow_command_answers_on_a_real_location(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cp = _flow(tmp_path)
    assert cp.run({}) == {"rows": [1, 2, 3], "total": 6}
    where = str(tmp_path)

    listing = _json(capsys, "ls", where)
    assert [s["name"] for s in listing["steps"]] == ["prepare", "fit"]
    assert len(listing["memo"]) == 1
    shown = _json(capsys, "show", where, "--step", "fit")
    assert [(k["key"], k["type"]) for k in shown["keys"]] == [("rows", "list")]
    assert [r["outcome"] for r in _json(capsys, "history", where)] == ["succeeded"]
    assert _json(capsys, "verify", where)["ok"] is True
    assert _json(capsys, "rewind", where, "fit")["resume_at"] == "fit"
    assert cp.status().resume_at == "fit"
    assert _json(capsys, "reset", where, "--yes")["resume_at"] is None
    key = listing["memo"][0]["key"]
    assert [e["key"] for e in _json(capsys, "rm", where, "--prefix", key)["removed"]] == [key]
    collected = _json(capsys, "gc", where)
    assert (collected["location"], collected["records_deleted"] >= 0) == (where, True)
    assert cp.run({}) == {"rows": [1, 2, 3], "total": 6}  # still runs after all of that


def test_a_step_that_is_not_there_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _flow(tmp_path).run({})
    assert main(["rewind", str(tmp_path), "nope"]) == 1
    err = capsys.readouterr().err
    assert "STEP 'nope' names no step; steps are: 0:prepare, 1:fit" in err
    assert len(err.strip().splitlines()) == 1
