"""Identity: values, calls and steps are recognized by what they are, and never confused."""

from __future__ import annotations

import collections
import copy
import dataclasses
import datetime as dt
import enum
import functools
import importlib.util
import logging
import math
import pickle
import sys
import threading
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest

from checkpoint_flow import (
    CheckpointFlow,
    UndigestableValueError,
    UnpicklableStateError,
    memo,
)
from checkpoint_flow.identity import definition_of, digest, fingerprint

# -- value digests --------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int
    note: str = dataclasses.field(default="", compare=False)


@dataclasses.dataclass(frozen=True)
class OtherPoint:
    x: int
    y: int


Pair = collections.namedtuple("Pair", "x y")


class Plain:
    def __init__(self, value: Any) -> None:
        self.value = value


def test_sets_and_dicts_digest_alike_whatever_their_order() -> None:
    words = [f"w{i}" for i in range(50)]
    assert digest(set(words)) == digest(set(reversed(words)))
    assert digest(frozenset(words)) == digest(frozenset(reversed(words)))
    assert digest(dict.fromkeys(words, 1)) == digest(dict.fromkeys(reversed(words), 1))
    assert digest(words) != digest(list(reversed(words)))
    ordered = collections.OrderedDict.fromkeys(words, 1)
    assert digest(ordered) != digest(collections.OrderedDict.fromkeys(reversed(words), 1))
    assert digest(set(words)) != digest(frozenset(words)) != digest(sorted(words))


def test_types_are_part_of_the_digest() -> None:
    values = [1, 1.0, True, "1", b"1", bytearray(b"1"), Decimal("1"), (1,), [1], {1},
              np.int64(1), np.array(1), Color.RED, Pair(1, 1), (1, 1), Point(1, 1),
              OtherPoint(1, 1), None, 0.0, -0.0, Decimal("1.0")]
    digests = [digest(v) for v in values]
    assert len(set(digests)) == len(values)
    assert digest(math.nan) == digest(float("nan"))


def test_classes_are_digested_by_name_and_content() -> None:
    assert digest(Point(1, 2)) == digest(Point(1, 2, note="ignored: not compared"))
    assert digest(Point(1, 2)) != digest(Point(2, 1))
    assert digest(Plain({"a", "b"})) == digest(Plain({"b", "a"}))
    assert digest(Plain([1])) != digest(Plain([2]))
    assert digest(Color.RED) != digest(Color.BLUE)
    assert digest(Point) != digest(OtherPoint)


def test_arrays_by_dtype_shape_and_bytes() -> None:
    a = np.arange(12, dtype="i8").reshape(3, 4)
    assert digest(a) == digest(a.copy())
    assert digest(a[:, ::2]) == digest(np.ascontiguousarray(a[:, ::2]))
    assert digest(a) != digest(a.astype("i4"))
    assert digest(a) != digest(a.reshape(4, 3))
    b = a.copy()
    b[2, 3] += 1
    assert digest(a) != digest(b)
    objects = np.array([{"x"}, "y"], dtype=object)
    assert digest(objects) == digest(np.array([{"x"}, "y"], dtype=object))
    assert digest(objects) != digest(np.array([{"z"}, "y"], dtype=object))


def test_tensors_by_values_not_by_their_storage_address() -> None:
    torch = pytest.importorskip("torch")
    a, b = torch.arange(6.0), torch.arange(6.0)
    assert pickle.dumps(a) != pickle.dumps(b)  # the pickled form holds the storage address
    assert digest(a) == digest(b)
    assert digest(a) != digest(torch.arange(6.0).reshape(2, 3))
    assert digest(a) != digest(a.to(torch.float64))


def test_pandas_objects_by_labels_dtypes_and_values() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    assert digest(frame) == digest(frame.copy())
    assert digest(frame) != digest(frame.rename(columns={"b": "c"}))
    assert digest(frame) != digest(frame.assign(a=[1, 3]))
    assert digest(frame["a"]) != digest(frame["a"].astype("f8"))


def test_paths_datetimes_and_decimals() -> None:
    assert digest(PurePosixPath("/a/b")) == digest(PurePosixPath("/a//b"))
    assert digest(PurePosixPath("/a/b")) != digest("/a/b")
    moment = dt.datetime(2024, 5, 1, 12, 0)
    assert digest(moment) == digest(dt.datetime(2024, 5, 1, 12, 0))
    assert digest(moment) != digest(moment.replace(tzinfo=dt.timezone.utc))
    assert digest(Decimal("1.10")) != digest(Decimal("1.1"))


def test_cycles_and_any_depth_are_digested() -> None:
    def cyclic() -> list[Any]:
        x: list[Any] = [1]
        x.append(x)
        return x

    assert digest(cyclic()) == digest(cyclic())
    assert digest(cyclic()) != digest([1, [1]])

    def nested(depth: int) -> list[Any]:
        x: list[Any] = []
        for _ in range(depth):
            x = [x]
        return x

    assert digest(nested(20_000)) == digest(nested(20_000))
    assert digest(nested(20_000)) != digest(nested(20_001))
    shared = [1, 2]
    assert digest([shared, shared]) == digest([shared, copy.copy(shared)])


def test_value_without_stable_content_names_where_it_sits() -> None:
    with pytest.raises(UndigestableValueError) as caught:
        digest({"client": Plain({"lock": threading.Lock()})}, what="argument 'cfg' of f()",
               remedy=". Try ignore=")
    message = str(caught.value)
    assert "argument 'cfg' of f()" in message
    assert "['client'].value['lock']" in message
    assert "lock" in message and "Try ignore=" in message
    assert isinstance(caught.value, UnpicklableStateError) and isinstance(caught.value, TypeError)
    assert pickle.loads(pickle.dumps(caught.value)).where == caught.value.where


# -- fingerprints ---------------------------------------------------------------------------------


def make_scaler(factor: int) -> Any:
    def scale(x: int) -> int:
        return x * factor

    return scale


class Multiply:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, x: int) -> int:
        return x * self.factor

    def apply(self, x: int) -> int:
        return x * self.factor


def test_captured_values_defaults_partials_and_objects_count() -> None:
    assert fingerprint(make_scaler(2)) == fingerprint(make_scaler(2))
    assert fingerprint(make_scaler(2)) != fingerprint(make_scaler(3))

    def with_default(x: int, k: int = 1) -> int:
        return x + k

    changed = type(with_default)(with_default.__code__, with_default.__globals__,
                                 "with_default", (2,), with_default.__closure__)
    assert fingerprint(with_default) != fingerprint(changed)

    def add(x: int, y: int) -> int:
        return x + y

    def sub(x: int, y: int) -> int:
        return x - y

    assert fingerprint(functools.partial(add, 1)) == fingerprint(functools.partial(add, 1))
    assert fingerprint(functools.partial(add, 1)) != fingerprint(functools.partial(add, 2))
    assert fingerprint(functools.partial(add, 1)) != fingerprint(functools.partial(sub, 1))
    assert fingerprint(functools.partial(add, y=1)) != fingerprint(functools.partial(add, x=1))
    assert fingerprint(Multiply(2)) == fingerprint(Multiply(2))
    assert fingerprint(Multiply(2)) != fingerprint(Multiply(3))
    assert fingerprint(Multiply(2).apply) != fingerprint(Multiply(3).apply)


def test_decorators_are_looked_through_and_recursion_is_fine() -> None:
    def decorate(fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any) -> Any:
            return fn(*args)

        return wrapper

    assert fingerprint(decorate(make_scaler(2))) == fingerprint(make_scaler(2))
    assert fingerprint(decorate(make_scaler(2))) != fingerprint(decorate(make_scaler(5)))

    def countdown(n: int) -> int:
        return 0 if n == 0 else countdown(n - 1)

    assert fingerprint(countdown) == fingerprint(countdown)


def test_two_lambdas_on_one_line_are_told_apart() -> None:
    first, second = (lambda s: s + 1), (lambda s: s + 2)
    assert fingerprint(first) != fingerprint(second)


def load_module(tmp_path: Path, name: str, source: str) -> Any:
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


HELPERS = """
from {lib} import library_call

LIMIT = {limit}

def clean(x):
    return {clean}

def shout(x):
    return clean(x).upper()

class Parser:
    def parse(self, x):
        return x.split({sep!r})

def step(x):
    # calls a helper that calls a helper, a class, and an imported function
    return [shout(x), Parser().parse(x), library_call(x), LIMIT]

def unrelated(x):
    return x
"""


def test_fingerprints_reach_same_module_helpers_only(tmp_path: Path) -> None:
    sys.path.insert(0, str(tmp_path))
    try:
        for version in ("1", "2"):
            (tmp_path / f"lib{version}.py").write_text(
                f"def library_call(x):\n    return x * {version}\n"
            )

        def fingerprints(tag: str, **changes: Any) -> dict[str, str]:
            settings_ = {"lib": "lib1", "limit": 1, "clean": "x.strip()", "sep": ","}
            settings_.update(changes)
            module = load_module(tmp_path, f"pipeline_{tag}", HELPERS.format(**settings_))
            return {"step": fingerprint(module.step), "unrelated": fingerprint(module.unrelated)}

        base = fingerprints("base")
        assert fingerprints("same") == base
        assert fingerprints("formatting", clean="(  x.strip()  )  # tidy")["step"] == base["step"]
        assert fingerprints("helper", clean="x.strip(' ')")["step"] != base["step"]
        assert fingerprints("class", sep=";")["step"] != base["step"]
        # other modules and module-level data are not followed
        assert fingerprints("library", lib="lib2")["step"] == base["step"]
        assert fingerprints("constant", limit=2)["step"] == base["step"]
        assert fingerprints("helper2", clean="x")["unrelated"] == base["unrelated"]
    finally:
        sys.path.remove(str(tmp_path))


def test_a_callable_that_cannot_be_fingerprinted_warns_once_and_counts_as_changed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def make() -> Any:
        lock = threading.Lock()

        def guarded(x: int) -> int:
            with lock:
                return x

        return guarded

    caplog.set_level(logging.WARNING, logger="checkpoint_flow")
    first, second = make(), make()
    assert fingerprint(first) == fingerprint(first)  # the same object is itself
    assert fingerprint(first) != fingerprint(second)
    warnings = [r for r in caplog.records if "cannot fingerprint" in r.getMessage()]
    assert len(warnings) == 1
    assert "closure variable 'lock'" in warnings[0].getMessage()


def test_definition_tells_a_new_definition_from_a_factory_call() -> None:
    source = "def step(state, data):\n    state['x'] = 1\n"
    cells = []
    for cell in ("<cell-1>", "<cell-2>"):
        namespace: dict[str, Any] = {"__name__": "__main__"}
        exec(compile(source, cell, "exec"), namespace)
        cells.append(namespace["step"])
    assert not definition_of(cells[0]).same_code(definition_of(cells[1]))
    assert definition_of(make_scaler(1)).same_code(definition_of(make_scaler(2)))
    assert definition_of(functools.partial(make_scaler(1), 3)).same_code(
        definition_of(make_scaler(7))
    )
    assert definition_of(lambda s, d: None).anonymous


# -- step registration ----------------------------------------------------------------------------


def test_factory_made_steps_need_names_and_then_all_run(tmp_path: Path) -> None:
    def make_step(factor: int) -> Any:
        def scale(state: dict[str, Any], data: dict[str, Any]) -> None:
            state["x"] *= factor

        return scale

    cp = CheckpointFlow(tmp_path / "cp")
    cp.add_step(make_step(2))
    with pytest.raises(ValueError, match="different captured values.*name="):
        cp.add_step(make_step(3))
    cp.add_step(make_step(2))  # the same step again: nothing new
    assert len(cp.steps) == 1

    seen: list[int] = []

    def count(state: dict[str, Any], data: dict[str, Any]) -> None:
        seen.append(1)

    cp.add_step(count)
    seen.append(0)  # what it captured changed, but it is the same function object
    cp.add_step(count)
    assert len(cp.steps) == 2

    named = CheckpointFlow(tmp_path / "named")
    for factor in (2, 3, 5):
        named.add_step(make_step(factor), name=f"scale_{factor}")
    assert named.run({"x": 1}) == {"x": 30}


def test_a_second_unnamed_lambda_is_refused(tmp_path: Path) -> None:
    cp = CheckpointFlow(tmp_path / "cp")
    cp.add_step(lambda s, d: s.update(a=1))
    with pytest.raises(ValueError, match="second unnamed lambda.*name="):
        cp.add_step(lambda s, d: s.update(b=1))
    cp.add_step(name="b")(lambda s, d: s.update(b=1))
    assert cp.run({}) == {"a": 1, "b": 1}


def test_a_same_named_function_from_another_module_is_refused(tmp_path: Path) -> None:
    source = "def prepare(state, data):\n    state['{0}'] = 1\n"
    first = load_module(tmp_path, "etl_one", source.format("one")).prepare
    second = load_module(tmp_path, "etl_two", source.format("two")).prepare
    cp = CheckpointFlow(tmp_path / "cp")
    cp.add_step(first)
    with pytest.raises(ValueError, match="from module 'etl_one'.*'etl_two'.*name="):
        cp.add_step(second)


def test_a_notebook_cell_run_again_replaces_its_step(tmp_path: Path) -> None:
    cp = CheckpointFlow(tmp_path / "cp")
    namespace: dict[str, Any] = {"__name__": "__main__", "cp": cp}
    for cell, value in (("<ipython-input-1>", 1), ("<ipython-input-2>", 2)):
        source = f"@cp.add_step\ndef transform(state, data):\n    state['v'] = {value}\n"
        exec(compile(source, cell, "exec"), namespace)
    # the same source under a new pseudo-file name is a redefinition as well
    exec(compile(source, "<ipython-input-3>", "exec"), namespace)
    assert cp.step_names == ["transform"]
    assert cp.run({}) == {"v": 2}


def test_factory_made_map_steps_need_names(tmp_path: Path) -> None:
    def make_work(offset: int) -> Any:
        def work(item: int) -> int:
            return item + offset

        return work

    cp = CheckpointFlow(tmp_path / "cp")
    cp.map_step(items=lambda s: s["n"])(make_work(1))
    with pytest.raises(ValueError, match="name="):
        cp.map_step(items=lambda s: s["n"])(make_work(2))


# -- memoized calls -------------------------------------------------------------------------------


def test_closures_from_one_factory_never_share_memo_entries(tmp_path: Path) -> None:
    cp = CheckpointFlow(tmp_path / "cp")

    def make(k: int) -> Any:
        @cp.cached
        def scaled(x: int) -> int:
            return (x + 1) * k

        return scaled

    assert make(1)(0) == 1
    assert make(100)(0) == 100
    assert make(1)(0) == 1
    assert len(memo.entries(cp.store)) == 2


def test_ignored_arguments_are_not_part_of_the_key(tmp_path: Path) -> None:
    cp = CheckpointFlow(tmp_path / "cp")
    calls = []

    @cp.cached(ignore=["logger", "progress"])
    def fetch(day: str, logger: Any = None, progress: Any = None, **options: Any) -> str:
        calls.append(day)
        return day.upper()

    lock = threading.Lock()  # undigestable, but ignored
    assert fetch("mon", logger=logging.getLogger("a"), progress=lock) == "MON"
    assert fetch("mon", logger=logging.getLogger("b"), progress=lambda n: None) == "MON"
    assert fetch("tue") == "TUE"
    assert calls == ["mon", "tue"]

    @cp.cached(ignore=["verbose"])
    def load(day: str, **options: Any) -> str:
        calls.append(f"load {day} {sorted(options)}")
        return day

    load("mon", verbose=True, region="eu")
    load("mon", verbose=False, region="eu")
    load("mon", region="us")
    assert calls[2:] == ["load mon ['region', 'verbose']", "load mon ['region']"]


def test_bad_ignore_is_refused_naming_the_arguments(tmp_path: Path) -> None:
    cp = CheckpointFlow(tmp_path / "cp")

    def f(a: int, b: int) -> int:
        return a + b

    with pytest.raises(ValueError, match=r"ignore= names 'c'.*arguments are: a, b"):
        cp.cached(ignore=["c"])(f)
    with pytest.raises(TypeError, match="list of argument names"):
        cp.cached(ignore="a")(f)


def test_argument_without_stable_content_points_to_ignore(tmp_path: Path) -> None:
    cp = CheckpointFlow(tmp_path / "cp")

    @cp.cached
    def use(config: dict[str, Any]) -> int:
        return 1

    with pytest.raises(UndigestableValueError, match=r"argument 'config'.*\['conn'\].*"
                       r"ignore=\['config'\]"):
        use({"conn": threading.Lock()})


# -- fan-out item keys -------------------------------------------------------------------------


def test_fan_out_item_keys_are_digested_by_content(tmp_path: Path) -> None:
    cp = CheckpointFlow(tmp_path / "cp")
    cp.map_step(items=lambda s: s["n"], name="work")(repr)
    items = [frozenset({"a", "b"}), Point(1, 2), Color.RED, (1, "1")]
    assert cp.run({"n": items})["work"] == [repr(i) for i in items]
    twins = CheckpointFlow(tmp_path / "twins")
    twins.map_step(items=lambda s: s["n"], name="work")(repr)
    with pytest.raises(ValueError, match="1 duplicate item key"):
        twins.run({"n": [frozenset({"a", "b"}), frozenset({"b", "a"})]})


def test_fan_out_item_key_without_stable_content_points_to_key(tmp_path: Path) -> None:
    cp = CheckpointFlow(tmp_path / "cp")
    jobs = lambda state: [(i, threading.Lock()) for i in range(state["n"])]  # noqa: E731
    cp.map_step(items=jobs, name="work")(lambda job: job[0])
    with pytest.raises(UndigestableValueError, match=r"item key .* of map step 'work' .*"
                       r"at \[1\]: .*lock.*key="):
        cp.run({"n": 2})
    cp.map_step(items=jobs, name="work", key=lambda job: job[0])(lambda job: job[0])
    assert cp.run({"n": 2})["work"] == [0, 1]
