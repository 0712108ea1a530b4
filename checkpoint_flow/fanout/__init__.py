"""Fan-out steps: one function applied to many items, each finished item recorded durably.

Modules, lowest first: ``settings`` (what running a map step reads from it), ``items`` (the
items, their keys and digests), ``shipping`` (what an executor receives), ``progress`` (a bar or
log lines), ``runner`` (one run: what is done, the rest, batches committed) and ``step``
(`MapStep` and `map_step`). Fan-out is an extension: it imports the core, never the reverse.
"""

from .runner import IN_FLIGHT, ITEMS
from .settings import ItemsFunction, KeyFunction
from .step import MapStep, StepRegistry, map_step

__all__ = [
    "IN_FLIGHT",
    "ITEMS",
    "ItemsFunction",
    "KeyFunction",
    "MapStep",
    "StepRegistry",
    "map_step",
]
