"""Code written for ai2-kit's checkpoint module runs here as its authors expect."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from checkpoint_flow import CheckpointFlow, FsspecHandler, StepNotFoundError, memo
from checkpoint_flow.memo import (
    CallInfo,
    apply_checkpoint,
    del_checkpoint,
    global_api,
    set_checkpoint_file,
)
from tests.support.faulty_fs import FaultyFileSystem, disk_full


@pytest.fixture
def location(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "calls"
    set_checkpoint_file(path)
    yield path
    global_api._default_store = None


def test_a_one_argument_key_function_receives_the_call_info(location):
    seen: list[CallInfo] = []

    def key(info: CallInfo) -> str:
        seen.append(info)
        return f"{info.fn_name}-{info.args[0]}-{info.kwargs.get('scale', 1)}"

    def double(x: int, scale: int = 1) -> int:
        return x * 2 * scale

    call_site = f"{__file__}:{sys._getframe().f_lineno + 1}"
    wrapped = apply_checkpoint(key)(double)
    assert wrapped(3, scale=2) == 12
    assert wrapped(3, scale=2) == 12
    (info, _again) = seen
    assert (info.fn_name, info.args, info.kwargs) == ("double", (3,), {"scale": 2})
    assert info.call_site == call_site
    assert [e.key for e in memo.entries(memo._configured_store())] == ["double-3-2"]


def test_the_three_argument_key_function_still_works(location):
    key = apply_checkpoint(lambda name, args, kwargs: f"{name}:{args[0]}")
    assert key(abs)(-4) == 4
    assert [e.key for e in memo.entries(memo._configured_store())] == ["abs:-4"]


def test_a_key_function_of_another_shape_is_refused():
    with pytest.raises(TypeError, match="one argument .* or three"):
        apply_checkpoint(lambda a, b: "k")


def test_disable_runs_the_function_every_time_and_stores_nothing(location):
    calls: list[int] = []

    def work(x: int) -> int:
        calls.append(x)
        return x

    assert apply_checkpoint("k", disable=True)(work) is work
    assert apply_checkpoint("k", True)(work)(1) == 1
    assert apply_checkpoint("k", disable=True)(work)(1) == 1
    assert calls == [1, 1]
    assert not location.exists()
    with pytest.raises(TypeError, match="disable must be True or False"):
        apply_checkpoint("k", disable="yes")  # type: ignore[arg-type]


def test_del_checkpoint_forgets_entries_by_prefix(location):
    calls: list[str] = []
    for name in ("train-1", "train-2", "eval-1"):
        apply_checkpoint(name)(lambda n=name: calls.append(n) or n)()
    removed = del_checkpoint("train-")
    assert sorted(e.key for e in removed) == ["train-1", "train-2"]
    assert [e.key for e in memo.entries(memo._configured_store())] == ["eval-1"]
    for name in ("train-1", "eval-1"):
        apply_checkpoint(name)(lambda n=name: calls.append(n) or n)()
    assert calls == ["train-1", "train-2", "eval-1", "train-1"]
    with pytest.raises(ValueError, match="non-empty"):
        del_checkpoint("")


def test_a_result_whose_write_fails_is_returned_and_the_failure_logged(caplog):
    fs = FaultyFileSystem()
    cp = CheckpointFlow(FsspecHandler("faultymem://m", filesystem=fs))
    calls: list[int] = []

    @cp.cached
    def train(x: int) -> list[int]:
        calls.append(x)
        return [x] * 100  # large enough for a blob of its own

    fs.write_fault = disk_full
    with caplog.at_level(logging.ERROR, logger="checkpoint_flow"):
        assert train(3) == [3] * 100
    (record,) = [r for r in caplog.records if "could not store the result" in r.getMessage()]
    assert "train" in record.getMessage() and "No space left" in record.getMessage()
    assert memo.entries(cp.store) == []

    fs.write_fault = lambda path: None
    assert train(3) == [3] * 100  # not stored the first time: it ran again, and is stored now
    assert train(3) == [3] * 100
    assert calls == [3, 3]


def test_apply_checkpoint_keeps_the_result_when_the_write_fails(tmp_path, caplog):
    fs = FaultyFileSystem()
    global_api._default_store = CheckpointFlow(FsspecHandler("faultymem://a", filesystem=fs)).store
    fs.write_fault = disk_full
    try:
        async def fetch() -> str:
            return "page" * 100

        with caplog.at_level(logging.ERROR, logger="checkpoint_flow"):
            assert asyncio.run(apply_checkpoint("fetch")(fetch)()) == "page" * 100
    finally:
        global_api._default_store = None
    assert any("could not store the result" in r.getMessage() for r in caplog.records)


def test_set_checkpoint_file_on_an_existing_checkpoint_file_is_refused(tmp_path):
    pickle_file = tmp_path / "checkpoint.pkl"  # ai2-kit's whole checkpoint is one pickle
    pickle_file.write_bytes(b"\x80\x05\x95\x00")
    with pytest.raises(ValueError, match=r"is an existing file .*pickle"):
        set_checkpoint_file(pickle_file)


def test_gumly_shaped_calls_fail_loudly(tmp_path):
    cp = CheckpointFlow(tmp_path)

    def load(state: dict[str, Any]) -> dict[str, Any]:
        return {}

    def save(state: dict[str, Any], data: dict[str, Any]) -> None:
        pass

    with pytest.raises(TypeError):
        cp.add_step(load, save)  # type: ignore[call-overload]
    cp.add_step(load=load, save=save)(lambda s, d: None)
    # gumly's run(state, load_policy): here the second argument is the step to start at
    with pytest.raises(StepNotFoundError, match="checkpoint='first only' names no step"):
        cp.run({}, "first only")  # type: ignore[arg-type]
