"""The reading side of a manager: what is committed and loading it, from its own location or
another (``source=``). Every read first waits for this process's save in flight, so it sees
every save that returned; a read-only manager also re-reads the records, which another process
may have changed."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..storage.codec import Signer
from ..storage.handlers import StateHandler, resolve_handler
from ..storage.store import Store
from . import selectors
from .catalogue import Catalogue
from .commit import SaveJob
from .options import Options
from .reader import CheckpointReader, LoadedCheckpoint
from .records import CheckpointInfo
from .storage import TrainingStorage
from .writer import Writer, flush_pending

Location = str | os.PathLike[str] | StateHandler


class Reading:
    """Reads of the manager ``options`` describe: ``storage`` and ``catalogue`` are its own,
    ``writer`` the one its saves go through; ``signer`` and ``storage_options`` open another
    ``source``."""

    def __init__(
        self,
        storage: TrainingStorage,
        catalogue: Catalogue,
        writer: Writer[SaveJob],
        options: Options,
        signer: Signer,
        storage_options: Mapping[str, Any] | None,
    ) -> None:
        self._storage = storage
        self._naming = options.naming
        self._catalogue = catalogue
        self._writer = writer
        self._monitor = options.monitor
        self._mode = options.mode
        self._read_only = options.read_only
        self._signer = signer
        self._storage_options = storage_options
        self._reader = CheckpointReader(
            storage, self._naming, catalogue, monitor=self._monitor, mode=self._mode
        )

    def catch_up(self, *, raise_errors: bool) -> None:
        """Make reads see every save that returned: wait for this manager's save in flight, or,
        for a read-only manager, for those of this process and re-read the records."""
        self._writer.drain(raise_errors=raise_errors)
        if self._read_only:
            flush_pending(self._storage.location)
            self._catalogue.reset(self._storage.records(self._naming.owns))

    def latest(self) -> str | None:
        self.catch_up(raise_errors=False)
        latest = self._catalogue.latest()
        return None if latest is None else latest.file

    def checkpoints(self) -> list[CheckpointInfo]:
        self.catch_up(raise_errors=False)
        return self._catalogue.entries()

    def load(
        self,
        selector: str | int,
        *,
        epoch: int | None,
        step: int | None,
        source: Location | None,
    ) -> LoadedCheckpoint:
        self.catch_up(raise_errors=True)
        parsed = selectors.parse(selector, epoch=epoch, step=step)
        return self._reader_for(source).load(parsed)

    def _reader_for(self, source: Location | None) -> CheckpointReader:
        if source is None:
            return self._reader
        handler = resolve_handler(source, None, self._storage_options)
        flush_pending(handler.location)
        return CheckpointReader(
            TrainingStorage(Store(handler, self._signer)), self._naming, monitor=self._monitor,
            mode=self._mode,
        )
