"""The one shape of every policy family: a small callable object that composes with ``|`` and ``&``.

Load policies, flow retention, training retention and training triggers are each a family: a
root class fixing what a policy receives (its subject) and what it answers (its verdict), and
small frozen dataclasses, each validated on construction and shown as the call that built it::

    every_n_epochs(1) & min_interval(600)
    keep_last(3) | keep_best(1, "val_loss")

For yes/no families ``|`` means either and ``&`` means both; for families that choose what to
keep, ``|`` keeps what either keeps and ``&`` what both keep. A plain function is accepted
wherever a policy is (it is wrapped), so ``my_rule | keep_last(3)`` works too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

Subject = TypeVar("Subject")
Verdict = TypeVar("Verdict")


class Policy(ABC, Generic[Subject, Verdict]):
    """Base of every policy: subclasses implement ``__call__``; ``|``/``&`` combine.

    A family root implements ``coerce`` (turn a plain callable into a member of the family)
    and ``either``/``both`` (the combined policies of the family).
    """

    @abstractmethod
    def __call__(self, subject: Subject, /) -> Verdict: ...

    @classmethod
    @abstractmethod
    def coerce(cls, value: Any) -> Policy[Subject, Verdict]:
        """A member of this family for ``value``; raises TypeError naming it."""

    @classmethod
    @abstractmethod
    def either(cls, *parts: Policy[Subject, Verdict]) -> Policy[Subject, Verdict]:
        """The policy ``a | b | ...``."""

    @classmethod
    @abstractmethod
    def both(cls, *parts: Policy[Subject, Verdict]) -> Policy[Subject, Verdict]:
        """The policy ``a & b & ...``."""

    def __or__(self, other: Any) -> Policy[Subject, Verdict]:
        return self.either(self, self.coerce(other))

    def __ror__(self, other: Any) -> Policy[Subject, Verdict]:
        return self.either(self.coerce(other), self)

    def __and__(self, other: Any) -> Policy[Subject, Verdict]:
        return self.both(self, self.coerce(other))

    def __rand__(self, other: Any) -> Policy[Subject, Verdict]:
        return self.both(self.coerce(other), self)


@dataclass(frozen=True, init=False, repr=False)
class Combination(Policy[Subject, Verdict]):
    """Several policies of one family asked together; nested combinations of the same kind are
    flattened, so ``a | b | c`` is one combination of three."""

    parts: tuple[Policy[Subject, Verdict], ...]
    operator: ClassVar[str]

    def __init__(self, *parts: Policy[Subject, Verdict]) -> None:
        if not parts:
            raise ValueError(f"{type(self).__name__} needs at least one policy to combine")
        flat: list[Policy[Subject, Verdict]] = []
        for part in parts:
            if not isinstance(part, Policy):
                raise TypeError(f"{type(self).__name__} combines policies, got {part!r}")
            if isinstance(part, Combination) and type(part) is type(self):
                flat.extend(part.parts)
            else:
                flat.append(part)
        object.__setattr__(self, "parts", tuple(flat))

    def __call__(self, subject: Subject, /) -> Verdict:
        return self.combine(part(subject) for part in self.parts)

    @staticmethod
    @abstractmethod
    def combine(verdicts: Iterator[Verdict]) -> Verdict:
        """The combined verdict; may stop early (the parts are asked lazily)."""

    def __repr__(self) -> str:
        shown = (f"({p!r})" if isinstance(p, Combination) else repr(p) for p in self.parts)
        return f" {self.operator} ".join(shown)


class AnyOf(Combination[Subject, bool]):
    """Yes when any part says yes (asking no further)."""

    operator = "|"

    @staticmethod
    def combine(verdicts: Iterator[bool]) -> bool:
        return any(verdicts)


class AllOf(Combination[Subject, bool]):
    """Yes when every part says yes (asking no further after a no)."""

    operator = "&"

    @staticmethod
    def combine(verdicts: Iterator[bool]) -> bool:
        return all(verdicts)


Kept = TypeVar("Kept")


class KeepEither(Combination[Subject, set[Kept]]):
    """Keeps what any part keeps."""

    operator = "|"

    @staticmethod
    def combine(verdicts: Iterator[set[Kept]]) -> set[Kept]:
        kept: set[Kept] = set()
        for verdict in verdicts:
            kept |= verdict
        return kept


class KeepBoth(Combination[Subject, set[Kept]]):
    """Keeps what every part keeps."""

    operator = "&"

    @staticmethod
    def combine(verdicts: Iterator[set[Kept]]) -> set[Kept]:
        kept = set(next(verdicts, set()))
        for verdict in verdicts:
            kept &= verdict
        return kept


@dataclass(frozen=True, repr=False)
class FromFunction(Policy[Subject, Verdict]):
    """A plain function taken into a family; ``check`` turns its answer into a verdict and
    raises TypeError for an answer of the wrong kind."""

    fn: Callable[[Subject], Any]

    def __call__(self, subject: Subject, /) -> Verdict:
        return self.check(self.fn(subject))

    def check(self, answer: Any) -> Verdict:
        return answer  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.fn!r})"


def kept_set(fn: Callable[..., Any], answer: Any, kind: type) -> set[Any]:
    """The answer of a keeping function as a set; raises TypeError for anything but an
    iterable of ``kind`` (a bare string is one name spelled out, never what was meant)."""
    if (
        isinstance(answer, (str, bytes))
        or not isinstance(answer, Iterable)
        or not all(isinstance(kept, kind) and not isinstance(kept, bool) for kept in answer)
    ):
        raise TypeError(
            f"retention callable {fn!r} must return an iterable of what to keep (each a "
            f"{kind.__name__}), got {answer!r}"
        )
    return set(answer)


def refuse_other_family(value: Any, family: type, argument: str) -> None:
    """Raise TypeError when ``value`` is a policy of another family: being callable, it would
    otherwise be taken for a plain function and fail only when asked."""
    if isinstance(value, Policy) and not isinstance(value, family):
        roots = [
            c for c in type(value).__mro__
            if Policy in c.__bases__ and c not in (Combination, FromFunction)
        ]
        other = roots[0].__name__ if roots else type(value).__name__
        raise TypeError(
            f"{argument} takes a {family.__name__} (or a plain function), got {value!r}, "
            f"which is a {other}"
        )
