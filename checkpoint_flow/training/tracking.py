"""Which objects a checkpoint holds: those registered with ``track``, attributes of one object
(``tracked_obj``/``tracked_attrs``, a learner), and those passed to each call; and putting their
states back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .snapshot import StateKind, apply


def check_tracked(obj: object | None, attrs: Sequence[str]) -> tuple[str, ...]:
    """The names of ``tracked_attrs``. Raises TypeError/ValueError for names ``obj`` lacks."""
    if obj is None and attrs:
        raise ValueError(f"tracked_attrs={list(attrs)!r} needs tracked_obj=")
    if isinstance(attrs, str):
        raise TypeError(f"tracked_attrs must be a sequence of names, got the str {attrs!r}")
    for attr in attrs:
        if not hasattr(obj, attr):
            raise ValueError(f"tracked_obj {type(obj).__name__} has no attribute {attr!r}")
    return tuple(attrs)


class Tracked:
    """The tracked objects of one manager: attributes ``attrs`` of ``obj`` (checked by
    :func:`check_tracked`) and those registered with :meth:`track`."""

    def __init__(self, obj: object | None, attrs: tuple[str, ...]) -> None:
        self._obj = obj
        self._attrs = attrs
        self._registered: dict[str, Any] = {}

    def track(self, objects: Mapping[str, Any]) -> None:
        self._registered.update(objects)

    def objects(self, passed: Mapping[str, Any]) -> dict[str, Any]:
        """Every object to capture now: registered, attributes, then those of this call."""
        objects = dict(self._registered)
        for attr in self._attrs:
            objects[attr] = getattr(self._obj, attr)
        objects.update(passed)
        return objects

    def restore(
        self, saved: Mapping[str, tuple[StateKind, Any]], passed: Mapping[str, Any], file: str
    ) -> dict[str, Any]:
        """Put ``saved`` states back into the live objects; return every restored object.

        Objects with ``load_state_dict`` and generators are restored in place; plain values are
        set back on the tracked object (attributes) and in the registry. Raises ValueError,
        before changing anything, if a live object has no state in the checkpoint.
        """
        live = self.objects(passed)
        missing = sorted(set(live) - set(saved))
        if missing:
            raise ValueError(
                f"checkpoint {file!r} holds no state for {', '.join(map(repr, missing))}; "
                f"it holds: {', '.join(sorted(saved)) or 'nothing'}"
            )
        values: dict[str, Any] = {}
        for name, (kind, state) in saved.items():
            if name not in live:
                values[name] = state
                continue
            values[name] = restored = apply(live[name], kind, state)
            if kind == "value":
                if name in self._attrs:
                    setattr(self._obj, name, restored)
                if name in self._registered:
                    self._registered[name] = restored
        return values
