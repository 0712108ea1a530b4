"""Reading one manager's checkpoints: select a file, verify it, decode it.

Used by the manager for its own location (and for ``source=``, another folder), and by the
command line, which reads without a manager and without taking any lock.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import CheckpointCorruptError, CheckpointNotFoundError
from .catalogue import Catalogue
from .naming import NameKind, Naming
from .records import CheckpointInfo
from .retention import Mode
from .selectors import Selector, describe, resolve
from .snapshot import StateKind
from .storage import TrainingStorage


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint read back and verified; nothing has been applied to live objects yet.

    ``objects`` maps each saved name to ``(kind, state)`` where kind is ``"state_dict"``,
    ``"generator"`` or ``"value"``; :meth:`state` returns just the state. ``epoch``/``step``
    are None when the loop never reported one. ``header`` is the file's verified header.
    """

    file: str
    epoch: int | None
    step: int | None
    metrics: dict[str, float]
    best: float | None
    history: list[dict[str, Any]]
    metadata: dict[str, Any]
    timestamp: float
    reason: str
    objects: dict[str, tuple[StateKind, Any]]
    rng: dict[str, Any] = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    header: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def state(self, name: str) -> Any:
        """The stored state of one object (a state_dict, a generator state or the value)."""
        if name not in self.objects:
            raise KeyError(
                f"checkpoint {self.file!r} holds no object {name!r}; it holds: "
                f"{', '.join(sorted(self.objects)) or 'nothing'}"
            )
        return self.objects[name][1]


@dataclass(frozen=True)
class Restored:
    """What :meth:`CheckpointManager.restore` put back. Unpacks as ``epoch, step, metrics``.

    ``values`` maps every saved object name to its restored object (the live object for
    state_dicts and generators, the stored value for plain pickled values).
    """

    file: str
    epoch: int | None
    step: int | None
    metrics: dict[str, float]
    best: float | None
    history: list[dict[str, Any]]
    metadata: dict[str, Any]
    values: dict[str, Any] = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.epoch, self.step, self.metrics))

    @classmethod
    def of(cls, loaded: LoadedCheckpoint, values: dict[str, Any]) -> Restored:
        """What restoring ``loaded`` put back, ``values`` being the restored objects."""
        return cls(
            file=loaded.file,
            epoch=loaded.epoch,
            step=loaded.step,
            metrics=loaded.metrics,
            best=loaded.best,
            history=loaded.history,
            metadata=loaded.metadata,
            values=values,
            info=loaded.info,
        )


class CheckpointReader:
    """The checkpoints of the manager ``naming`` describes, in ``storage``.

    ``monitor``/``mode`` rank "best:k" (by default, the metric the records name).
    """

    def __init__(
        self,
        storage: TrainingStorage,
        naming: Naming,
        catalogue: Catalogue | None = None,
        *,
        monitor: str | None = None,
        mode: Mode = "min",
    ) -> None:
        self.storage = storage
        self.naming = naming
        self.catalogue = (
            catalogue if catalogue is not None else Catalogue(storage.records(naming.owns))
        )
        self.monitor = monitor
        self.mode = mode

    @property
    def where(self) -> str:
        who = "" if self.naming.name is None else f" (manager {self.naming.name!r})"
        return f"{self.storage.location}{who}"

    def entries(self) -> list[CheckpointInfo]:
        return self.catalogue.entries()

    def best_copy(self) -> str | None:
        """The best copy's file, if there is one (for the monitored metric, when known)."""
        copies = [c for c in self.catalogue.entries() if c.role == "best"]
        if self.monitor is not None:
            wanted = self.naming.best(self.monitor)
            return wanted if any(c.file == wanted for c in copies) else None
        return copies[0].file if len(copies) == 1 else None

    def select(self, selector: Selector) -> str:
        """The file a selector names. Raises CheckpointNotFoundError listing what exists."""
        conventional = None
        if selector.kind == "progress":
            kind: NameKind = "epoch" if selector.step is None else "step"
            try:
                conventional = self.naming.rolling(kind, selector.epoch, selector.step)
            except ValueError:  # a filename pattern that needs what the selector lacks
                conventional = None
        return resolve(
            selector,
            self.catalogue.entries(),
            monitor=self.monitor,
            mode=self.mode,
            best_copy=self.best_copy(),
            where=self.where,
            conventional=conventional,
        )

    def load(self, selector: Selector) -> LoadedCheckpoint:
        """Select, read and verify a checkpoint, then unpickle it.

        Raises CheckpointNotFoundError, CheckpointCorruptError naming the file and what to do
        instead, CheckpointSignatureError (checked before anything is unpickled).
        """
        file = self.select(selector)
        where = f"checkpoint file {file!r} in {self.storage.location}"
        try:
            opened = self.storage.open(file)
            payload = opened.decode()
            if not isinstance(payload, dict) or "objects" not in payload:
                raise CheckpointCorruptError(where, "does not hold training state")
        except FileNotFoundError:
            raise CheckpointNotFoundError(
                self.where,
                str(selector),
                f"its file {file!r} is missing",
                describe(self.catalogue.entries()),
            ) from None
        except CheckpointCorruptError as exc:
            others = [c.file for c in self.catalogue.entries() if c.file != file]
            raise exc.with_remedy(
                "Load another checkpoint instead"
                + (f" (available: {', '.join(others[-5:])})" if others else "")
                + f" or delete {file!r}."
            ) from exc
        header = opened.header
        best = header.get("best")
        return LoadedCheckpoint(
            file=file,
            epoch=header.get("epoch"),
            step=header.get("step"),
            metrics=dict(header.get("metrics") or {}),
            best=None if best is None else float(best["value"]),
            history=list(payload.get("history") or []),
            metadata=dict(header.get("metadata") or {}),
            timestamp=float(header.get("timestamp", 0.0)),
            reason=str(header.get("reason", "")),
            objects=dict(payload["objects"]),
            rng=dict(payload.get("rng") or {}),
            info=dict(header.get("info") or {}),
            name=header.get("name"),
            header=header,
        )
