"""Writing one save: encode the captured state, commit the file, refresh the copies, retain.

Runs on the writer thread for background saves. The order is what makes a crash at any point
harmless (see :mod:`.storage`): the file, then its record (the commit), then the latest and
best copies, then retention, which never deletes the newest checkpoint or the current best.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..errors import CheckpointFlowError, CheckpointWriteError
from . import checkpoint_file
from .catalogue import Catalogue
from .records import CheckpointInfo, info_from_header
from .retention import RetentionRule
from .storage import TrainingStorage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SaveJob:
    """One save, captured: ``payload`` is pickled, ``header`` is the file's JSON header.

    ``latest_copy``/``best_copy`` are the copies to point at this save (None: leave them).
    """

    payload: Mapping[str, Any]
    header: Mapping[str, Any]
    file: str
    role: str
    latest_copy: str | None
    best_copy: str | None


class Committer:
    """Commits save jobs of one manager to its storage and catalogue, then applies ``rule``."""

    def __init__(self, storage: TrainingStorage, catalogue: Catalogue, rule: RetentionRule) -> None:
        self.storage = storage
        self.catalogue = catalogue
        self.rule = rule

    def run(self, job: SaveJob) -> str:
        """Write ``job``; return its file name. Raises UnpicklableStateError or
        CheckpointWriteError (earlier checkpoints are untouched)."""
        started = time.perf_counter()
        encoded = self.storage.encode(
            job.payload, f"the state of checkpoint {job.file!r} for {self.storage.location}"
        )
        header = {**job.header, "file": job.file, "role": job.role}
        signer = self.storage.signer
        try:
            chunks = checkpoint_file.pack(header, encoded, signer.blob_name(encoded), signer)
            if self.catalogue.get(job.file) is not None:
                # A save at the same point replaces the file: its old record goes first, so a
                # record never describes other content than its file's.
                self.storage.delete_record(job.file)
                self.catalogue.remove(job.file)
            self.storage.write_file(job.file, chunks)
            info = info_from_header(header, size=encoded.size, where=job.file)
            self.storage.commit(info, header)
            self.catalogue.add(info)
        except CheckpointFlowError:
            raise
        except Exception as exc:
            latest = self.catalogue.latest()
            raise CheckpointWriteError(
                self.storage.location,
                f"checkpoint {job.file!r}",
                exc,
                "Earlier checkpoints are untouched (latest is "
                f"{latest.file if latest else 'none'}).",
            ) from exc
        try:
            if job.latest_copy is not None:
                self.storage.copy(job.file, job.latest_copy, chunks)
            if job.best_copy is not None:
                self._refresh_best(info, header, job.best_copy, chunks)
            self.apply_retention()
        except CheckpointFlowError:
            raise
        except Exception as exc:
            raise CheckpointWriteError(
                self.storage.location,
                f"the copies and retention after checkpoint {job.file!r}",
                exc,
                f"Checkpoint {job.file!r} itself is saved; the next save tries again (or run "
                f"`checkpoint-flow gc {self.storage.location}`).",
            ) from exc
        logger.info(
            "saved %s (%s, epoch %s, step %s, %.1f MB in %.2f s)",
            job.file,
            header.get("reason"),
            header.get("epoch"),
            header.get("step"),
            encoded.size / 2**20,
            time.perf_counter() - started,
        )
        return job.file

    def _refresh_best(
        self, info: CheckpointInfo, header: Mapping[str, Any], copy: str, chunks: Any
    ) -> None:
        # The old record goes first: a record that exists always describes the copy's content.
        self.storage.delete_record(copy)
        self.catalogue.remove(copy)
        self.storage.copy(info.file, copy, chunks)
        best = replace(info, file=copy, role="best", source=info.file)
        self.storage.commit(best, header)
        self.catalogue.add(best)

    def apply_retention(self) -> list[str]:
        """Delete the rolling files the rule does not keep; return their names.

        The newest checkpoint and the original of the best copy are kept whatever the rule says.
        """
        rolling = self.catalogue.rolling()
        protected: set[str] = set()
        latest = self.catalogue.latest()
        if latest is not None:
            protected.add(latest.file)
        # The best copy's original has the copy's seq (0.1 records name no original).
        best_seqs = {c.seq for c in self.catalogue.entries() if c.role == "best"}
        protected.update(c.file for c in rolling if c.seq in best_seqs)
        keep = self.rule(rolling) | protected
        deleted = []
        for info in rolling:
            if info.file in keep:
                continue
            self.storage.delete(info.file)
            self.catalogue.remove(info.file)
            deleted.append(info.file)
            logger.info("retention removed %s from %s", info.file, self.storage.location)
        return deleted
