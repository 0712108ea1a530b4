"""Memoized calls: a repeated call with the same arguments and code returns the stored result."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from checkpoint_flow import CheckpointCorruptError, CheckpointFlow, CheckpointFlowError, memo
from checkpoint_flow.errors import UnpicklableStateError
from checkpoint_flow.memo import global_api


@pytest.fixture
def cp(tmp_path: Path) -> CheckpointFlow:
    return CheckpointFlow(tmp_path / "ckpt")


@pytest.fixture
def compat(tmp_path: Path) -> Iterator[Path]:
    """The module-level location of apply_checkpoint, cleared after the test."""
    location = tmp_path / "compat"
    memo.set_checkpoint_dir(location)
    yield location
    global_api._default_store = None


def test_second_call_with_same_arguments_returns_stored_result_without_running(cp):
    calls = []

    @cp.cached
    def square(x):
        calls.append(x)
        return x * x

    assert square(4) == 16
    assert square(4) == 16
    assert calls == [4]
    assert [e.function for e in memo.entries(cp.store)] == [square.__qualname__]


def test_result_survives_a_new_process_view_of_the_location(tmp_path):
    # Calls are logged to a file: a captured list would itself be part of the function's
    # identity, and its content differs between the two definitions.
    log = tmp_path / "calls"

    def make(cp):
        @cp.cached
        def load(n):
            with open(log, "a") as f:
                f.write(f"{n}\n")
            return np.arange(n)

        return load

    first = make(CheckpointFlow(tmp_path / "c"))(5)
    again = make(CheckpointFlow(tmp_path / "c"))(5)
    np.testing.assert_array_equal(first, again)
    assert log.read_text().split() == ["5"]


def test_different_arguments_are_a_miss(cp):
    calls = []

    @cp.cached
    def add(a, b=10):
        calls.append((a, b))
        return a + b

    assert add(1) == 11
    assert add(2) == 12
    assert add(1, b=5) == 6
    assert calls == [(1, 10), (2, 10), (1, 5)]
    assert len(memo.entries(cp.store)) == 3


def test_positional_keyword_and_default_spellings_share_one_entry(cp):
    calls = []

    @cp.cached
    def f(x, y=2):
        calls.append(x)
        return x + y

    assert f(1) == 3
    assert f(x=1) == 3
    assert f(1, 2) == 3
    assert f(y=2, x=1) == 3
    assert calls == [1]


def test_changed_code_under_the_same_name_is_recomputed(cp):
    calls = []

    @cp.cached(key="score")
    def score(x):
        calls.append("v1")
        return x + 1

    assert score(1) == 2

    @cp.cached(key="score")
    def score(x):
        calls.append("v2")
        return x + 100

    assert score(1) == 101
    assert score(1) == 101
    assert calls == ["v1", "v2"]
    # the old entry stays until removed by prefix
    assert len([e for e in memo.entries(cp.store) if e.key.startswith("score:")]) == 2


def test_prefix_removal_forgets_only_matching_entries_and_gc_frees_their_blobs(cp):
    calls = []

    @cp.cached(key="embed")
    def embed(x):
        calls.append(("embed", x))
        return bytes(1000) + bytes([x])

    @cp.cached(key="other")
    def other(x):
        calls.append(("other", x))
        return x

    embed(1), embed(2), other(1)
    files_before = len(cp.handler.list("memo"))
    removed = memo.remove(cp.store, "embed")
    assert sorted(e.key.split(":")[0] for e in removed) == ["embed", "embed"]
    assert [e.key.split(":")[0] for e in memo.entries(cp.store)] == ["other"]
    assert len(cp.handler.list("memo")) == files_before - 2  # freed at once, no gc needed
    embed(1), other(1)
    assert calls == [("embed", 1), ("embed", 2), ("other", 1), ("embed", 1)]


def test_gc_keeps_blobs_of_memo_entries(cp):
    @cp.cached
    def big(n):
        return bytes(n)

    big(5000)
    cp.gc()
    assert big(5000) == bytes(5000)
    assert cp.verify() == []


def test_async_function_stores_the_awaited_result(cp):
    calls = []

    @cp.cached
    async def fetch(x):
        calls.append(x)
        await asyncio.sleep(0)
        return {"x": x}

    assert asyncio.run(fetch(3)) == {"x": 3}
    assert asyncio.run(fetch(3)) == {"x": 3}
    assert calls == [3]
    assert all(e.size > 0 for e in memo.entries(cp.store))


def test_unpicklable_argument_is_named_in_the_error(cp):
    @cp.cached
    def use(data, lock):
        return 1

    with pytest.raises(UnpicklableStateError, match="argument 'lock'") as info:
        use([1], threading.Lock())
    assert isinstance(info.value, TypeError)
    assert memo.entries(cp.store) == []


def test_arguments_not_fitting_the_signature_raise_type_error(cp):
    @cp.cached
    def one(x):
        return x

    with pytest.raises(TypeError, match="one"):
        one(1, 2)


def test_unpicklable_result_is_an_error_and_stores_nothing(cp):
    @cp.cached
    def make_lock():
        return threading.Lock()

    with pytest.raises(UnpicklableStateError, match="make_lock"):
        make_lock()
    assert memo.entries(cp.store) == []


def test_damaged_result_blob_raises_instead_of_rerunning(cp):
    calls = []

    @cp.cached
    def value():
        calls.append(1)
        return list(range(100))

    value()
    (entry,) = cp.handler.list("memo")
    data = bytearray(cp.handler.read(entry))
    data[-1] ^= 0xFF
    cp.handler.write(entry, data)
    with pytest.raises(CheckpointCorruptError, match="not match its header.*checkpoint-flow rm"):
        value()
    assert calls == [1]


def test_damaged_entry_record_raises_instead_of_rerunning(cp):
    calls = []

    @cp.cached
    def value():
        calls.append(1)
        return 42

    value()
    (record,) = cp.handler.list("memo")
    data = bytes(cp.handler.read(record))
    cp.handler.write(record, data[: len(data) // 2])
    with pytest.raises(CheckpointCorruptError, match="damaged"):
        value()
    assert calls == [1]


def test_signed_store_refuses_an_unsigned_entry(tmp_path):
    plain = CheckpointFlow(tmp_path / "c")
    log = tmp_path / "calls"  # a file, not a captured list: see the test above

    def define(cp):
        @cp.cached(key="k")
        def f():
            with open(log, "a") as out:
                out.write("1\n")
            return 1

        return f

    define(plain)()
    signed = CheckpointFlow(tmp_path / "c", key="secret")
    with pytest.raises(CheckpointCorruptError, match="not signed"):
        define(signed)()
    assert log.read_text().split() == ["1"]


def test_apply_checkpoint_runs_once_per_key(compat):
    calls = []

    def work(x):
        calls.append(x)
        return x * 2

    assert memo.apply_checkpoint("step-a")(work)(1) == 2
    # the key alone decides: a different argument under the same key returns the stored value
    assert memo.apply_checkpoint("step-a")(work)(5) == 2
    assert memo.apply_checkpoint("step-b")(work)(5) == 10
    assert calls == [1, 5]
    assert (compat / "memo").is_dir()


def test_apply_checkpoint_key_function_receives_the_call(compat):
    seen = []

    def key(name, args, kwargs):
        seen.append((name, args, kwargs))
        return f"{name}-{args[0]}"

    def double(x, scale=1):
        return x * 2 * scale

    assert memo.apply_checkpoint(key)(double)(3, scale=2) == 12
    assert memo.apply_checkpoint(key)(double)(3) == 12
    assert seen[0] == ("double", (3,), {"scale": 2})
    assert [e.key for e in memo.entries(memo._configured_store())] == ["double-3"]


def test_apply_checkpoint_key_function_must_return_a_string(compat):
    with pytest.raises(TypeError, match="non-empty str"):
        memo.apply_checkpoint(lambda name, args, kwargs: 3)(abs)(-1)


def test_apply_checkpoint_awaits_async_functions(compat):
    calls = []

    async def fetch():
        calls.append(1)
        return "page"

    assert asyncio.run(memo.apply_checkpoint("fetch")(fetch)()) == "page"
    assert asyncio.run(memo.apply_checkpoint("fetch")(fetch)()) == "page"
    assert calls == [1]


def test_set_checkpoint_file_is_the_older_spelling(tmp_path):
    memo.set_checkpoint_file(tmp_path / "old")
    try:
        assert memo.apply_checkpoint("k")(lambda: 7)() == 7
        assert memo.apply_checkpoint("k")(lambda: 8)() == 7
    finally:
        global_api._default_store = None
    assert (tmp_path / "old" / "memo").is_dir()


def test_apply_checkpoint_without_a_location_runs_unchanged_and_says_so_once(
    monkeypatch, caplog
):
    # ai2-kit runs the function unchanged until a checkpoint file is set; so do we, saying so.
    global_api._default_store = None
    monkeypatch.setattr(global_api, "_said_nothing_is_stored", False)
    calls = []
    wrapped = memo.apply_checkpoint("k")(lambda: calls.append(1) or len(calls))
    with caplog.at_level("WARNING", logger="checkpoint_flow"):
        assert wrapped() == 1
        assert wrapped() == 2
        assert memo.apply_checkpoint("other")(abs)(-3) == 3
    said = [r for r in caplog.records if "set_checkpoint_dir" in r.getMessage()]
    assert len(said) == 1 and "without storing" in said[0].getMessage()
    with pytest.raises(CheckpointFlowError, match="set_checkpoint_dir"):
        memo.del_checkpoint("k")


def test_set_checkpoint_dir_creates_nothing_until_a_result_is_stored(tmp_path):
    memo.set_checkpoint_dir(tmp_path / "lazy")
    global_api._default_store = None
    assert not (tmp_path / "lazy").exists()


def test_apply_checkpoint_on_s3_with_storage_options(s3):
    fs, bucket, options = s3
    memo.set_checkpoint_dir(f"s3://{bucket}/m", storage_options=options)
    calls = []
    try:
        for _ in range(2):
            assert memo.apply_checkpoint("s3-key")(lambda: calls.append(1) or "v")() == "v"
    finally:
        global_api._default_store = None
    assert calls == [1]
    assert len(fs.find(f"{bucket}/m/memo")) == 1


def test_cached_rejects_an_empty_key(cp):
    with pytest.raises(ValueError, match="non-empty"):
        cp.cached(key="")


def test_entry_stored_again_after_another_process_collected_its_blob(tmp_path):
    cp = CheckpointFlow(tmp_path / "c")
    calls = []

    @cp.cached
    def f(x):
        calls.append(x)
        return bytes(100) + bytes([x])

    f(1)
    other = CheckpointFlow(tmp_path / "c")  # e.g. `checkpoint-flow rm` and `gc` meanwhile
    memo.remove(other.store, "")
    other.gc()
    assert f(1) == bytes(100) + b"\x01"
    assert f(1) == bytes(100) + b"\x01"
    assert calls == [1, 1]
    assert cp.verify() == []


def test_entry_removed_by_another_process_on_s3_is_a_miss(s3):
    _fs, bucket, options = s3
    location = f"s3://{bucket}/c"
    cp = CheckpointFlow(location, storage_options=options)
    calls = []

    @cp.cached
    def f(x):
        calls.append(x)
        return [x] * 10

    f(1)
    assert len(cp.handler.list("memo")) == 1  # a listing this process may cache
    other = CheckpointFlow(location, storage_options=options)
    memo.remove(other.store, "")
    other.gc()
    assert f(1) == [1] * 10
    assert f(1) == [1] * 10
    assert calls == [1, 1]
    assert cp.verify() == []
