"""Errors are part of the API: each kind is the builtin a caller would catch too, owns its
fields, and crosses process boundaries (pickle, as executors and Dask send them) intact."""

from __future__ import annotations

import concurrent.futures
import pickle

import pytest

import checkpoint_flow as cf
from checkpoint_flow import errors

EXAMPLES = [
    errors.CheckpointFlowError("something"),
    errors.CheckpointCorruptError("record 3 at /tmp/run", "is damaged", "Run verify."),
    errors.CheckpointSignatureError("record 4 at /tmp/run", "is not signed"),
    errors.CheckpointFormatError("/tmp/run", "1", "2", "Use checkpoint_flow 0.1."),
    errors.CheckpointLockedError(
        "s3://b/run", "pid 12 on host gpu-3", since=1_700_000_000.0,
        expires_at=1_700_000_060.0, remedy="Wait for it to finish.",
    ),
    errors.CheckpointLockedError("/tmp/run", "record deleted", lost=True, remedy="Rerun."),
    errors.CheckpointWriteError("/tmp/run", "record 5", OSError(28, "No space left on device")),
    errors.CheckpointReadError("record 5 at s3://b/run", ConnectionError("unreachable")),
    errors.StepNotFoundError("checkpoint='x'", ["0:a", "1:b"]),
    errors.UnpicklableStateError("state['lock'] (lock)", "cannot pickle '_thread.lock'"),
    errors.CheckpointNotFoundError("/tmp/run", "best", "no metric", "epoch 1, epoch 2"),
    errors.CheckpointExistsError("/tmp/run", "before_lr_drop.ckpt"),
    errors.FanOutError(
        "square", "/tmp/run", {1: ValueError("one"), "b": KeyError("two")}, total=10,
        finished=3, max_failures=2,
    ),
    errors.UndigestableValueError("argument 'f'", "[0]", "an open file", ". Use ignore=."),
]

@pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: type(e).__name__)
def test_every_error_pickles_with_its_message_and_fields(error: Exception) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    own = {k: v for k, v in vars(error).items() if not k.startswith("_")}
    mine = {k: v for k, v in vars(copy).items() if not k.startswith("_")}
    assert set(mine) == set(own)
    for key, value in own.items():
        if isinstance(value, dict):
            assert {k: (type(v), str(v)) for k, v in mine[key].items()} == {
                k: (type(v), str(v)) for k, v in value.items()
            }
        else:
            assert mine[key] == value


def test_every_error_type_is_tested_and_exported() -> None:
    defined = {
        obj for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, errors.CheckpointFlowError)
    }
    assert defined == {type(e) for e in EXAMPLES}
    assert all(getattr(cf, t.__name__) is t for t in defined)


def test_errors_are_the_builtins_a_caller_catches() -> None:
    locked = EXAMPLES[4]
    assert isinstance(locked, TimeoutError)
    assert locked.holder == "pid 12 on host gpu-3" and locked.location == "s3://b/run"
    assert "locked by pid 12 on host gpu-3 since 2023-11-14T22:13:20Z" in str(locked)
    assert str(locked).endswith("Wait for it to finish.")
    assert "lost its run lock on /tmp/run (record deleted)" in str(EXAMPLES[5])
    assert isinstance(_example(errors.StepNotFoundError), ValueError)
    assert isinstance(_example(errors.UnpicklableStateError), TypeError)
    assert isinstance(_example(errors.CheckpointNotFoundError), FileNotFoundError)
    assert isinstance(_example(errors.CheckpointExistsError), FileExistsError)
    assert isinstance(_example(errors.CheckpointSignatureError), errors.CheckpointCorruptError)


def _example(kind: type[Exception]) -> Exception:
    return next(e for e in EXAMPLES if type(e) is kind)


def test_each_error_writes_its_sentence_from_its_fields() -> None:
    write = _example(errors.CheckpointWriteError)
    assert str(write) == (
        "could not write record 5 to /tmp/run: OSError: [Errno 28] No space left on device. "
        "The previous checkpoint is intact; fix the storage problem and rerun."
    )
    assert (write.location, write.what) == ("/tmp/run", "record 5")
    read = _example(errors.CheckpointReadError)
    assert str(read) == (
        "could not read record 5 at s3://b/run: ConnectionError: unreachable. "
        "Nothing was changed; rerun when the storage is reachable."
    )
    step = _example(errors.StepNotFoundError)
    assert str(step) == "checkpoint='x' names no step; steps are: 0:a, 1:b"
    corrupt = _example(errors.CheckpointCorruptError)
    assert str(corrupt) == "record 3 at /tmp/run is damaged. Run verify."
    assert str(_example(errors.CheckpointNotFoundError)) == (
        "no checkpoint 'best' in /tmp/run (no metric); available: epoch 1, epoch 2"
    )
    assert "nothing was saved" in str(_example(errors.CheckpointExistsError))
    fan_out = _example(errors.FanOutError)
    assert str(fan_out) == (
        "map step 'square': 2 of 10 items failed: 1, 'b'. 3 finished items are recorded at "
        "/tmp/run and will not run again; 5 were not started (max_failures=2). First error: "
        "ValueError: one"
    )
    assert (fan_out.not_started, list(fan_out.failures)) == (5, [1, "b"])
    waiting = errors.CheckpointExistsError("/tmp/run", "x.ckpt", waiting=True)
    assert "already waiting" in str(waiting) and waiting.waiting


def _raise_locked() -> None:
    raise errors.CheckpointLockedError(
        "/tmp/run", "pid 7 on host a", expires_at=5.0, remedy="Wait."
    )


def test_an_error_raised_in_a_worker_process_arrives_with_its_fields() -> None:
    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        future = pool.submit(_raise_locked)
        with pytest.raises(errors.CheckpointLockedError) as info:
            future.result()
    assert (info.value.holder, info.value.expires_at) == ("pid 7 on host a", 5.0)
    assert isinstance(info.value, TimeoutError) and str(info.value).endswith("Wait.")


def test_notes_added_on_the_way_cross_with_the_error() -> None:
    error = errors.CheckpointWriteError("/tmp/run", "record 5", "disk full")
    error.add_note("the next run resumes at step 'fit'")
    copy = pickle.loads(pickle.dumps(error))
    assert copy.__notes__ == ["the next run resumes at step 'fit'"]
    assert (copy.location, copy.cause) == ("/tmp/run", "disk full")
