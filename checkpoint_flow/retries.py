"""Retry policies of steps: how many more attempts, how long to wait, which exceptions count.

A policy only answers questions; the run loop makes the attempts. Every attempt starts from the
state the step received (the run loop puts back what a failed attempt changed), so a retried
step never sees a failed attempt's partial mutations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from . import checks

RetryOn = type[BaseException] | tuple[type[BaseException], ...]


@dataclass(frozen=True)
class Retry:
    """Retry a failing step ``retries`` more times, waiting ``delay_s * backoff ** (n - 1)``
    seconds before the n-th retry, when it raised one of ``on``.

    ``delay_s`` accepts a ``timedelta``. Raises TypeError/ValueError naming a bad value.
    """

    retries: int = 0
    delay_s: float | timedelta = 1.0
    backoff: float = 2.0
    on: RetryOn = (Exception,)

    def __post_init__(self) -> None:
        checks.count("retries", self.retries)
        object.__setattr__(self, "delay_s", checks.seconds("retry_delay_s", self.delay_s))
        object.__setattr__(self, "backoff", checks.number("backoff", self.backoff, minimum=1))
        object.__setattr__(self, "on", _exception_types(self.on))

    @property
    def attempts(self) -> int:
        """How many times the step runs at most."""
        return self.retries + 1

    def retries_after(self, exc: BaseException, attempt: int) -> bool:
        """Whether the failure ``exc`` of attempt ``attempt`` (1 is the first) is retried."""
        return attempt <= self.retries and isinstance(exc, self.on)

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` (2 is the first retry)."""
        return checks.seconds("retry_delay_s", self.delay_s) * self.backoff ** max(attempt - 2, 0)


def _exception_types(on: object) -> tuple[type[BaseException], ...]:
    types = on if isinstance(on, tuple) else (on,)
    if not types or not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        raise TypeError(
            f"retry_on must be an exception class or a tuple of them, such as (OSError,), "
            f"got {on!r}"
        )
    return types


NO_RETRY = Retry()
