"""Run locks: placeholder that takes no lock; the real one-run-at-a-time lock replaces it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def run_lock(handler: Any, *, ttl_s: float = 60.0) -> Iterator[None]:
    yield
