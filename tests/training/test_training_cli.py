"""checkpoint-flow on a folder of training checkpoints, run as a user runs it: ls, show, history,
verify, gc and export, in text and with --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from checkpoint_flow import CheckpointManager

# Each command runs as a real subprocess: slow set (CI runs it; -m 'not slow' skips it).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


class Model:
    def __init__(self, value: float = 0.0) -> None:
        self.w = np.full(3, value)

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w[...] = state["w"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("CHECKPOINT_FLOW_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "checkpoint_flow", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A learner (step loop, score to maximize) and an evaluator (epochs) in one folder."""
    folder = tmp_path_factory.mktemp("session")
    learner = CheckpointManager(folder, name="learner", every_n_steps=2, keep_last_n=2,
                                monitor="score", mode="max", async_save=False)
    evaluator = CheckpointManager(folder, name="evaluator", async_save=False)
    for step, score in zip(range(10, 70, 10), [0.2, 0.8, 0.4, 0.6, 0.1, 0.3], strict=True):
        learner.on_step_end(step, metrics={"score": score}, model=Model(step))
    learner.save(step=60, name="final", info={"note": "end of run", "lr": 0.1}, model=Model(60))
    for epoch in (1, 2):
        evaluator.on_epoch_end(epoch, {"return": 10.0 * epoch}, model=Model(-epoch))
    learner.close()
    evaluator.close()
    return folder


def run_json(*args: str) -> Any:
    done = cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_ls_lists_every_manager_with_latest_best_metrics_and_info(session: Path) -> None:
    listing = run_json("ls", str(session))
    assert listing["kind"] == "training"
    managers = {m["name"]: m for m in listing["managers"]}
    assert set(managers) == {"learner", "evaluator"}
    learner = managers["learner"]
    assert learner["latest"] == "learner.final.ckpt"
    assert learner["best"] == "learner.best_model_score.ckpt"
    rows = {c["file"]: c for c in learner["checkpoints"]}
    assert rows["learner.checkpoint_step_00000020.ckpt"]["metrics"] == {"score": 0.8}
    assert rows["learner.checkpoint_step_00000020.ckpt"]["best"] is True
    assert rows["learner.final.ckpt"]["info"] == {"note": "end of run", "lr": 0.1}
    assert rows["learner.final.ckpt"]["latest"] is True
    assert rows["learner.checkpoint_step_00000060.ckpt"]["epoch"] is None
    assert [c["epoch"] for c in managers["evaluator"]["checkpoints"]] == [1, 2]

    text = cli("ls", str(session))
    assert text.returncode == 0, text.stderr
    assert "manager 'learner': latest learner.final.ckpt, best learner.best_model_score.ckpt" in (
        text.stdout
    )
    assert '{"lr": 0.1, "note": "end of run"}' in text.stdout


def test_show_reads_one_checkpoint_by_selector(session: Path) -> None:
    best = run_json("show", str(session), "learner.best")
    assert (best["step"], best["metrics"], best["objects"]) == (20, {"score": 0.8}, ["model"])
    assert run_json("show", str(session), "learner.best:2")["step"] == 40
    assert run_json("show", str(session), "learner.-2")["step"] == 60
    assert run_json("show", str(session), "learner.step=40")["file"] == (
        "learner.checkpoint_step_00000040.ckpt"
    )
    assert run_json("show", str(session), "evaluator.checkpoint_epoch_0001.ckpt")["epoch"] == 1
    assert run_json("show", str(session), "evaluator.latest")["metrics"] == {"return": 20.0}
    text = cli("show", str(session), "learner.final.ckpt")
    assert text.returncode == 0 and "info: {\"lr\": 0.1, \"note\": \"end of run\"}" in text.stdout

    ambiguous = cli("show", str(session), "latest")
    assert ambiguous.returncode == 1
    assert "2 managers" in ambiguous.stderr and "learner.latest" in ambiguous.stderr
    unknown = cli("show", str(session), "learner.newest")
    assert unknown.returncode == 1 and "valid choices: 'latest', 'best'" in unknown.stderr
    missing = cli("show", str(session), "learner.step=30")
    assert missing.returncode == 1 and "available: learner.final.ckpt" in missing.stderr
    assert cli("show", str(session), "teacher.latest").returncode == 1


def test_history_lists_saves_in_order(session: Path) -> None:
    saves = run_json("history", str(session))
    learner = [(s["seq"], s["step"], s["reason"]) for s in saves if s["name"] == "learner"]
    assert learner == [(2, 20, "periodic"), (3, 40, "periodic"), (4, 60, "periodic"),
                       (5, 60, "manual")]
    assert [s["name"] for s in saves].count("evaluator") == 2


@pytest.mark.slow  # starts a server / imports torch
def test_export_writes_files_torch_and_safetensors_open(session: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    done = cli("export", str(session), "learner.best", str(tmp_path / "best.pt"))
    assert done.returncode == 0, done.stderr
    assert torch.equal(torch.load(tmp_path / "best.pt")["model"]["w"],
                       torch.full((3,), 20.0, dtype=torch.float64))
    done = cli("export", str(session), "learner.-2", str(tmp_path / "w.safetensors"),
               "--format", "safetensors", "--object", "model")
    assert done.returncode == 0, done.stderr
    assert st.load_file(tmp_path / "w.safetensors")["w"][0] == 60.0
    bad = cli("export", str(session), "learner.best", str(tmp_path / "x"), "--object", "opt")
    assert bad.returncode == 1 and "no object 'opt'" in bad.stderr


def test_verify_names_a_damaged_file_and_gc_does_not_delete_it(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, async_save=False) as ckpt:
        for epoch in (1, 2):
            ckpt.save(epoch=epoch, model=Model(epoch))
    assert cli("verify", str(tmp_path)).returncode == 0
    damaged = tmp_path / "checkpoint_epoch_0001.ckpt"
    data = bytearray(damaged.read_bytes())
    data[-5] ^= 0xFF
    damaged.write_bytes(bytes(data))
    verify = cli("verify", str(tmp_path))
    assert verify.returncode == 1
    assert "checkpoint_epoch_0001.ckpt" in verify.stdout and "damaged" in verify.stdout
    report = json.loads(cli("verify", str(tmp_path), "--json").stdout)
    assert report["ok"] is False and len(report["problems"]) == 1
    assert cli("gc", str(tmp_path)).returncode == 0
    assert damaged.exists()  # a damaged checkpoint is reported, never silently dropped


def test_single_manager_location_needs_no_prefix(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, every_n_steps=5, async_save=False) as ckpt:
        for step in range(1, 11):
            ckpt.on_step_end(step, epoch=1, model=Model(step))
    assert run_json("show", str(tmp_path), "--step", "5")["file"] == (
        "checkpoint_epoch_0001_step_00000005.ckpt"
    )
    assert run_json("show", str(tmp_path))["step"] == 10
    text = cli("ls", str(tmp_path))
    assert "unnamed manager: latest checkpoint_epoch_0001_step_00000010.ckpt" in text.stdout
