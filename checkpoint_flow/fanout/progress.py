"""Progress of a running map step: a tqdm bar when asked for, otherwise periodic log lines."""

from __future__ import annotations

import logging
import time
from typing import Any

from .settings import MapSettings

logger = logging.getLogger(__name__)

_LOG_EVERY_S = 10.0


class Progress:
    """A tqdm bar when asked for and installed, otherwise an INFO line every few seconds."""

    def __init__(self, step: MapSettings, total: int, done: int) -> None:
        self.name = step.name
        self.total = total
        self.done = done
        self.ran = 0
        self.started = self.last_log = time.monotonic()
        self.bar: Any = None
        if step.progress:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                logger.info("progress=True needs tqdm (pip install 'checkpoint_flow[progress]'); "
                            "logging progress instead")
            else:
                self.bar = tqdm(total=total, initial=done, desc=self.name, unit="item")

    def advance(self) -> None:
        self.done += 1
        self.ran += 1
        if self.bar is not None:
            self.bar.update(1)
            return
        now = time.monotonic()
        if now - self.last_log >= _LOG_EVERY_S:
            self.last_log = now
            logger.info("map step %r: %d/%d items done (%.1f items/s)", self.name, self.done,
                        self.total, self.ran / (now - self.started))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elapsed = time.monotonic() - self.started
        logger.info("map step %r: %d/%d items done, %d ran in %.3f s (%.1f items/s)", self.name,
                    self.done, self.total, self.ran, elapsed, self.ran / elapsed if elapsed else 0)
