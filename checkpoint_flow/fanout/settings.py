"""What running a map step reads from it: `MapSettings`, which `MapStep` provides.

The runner and its helpers depend on this protocol rather than on `MapStep`, whose ``call`` runs
them, so every import in the package points one way.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Executor
from typing import Any, Protocol

from ..steps import StepFunction

ItemsFunction = Callable[[dict[str, Any]], Iterable[Any]]
KeyFunction = Callable[[Any], Hashable]


class MapSettings(Protocol):
    """The options of a map step, as `MapStep` holds them."""

    @property
    def name(self) -> str: ...

    @property
    def fn(self) -> StepFunction: ...

    @property
    def items(self) -> ItemsFunction: ...

    @property
    def key(self) -> KeyFunction | None: ...

    @property
    def executor(self) -> Executor | None: ...

    @property
    def max_failures(self) -> int | None: ...

    @property
    def retries(self) -> int: ...

    @property
    def commit_every(self) -> int: ...

    @property
    def commit_interval_s(self) -> float: ...

    @property
    def progress(self) -> bool: ...

    @property
    def takes_state(self) -> bool: ...

    @property
    def item_fingerprint(self) -> str: ...
