"""Messages a new user meets: each names the right thing (argument, location, step, option) and
says what to do; and what a user should know is visible without logging configured."""

from __future__ import annotations

import os
import pickle
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from checkpoint_flow import (
    CheckpointFlow,
    CheckpointFlowWarning,
    CheckpointWriteError,
    StepNotFoundError,
    UnpicklableStateError,
)

# -- initial_state ------------------------------------------------------------------------------


def two_steps(location: Path) -> tuple[CheckpointFlow, list[str]]:
    cp = CheckpointFlow(location)
    calls: list[str] = []
    cp.add_step(name="a")(lambda s, d: calls.append("a"))
    cp.add_step(name="b")(lambda s, d: calls.append("b"))
    return cp, calls


@pytest.mark.parametrize(
    ("initial", "error", "words"),
    [
        ({1: "x"}, TypeError, ["initial_state keys must be str", "1 (int)"]),
        ({"g": (i for i in range(3))}, UnpicklableStateError, ["initial_state['g']", "generator"]),
        ({"ok": 1, "lock": threading.Lock()}, UnpicklableStateError, ["initial_state['lock']"]),
    ],
)
def test_a_bad_initial_state_is_blamed_on_initial_state_not_the_first_step(
    tmp_path, initial, error, words
):
    cp, calls = two_steps(tmp_path)
    with pytest.raises(error) as info:
        cp.run(initial)
    for word in words:
        assert word in str(info.value)
    assert "step 'a'" not in str(info.value)
    assert calls == []
    assert cp.run({"fine": 1}) == {"fine": 1}


# -- step references ----------------------------------------------------------------------------


def test_any_integer_type_names_a_step(tmp_path):
    cp, calls = two_steps(tmp_path)
    cp.run({})
    calls.clear()
    cp.run({}, checkpoint=np.int64(1))
    assert calls == ["b"]
    with pytest.raises(StepNotFoundError, match=r"checkpoint=5 is out of range; steps are: 0:a"):
        cp.run({}, checkpoint=np.int32(5))
    with pytest.raises(TypeError, match="checkpoint must be a step index"):
        cp.run({}, checkpoint=1.0)
    with pytest.raises(TypeError, match="checkpoint must be a step index"):
        cp.run({}, checkpoint=True)


def test_rewind_and_state_before_name_their_own_argument(tmp_path):
    cp, _ = two_steps(tmp_path)
    cp.run({})
    with pytest.raises(StepNotFoundError, match=r"^step='nope' names no step"):
        cp.rewind("nope")
    with pytest.raises(StepNotFoundError, match=r"^step=9 is out of range"):
        cp.state_before(9)


# -- a step that returns its data ---------------------------------------------------------------


def test_a_step_returning_its_data_dict_is_an_error_not_a_lost_state(tmp_path):
    cp = CheckpointFlow(tmp_path)
    cp.add_step(name="load", load=lambda s: {"rows": [1, 2]})(lambda s, d: s.update(n=2))

    @cp.add_step(name="gumly_style")
    def gumly_style(state: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        state["total"] = sum(data["rows"])
        return data

    with pytest.raises(TypeError, match=r"'gumly_style' returned its `data` dict.*return data"):
        cp.run({"day": 1})
    assert cp.status().resume_at == "gumly_style"
    assert cp.state_before("gumly_style") == {"day": 1, "n": 2}


def test_a_step_may_return_the_state_it_was_given(tmp_path):
    cp = CheckpointFlow(tmp_path)
    cp.add_step(name="a")(lambda s, d: s.update(x=1) or s)
    assert cp.run({}) == {"x": 1}


# -- what a user should see without configuring logging -----------------------------------------


def test_a_restart_caused_by_a_code_change_is_a_warning(tmp_path):
    def build(version: int) -> CheckpointFlow:
        cp = CheckpointFlow(tmp_path)
        if version == 1:
            cp.add_step(name="extract")(lambda s, d: s.update(rows=3))
        else:
            cp.add_step(name="extract")(lambda s, d: s.update(rows=4))

        def convert(state: dict[str, Any], data: dict[str, Any]) -> None:
            state["eur"] = state["rows"] * state["rate"]

        cp.add_step(name="convert")(convert)
        return cp

    with pytest.raises(KeyError):
        build(1).run({})
    with pytest.warns(CheckpointFlowWarning) as caught:
        with pytest.raises(KeyError):
            build(2).run({})
    (warning,) = caught
    message = str(warning.message)
    assert "'extract' changed since it ran" in message
    assert "restarts at 'extract' instead of resuming at 'convert'" in message
    assert "on_code_change='ignore'" in message
    assert warning.filename == __file__  # points at the caller's run()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unchanged rerun warns about nothing
        with pytest.raises(KeyError):
            build(2).run({})


def test_a_saver_left_without_its_loaders_data_on_resume_warns_once(tmp_path):
    written: list[Any] = []

    def build(fail: bool, publish_loads: bool = False) -> CheckpointFlow:
        cp = CheckpointFlow(tmp_path)
        cp.add_step(name="extract", load=lambda s: {"orders": [10, 20]})(
            lambda s, d: s.update(n=len(d["orders"]))
        )

        def convert(state: dict[str, Any], data: dict[str, Any]) -> None:
            if fail:
                raise RuntimeError("bug")

        cp.add_step(name="convert")(convert)
        cp.add_step(
            name="publish",
            load=(lambda s: {"orders": [30]}) if publish_loads else None,
            save=lambda s, d: written.append(d.get("orders")),
        )(lambda s, d: None)
        cp.add_step(name="archive", save=lambda s, d: written.append(d.get("orders")))(
            lambda s, d: None
        )
        return cp

    with pytest.raises(RuntimeError):
        build(True).run({})
    with pytest.warns(CheckpointFlowWarning) as caught:
        build(False).run({})
    (warning,) = caught
    message = str(warning.message)
    assert "saver of step 'publish' runs with an empty `data`" in message
    assert "resumed at 'convert'" in message and "('extract')" in message
    assert "give 'publish' a loader and pass load_policy='always'" in message
    assert "checkpoint='extract'" in message
    assert warning.filename == __file__
    assert written == [None, None]

    # either remedy gives the savers their data, with nothing to warn about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build(False).run({}, checkpoint="extract")
        assert written[-2:] == [[10, 20], [10, 20]]
        with pytest.raises(RuntimeError):
            build(True).run({}, checkpoint="convert")
        build(False, publish_loads=True).run({}, load_policy="always")
        assert written[-2:] == [[30], [30]]


def test_printed_status_shows_bytes_written(tmp_path):
    cp = CheckpointFlow(tmp_path)
    cp.add_step(name="big")(lambda s, d: s.update(payload=bytes(5000)))
    cp.add_step(name="small")(lambda s, d: None)
    cp.run({})
    text = str(cp.status())
    header, big, small = text.splitlines()[1:4]
    assert header.split() == ["#", "step", "status", "last", "took", "written"]
    assert big.split()[:3] == ["0", "big", "done"] and big.endswith(" kB")
    assert float(big.split()[-2]) >= 5.0
    # a step that changed nothing wrote only its commit record
    assert small.split()[-1] == "kB" and float(small.split()[-2]) < 5.0


# -- locations ----------------------------------------------------------------------------------


def test_a_location_that_is_a_pickle_file_is_refused_saying_what_it_is(tmp_path):
    state_file = tmp_path / "state.pkl"  # what gumly's handler or ai2-kit's checkpoint file is
    state_file.write_bytes(pickle.dumps({"checkpoint_index": 2}))
    with pytest.raises(ValueError) as info:
        CheckpointFlow(state_file)
    message = str(info.value)
    assert str(state_file) in message and "is an existing file" in message
    assert "pickle" in message and "state.pkl.checkpoints" in message
    with pytest.raises(ValueError, match=r"run is inside .*state.pkl, an existing file"):
        CheckpointFlow(state_file / "run")
    plain = tmp_path / "notes.txt"
    plain.write_text("hello")
    with pytest.raises(ValueError, match=r"notes.txt is an existing file \(5 bytes\), not a dir"):
        CheckpointFlow(plain)
    assert state_file.read_bytes() == pickle.dumps({"checkpoint_index": 2})  # left alone


def _unwritable_location(tmp_path: Path) -> Path:
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(0o555)
    if not os.access(directory, os.W_OK):
        return directory
    # Permissions do not stop root; sysfs refuses even root.
    candidate = Path("/sys/checkpoint-flow-test")
    try:
        candidate.mkdir()
    except OSError:
        return candidate
    candidate.rmdir()
    pytest.skip("no location this user cannot write to")


def test_a_read_only_location_is_a_write_error_naming_it(tmp_path):
    location = _unwritable_location(tmp_path)
    cp, calls = two_steps(location)
    try:
        with pytest.raises(CheckpointWriteError) as info:
            cp.run({})
    finally:
        (tmp_path / "read-only").chmod(0o755)
    assert f"could not write the run lock to {location}" in str(info.value)
    assert (info.value.location, info.value.what) == (str(location), "the run lock")
    assert "writable" in str(info.value)
    assert calls == []


# -- S3, through the Python API -----------------------------------------------------------------


def test_s3_without_credentials_is_a_library_error_naming_the_remedy(s3, monkeypatch):
    _fs, bucket, options = s3
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
                 "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    anonymous = {k: v for k, v in options.items() if k not in ("key", "secret")}
    location = f"s3://{bucket}/run"
    calls: list[str] = []
    cp = CheckpointFlow(location, storage_options=anonymous)
    cp.add_step(name="a")(lambda s, d: calls.append("a"))
    with pytest.raises(CheckpointWriteError) as info:
        cp.run({})
    message = str(info.value)
    assert location in message and "refused access" in message
    assert "storage_options" in message and "AWS_ACCESS_KEY_ID" in message
    assert calls == []


def test_s3_with_a_missing_bucket_says_to_create_it(s3):
    _fs, bucket, options = s3
    location = f"s3://{bucket}-missing/run"
    cp = CheckpointFlow(location, storage_options=options)
    cp.add_step(name="a")(lambda s, d: None)
    with pytest.raises(CheckpointWriteError) as info:
        cp.run({})
    message = str(info.value)
    assert f"the bucket '{bucket}-missing' of {location} does not exist" in message
    assert "Create it first" in message


def test_the_s3_extra_is_suggested_only_for_s3_urls(monkeypatch):
    import fsspec

    def missing(url: str, **kwargs: Any) -> Any:
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec.core, "url_to_fs", missing)
    with pytest.raises(ValueError, match=r"install the 's3' extra"):
        CheckpointFlow("s3://bucket/run")
    monkeypatch.undo()
    with pytest.raises(ValueError) as info:
        CheckpointFlow("nosuchprotocol://bucket/run")
    assert "s3" not in str(info.value)
