"""CheckpointManager in one process: triggers, retention, integrity, background errors, requests
from other threads and over HTTP, and object storage."""

from __future__ import annotations

import json
import random
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpoint_flow import CheckpointManager
from checkpoint_flow.errors import (
    CheckpointCorruptError,
    CheckpointNotFoundError,
    CheckpointSignatureError,
    CheckpointWriteError,
)
from checkpoint_flow.retention import CheckpointInfo, keep_best, keep_last
from checkpoint_flow.storage.handlers import LocalHandler
from checkpoint_flow.training import checkpoint_file
from checkpoint_flow.triggers import Boundary, every_n_epochs, every_n_steps, min_interval
from tests.support.models import Model, files


def run_epochs(ckpt: CheckpointManager, losses: list[float], model: Model) -> None:
    for epoch, loss in enumerate(losses, start=1):
        model.w += 1
        ckpt.on_epoch_end(epoch, {"val_loss": loss}, model=model)
    ckpt.wait()


# ------------------------------------------------------------------ triggers


def test_triggers_compose_like_tenacity() -> None:
    trig = every_n_epochs(2) | every_n_steps(100)
    assert trig(Boundary("epoch", epoch=4, step=7))
    assert not trig(Boundary("epoch", epoch=3, step=100))
    assert trig(Boundary("step", epoch=3, step=300))
    throttled = every_n_epochs(1) & min_interval(60)
    assert throttled(Boundary("epoch", 1, 0, now=10.0, last_save=None))
    assert not throttled(Boundary("epoch", 2, 0, now=50.0, last_save=10.0))
    assert throttled(Boundary("epoch", 3, 0, now=70.0, last_save=10.0))
    custom = every_n_epochs(5) | (lambda b: b.metrics.get("acc", 0) > 0.9)
    assert custom(Boundary("epoch", 1, 0, metrics={"acc": 0.95}))


def test_custom_trigger_and_min_interval_drive_the_manager(tmp_path: Path) -> None:
    ckpt = CheckpointManager(tmp_path, trigger=lambda b: b.epoch in (2, 3), async_save=False)
    run_epochs(ckpt, [1.0] * 4, Model())
    assert files(tmp_path) == [
        "checkpoint_epoch_0002.ckpt",
        "checkpoint_epoch_0003.ckpt",
        "latest.ckpt",
    ]
    # A large minimum interval: only the first boundary saves.
    other = tmp_path / "throttled"
    ckpt = CheckpointManager(other, every_n_epochs=1, min_interval_s=3600, async_save=False)
    run_epochs(ckpt, [1.0] * 3, Model())
    assert files(other) == ["checkpoint_epoch_0001.ckpt", "latest.ckpt"]


def test_step_trigger_names_files_by_epoch_and_step(tmp_path: Path) -> None:
    ckpt = CheckpointManager(tmp_path, every_n_epochs=None, every_n_steps=3, async_save=False)
    model = Model()
    for step in range(1, 8):
        ckpt.on_step_end(step, epoch=2, model=model)
    assert files(tmp_path) == [
        "checkpoint_epoch_0002_step_00000003.ckpt",
        "checkpoint_epoch_0002_step_00000006.ckpt",
        "latest.ckpt",
    ]


# ------------------------------------------------------------------ retention


def info(epoch: int, loss: float | None) -> CheckpointInfo:
    metrics = {} if loss is None else {"val_loss": loss}
    return CheckpointInfo(f"e{epoch}", epoch=epoch, step=epoch * 10, metrics=metrics)


def test_keep_best_breaks_ties_towards_the_earlier_epoch() -> None:
    cps = [info(1, 0.5), info(2, 0.3), info(3, 0.3), info(4, 0.9), info(5, None)]
    assert keep_best(1, "val_loss", "min")(cps) == {"e2"}
    assert keep_best(2, "val_loss", "min")(cps) == {"e2", "e3"}
    assert keep_best(1, "val_loss", "max")(cps) == {"e4"}
    assert keep_last(2)(cps) == {"e4", "e5"}
    assert (keep_last(1) | keep_best(1, "val_loss"))(cps) == {"e5", "e2"}


def test_keep_last_and_best_on_disk(tmp_path: Path) -> None:
    ckpt = CheckpointManager(
        tmp_path, monitor="val_loss", keep_last_n=2, keep_best_k=1, save_best=False
    )
    run_epochs(ckpt, [0.5, 0.2, 0.4, 0.2, 0.6, 0.7], Model())
    # Best is epoch 2 (epoch 4 ties and loses), plus the last two.
    assert files(tmp_path) == [
        "checkpoint_epoch_0002.ckpt",
        "checkpoint_epoch_0005.ckpt",
        "checkpoint_epoch_0006.ckpt",
        "latest.ckpt",
    ]
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == [
        f"checkpoint_epoch_000{e}.ckpt.json" for e in (2, 5, 6)
    ]


def test_retention_never_deletes_latest_or_current_best(tmp_path: Path) -> None:
    ckpt = CheckpointManager(tmp_path, monitor="val_loss", keep=lambda checkpoints: [])
    run_epochs(ckpt, [0.5, 0.1, 0.4, 0.3], Model())
    assert files(tmp_path) == [
        "best_model_val_loss.ckpt",
        "checkpoint_epoch_0002.ckpt",  # the rolling file holding the current best
        "checkpoint_epoch_0004.ckpt",  # latest
        "latest.ckpt",
    ]
    assert ckpt.load("best").epoch == 2
    assert ckpt.load("latest").epoch == 4


def test_retention_continues_after_a_restart(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, keep_last_n=2) as first:
        run_epochs(first, [1.0] * 3, Model())
    ckpt = CheckpointManager(tmp_path, keep_last_n=2)
    ckpt.restore(model=Model())
    ckpt.on_epoch_end(4, model=Model())
    ckpt.wait()
    assert [c.epoch for c in ckpt.checkpoints()] == [3, 4]


# ------------------------------------------------------------------ save / load / restore


def test_restore_puts_back_objects_counters_metrics_and_rng(tmp_path: Path) -> None:
    gen = np.random.default_rng(3)
    py_rng = random.Random(4)
    model = Model(1.0)
    ckpt = CheckpointManager(tmp_path, monitor="val_loss", metadata={"lr": 0.1})
    ckpt.save(
        model=model, gen=gen, py_rng=py_rng, note="hi", epoch=7, step=70, metrics={"val_loss": 0.25}
    )
    ckpt.close()
    expected = (gen.random(), py_rng.random())

    model2, gen2, py2 = Model(), np.random.default_rng(99), random.Random(99)
    fresh = CheckpointManager(tmp_path, monitor="val_loss")
    restored = fresh.restore(model=model2, gen=gen2, py_rng=py2)
    assert (gen2.random(), py2.random()) == expected
    epoch, step, metrics = restored
    assert (epoch, step, metrics) == (7, 70, {"val_loss": 0.25})
    assert restored.values["note"] == "hi" and restored.metadata == {"lr": 0.1}
    np.testing.assert_array_equal(model2.w, model.w)
    assert fresh.best == 0.25
    assert fresh.history == [{"epoch": 7, "step": 70, "metrics": {"val_loss": 0.25}}]


def test_global_rng_states_are_restored(tmp_path: Path) -> None:
    ckpt = CheckpointManager(tmp_path, async_save=False)
    np.random.seed(5)
    random.seed(6)
    ckpt.save(epoch=1)
    expected = (np.random.random(), random.random())
    np.random.seed(0)
    random.seed(0)
    ckpt.restore()
    assert (np.random.random(), random.random()) == expected


def test_tracked_attributes_are_saved_and_restored_without_listing_them(tmp_path: Path) -> None:
    class Learner:
        def __init__(self) -> None:
            self.model = Model(2.0)
            self.step_count = 41

    learner = Learner()
    ckpt = CheckpointManager(tmp_path, tracked_obj=learner, tracked_attrs=["model", "step_count"])
    ckpt.save(epoch=1)
    ckpt.close()
    other = Learner()
    other.model.w[:] = 0
    other.step_count = 0
    CheckpointManager(tmp_path, tracked_obj=other, tracked_attrs=["model", "step_count"]).restore()
    assert other.step_count == 41
    np.testing.assert_array_equal(other.model.w, np.full(4, 2.0))


def test_load_selectors(tmp_path: Path) -> None:
    ckpt = CheckpointManager(tmp_path, monitor="val_loss")
    run_epochs(ckpt, [0.5, 0.2, 0.4], Model())
    assert ckpt.load("latest").epoch == 3
    assert ckpt.load("best").epoch == 2
    assert ckpt.load(1).epoch == 1
    assert ckpt.load("checkpoint_epoch_0002.ckpt").metrics == {"val_loss": 0.2}
    with pytest.raises(CheckpointNotFoundError, match="checkpoint_epoch_0009.ckpt"):
        ckpt.load(9)
    with pytest.raises(ValueError, match=r"'newest'.*'latest', 'best'"):
        ckpt.load("newest")
    with pytest.raises(TypeError):
        ckpt.load(2.0)  # type: ignore[arg-type]
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint saved"):
        CheckpointManager(tmp_path / "empty").load()


def test_async_save_copies_state_before_training_continues(tmp_path: Path) -> None:
    release = threading.Event()

    class SlowHandler(LocalHandler):
        def write(self, name: str, data: Any) -> None:
            if name.endswith(".ckpt"):  # checkpoint files, not the run lock's record
                release.wait(10)
            super().write(name, data)

    model = Model(1.0)
    ckpt = CheckpointManager(SlowHandler(tmp_path), async_save=True)
    future = ckpt.save(model=model, epoch=1)
    model.w += 100  # training goes on while the write is held back
    assert not future.done()
    release.set()
    assert future.result(10) == "checkpoint_epoch_0001.ckpt"
    np.testing.assert_array_equal(ckpt.load(1).state("model")["w"], np.full(4, 1.0))


def test_background_write_error_surfaces_on_the_next_call(tmp_path: Path) -> None:
    class FailingHandler(LocalHandler):
        fail = False

        def write(self, name: str, data: Any) -> None:
            if self.fail:
                raise OSError("disk full")
            super().write(name, data)

    handler = FailingHandler(tmp_path)
    ckpt = CheckpointManager(handler, async_save=True)
    handler.fail = True
    future = ckpt.save(model=Model(), epoch=1)
    with pytest.raises(CheckpointWriteError, match="disk full"):
        future.result(10)
    with pytest.raises(CheckpointWriteError, match="checkpoint_epoch_0001.ckpt.*disk full"):
        ckpt.on_epoch_end(2, model=Model())
    handler.fail = False
    ckpt.on_epoch_end(2, model=Model())  # reported once, then training goes on
    ckpt.wait()
    assert ckpt.latest == "checkpoint_epoch_0002.ckpt"

    handler.fail = True
    ckpt.save(model=Model(), epoch=3)
    with pytest.raises(CheckpointWriteError):
        ckpt.wait()


def test_bad_arguments_name_the_value_and_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'median'.*'min', 'max'"):
        CheckpointManager(tmp_path, mode="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="-1"):
        CheckpointManager(tmp_path, keep_last_n=-1)
    with pytest.raises(ValueError, match="every_n_epochs.*0"):
        CheckpointManager(tmp_path, every_n_epochs=0)
    with pytest.raises(ValueError, match="monitor"):
        CheckpointManager(tmp_path, keep_best_k=1)
    with pytest.raises(ValueError, match="keep="):
        CheckpointManager(tmp_path, keep="all", keep_last_n=2)
    ckpt = CheckpointManager(tmp_path, monitor="val_loss")
    with pytest.raises(ValueError, match=r"'val_loss' is missing.*acc"):
        ckpt.on_epoch_end(1, {"acc": 0.9})
    with pytest.raises(ValueError, match="'../etc'"):
        ckpt.request_save("../etc")
    with pytest.raises(ValueError, match="'latest'"):
        ckpt.save(name="latest")
    with pytest.raises(TypeError, match="'acc'"):
        ckpt.save(metrics={"val_loss": 1.0, "acc": "high"})


def test_emergency_save_when_training_raises(tmp_path: Path) -> None:
    model = Model()
    with pytest.raises(RuntimeError, match="boom") as raised, CheckpointManager(tmp_path) as ckpt:
        ckpt.track(model=model)
        ckpt.on_epoch_end(1)
        model.w += 5
        ckpt.on_step_end(12)
        raise RuntimeError("boom")
    assert "emergency_epoch_0001_step_00000012.ckpt" in files(tmp_path)
    assert any("emergency" in note for note in getattr(raised.value, "__notes__", ["emergency"]))
    reopened = CheckpointManager(tmp_path)
    assert reopened.latest == "checkpoint_epoch_0001.ckpt"  # latest stays on the clean save
    emergency = reopened.load("emergency_epoch_0001_step_00000012.ckpt")
    np.testing.assert_array_equal(emergency.state("model")["w"], np.full(4, 5.0))


def test_train_end_saves_the_final_state_once(tmp_path: Path) -> None:
    ckpt = CheckpointManager(tmp_path, every_n_epochs=5)
    model = Model()
    for epoch in range(1, 4):
        ckpt.on_epoch_end(epoch, model=model)
    assert ckpt.on_train_end(model=model) is not None
    assert ckpt.on_train_end(model=model) is None
    assert ckpt.latest == "checkpoint_epoch_0003.ckpt"


@settings(max_examples=8, deadline=None)
@given(
    state=st.dictionaries(
        st.text(min_size=1, max_size=5),
        st.one_of(st.integers(), st.floats(allow_nan=False), st.text(), st.lists(st.booleans())),
        max_size=4,
    ),
    epoch=st.integers(0, 10**5),
)
def test_arbitrary_values_round_trip(tmp_path_factory: Any, state: dict, epoch: int) -> None:
    ckpt = CheckpointManager(tmp_path_factory.mktemp("rt"), async_save=False)
    ckpt.save(config=state, array=np.arange(3), epoch=epoch)
    loaded = ckpt.load(epoch)
    assert loaded.state("config") == state and loaded.epoch == epoch


# ------------------------------------------------------------------ integrity


def test_corrupt_file_raises_naming_the_file_and_the_way_out(tmp_path: Path) -> None:
    ckpt = CheckpointManager(tmp_path)
    run_epochs(ckpt, [1.0, 1.0], Model())
    path = tmp_path / "checkpoint_epoch_0002.ckpt"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptError, match=r"checkpoint_epoch_0002\.ckpt.*damaged") as e:
        ckpt.load("latest")
    assert "checkpoint_epoch_0001.ckpt" in str(e.value)
    path.write_bytes(bytes(data[:100]))
    with pytest.raises(CheckpointCorruptError, match="truncated"):
        ckpt.load(2)


def test_signed_and_tampered_file_is_refused_before_unpickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = CheckpointManager(tmp_path, key="secret", async_save=False)
    ckpt.save(model=Model(3.0), epoch=1)
    assert ckpt.load(1).epoch == 1
    path = tmp_path / "checkpoint_epoch_0001.ckpt"
    good = path.read_bytes()

    decoded: list[Any] = []
    real_decode = checkpoint_file.decode
    monkeypatch.setattr(checkpoint_file, "decode", lambda b: decoded.append(b) or real_decode(b))

    tampered = bytearray(good)
    tampered[-20] ^= 0x01  # inside the pickled state
    path.write_bytes(bytes(tampered))
    with pytest.raises(CheckpointSignatureError):
        ckpt.load(1)
    path.write_bytes(good)
    with pytest.raises(CheckpointSignatureError):
        CheckpointManager(tmp_path, key="another key", read_only=True).load(1)
    assert decoded == []
    CheckpointManager(tmp_path / "unsigned", async_save=False).save(epoch=1)
    with pytest.raises(CheckpointSignatureError, match="not signed"):
        CheckpointManager(tmp_path / "unsigned", key="secret", read_only=True).load(1)


# ------------------------------------------------------------------ requests from elsewhere


def test_request_save_from_another_thread(tmp_path: Path) -> None:
    ckpt = CheckpointManager(tmp_path, every_n_epochs=None)
    model = Model()
    futures: list[Any] = []
    requested = threading.Event()

    def web_handler() -> None:
        futures.append(ckpt.request_save("user-asked"))
        futures.append(ckpt.request_save())
        requested.set()

    threading.Thread(target=web_handler).start()
    assert requested.wait(10)
    ckpt.on_step_end(5, epoch=1, model=model)
    assert sorted(f.result(10) for f in futures) == [
        "checkpoint_epoch_0001_step_00000005.ckpt",
        "user-asked.ckpt",
    ]
    ckpt.on_step_end(6, epoch=1, model=model)  # requests are served once
    ckpt.wait()
    assert len(ckpt.checkpoints()) == 2
    assert {c.role for c in ckpt.checkpoints()} == {"named", "rolling"}


def _http(method: str, url: str, body: dict | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_http_control_endpoint_saves_at_the_next_boundary(tmp_path: Path) -> None:
    ckpt = CheckpointManager(tmp_path, every_n_epochs=None)
    model = Model()
    replies: list[tuple[int, Any]] = []
    with ckpt.serve(port=0) as server:
        assert server.url.startswith("http://127.0.0.1:")
        client = threading.Thread(
            target=lambda: replies.append(_http("POST", server.url + "/save", {"name": "probe"}))
        )
        client.start()
        step = 0
        while client.is_alive() and step < 100_000:  # the training loop keeps stepping
            step += 1
            ckpt.on_step_end(step, epoch=1, model=model)
            client.join(0.001)
        assert replies == [(200, {"file": "probe.ckpt"})]
        status, listing = _http("GET", server.url + "/checkpoints")
        assert status == 200
        assert [(c["file"], c["role"], c["latest"]) for c in listing] == [
            ("probe.ckpt", "named", True)
        ]
        assert _http("POST", server.url + "/save", {"name": "bad name!"})[0] == 400
        assert _http("GET", server.url + "/nothing")[0] == 404
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url + "/checkpoints", timeout=5)


# ------------------------------------------------------------------ object storage


def test_save_load_and_retention_on_s3(s3: Any) -> None:
    fs, bucket, options = s3
    url = f"s3://{bucket}/runs/run1"
    ckpt = CheckpointManager(url, storage_options=options, monitor="val_loss", keep_last_n=1)
    run_epochs(ckpt, [0.5, 0.1, 0.4, 0.6], Model())
    ckpt.close()
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{bucket}/runs/run1"))
    assert names == [
        "best_model_val_loss.ckpt",
        "best_model_val_loss.ckpt.json",
        "checkpoint_epoch_0002.ckpt",
        "checkpoint_epoch_0002.ckpt.json",
        "checkpoint_epoch_0004.ckpt",
        "checkpoint_epoch_0004.ckpt.json",
        "latest.ckpt",
    ]
    model = Model()
    fresh = CheckpointManager(url, storage_options=options, monitor="val_loss")
    assert fresh.restore(model=model).epoch == 4
    np.testing.assert_array_equal(model.w, np.full(4, 4.0))
    assert fresh.load("best").epoch == 2
