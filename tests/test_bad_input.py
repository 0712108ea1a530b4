"""Arbitrary bad input gets the documented exception types, never a crash from deep inside."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkpoint_flow import CheckpointFlow, CheckpointFlowError, LocalHandler, StateHandler
from checkpoint_flow.cli import main as cli_main

DOCUMENTED = (TypeError, ValueError, CheckpointFlowError)
anything = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(), st.binary(),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                        max_size=2),
)
step_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=300
).filter(lambda s: s.strip())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=step_names | st.sampled_from(["..", "../x", "/etc/passwd", "a/../../b", "x" * 5000]))
def test_arbitrary_step_names_stay_inside_the_location(name):
    with tempfile.TemporaryDirectory() as root:
        location = Path(root) / "inner" / "ckpt"
        cp = CheckpointFlow(location)
        cp.add_step(name=name)(lambda s, d: s.update(v=1))
        assert cp.run({}) == {"v": 1}
        files = [p.resolve() for p in Path(root).rglob("*") if p.is_file()]
        assert files and all(p.is_relative_to(location.resolve()) for p in files)
        assert CheckpointFlow(location).status().steps[0].name == name
        CheckpointFlow(location).rewind(name)
        assert CheckpointFlow(location).status().resume_at == name


@settings(max_examples=60, deadline=None)
@given(load=anything, save=anything, name=anything)
def test_add_step_rejects_arbitrary_arguments_cleanly(load, save, name):
    cp = CheckpointFlow("memory://bad-input")
    try:
        cp.add_step(name=name, load=load, save=save)(lambda s, d: None)
    except DOCUMENTED:
        return
    assert (load is None or callable(load)) and (save is None or callable(save))
    assert name is None or (isinstance(name, str) and name.strip())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=anything, checkpoint=anything, policy=anything | st.text(max_size=8))
def test_run_rejects_arbitrary_arguments_cleanly(initial, checkpoint, policy):
    with tempfile.TemporaryDirectory() as root:
        cp = CheckpointFlow(root)
        cp.add_step(name="a")(lambda s, d: None)
        cp.add_step(name="b")(lambda s, d: None)
        try:
            result = cp.run(initial, checkpoint=checkpoint, load_policy=policy)
        except DOCUMENTED:
            return
        assert isinstance(initial, dict) and result == initial


@settings(max_examples=60, deadline=None)
@given(location=anything, handler=anything, options=anything)
def test_handler_selection_rejects_arbitrary_arguments_cleanly(location, handler, options):
    try:
        cp = CheckpointFlow(location, handler=handler, storage_options=options)
    except DOCUMENTED:
        return
    assert isinstance(cp.handler, StateHandler)


@settings(max_examples=40, deadline=None)
@given(name=st.text(max_size=30))
def test_local_handler_refuses_names_that_escape(name):
    handler = LocalHandler(tempfile.gettempdir() + "/cf-names")
    try:
        path = handler.path(name)
    except ValueError:
        return
    assert path.resolve().is_relative_to(handler.root.resolve())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=st.lists(st.text(max_size=12), max_size=4).filter(lambda a: "demo" not in a))
def test_cli_answers_arbitrary_arguments_with_an_exit_code(argv):
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = cli_main(argv)
                except SystemExit as exc:  # argparse's own usage errors
                    code = exc.code
        finally:
            os.chdir(here)
        assert os.listdir(scratch) == [], "inspecting must never create anything"
    assert code in (0, 1, 2)
    assert "Traceback" not in err.getvalue()


def test_cli_on_missing_location_is_one_clean_line(tmp_path, capsys):
    assert cli_main(["ls", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize("bad", [[1, 2], "state", 3])
def test_non_dict_initial_state_is_refused(tmp_path, bad):
    cp = CheckpointFlow(tmp_path)
    cp.add_step(name="a")(lambda s, d: None)
    with pytest.raises(TypeError, match="initial_state must be a dict"):
        cp.run(bad)
