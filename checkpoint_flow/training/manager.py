"""CheckpointManager: periodic, best-model and on-demand checkpoints for training loops. It
checks its arguments into :class:`.options.Options`, then hands the work to parts it owns, none
of which calls back into it: :class:`.progress.Progress` (where the loop is, with the best
metric), :class:`.saving.Saver` (when and what to save, requests, signals),
:class:`.writer.Writer` and :class:`.commit.Committer` (writing, retention),
:class:`.reading.Reading` (loading) and :class:`.storage.TrainingStorage` (files and records);
a run lock keeps a second manager of the same name off the location.
"""

from __future__ import annotations

import logging
import os
import types
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from datetime import timedelta
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING, Any, Literal

from ..storage.codec import Signer
from ..storage.handlers import StateHandler, resolve_handler
from ..storage.store import Store
from .capture import JobMaker
from .catalogue import Catalogue
from .commit import Committer, SaveJob
from .export import export as export_file
from .locking import acquire, release
from .naming import NameKind
from .options import Options, check_json
from .progress import Progress
from .reader import LoadedCheckpoint, Restored
from .reading import Location, Reading
from .records import CheckpointInfo
from .retention import KeepArg, Mode
from .rng import restore_global_rng
from .saving import Saver
from .storage import TrainingStorage
from .tracking import Tracked
from .triggers import TriggerLike
from .writer import Writer

if TYPE_CHECKING:
    from typing_extensions import Self

    from .control import ControlServer

__all__ = ["CheckpointManager"]

logger = logging.getLogger(__name__)


class CheckpointManager:
    """Saves, retains and restores training checkpoints in one location.

    Arguments not obvious from the module overview:

    - ``name``: several managers (a learner, an evaluator) share one folder, each with its own
      files (``<name>.<file>``), latest, best, retention and run lock.
    - ``every_n_epochs``/``every_n_steps``/``min_interval_s``: periodic saves, fired from
      :meth:`on_epoch_end`/:meth:`on_step_end`. ``every_n_steps`` counts the steps the loop
      reports; ``min_interval_s`` (seconds or a ``timedelta``) throttles them, and alone means
      "at the first epoch end (step end, without epochs) after that long". ``trigger`` replaces
      all three with your own trigger (see :mod:`checkpoint_flow.training.triggers`).
    - ``monitor``/``mode``/``save_best``: the metric to track; when it improves and ``save_best``
      is true, the state is saved and copied to ``best_model_<monitor>.ckpt``.
    - ``keep_last_n``/``keep_best_k`` or ``keep`` (``"all"``, a rule from
      :mod:`checkpoint_flow.training.retention`, or a callable ``(checkpoints) -> names to
      keep``): which rolling files to keep. Default: all. The newest and the current best are
      always kept.
    - ``filename``: the pattern of rolling file names, over ``{epoch}`` and ``{step}``
      (default: ``checkpoint_epoch_{epoch:04d}[_step_{step:08d}]`` or
      ``checkpoint_step_{step:08d}`` for a loop without epochs).
    - ``tracked_obj``/``tracked_attrs``: attributes of one object (a learner) saved and restored
      without naming them in each call. :meth:`track` registers objects directly. Anything with
      ``state_dict()``/``load_state_dict()`` (a model, an optimizer, a stateful data loader or
      sampler, a gradient scaler) is saved through them.
    - ``async_save``: copy the state in memory on the calling thread, write it on a background
      thread. One write is in flight at a time. Reads (``load``, ``restore``, ``latest``,
      ``checkpoints``) wait for it, so they always see the saves that returned.
    - ``handle_signals``: SIGUSR1 requests a save at the next boundary; SIGTERM saves at the next
      boundary, then ends the process with ``SystemExit(128 + SIGTERM)``; a second SIGTERM ends it
      at once. Must be set from the main thread.
    - ``read_only``: only read (no run lock is taken; saving raises).
    - ``key``: HMAC key for signing (default: the CHECKPOINT_FLOW_KEY environment variable).
    - ``compress``: ``"zstd"`` compresses checkpoint files (the ``zstd`` extra); None stores
      them as they are. Compressed files are read back by this library only.
    - ``metadata``: JSON-serializable user data (a config) stored in every checkpoint.

    Raises CheckpointLockedError when another manager of the same name holds the location
    (until its :meth:`close`), TypeError/ValueError for bad arguments, before storage is touched.
    """

    def __init__(
        self,
        location: Location,
        *,
        name: str | None = None,
        every_n_epochs: int | None = 1,
        every_n_steps: int | None = None,
        min_interval_s: float | timedelta | None = None,
        trigger: TriggerLike | None = None,
        monitor: str | None = None,
        mode: Mode = "min",
        save_best: bool = True,
        keep_last_n: int | None = None,
        keep_best_k: int | None = None,
        keep: KeepArg = None,
        filename: str | None = None,
        tracked_obj: object | None = None,
        tracked_attrs: Sequence[str] = (),
        async_save: bool = True,
        handle_signals: bool = False,
        read_only: bool = False,
        metadata: Mapping[str, Any] | None = None,
        key: bytes | str | None = None,
        compress: Literal["zstd"] | None = None,
        handler: str | type | StateHandler | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        options = Options.check(
            name=name, every_n_epochs=every_n_epochs, every_n_steps=every_n_steps,
            min_interval_s=min_interval_s, trigger=trigger, monitor=monitor, mode=mode,
            save_best=save_best, keep_last_n=keep_last_n, keep_best_k=keep_best_k, keep=keep,
            filename=filename, tracked_obj=tracked_obj, tracked_attrs=tracked_attrs,
            async_save=async_save, handle_signals=handle_signals, read_only=read_only,
            metadata=metadata,
        )
        self.mode: Mode = options.mode
        self.monitor = options.monitor
        self.save_best = options.save_best
        self.name = options.name
        self.metadata = dict(options.metadata)
        self.read_only = options.read_only
        self._naming = naming = options.naming
        self._tracked = Tracked(options.tracked_obj, options.tracked_attrs)

        signer = Signer.from_env(key)
        self._storage = TrainingStorage(
            Store(resolve_handler(location, handler, storage_options), signer, compress=compress)
        )
        self.location = self._storage.location
        self._lock = None if self.read_only else acquire(self._storage.handler, self.name)
        try:
            self._catalogue = Catalogue(self._storage.records(naming.owns))
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise
        committer = Committer(self._storage, self._catalogue, options.rule)
        self._writer: Writer[SaveJob] = Writer(
            committer.run, background=options.async_save, where=self.location
        )
        # A manager that is never closed still lets its saves finish and its lock go when it is
        # collected; the finalizer holds no reference to the manager itself.
        self._finalizer = weakref.finalize(self, release, self._writer, self._lock)
        self._reading = Reading(
            self._storage, self._catalogue, self._writer, options, signer, storage_options
        )
        self._progress = Progress(self.monitor, self.mode)
        jobs = JobMaker(
            self._tracked, self._progress, naming, metadata=self.metadata,
            last_seq=self._catalogue.last_seq,
        )
        self._saver = Saver(
            self._writer, jobs, self._catalogue, options, who=repr(self), location=self.location
        )
        self._servers: list[ControlServer] = []

    def __repr__(self) -> str:
        who = "" if self.name is None else f", name={self.name!r}"
        return f"CheckpointManager({self.location!r}{who})"

    @property
    def async_save(self) -> bool:
        return self._writer.background

    # ----------------------------------------------------------------- tracked objects

    def track(self, **objects: Any) -> None:
        """Register objects saved by every later save and hook, and restored by :meth:`restore`."""
        self._tracked.track(objects)

    # ----------------------------------------------------------------- saving

    def save(
        self,
        *,
        epoch: int | None = None,
        step: int | None = None,
        metrics: Mapping[str, Any] | None = None,
        name: str | None = None,
        info: Mapping[str, Any] | None = None,
        **objects: Any,
    ) -> Future[str]:
        """Save now. Returns a Future with the file name (already done when saving synchronously).

        Without ``name`` the file is named by progress (see ``filename``) and subject to
        retention: by epoch and step when both are known and ``step`` is passed, by epoch when
        only the epoch is passed or known, by step in a loop without epochs. With ``name`` it
        is ``<name>.ckpt`` and kept until you delete it. ``info`` is JSON-serializable
        information stored with this checkpoint only. Raises TypeError for metrics that are not
        real numbers, ValueError for a bad name.
        """
        self._saver.begin()
        file = self._naming.named(name) if name is not None else None
        info = check_json("info", dict(info or {}))
        improved = self._progress.report(epoch, step, metrics)
        kind: NameKind = "step" if step is not None or self._progress.epoch is None else "epoch"
        return self._saver.save(file, kind, objects, best=improved and self.save_best, info=info)

    def request_save(self, name: str | None = None, *, replace: bool = True) -> Future[str]:
        """Ask for a save at the next step or epoch boundary; safe to call from any thread.

        Returns a Future resolved with the saved file's name once it is written. With
        ``replace=False`` a name that is saved already (or already asked for) is refused with
        CheckpointExistsError, at once or, if it appears before the boundary, through the
        Future; nothing is overwritten. Raises ValueError/TypeError at once for a bad name.
        """
        return self._saver.request(name, replace=replace)

    def on_step_end(
        self,
        step: int,
        *,
        epoch: int | None = None,
        metrics: Mapping[str, Any] | None = None,
        **objects: Any,
    ) -> Future[str] | None:
        """Hook for the end of a training step; ``step`` is the global step, ``epoch`` the epoch
        in progress if the loop counts them.

        ``metrics`` are recorded with a checkpoint saved at this step (and ranked by
        ``keep_best_k``), and feed best tracking; they are not added to the history. Returns
        the save's Future if one was started.
        """
        self._saver.begin()
        improved = self._progress.report(epoch, step, metrics, step_end=True)
        return self._saver.boundary(
            "step", objects, improved=improved, best=improved and self.save_best, now=monotonic()
        )

    def on_epoch_end(
        self,
        epoch: int,
        metrics: Mapping[str, Any] | None = None,
        *,
        step: int | None = None,
        **objects: Any,
    ) -> Future[str] | None:
        """Hook for the end of an epoch: records metrics, tracks the best, saves if triggered."""
        self._saver.begin()
        improved = self._progress.report(epoch, step, metrics)
        return self._saver.boundary(
            "epoch", objects, improved=improved, best=improved and self.save_best, now=monotonic()
        )

    def on_train_end(
        self,
        *,
        epoch: int | None = None,
        step: int | None = None,
        metrics: Mapping[str, Any] | None = None,
        **objects: Any,
    ) -> Future[str] | None:
        """Hook for the end of training: saves the final state unless it is saved already, then
        waits for every pending write."""
        self._saver.begin()
        improved = self._progress.report(epoch, step, metrics)
        future = self._saver.train_end(objects, improved=improved, best=improved and self.save_best)
        self.wait()
        return future

    def on_exception(self, exc: BaseException, **objects: Any) -> str | None:
        """Hook for a training loop that raised: writes an emergency checkpoint synchronously.

        The file is ``emergency_[epoch_{epoch:04d}_]step_{step:08d}.ckpt``; ``latest`` stays on
        the last clean save, since the state may be mid-step. A note naming both files is added
        to ``exc`` (Python 3.11+). Returns the file name, or None if the emergency save failed
        (the failure is logged; it never replaces ``exc``).
        """
        return self._saver.emergency(exc, objects)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        """Emergency save if the block raised (not for SystemExit), final save otherwise; then
        :meth:`close`."""
        try:
            if self.read_only:
                pass
            elif exc is None:
                self.on_train_end()
            elif not isinstance(exc, (SystemExit, GeneratorExit)):
                self.on_exception(exc)
        finally:
            self.close(raise_errors=exc is None)

    def wait(self, timeout: float | None = None) -> None:
        """Block until pending background saves are written; re-raise a failed one."""
        self._writer.drain(timeout=timeout, raise_errors=True)

    def close(self, *, raise_errors: bool = True) -> None:
        """Flush pending saves, stop control servers, put back signal handlers and release the
        run lock. Reading still works afterwards; saving raises."""
        for server in list(self._servers):
            server.stop()
        self._saver.close()
        try:
            self._writer.drain(raise_errors=raise_errors)
        finally:
            self._finalizer()

    # ----------------------------------------------------------------- reading

    @property
    def latest(self) -> str | None:
        """The newest checkpoint's file (what ``"latest"`` loads), or None before the first.

        Waits for a save in flight, so it names every save that returned."""
        return self._reading.latest()

    @property
    def best(self) -> float | None:
        """The best value of the monitored metric so far (None before any)."""
        return self._progress.best

    @property
    def history(self) -> list[dict[str, Any]]:
        """Metric history: one ``{"epoch", "step", "metrics"}`` entry per recorded boundary."""
        return [dict(h) for h in self._progress.history]

    def checkpoints(self) -> list[CheckpointInfo]:
        """This manager's committed checkpoints (copies and emergency saves included), in
        training order; waits for a save in flight."""
        return self._reading.checkpoints()

    def checkpoint_info(self, file: str) -> CheckpointInfo | None:
        """What is recorded about one committed checkpoint of this manager (None for a file it
        has not committed). Never waits, so a save's own completion callback may call it."""
        return self._catalogue.get(file)

    @property
    def position(self) -> tuple[int | None, int | None]:
        """The epoch and step the loop reported last (None for what it never reported)."""
        return self._progress.position

    def load(
        self,
        selector: str | int = "latest",
        *,
        epoch: int | None = None,
        step: int | None = None,
        source: Location | None = None,
    ) -> LoadedCheckpoint:
        """Read and verify a checkpoint without applying it.

        ``selector``: ``"latest"``, ``"best"``, ``"best:k"``, ``-k`` (k-th newest), an epoch
        number, a file name; or ``epoch=``/``step=``. ``source``: read from another location
        (a path, URL or handler) holding checkpoints of a manager with this name.

        Raises CheckpointNotFoundError (listing what exists), CheckpointCorruptError (naming
        the file and what to do), CheckpointSignatureError (checked before anything is
        unpickled), ValueError/TypeError for a selector that is none of these.
        """
        return self._reading.load(selector, epoch=epoch, step=step, source=source)

    def restore(
        self,
        selector: str | int = "latest",
        *,
        epoch: int | None = None,
        step: int | None = None,
        source: Location | None = None,
        **objects: Any,
    ) -> Restored:
        """Load a checkpoint (see :meth:`load`) into the tracked and given objects, and restore
        RNG states, counters, metrics, best value and history.

        Objects with ``load_state_dict`` and generators are restored in place; plain values are
        returned in ``Restored.values`` (and set back on ``tracked_obj`` for tracked attributes).
        Raises ValueError if an object to restore is not in the checkpoint.
        """
        loaded = self.load(selector, epoch=epoch, step=step, source=source)
        values = self._tracked.restore(loaded.objects, objects, loaded.file)
        restore_global_rng(loaded.rng)
        self._progress.restore(loaded.header, loaded.history)
        self._saver.last_saved_at = self._progress.position
        logger.info("restored %s (epoch %s, step %s)", loaded.file, loaded.epoch, loaded.step)
        return Restored.of(loaded, values)

    def export(
        self,
        selector: str | int,
        path: str | os.PathLike[str],
        *,
        format: str = "torch",
        objects: str | Sequence[str] | None = None,
        epoch: int | None = None,
        step: int | None = None,
    ) -> Path:
        """Write a checkpoint's state dicts as a plain ``torch.save`` file or as safetensors
        (weights only), for tools that do not know this library. See
        :mod:`checkpoint_flow.training.export`. Returns the path written."""
        if format not in ("torch", "safetensors"):
            raise ValueError(
                f"unknown export format {format!r}; valid choices: 'torch', 'safetensors'"
            )
        loaded = self.load(selector, epoch=epoch, step=step)
        return export_file(loaded, path, format=format, objects=objects)

    def serve(self, port: int = 0, host: str = "127.0.0.1") -> ControlServer:
        """Start the HTTP control endpoint (``POST /save``, ``GET /checkpoints``, ``GET
        /events``...; see :mod:`.control`) in a thread.

        ``port=0`` picks a free port; the returned handle has ``.url``, ``.token`` and
        ``.stop()``. On a host other than loopback every request needs ``.token``. While it
        runs, ``control.json`` (``<name>.control.json``) at the location names it, so that
        ``checkpoint-flow ui`` finds it; :meth:`close` removes it.
        """
        from .control import ControlServer, ControlTarget

        progress, reading, saver = self._progress, self._reading, self._saver
        target = ControlTarget(
            name=self.name,
            location=self.location,
            metadata=self.metadata,
            position=lambda: progress.position,
            checkpoints=reading.checkpoints,
            latest=reading.latest,
            checkpoint_info=self._catalogue.get,
            request_save=lambda name: saver.request(name, replace=False),
            owner=self,
        )
        # The manager owns its servers; each takes itself off the list once it stops.
        server = ControlServer(target, host, port, on_stop=self._servers.remove)
        self._servers.append(server)
        if not self.read_only:
            server.register(self._storage, self._naming)
        return server
