"""A deterministic flow whose saves vary in size, shared by fault tests and their subprocesses.

Run as a script: ``python kill_flow.py LOCATION [STORAGE_OPTIONS_JSON]`` prints ``ready`` once
imports are done, then runs the flow.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

from checkpoint_flow import CheckpointFlow

INITIAL = {"seed": 7}
STEP_NAMES = [
    f"build.<locals>.{name}" for name in ("tiny", "objects", "array", "blob", "bump", "summary")
]


def build(location: str, storage_options: dict[str, Any] | None = None) -> CheckpointFlow:
    cp = CheckpointFlow(location, storage_options=storage_options, lock_ttl_s=3)

    @cp.add_step
    def tiny(state, data):
        state["counter"] = state["seed"] + 1

    @cp.add_step
    def objects(state, data):
        state["objects"] = [{"i": i, "s": str(i)} for i in range(5_000)]

    @cp.add_step
    def array(state, data):
        state["array"] = np.arange(250_000, dtype="f8") * state["counter"]

    @cp.add_step
    def blob(state, data):
        state["blob"] = bytes(range(256)) * 4_000

    @cp.add_step
    def bump(state, data):
        state["array"] = state["array"] + 1
        state["counter"] += 1

    @cp.add_step
    def summary(state, data):
        state["sum"] = float(state["array"].sum()) + len(state["objects"]) + len(state["blob"])

    return cp


def same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, np.ndarray):
            if not (isinstance(y, np.ndarray) and np.array_equal(x, y)):
                return False
        elif x != y:
            return False
    return True


if __name__ == "__main__":
    options = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
    flow = build(sys.argv[1], options)
    print("ready", flush=True)
    flow.run(dict(INITIAL))
    print("finished", flush=True)
