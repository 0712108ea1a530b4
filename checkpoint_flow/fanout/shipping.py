"""What a map step sends to an executor: the item function, with the state when it reads it."""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cloudpickle

from ..storage.codec import digest_chunks
from .settings import MapSettings


def apply(task: Callable[[Any], Any], item: Any, call: str) -> Any:
    return task(item)


@dataclass(frozen=True)
class WithState:
    fn: Callable[[Any, Mapping[str, Any]], Any]
    state: Mapping[str, Any]

    def __call__(self, item: Any) -> Any:
        return self.fn(item, self.state)


# Item functions unpickled in this (worker) process, by the digest of their pickled form, so a
# worker unpickles the function and the state once rather than once per item.
_UNPACKED: dict[str, Callable[[Any], Any]] = {}


@dataclass(frozen=True)
class Shipped:
    """The item function (and state) cloudpickled once, so lambdas and closures reach workers."""

    payload: bytes
    digest: str

    @classmethod
    def pack(cls, step: MapSettings, state: dict[str, Any] | None) -> Shipped:
        try:
            payload = cloudpickle.dumps((step.fn, state), protocol=5)
        except Exception as exc:
            raise TypeError(
                f"map step {step.name!r} cannot send its function"
                f"{' and the state' if state is not None else ''} to the executor: {exc}"
            ) from exc
        return cls(payload, digest_chunks([payload]))

    def __call__(self, item: Any) -> Any:
        task = _UNPACKED.get(self.digest)
        if task is None:
            fn, state = cloudpickle.loads(self.payload)
            task = fn if state is None else WithState(fn, types.MappingProxyType(state))
            _UNPACKED.clear()  # one map step at a time runs in a worker
            _UNPACKED[self.digest] = task
        return task(item)
