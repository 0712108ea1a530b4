"""A map step's items: listing them, their keys, the keys' digests and that no two are equal."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .. import identity
from .settings import MapSettings

# How many item keys an error message names before saying "and N more".
NAMED_FAILURES = 5


def list_items(step: MapSettings, state: dict[str, Any]) -> list[Any]:
    found = step.items(state)
    if isinstance(found, (str, bytes, Mapping)) or not isinstance(found, Iterable):
        raise TypeError(
            f"items= of map step {step.name!r} returned {type(found).__name__} {found!r:.80}; "
            "it must return an iterable of items such as a list (not a str, bytes or dict)"
        )
    return list(found)


def item_key(step: MapSettings, item: Any) -> Any:
    key = step.key(item) if step.key is not None else item
    try:
        hash(key)
    except TypeError:
        where = f"key({item!r:.80})" if step.key is not None else f"item {item!r:.80}"
        raise TypeError(
            f"{where} of map step {step.name!r} is not hashable ({type(key).__name__}); pass "
            "key= returning a stable hashable identity such as a str or an int"
        ) from None
    return key


def key_digest(step: MapSettings, key: Any) -> str:
    # A content digest, not hash() or pickled bytes: str hashes, set order and the pickled
    # form of classes defined in __main__ all change from one process to the next.
    return identity.digest(
        key,
        what=f"the item key {key!r:.80} of map step {step.name!r}",
        remedy="Pass key= returning a stable identity such as a str, an int or a tuple of them",
    )


def check_unique(step: MapSettings, keys: list[Any], digests: list[str]) -> None:
    seen: set[str] = set()
    duplicates: list[Any] = []
    for key, digest in zip(keys, digests, strict=True):
        if digest in seen:
            duplicates.append(key)
        seen.add(digest)
    if duplicates:
        shown = ", ".join(repr(k) for k in duplicates[:NAMED_FAILURES])
        raise ValueError(
            f"map step {step.name!r} has {len(duplicates)} duplicate item key(s): {shown}; "
            "every item needs its own key (pass key= to tell equal-looking items apart)"
        )
