"""Training programs run as real subprocesses by tests/test_training_resume.py.

``train``: a small deterministic training loop (NumPy or torch) that resumes from the latest
checkpoint if there is one, draws from every RNG the manager restores (data shuffling, dropout,
Python ``random``), and can stop at a marker to be killed. ``signals``: a step loop with
``handle_signals=True`` waiting for SIGUSR1/SIGTERM.
"""

from __future__ import annotations

import argparse
import pickle
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from checkpoint_flow import CheckpointManager

N, D, H, BATCH = 64, 8, 16, 16


def make_data() -> tuple[np.ndarray, np.ndarray]:
    data_rng = np.random.default_rng(123)  # fixed data, independent of the training RNGs
    x = data_rng.normal(size=(N, D))
    y = (x @ data_rng.normal(size=(D, 1)) + 0.1 * data_rng.normal(size=(N, 1))).astype(np.float64)
    return x, y


class NumpyMLP:
    def __init__(self) -> None:
        init = np.random.default_rng(7)
        self.w1 = init.normal(scale=0.3, size=(D, H))
        self.w2 = init.normal(scale=0.3, size=(H, 1))

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"w1": self.w1, "w2": self.w2}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.w1[...] = state["w1"]
        self.w2[...] = state["w2"]


class Momentum:
    def __init__(self, model: NumpyMLP, lr: float = 0.05, beta: float = 0.9) -> None:
        self.model, self.lr, self.beta = model, lr, beta
        self.velocity = {k: np.zeros_like(v) for k, v in model.state_dict().items()}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        for k, g in grads.items():
            self.velocity[k] = self.beta * self.velocity[k] + g
            getattr(self.model, k)[...] -= self.lr * self.velocity[k]

    def state_dict(self) -> dict[str, Any]:
        return {"velocity": self.velocity, "lr": self.lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.velocity = {k: np.array(v) for k, v in state["velocity"].items()}
        self.lr = state["lr"]


def numpy_run(args: argparse.Namespace) -> None:
    random.seed(0)
    np.random.seed(0)
    shuffle = np.random.default_rng(1)
    x, y = make_data()
    model = NumpyMLP()
    opt = Momentum(model)
    ckpt = CheckpointManager(args.dir, monitor="val_loss", keep_last_n=2, keep_best_k=1)
    ckpt.track(model=model, optimizer=opt, shuffle=shuffle)

    def train_step(xb: np.ndarray, yb: np.ndarray) -> None:
        h = np.maximum(xb @ model.w1, 0)
        mask = (np.random.random_sample(h.shape) > 0.3) / 0.7  # dropout from NumPy's global RNG
        hd = h * mask
        err = hd @ model.w2 - yb
        jitter = 1.0 + 0.01 * random.random()  # something drawn from Python's random
        g2 = hd.T @ err / len(xb) * jitter
        g1 = xb.T @ ((err @ model.w2.T) * mask * (h > 0)) / len(xb) * jitter
        opt.step({"w1": g1, "w2": g2})

    def val_loss() -> float:
        return float(np.mean((np.maximum(x @ model.w1, 0) @ model.w2 - y) ** 2))

    loop(args, ckpt, shuffle, train_step, val_loss)
    dump(args.out, {"model": model.state_dict(), "opt": opt.state_dict()}, ckpt)


def torch_run(args: argparse.Namespace) -> None:
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    shuffle = np.random.default_rng(1)
    x, y = (torch.from_numpy(a).float() for a in make_data())
    model = torch.nn.Sequential(
        torch.nn.Linear(D, H), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(H, 1)
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    ckpt = CheckpointManager(args.dir, monitor="val_loss", keep_last_n=2, keep_best_k=1)
    ckpt.track(model=model, optimizer=opt, scheduler=sched, shuffle=shuffle)

    def train_step(xb: Any, yb: Any) -> None:
        model.train()
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(xb), yb) * (1.0 + 0.01 * random.random())
        loss.backward()
        opt.step()

    def val_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(model(x), y))

    loop(args, ckpt, shuffle, train_step, val_loss, x=x, y=y, after_epoch=sched.step)
    dump(args.out, {"model": model.state_dict(), "opt": opt.state_dict()}, ckpt)


def loop(
    args: argparse.Namespace,
    ckpt: CheckpointManager,
    shuffle: np.random.Generator,
    train_step: Any,
    val_loss: Any,
    x: Any = None,
    y: Any = None,
    after_epoch: Any = None,
) -> None:
    if x is None:
        x, y = make_data()
    start, step = 1, 0
    if ckpt.latest is not None:
        epoch, step, _metrics = ckpt.restore()
        start = epoch + 1
        if args.scramble_rng:  # negative control: resume without the saved RNG states
            random.seed(99)
            np.random.seed(99)
    for epoch in range(start, args.epochs + 1):
        order = shuffle.permutation(N)
        for i in range(0, N, BATCH):
            idx = order[i : i + BATCH]
            train_step(x[idx], y[idx])
            step += 1
            ckpt.on_step_end(step, epoch=epoch)
        if after_epoch is not None:
            after_epoch()
        ckpt.on_epoch_end(epoch, {"val_loss": val_loss()})
        if epoch == args.stop_after:
            ckpt.wait()
            Path(args.marker).write_text(str(epoch))
            time.sleep(600)  # the parent kills us here with SIGKILL
    ckpt.on_train_end()


def dump(out: str, state: dict[str, Any], ckpt: CheckpointManager) -> None:
    def plain(value: Any) -> Any:
        if hasattr(value, "detach"):
            return value.detach().numpy().copy()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(plain(v) for v in value)
        return value

    with open(out, "wb") as f:
        pickle.dump({"state": plain(state), "history": ckpt.history}, f)


def signals_run(args: argparse.Namespace) -> None:
    ckpt = CheckpointManager(args.dir, every_n_epochs=None, handle_signals=True)
    ckpt.track(weights=np.arange(4.0))
    Path(args.marker).write_text("ready")
    step = 0
    while True:
        step += 1
        time.sleep(0.005)
        ckpt.on_step_end(step, epoch=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["numpy", "torch", "signals"])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--stop-after", type=int, default=-1)
    parser.add_argument("--marker", default="")
    parser.add_argument("--out", default="")
    parser.add_argument("--scramble-rng", action="store_true")
    parser.add_argument(
        "--reference-out",
        default="",
        help="afterwards, also train uninterrupted from scratch in this process (saves a second "
        "slow torch import) and dump the result here",
    )
    args = parser.parse_args()
    run = {"numpy": numpy_run, "torch": torch_run, "signals": signals_run}[args.mode]
    run(args)
    if args.reference_out:
        reference = argparse.Namespace(**vars(args))
        reference.dir, reference.out = args.dir + "-reference", args.reference_out
        reference.stop_after, reference.scramble_rng = -1, False
        run(reference)


if __name__ == "__main__":
    sys.exit(main())
