"""Training checkpoints: the CheckpointManager and the small objects it is configured with.

Modules: ``manager`` (the hooks), ``options`` (its arguments, checked), ``triggers`` (when to
save), ``retention`` (what to keep), ``selectors`` (which checkpoint a load means),
``progress`` and ``metrics`` (where the loop is, the best metric), ``saving`` (what a boundary
saves, requests, the emergency save), ``tracking``, ``capture``, ``snapshot`` and ``rng`` (what
a checkpoint captures), ``checkpoint_file`` (the file format), ``records`` and ``catalogue``
(what is committed), ``storage`` (files and records through a handler), ``commit`` and
``writer`` (one save, now or in the background), ``reading`` and ``reader`` (loading),
``export`` (torch and safetensors files), ``naming`` (file names), ``signals``, ``requests`` and
``control`` (saves asked from outside), ``events`` (what the control endpoint pushes), ``live``
(the file naming a running control endpoint), ``locking`` (the run lock), ``maintenance``
(checking and repairing a location), ``commands`` (the command line).
"""

from .manager import CheckpointManager
from .naming import sanitize_name
from .reader import LoadedCheckpoint, Restored
from .records import CheckpointInfo
from .retention import RetentionRule, keep_all, keep_best, keep_last
from .triggers import (
    Boundary,
    Trigger,
    at_boundary,
    at_loop_unit,
    every_n_epochs,
    every_n_steps,
    min_interval,
    never,
    on_improvement,
)

__all__ = [
    "Boundary",
    "CheckpointInfo",
    "CheckpointManager",
    "LoadedCheckpoint",
    "Restored",
    "RetentionRule",
    "Trigger",
    "at_boundary",
    "at_loop_unit",
    "every_n_epochs",
    "every_n_steps",
    "keep_all",
    "keep_best",
    "keep_last",
    "min_interval",
    "never",
    "on_improvement",
    "sanitize_name",
]
