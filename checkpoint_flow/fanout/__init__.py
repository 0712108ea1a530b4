"""Fan-out steps: one function applied to many items, each finished item recorded durably."""

from .runner import IN_FLIGHT, ITEMS, ItemsFunction, KeyFunction, MapStep, StepRegistry, map_step

__all__ = [
    "IN_FLIGHT",
    "ITEMS",
    "ItemsFunction",
    "KeyFunction",
    "MapStep",
    "StepRegistry",
    "map_step",
]
