"""Training programs run as real subprocesses by tests/training/test_training_resume.py.

``numpy``/``torch``: a small deterministic epoch loop that resumes from the latest checkpoint if
there is one, draws from every RNG the manager restores (data shuffling, dropout, Python
``random``), and can stop at a marker to be killed. ``signals``: a step loop with
``handle_signals=True`` waiting for SIGUSR1/SIGTERM. ``midepoch``: a loop that saves in the
middle of epochs and keeps its place through a stateful data loader or batch iterator.
``surreal``/``surreal-restore``: a learner and an evaluator sharing a folder, then restores of
the learner from another folder. ``crash``: a step loop that kills itself by SIGKILL at a
chosen point of its third save. ``hold``: takes a manager's lock and waits to be killed.
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


# -- mid-epoch resumption ---------------------------------------------------------------------

MID_N, MID_BATCH, MID_EPOCHS, MID_SAVE_EVERY = 64, 8, 4, 3


class LossCurve:
    """Every training loss so far, saved with the model so a resumed run continues the list."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def state_dict(self) -> dict[str, Any]:
        return {"losses": list(self.losses)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses = list(state["losses"])


class BatchIterator:
    """A hand-written stateful batch iterator: shuffles each epoch with its own generator and
    remembers how far into the epoch it has got."""

    def __init__(self, n: int, batch: int, seed: int) -> None:
        self.n, self.batch = n, batch
        self.rng = np.random.default_rng(seed)
        self.epoch, self.position = 0, 0
        self.order: np.ndarray | None = None

    def __iter__(self) -> Any:
        if self.order is None:
            self.order = self.rng.permutation(self.n)
        while self.position < self.n:
            indices = self.order[self.position : self.position + self.batch]
            self.position += self.batch
            yield indices
        self.order, self.position = None, 0
        self.epoch += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "epoch": self.epoch,
            "position": self.position,
            "order": self.order,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.epoch, self.position = state["epoch"], state["position"]
        self.order = None if state["order"] is None else np.array(state["order"])


def make_stateful_sampler(torch: Any) -> Any:
    class StatefulSampler(torch.utils.data.Sampler):
        """A sampler that shuffles each epoch with its own generator and remembers its place,
        as torchdata's StatefulDataLoader does for a whole loader."""

        def __init__(self, n: int, seed: int) -> None:
            self.n = n
            self.generator = torch.Generator().manual_seed(seed)
            self.epoch, self.position = 0, 0
            self.order: Any = None

        def __len__(self) -> int:
            return self.n

        def __iter__(self) -> Any:
            if self.order is None:
                self.order = torch.randperm(self.n, generator=self.generator)
            while self.position < self.n:
                index = int(self.order[self.position])
                self.position += 1
                yield index
            self.order, self.position = None, 0
            self.epoch += 1

        def state_dict(self) -> dict[str, Any]:
            return {
                "generator": self.generator.get_state(),
                "epoch": self.epoch,
                "position": self.position,
                "order": self.order,
            }

        def load_state_dict(self, state: dict[str, Any]) -> None:
            self.generator.set_state(state["generator"])
            self.epoch, self.position, self.order = (
                state["epoch"], state["position"], state["order"]
            )

    return StatefulSampler


def midepoch_run(args: argparse.Namespace) -> None:
    """Train MID_EPOCHS epochs saving every MID_SAVE_EVERY steps (in the middle of epochs).

    With --kill-at K, print "killable" after step K and wait to be killed."""
    random.seed(0)
    np.random.seed(0)
    ckpt = CheckpointManager(args.dir, every_n_epochs=None, every_n_steps=MID_SAVE_EVERY,
                             keep_last_n=2)
    curve = LossCurve()
    x_np, y_np = make_data()
    if args.backend == "torch":
        import torch

        torch.manual_seed(0)
        x, y = torch.from_numpy(x_np).float(), torch.from_numpy(y_np).float()
        model = torch.nn.Sequential(
            torch.nn.Linear(D, H), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(H, 1)
        )
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=5)
        loader_state = make_stateful_sampler(torch)(MID_N, seed=5)
        # The loader draws its base seed from this generator, not from the global one: a
        # resumed run creates its iterator mid-epoch and must not shift the dropout masks.
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, y), batch_size=MID_BATCH, sampler=loader_state,
            generator=torch.Generator(),
        )
        ckpt.track(model=model, optimizer=opt, scaler=scaler, sampler=loader_state, curve=curve)

        def batches() -> Any:
            return iter(loader)

        def train_step(batch: Any) -> float:
            xb, yb = batch
            model.train()
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(xb), yb) * (1.0 + 0.01 * random.random())
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            return float(loss)

        def final() -> dict[str, Any]:
            return {"model": model.state_dict(), "opt": opt.state_dict(),
                    "scaler": scaler.state_dict(), "sampler": loader_state.state_dict()}
    else:
        model = NumpyMLP()
        opt = Momentum(model)
        loader_state = BatchIterator(MID_N, MID_BATCH, seed=5)
        ckpt.track(model=model, optimizer=opt, batches=loader_state, curve=curve)

        def batches() -> Any:
            return iter(loader_state)

        def train_step(indices: Any) -> float:
            xb, yb = x_np[indices], y_np[indices]
            h = np.maximum(xb @ model.w1, 0)
            mask = (np.random.random_sample(h.shape) > 0.3) / 0.7
            hd = h * mask
            err = hd @ model.w2 - yb
            jitter = 1.0 + 0.01 * random.random()
            g2 = hd.T @ err / len(xb) * jitter
            g1 = xb.T @ ((err @ model.w2.T) * mask * (h > 0)) / len(xb) * jitter
            opt.step({"w1": g1, "w2": g2})
            return float(np.mean(err**2))

        def final() -> dict[str, Any]:
            return {"model": model.state_dict(), "opt": opt.state_dict(),
                    "batches": loader_state.state_dict()}

    step = 0
    if ckpt.latest is not None:
        step = ckpt.restore().step or 0
        if args.forget_position:  # negative control: a loader that starts its epoch over
            loader_state.position, loader_state.order = 0, None
    while loader_state.epoch < MID_EPOCHS:
        epoch = loader_state.epoch + 1
        for batch in batches():
            curve.losses.append(train_step(batch))
            step += 1
            ckpt.on_step_end(step, epoch=epoch)
            if step == args.kill_at:
                time.sleep(args.kill_delay)
                print("killable", flush=True)
                time.sleep(600)  # the parent kills us here with SIGKILL
    ckpt.close()
    with open(args.out, "wb") as f:
        pickle.dump({"curve": curve.losses, "state": plain(final())}, f)


def plain(value: Any) -> Any:
    if hasattr(value, "detach"):
        return value.detach().numpy().copy()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


# -- a learner and an evaluator in one folder, restored from another ----------------------------

SURREAL_SCORES = [0.1, 0.5, 0.3, 0.9, 0.2, 0.6, 0.8, 0.4, 0.7, 0.05,
                  0.3, 0.2, 0.1, 0.95, 0.3, 0.2, 0.4, 0.1, 0.2, 0.3]
SURREAL_BATCH = 64  # the global step counts environment steps: 64 per iteration


class SurrealModel:
    def __init__(self) -> None:
        self.w = np.zeros(3)

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w[...] = state["w"]


class Learner:
    """An RL learner whose attributes the checkpointer tracks."""

    def __init__(self) -> None:
        self.model = SurrealModel()
        self.iteration = 0
        self.rng = np.random.default_rng(11)

    def learn(self) -> None:
        self.iteration += 1
        self.model.w[:] = self.iteration
        self.rng.random()


def learner_manager(location: str, **extra: Any) -> CheckpointManager:
    return CheckpointManager(
        location, name="learner", tracked_obj=extra.pop("learner"),
        tracked_attrs=["model", "iteration", "rng"], every_n_steps=3, min_interval_s=0.02,
        keep_last_n=2, keep_best_k=2, monitor="score", mode="max", save_best=False, **extra,
    )


def surreal_run(args: argparse.Namespace) -> None:
    learner = Learner()
    ckpt = learner_manager(args.dir, learner=learner)
    evaluator = CheckpointManager(args.dir, name="evaluator", every_n_steps=2, keep_last_n=1,
                                  monitor="return", mode="max")
    eval_model = SurrealModel()
    evaluator.track(model=eval_model)
    for score in SURREAL_SCORES:
        learner.learn()
        ckpt.on_step_end(learner.iteration * SURREAL_BATCH, metrics={"score": score})
        eval_model.w[:] = -learner.iteration
        evaluator.on_step_end(learner.iteration, metrics={"return": float(learner.iteration % 5)})
        time.sleep(0.01)  # three iterations always span more than min_interval_s
    ckpt.wait()
    evaluator.wait()
    print("trained", flush=True)
    time.sleep(600)  # the parent kills us here with SIGKILL


def surreal_restore(args: argparse.Namespace) -> None:
    """Restore the learner in a new process: from its own folder, then from another one."""
    results: dict[str, Any] = {}
    learner = Learner()
    ckpt = learner_manager(args.dir, learner=learner)
    ckpt.restore()
    results["own folder latest"] = (learner.iteration, learner.model.w[0])
    ckpt.close()

    learner = Learner()
    other = learner_manager(args.other, learner=learner)
    for label, kwargs in [
        ("best", {"selector": "best"}),
        ("best:2", {"selector": "best:2"}),
        ("2nd newest", {"selector": -2}),
        ("global step 384", {"step": 384}),
        ("latest", {}),
    ]:
        restored = other.restore(source=args.dir, **kwargs)
        results[label] = (learner.iteration, learner.model.w[0], restored.step)
    results["rng draw"] = learner.rng.random()
    for _ in range(3):  # training goes on in the other folder
        learner.learn()
        other.on_step_end(learner.iteration * SURREAL_BATCH, metrics={"score": 0.5})
    other.close()
    results["other folder"] = [(c.file, c.step) for c in other.checkpoints()]
    with open(args.out, "wb") as f:
        pickle.dump(results, f)


# -- crashes inside a save, and a lock held by a live process -----------------------------------


def crash_run(args: argparse.Namespace) -> None:
    """Save at steps 1, 2, 3; SIGKILL ourselves inside the third save, before the write named by
    --crash-before (a record "index/", or the "latest" copy)."""
    import os
    import signal as signal_module

    from checkpoint_flow.storage.handlers import LocalHandler

    class Dying(LocalHandler):
        seen = 0

        def _check(self, name: str) -> None:
            if args.crash_before in name:
                self.seen += 1
                if self.seen == 3:
                    os.kill(os.getpid(), signal_module.SIGKILL)

        def write(self, name: str, data: Any) -> None:
            self._check(name)
            super().write(name, data)

        def link(self, source: str, target: str) -> None:
            self._check(target)
            super().link(source, target)

    ckpt = CheckpointManager(Dying(args.dir), every_n_steps=1, keep_last_n=1)
    for step in range(1, 4):
        ckpt.on_step_end(step, model=SurrealModel())
        ckpt.wait()
    raise AssertionError("the third save should have killed this process")


def hold_run(args: argparse.Namespace) -> None:
    ckpt = CheckpointManager(args.dir, name=args.name or None)
    ckpt.save(step=1, model=SurrealModel())
    ckpt.wait()
    print("holding", flush=True)
    time.sleep(600)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "mode",
        choices=["numpy", "torch", "signals", "midepoch", "surreal", "surreal-restore", "crash",
                 "hold"],
    )
    parser.add_argument("--backend", choices=["numpy", "torch"], default="numpy")
    parser.add_argument("--kill-at", type=int, default=-1)
    parser.add_argument("--kill-delay", type=float, default=0.0)
    parser.add_argument("--forget-position", action="store_true")
    parser.add_argument("--other", default="")
    parser.add_argument("--crash-before", default="index/")
    parser.add_argument("--name", default="")
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
    run = {
        "numpy": numpy_run,
        "torch": torch_run,
        "signals": signals_run,
        "midepoch": midepoch_run,
        "surreal": surreal_run,
        "surreal-restore": surreal_restore,
        "crash": crash_run,
        "hold": hold_run,
    }[args.mode]
    run(args)
    if args.reference_out:
        reference = argparse.Namespace(**vars(args))
        reference.dir, reference.out = args.dir + "-reference", args.reference_out
        reference.stop_after, reference.scramble_rng = -1, False
        reference.kill_at, reference.forget_position = -1, False
        run(reference)


if __name__ == "__main__":
    sys.exit(main())
