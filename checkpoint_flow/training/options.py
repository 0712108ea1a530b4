"""The CheckpointManager's keyword arguments, checked in one place into a frozen
:class:`Options` before storage is touched; a bad argument raises TypeError or ValueError naming
it and what it accepts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from .. import checks
from .naming import Naming, check_manager_name, check_pattern
from .retention import KeepArg, Mode, RetentionRule, build_rule, check_mode
from .tracking import check_tracked
from .triggers import Trigger, TriggerLike, choose_trigger


@dataclass(frozen=True)
class Options:
    """What a manager is configured with, checked (see :meth:`check`)."""

    naming: Naming
    mode: Mode
    monitor: str | None
    save_best: bool
    trigger: Trigger
    rule: RetentionRule
    tracked_obj: object | None
    tracked_attrs: tuple[str, ...]
    metadata: Mapping[str, Any]
    async_save: bool
    handle_signals: bool
    read_only: bool

    @property
    def name(self) -> str | None:
        return self.naming.name

    @classmethod
    def check(
        cls,
        *,
        name: str | None,
        every_n_epochs: int | None,
        every_n_steps: int | None,
        min_interval_s: float | timedelta | None,
        trigger: TriggerLike | None,
        monitor: str | None,
        mode: Mode,
        save_best: bool,
        keep_last_n: int | None,
        keep_best_k: int | None,
        keep: KeepArg,
        filename: str | None,
        tracked_obj: object | None,
        tracked_attrs: Sequence[str],
        async_save: bool,
        handle_signals: bool,
        read_only: bool,
        metadata: Mapping[str, Any] | None,
    ) -> Options:
        """Check the arguments in the order the manager always has, so that of several bad
        ones the same is reported. Raises TypeError/ValueError."""
        mode = check_mode(mode)
        if monitor is not None and (not isinstance(monitor, str) or not monitor):
            raise TypeError(f"monitor must be a metric name (str), got {monitor!r}")
        save_best = bool(save_best)
        naming = Naming(check_manager_name(name), check_pattern(filename))
        chosen = choose_trigger(trigger, every_n_epochs, every_n_steps, min_interval_s)
        rule = build_rule(
            keep,
            None if keep_last_n is None else checks.count("keep_last_n", keep_last_n),
            None if keep_best_k is None else checks.count("keep_best_k", keep_best_k),
            monitor,
            mode,
        )
        attrs = check_tracked(tracked_obj, tracked_attrs)
        checked_metadata = check_json("metadata", dict(metadata or {}))
        read_only = bool(read_only)
        if handle_signals and read_only:
            raise ValueError("handle_signals=True saves on signals; a read_only manager cannot")
        return cls(
            naming=naming,
            mode=mode,
            monitor=monitor,
            save_best=save_best,
            trigger=chosen,
            rule=rule,
            tracked_obj=tracked_obj,
            tracked_attrs=attrs,
            metadata=MappingProxyType(checked_metadata),
            async_save=bool(async_save),
            handle_signals=bool(handle_signals),
            read_only=read_only,
        )


def check_json(what: str, value: dict[str, Any]) -> dict[str, Any]:
    """``value`` itself if it is JSON-serializable. Raises TypeError naming ``what``."""
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serializable: {exc}") from exc
    return value
