"""CheckpointManager for every loop, in one process: step-based loops, several managers in one
folder, selectors, per-checkpoint info, strict metrics, read-your-writes with background saves,
real latest/best files, export, and what a crash between a file and its record leaves."""

from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpoint_flow import CheckpointLockedError, CheckpointManager
from checkpoint_flow.cli import main as cli_main
from checkpoint_flow.errors import CheckpointNotFoundError, CheckpointWriteError
from checkpoint_flow.storage.codec import Signer
from checkpoint_flow.storage.handlers import LocalHandler, resolve_handler
from checkpoint_flow.storage.store import Store
from checkpoint_flow.training import checkpoint_file, keep_best, keep_last, maintenance, selectors
from checkpoint_flow.training.storage import TrainingStorage
from checkpoint_flow.training.triggers import Boundary, every_n_steps, min_interval
from tests.support.models import Model, files

FIXTURE_V0_1 = Path(__file__).with_name("data") / "training_v0_1"




def ckpt_files(path: Path) -> list[str]:
    return [f for f in files(path) if f.endswith(".ckpt")]


# ------------------------------------------------------------------ step-based loops


def test_step_loop_keeps_one_file_per_save(tmp_path: Path) -> None:
    """The reported bug: five save(step=...) calls without an epoch left one file."""
    with CheckpointManager(tmp_path, async_save=False) as ckpt:
        model = Model()
        for step in range(100, 600, 100):
            model.w += 1
            ckpt.save(step=step, metrics={"loss": 1.0 / step}, model=model)
        assert [c.step for c in ckpt.checkpoints()] == [100, 200, 300, 400, 500]
        assert [c.epoch for c in ckpt.checkpoints()] == [None] * 5
    assert ckpt_files(tmp_path) == [
        *(f"checkpoint_step_{s:08d}.ckpt" for s in range(100, 600, 100)),
        "latest.ckpt",
    ]
    reader = CheckpointManager(tmp_path, read_only=True)
    assert reader.load(step=300).state("model")["w"][0] == 3.0
    assert reader.load("latest").metrics == {"loss": 1.0 / 500}


def test_step_metrics_are_recorded_and_keep_best_ranks_them(tmp_path: Path) -> None:
    """on_step_end metrics go into the checkpoint; keep_best_k keeps the second best too."""
    ckpt = CheckpointManager(
        tmp_path, every_n_steps=1, monitor="score", mode="max", keep_last_n=1, keep_best_k=2,
        save_best=False,
    )
    model = Model()
    scores = [3.0, 9.0, 1.0, 7.0, 2.0, 0.5]
    for step, score in enumerate(scores, start=1):
        model.w[:] = step
        ckpt.on_step_end(step, metrics={"score": score}, model=model)
    kept = {c.step: dict(c.metrics) for c in ckpt.checkpoints()}
    assert kept == {2: {"score": 9.0}, 4: {"score": 7.0}, 6: {"score": 0.5}}
    assert ckpt.load("best").step == 2
    assert ckpt.load("best:2").step == 4
    assert ckpt.load("best:3").step == 6
    with pytest.raises(CheckpointNotFoundError, match=r"'best:4'.*3 hold 'score'.*step 6"):
        ckpt.load("best:4")
    ckpt.close()


def test_every_n_steps_counts_reported_steps_not_step_numbers(tmp_path: Path) -> None:
    """A global step growing by a batch size of 64 is still saved every 3 iterations."""
    ckpt = CheckpointManager(tmp_path, every_n_steps=3, async_save=False)
    for iteration in range(1, 11):
        ckpt.on_step_end(iteration * 64, model=Model())
    assert [c.step for c in ckpt.checkpoints() if c.role == "rolling"] == [192, 384, 576]
    ckpt.close()
    # The count is part of the checkpoint: a resumed run saves at the same iterations.
    resumed = CheckpointManager(tmp_path, every_n_steps=3, async_save=False)
    resumed.restore(step=384)
    for iteration in range(7, 11):
        resumed.on_step_end(iteration * 64, model=Model())
    assert [c.step for c in resumed.checkpoints() if c.role == "rolling"] == [192, 384, 576]
    assert resumed.load("latest").header["steps_reported"] == 9
    resumed.close()


def test_min_interval_throttles_step_saves_and_alone_saves_step_loops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [0.0]
    monkeypatch.setattr("checkpoint_flow.training.manager.monotonic", lambda: clock[0])
    ckpt = CheckpointManager(tmp_path / "a", every_n_steps=2, min_interval_s=10, async_save=False)
    for step in range(1, 13):
        clock[0] = step * 3.0  # three seconds per step
        ckpt.on_step_end(step, model=Model())
    # Every second step, but at least 10 s apart: 2 (6 s), 6 (18 s), 10 (30 s).
    assert [c.step for c in ckpt.checkpoints() if c.role == "rolling"] == [2, 6, 10]
    ckpt.close()
    # min_interval_s alone, in a loop without epochs: at the first step end once it has passed.
    alone = CheckpointManager(tmp_path / "b", every_n_epochs=None, min_interval_s=10,
                              async_save=False)
    for step in range(1, 13):
        clock[0] = 100 + step * 3.0
        alone.on_step_end(step, model=Model())
    assert [c.step for c in alone.checkpoints() if c.role == "rolling"] == [1, 5, 9]
    alone.close()


def test_trigger_and_retention_objects_work_for_step_loops() -> None:
    assert every_n_steps(2)(Boundary("step", None, 640, steps_reported=10))
    assert not every_n_steps(2)(Boundary("step", None, 640, steps_reported=9))
    assert min_interval(5)(Boundary("step", None, 3, now=10.0, last_save=5.0))
    from checkpoint_flow.training import CheckpointInfo

    infos = [
        CheckpointInfo(f"s{s}", None, s, metrics={"score": float(v)})
        for s, v in [(10, 1), (20, 5), (30, 3), (40, 4)]
    ]
    assert keep_last(2)(infos) == {"s30", "s40"}
    assert keep_best(2, "score", "max")(infos) == {"s20", "s40"}


def test_filename_pattern_names_rolling_files(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, filename="iter-{step:06d}", every_n_steps=5,
                           async_save=False) as ckpt:
        for step in range(1, 11):
            ckpt.on_step_end(step, model=Model())
    assert ckpt_files(tmp_path) == ["iter-000005.ckpt", "iter-000010.ckpt", "latest.ckpt"]
    with pytest.raises(ValueError, match=r"'run' must use \{epoch\} or \{step\}"):
        CheckpointManager(tmp_path / "x", filename="run")
    with pytest.raises(ValueError, match="gives 'a.b"):
        CheckpointManager(tmp_path / "x", filename="a.b{step}")
    with pytest.raises(ValueError, match="'{loss}"):
        CheckpointManager(tmp_path / "x", filename="{loss}")
    needs_epoch = CheckpointManager(tmp_path / "y", filename="e{epoch}", async_save=False)
    with pytest.raises(ValueError, match="needs an epoch"):
        needs_epoch.save(step=3)
    needs_epoch.close()


# ------------------------------------------------------------------ selectors


def test_selectors_find_every_kept_checkpoint(tmp_path: Path) -> None:
    ckpt = CheckpointManager(
        tmp_path, every_n_epochs=1, monitor="val_loss", keep_last_n=2, keep_best_k=3,
        save_best=False,
    )
    losses = [0.9, 0.3, 0.5, 0.1, 0.8, 0.7, 0.6]
    model = Model()
    for epoch, loss in enumerate(losses, start=1):
        model.w[:] = epoch
        ckpt.on_epoch_end(epoch, {"val_loss": loss}, step=epoch * 10, model=model)
    ckpt.wait()
    assert [c.epoch for c in ckpt.checkpoints()] == [2, 3, 4, 6, 7]
    assert [ckpt.load(f"best:{k}").epoch for k in (1, 2, 3)] == [4, 2, 3]
    assert ckpt.load("best").epoch == 4
    assert [ckpt.load(-k).epoch for k in (1, 2)] == [7, 6]
    assert ckpt.load("-2").epoch == 6
    assert ckpt.load(epoch=3).step == 30
    assert ckpt.load(step=20).epoch == 2
    assert ckpt.load(epoch=6, step=60).epoch == 6
    assert ckpt.load("step=70").epoch == 7
    assert ckpt.load(3).epoch == 3  # a plain int is an epoch, as in 0.1
    assert ckpt.load("checkpoint_epoch_0004.ckpt").metrics == {"val_loss": 0.1}
    with pytest.raises(ValueError, match=r"unknown checkpoint selector 'newest'.*best:k.*-k"):
        ckpt.load("newest")
    with pytest.raises(CheckpointNotFoundError, match=r"'epoch=5'.*available: .*epoch 7"):
        ckpt.load(epoch=5)
    with pytest.raises(CheckpointNotFoundError, match="only 5 saved"):
        ckpt.load(-6)
    with pytest.raises(ValueError, match="either a selector"):
        ckpt.load("best", step=3)
    ckpt.close()


def test_best_needs_a_metric_to_rank_by(tmp_path: Path) -> None:
    ckpt = CheckpointManager(tmp_path, async_save=False)
    ckpt.save(epoch=1, metrics={"acc": 0.5})
    with pytest.raises(ValueError, match="needs a metric to rank by; pass monitor="):
        ckpt.load("best:2")
    ckpt.close()


# ------------------------------------------------------------------ info and metrics


def test_info_is_stored_with_one_checkpoint_and_listed(tmp_path: Path) -> None:
    ckpt = CheckpointManager(tmp_path, async_save=False)
    ckpt.save(epoch=1, info={"note": "warm-up done", "config": {"lr": 0.1}}, model=Model())
    ckpt.save(epoch=2, model=Model())
    assert [dict(c.info) for c in ckpt.checkpoints()] == [
        {"note": "warm-up done", "config": {"lr": 0.1}},
        {},
    ]
    assert ckpt.load(1).info == {"note": "warm-up done", "config": {"lr": 0.1}}
    assert ckpt.restore(1).info["note"] == "warm-up done"
    with pytest.raises(TypeError, match="info must be JSON-serializable"):
        ckpt.save(epoch=3, info={"model": Model()})
    ckpt.close()


@pytest.mark.parametrize(
    "value, shown",
    [(True, "bool: True"), ("0.9", "str: '0.9'"), (np.bool_(False), "False"), (1 + 2j, "complex")],
)
def test_metrics_refuse_what_is_not_a_real_number(tmp_path: Path, value: Any, shown: str) -> None:
    ckpt = CheckpointManager(tmp_path, async_save=False)
    with pytest.raises(TypeError, match=rf"metric 'acc' must be a real number.*{shown}.*info="):
        ckpt.save(epoch=1, metrics={"acc": value})
    with pytest.raises(TypeError, match="metric 'acc' must be a real number"):
        ckpt.on_step_end(1, metrics={"acc": value})
    assert ckpt.checkpoints() == []
    ckpt.close()


def test_metrics_accept_numpy_and_torch_scalars(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    ckpt = CheckpointManager(tmp_path, async_save=False)
    ckpt.save(epoch=1, metrics={"a": np.float32(0.5), "b": np.int64(3), "c": torch.tensor(0.25)})
    assert dict(ckpt.checkpoints()[0].metrics) == {"a": 0.5, "b": 3.0, "c": 0.25}
    ckpt.close()


# ------------------------------------------------------------------ read your writes


class HeldHandler(LocalHandler):
    """Holds checkpoint file writes until released, as a slow disk would."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.release = threading.Event()

    def write(self, name: str, data: Any) -> None:
        if name.endswith(".ckpt"):
            assert self.release.wait(30), "write never released"
        super().write(name, data)


def test_async_save_is_visible_to_reads_in_the_same_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README example: save() then load("latest") with async_save=True."""
    handler = HeldHandler(tmp_path)
    ckpt = CheckpointManager(handler, async_save=True)
    model = Model(1.0)
    first = ckpt.save(epoch=1, model=model)
    assert not first.done()
    threading.Timer(0.2, handler.release.set).start()
    assert ckpt.load("latest").epoch == 1  # waits for the write in flight
    handler.release.clear()
    second = ckpt.save(epoch=2, model=Model(2.0))
    threading.Timer(0.2, handler.release.set).start()
    assert ckpt.latest == "checkpoint_epoch_0002.ckpt"
    assert second.done()
    handler.release.clear()
    ckpt.save(epoch=3, model=Model(3.0))
    threading.Timer(0.2, handler.release.set).start()
    assert [c.epoch for c in ckpt.checkpoints()] == [1, 2, 3]
    handler.release.clear()
    ckpt.save(epoch=4, model=Model(4.0))
    threading.Timer(0.2, handler.release.set).start()
    target = Model()
    assert ckpt.restore(model=target).epoch == 4
    assert target.w[0] == 4.0
    handler.release.clear()
    ckpt.save(epoch=5, model=Model(5.0))
    threading.Timer(0.2, handler.release.set).start()
    assert cli_main(["ls", str(tmp_path), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["managers"][0]["latest"] == "checkpoint_epoch_0005.ckpt"
    ckpt.close()


def test_a_failed_background_save_is_raised_by_the_next_read(tmp_path: Path) -> None:
    class Failing(LocalHandler):
        fail = False

        def write(self, name: str, data: Any) -> None:
            if self.fail and name.endswith(".ckpt"):
                raise OSError("disk full")
            super().write(name, data)

    handler = Failing(tmp_path)
    ckpt = CheckpointManager(handler, async_save=True)
    ckpt.save(epoch=1, model=Model())
    handler.fail = True
    ckpt.save(epoch=2, model=Model())
    with pytest.raises(CheckpointWriteError, match="checkpoint_epoch_0002.ckpt.*disk full"):
        ckpt.load("latest")
    assert ckpt.load("latest").epoch == 1
    ckpt.close()


# ------------------------------------------------------------------ several managers


def test_managers_with_names_share_a_folder(tmp_path: Path) -> None:
    learner = CheckpointManager(tmp_path, name="learner", every_n_steps=1, keep_last_n=2,
                                monitor="score", mode="max", async_save=False)
    evaluator = CheckpointManager(tmp_path, name="evaluator", every_n_steps=2, keep_last_n=1,
                                  async_save=False)
    for step in range(1, 7):
        learner.on_step_end(step, metrics={"score": float(step % 4)}, model=Model(step))
        evaluator.on_step_end(step, model=Model(-step))
    assert sorted(c.file for c in learner.checkpoints()) == [
        "learner.best_model_score.ckpt",
        "learner.checkpoint_step_00000003.ckpt",
        "learner.checkpoint_step_00000005.ckpt",
        "learner.checkpoint_step_00000006.ckpt",
    ]
    assert [c.file for c in evaluator.checkpoints()] == ["evaluator.checkpoint_step_00000006.ckpt"]
    assert learner.load("best").step == 3 and learner.load("latest").step == 6
    assert evaluator.load("latest").state("model")["w"][0] == -6
    assert {f.split(".")[0] for f in os.listdir(tmp_path / "index")} == {"learner", "evaluator"}

    with pytest.raises(CheckpointLockedError, match="manager named 'learner'.*close"):
        CheckpointManager(tmp_path, name="learner")
    assert CheckpointManager(tmp_path, name="learner", read_only=True).load(-2).step == 5
    with pytest.raises(RuntimeError, match="read_only=True"):
        CheckpointManager(tmp_path, name="learner", read_only=True).save(step=9)
    learner.close()
    again = CheckpointManager(tmp_path, name="learner")  # close() released the lock
    assert again.latest == "learner.checkpoint_step_00000006.ckpt"
    again.close()
    evaluator.close()
    with pytest.raises(ValueError, match="invalid manager name 'a.b'"):
        CheckpointManager(tmp_path, name="a.b")


def test_unnamed_and_named_managers_do_not_see_each_other(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, async_save=False) as plain:
        plain.save(step=1, model=Model())
    with CheckpointManager(tmp_path, name="teacher", async_save=False) as teacher:
        assert teacher.latest is None
        teacher.save(step=2, model=Model())
    assert CheckpointManager(tmp_path, read_only=True).latest == "checkpoint_step_00000001.ckpt"


# ------------------------------------------------------------------ real files


def test_latest_and_best_are_checkpoint_files_other_tools_can_open(tmp_path: Path) -> None:
    ckpt = CheckpointManager(tmp_path, monitor="val_loss", async_save=False)
    for epoch, loss in enumerate([0.5, 0.2, 0.4], start=1):
        ckpt.on_epoch_end(epoch, {"val_loss": loss}, model=Model(epoch))
    ckpt.close()
    assert os.path.samefile(tmp_path / "latest.ckpt", tmp_path / "checkpoint_epoch_0003.ckpt")
    assert os.path.samefile(
        tmp_path / "best_model_val_loss.ckpt", tmp_path / "checkpoint_epoch_0002.ckpt"
    )
    # A copy holds a whole, verifiable checkpoint: moved elsewhere it still loads.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(tmp_path / "latest.ckpt", elsewhere / "latest.ckpt")
    data = (elsewhere / "latest.ckpt").read_bytes()
    opened = checkpoint_file.open_file(data, Signer(None), "copy")
    assert opened.header["epoch"] == 3
    assert opened.decode()["objects"]["model"][1]["w"][0] == 3.0


def test_handlers_without_link_get_copies(tmp_path: Path) -> None:
    class Plain:
        """A user handler with the required methods only."""

        def __init__(self, root: Path) -> None:
            self.inner = LocalHandler(root)
            self.location = self.inner.location

        def read(self, name: str) -> Any:
            return self.inner.read(name)

        def write(self, name: str, data: Any) -> None:
            self.inner.write(name, data)

        def create(self, name: str, data: bytes) -> bool:
            return self.inner.create(name, data)

        def exists(self, name: str) -> bool:
            return self.inner.exists(name)

        def delete(self, name: str) -> None:
            self.inner.delete(name)

        def list(self, prefix: str) -> list[str]:
            return self.inner.list(prefix)

    ckpt = CheckpointManager(Plain(tmp_path), async_save=False)
    ckpt.save(epoch=1, model=Model(1.0))
    ckpt.close()
    latest, original = tmp_path / "latest.ckpt", tmp_path / "checkpoint_epoch_0001.ckpt"
    assert not os.path.samefile(latest, original)
    assert latest.read_bytes() == original.read_bytes()


def test_export_writes_torch_and_safetensors_files(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    ckpt = CheckpointManager(tmp_path / "ck", async_save=False)
    ckpt.save(step=7, model=net, optimizer=opt, numpy_model=Model(2.0))
    exported = ckpt.export("latest", tmp_path / "all.pt")
    everything = torch.load(exported)  # weights_only=True by default
    assert set(everything) == {"model", "optimizer", "numpy_model"}
    assert torch.equal(everything["model"]["weight"], net.weight.detach())
    assert torch.equal(everything["numpy_model"]["w"], torch.full((4,), 2.0, dtype=torch.float64))

    ckpt.export("step=7", tmp_path / "model.pt", objects="model")
    fresh = torch.nn.Linear(3, 2)
    fresh.load_state_dict(torch.load(tmp_path / "model.pt"))
    assert torch.equal(fresh.weight, net.weight)

    ckpt.export("latest", tmp_path / "model.safetensors", format="safetensors", objects="model")
    tensors = safetensors_torch.load_file(tmp_path / "model.safetensors")
    assert set(tensors) == {"weight", "bias"} and torch.equal(tensors["bias"], net.bias.detach())
    ckpt.export("latest", tmp_path / "all.safetensors", format="safetensors")
    names = set(safetensors_torch.load_file(tmp_path / "all.safetensors"))
    assert {"model.weight", "numpy_model.w", "optimizer.state.0.momentum_buffer"} <= names
    with pytest.raises(ValueError, match="'onnx'.*'torch', 'safetensors'"):
        ckpt.export("latest", tmp_path / "x", format="onnx")
    with pytest.raises(ValueError, match="no object 'nope'"):
        ckpt.export("latest", tmp_path / "x", objects=["nope"])
    ckpt.close()


# ------------------------------------------------------------------ crashes and retention


class CrashingHandler(LocalHandler):
    """Fails the n-th write of a record or copy, as a crash at that point would leave things."""

    def __init__(self, root: Path, fail_on: str, nth: int) -> None:
        super().__init__(root)
        self.fail_on, self.left = fail_on, nth

    def _maybe_fail(self, name: str) -> None:
        if self.fail_on in name:
            self.left -= 1
            if self.left == 0:
                raise OSError(f"crash before {name}")

    def write(self, name: str, data: Any) -> None:
        self._maybe_fail(name)
        super().write(name, data)

    def link(self, source: str, target: str) -> None:
        self._maybe_fail(target)
        super().link(source, target)


def test_crash_between_file_and_record_leaves_latest_on_the_last_commit(tmp_path: Path) -> None:
    ckpt = CheckpointManager(
        CrashingHandler(tmp_path, "index/", 3), keep=lambda checkpoints: [], async_save=False
    )
    ckpt.save(step=1, model=Model(1.0))
    ckpt.save(step=2, model=Model(2.0))
    with pytest.raises(CheckpointWriteError, match="checkpoint_step_00000003.ckpt"):
        ckpt.save(step=3, model=Model(3.0))
    ckpt.close()
    # The file of step 3 is complete, but never committed: nothing names it.
    assert (tmp_path / "checkpoint_step_00000003.ckpt").exists()
    reopened = CheckpointManager(tmp_path, keep=lambda checkpoints: [])
    assert reopened.latest == "checkpoint_step_00000002.ckpt"
    assert [c.step for c in reopened.checkpoints()] == [2]  # retention kept the newest
    assert reopened.load("latest").state("model")["w"][0] == 2.0
    reopened.close()
    assert cli_main(["verify", str(tmp_path)]) == 0
    assert cli_main(["gc", str(tmp_path)]) == 0
    assert not (tmp_path / "checkpoint_step_00000003.ckpt").exists()
    assert ckpt_files(tmp_path) == ["checkpoint_step_00000002.ckpt", "latest.ckpt"]


def test_crash_before_the_latest_copy_is_refreshed(tmp_path: Path) -> None:
    ckpt = CheckpointManager(CrashingHandler(tmp_path, "latest.ckpt", 2), async_save=False)
    ckpt.save(step=1, model=Model(1.0))
    saved = "copies and retention after checkpoint .*itself is saved"
    with pytest.raises(CheckpointWriteError, match=saved):
        ckpt.save(step=2, model=Model(2.0))
    assert ckpt.latest == "checkpoint_step_00000002.ckpt"  # committed, so it is the latest
    assert ckpt.load("latest").step == 2
    ckpt.close()
    data = (tmp_path / "latest.ckpt").read_bytes()
    stale = checkpoint_file.header_of(data, Signer(None), "latest")
    assert stale["step"] == 1
    assert cli_main(["gc", str(tmp_path)]) == 0
    assert os.path.samefile(tmp_path / "latest.ckpt", tmp_path / "checkpoint_step_00000002.ckpt")


def test_retention_never_deletes_the_newest_checkpoint(tmp_path: Path) -> None:
    ckpt = CheckpointManager(tmp_path, keep=lambda checkpoints: [], every_n_steps=1,
                             async_save=False)
    for step in range(1, 5):
        ckpt.on_step_end(step, model=Model(step))
        assert [c.step for c in ckpt.checkpoints()] == [step]
        assert ckpt.load("latest").step == step
    ckpt.close()


# ------------------------------------------------------------------ earlier versions


def test_a_location_written_by_0_1_is_read_and_continued(tmp_path: Path) -> None:
    location = tmp_path / "run"
    shutil.copytree(FIXTURE_V0_1, location)
    ckpt = CheckpointManager(location, monitor="val_loss", keep_last_n=2)
    assert ckpt.latest == "checkpoint_epoch_0003.ckpt"
    assert ckpt.load("best").epoch == 2
    assert ckpt.load("best").state("model")["w"][0] == 4.0
    model = Model()
    restored = ckpt.restore(model=model)
    assert (restored.epoch, model.w[0], restored.metadata) == (3, 6.0, {"lr": 0.1})
    assert ckpt.best == 0.2
    ckpt.on_epoch_end(4, {"val_loss": 0.3}, step=8, model=model)
    ckpt.close()
    assert ckpt_files(location) == [
        "best_model_val_loss.ckpt",
        "checkpoint_epoch_0002.ckpt",  # the best copy's original is kept
        "checkpoint_epoch_0003.ckpt",
        "checkpoint_epoch_0004.ckpt",
        "latest.ckpt",
    ]
    assert checkpoint_file.is_checkpoint((location / "latest.ckpt").read_bytes())
    assert cli_main(["verify", str(location)]) == 0


# ------------------------------------------------------------------ object storage


def test_step_loop_with_names_on_s3(s3: Any) -> None:
    fs, bucket, options = s3
    url = f"s3://{bucket}/runs/rl"
    learner = CheckpointManager(url, name="learner", storage_options=options, every_n_steps=2,
                                keep_last_n=1, monitor="score", mode="max")
    for step in range(1, 7):
        learner.on_step_end(step * 10, metrics={"score": float(step % 3)}, model=Model(step))
    learner.close()
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{bucket}/runs/rl"))
    assert [n for n in names if not n.endswith(".json")] == [
        "learner.best_model_score.ckpt",
        "learner.checkpoint_step_00000020.ckpt",
        "learner.checkpoint_step_00000060.ckpt",
        "learner.latest.ckpt",
    ]
    reader = CheckpointManager(url, name="learner", storage_options=options, read_only=True)
    assert reader.load("latest").step == 60
    assert reader.load("best").state("model")["w"][0] == 2.0
    other = CheckpointManager(url, name="learner", storage_options=options)
    with pytest.raises(CheckpointLockedError):
        CheckpointManager(url, name="learner", storage_options=options)
    other.close()
    # An uncommitted file (a save cut off before its record) is found and collected.
    orphan = f"{bucket}/runs/rl/learner.checkpoint_step_00000070.ckpt"
    fs.pipe(orphan, fs.cat(f"{bucket}/runs/rl/learner.checkpoint_step_00000060.ckpt"))
    storage = TrainingStorage(Store(resolve_handler(url, storage_options=options), Signer(None)))
    assert any("00000070" in note for note in maintenance.verify(storage).notes)
    assert maintenance.collect(storage).done == [
        "deleted learner.checkpoint_step_00000070.ckpt, a save that never committed"
    ]
    assert not fs.exists(orphan)


# ------------------------------------------------------------------ small parts


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(
        st.just("latest"),
        st.just("best"),
        st.integers(1, 10**6).map(lambda k: f"best:{k}"),
        st.integers(-(10**6), 10**6),
        st.builds(lambda e, s: f"epoch={e},step={s}", st.integers(0, 10**6), st.integers(0, 10**6)),
        st.from_regex(r"[A-Za-z0-9_-]{1,20}(\.[A-Za-z0-9_-]{1,20})?\.ckpt", fullmatch=True),
    )
)
def test_selectors_print_as_they_parse(selector: str | int) -> None:
    parsed = selectors.parse(selector)
    again = selectors.parse(str(parsed))
    if parsed.kind == "progress" and isinstance(selector, int):
        assert again == parsed  # a plain int is an epoch
    else:
        assert again == parsed


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(st.text(max_size=12), st.floats(), st.booleans(), st.none(), st.lists(st.integers()))
)
def test_bad_selectors_are_refused_with_the_valid_forms(selector: Any) -> None:
    try:
        selectors.parse(selector)
    except (TypeError, ValueError) as exc:
        assert "'latest', 'best', 'best:k'" in str(exc)


def test_min_interval_accepts_a_timedelta() -> None:
    assert min_interval(timedelta(minutes=2)).seconds == 120.0
    with pytest.raises(ValueError, match="finite number of seconds"):
        min_interval(float("inf"))


def test_the_control_endpoint_lists_info_and_step_checkpoints(tmp_path: Path) -> None:
    ckpt = CheckpointManager(tmp_path, every_n_steps=2, async_save=False)
    ckpt.save(step=1, info={"note": "first"}, model=Model())
    ckpt.on_step_end(1, model=Model())  # every_n_steps counts the steps reported to hooks
    ckpt.on_step_end(2, metrics={"loss": 0.5}, model=Model())
    with ckpt.serve(port=0) as server, urllib.request.urlopen(
        server.url + "/checkpoints", timeout=30
    ) as reply:
        listing = json.loads(reply.read())
    assert [(c["step"], c["epoch"], c["info"], c["metrics"], c["latest"]) for c in listing] == [
        (1, None, {"note": "first"}, {}, False),
        (2, None, {}, {"loss": 0.5}, True),
    ]
    ckpt.close()


def test_a_read_only_manager_sees_saves_made_after_it_opened(tmp_path: Path) -> None:
    handler = HeldHandler(tmp_path)
    writer = CheckpointManager(handler, name="learner", async_save=True)
    reader = CheckpointManager(tmp_path, name="learner", read_only=True)
    assert reader.latest is None
    writer.save(step=1, model=Model(1.0))
    threading.Timer(0.2, handler.release.set).start()
    assert reader.latest == "learner.checkpoint_step_00000001.ckpt"  # waited for the write
    writer.save(step=2, model=Model(2.0))
    assert reader.load("latest").state("model")["w"][0] == 2.0
    assert [c.step for c in reader.checkpoints()] == [1, 2]
    writer.close()


def test_the_readme_example_works_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    monkeypatch.chdir(tmp_path)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)

    ckpt = CheckpointManager("checkpoints/run1", every_n_epochs=1, monitor="val_loss", mode="min",
                             keep_last_n=3, keep_best_k=2, async_save=True)
    ckpt.save(model=model, optimizer=opt, scheduler=sched, epoch=10, step=1234,
              metrics={"val_loss": 0.5}, info={"note": "after warm-up"})
    state = ckpt.load("latest")
    assert (state.epoch, state.step, state.info) == (10, 1234, {"note": "after warm-up"})
    epoch, step, metrics = ckpt.restore(model=model, optimizer=opt, scheduler=sched)
    assert (epoch, step, metrics) == (10, 1234, {"val_loss": 0.5})
    ckpt.export("best", "model.safetensors", format="safetensors", objects="model")
    assert (tmp_path / "model.safetensors").exists()
    ckpt.close()


def test_compressed_checkpoints_round_trip_and_stale_temps_are_collected(tmp_path: Path) -> None:
    import os
    import time

    from checkpoint_flow.training import maintenance

    text = "a line of a training log that repeats\n" * 20_000
    plain = CheckpointManager(tmp_path / "plain")
    packed = CheckpointManager(tmp_path / "packed", compress="zstd")
    for manager in (plain, packed):
        manager.save(epoch=1, log=text)
        manager.close()
    size = {p.parent.name: p.stat().st_size for p in tmp_path.glob("*/checkpoint_epoch_*.ckpt")}
    assert size["packed"] < size["plain"] // 20
    reopened = CheckpointManager(tmp_path / "packed", read_only=True)
    assert reopened.load("latest").state("log") == text

    stale = tmp_path / "packed" / ".checkpoint_epoch_0002.ckpt.tmp-0123"
    stale.write_bytes(b"half a save")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    storage = TrainingStorage(Store(resolve_handler(str(tmp_path / "packed")), Signer(None)))
    report = maintenance.collect(storage)
    assert "deleted 1 temp file(s) of writes that never finished" in report.done
    assert not stale.exists()
